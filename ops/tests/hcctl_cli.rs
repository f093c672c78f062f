//! `hcctl` as a process, without an allocator: help, usage errors, and unreachable servers.
//! (End-to-end tests against a real cluster live elsewhere.)

use std::io::Write;
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};

/// A `host:port` nothing listens on: bound, then released.
fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").to_string()
}

fn hcctl() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hcctl"));
    // Only what a test passes may point hcctl somewhere.
    cmd.env_remove("HCCTL_SERVER").env_remove("HCCTL_TIMEOUT");
    cmd
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.stdin(Stdio::null()).output().expect("runs");
    summary(out)
}

fn run_with_stdin(cmd: &mut Command, input: &str) -> (i32, String, String) {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("runs");
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write");
    summary(child.wait_with_output().expect("exits"))
}

fn summary(out: Output) -> (i32, String, String) {
    let code = out.status.code().expect("exited, not signalled");
    (code, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn help_lists_every_noun() {
    let (code, stdout, _) = run(hcctl().arg("--help"));
    assert_eq!(code, 0);
    for noun in ["pool", "vlan", "reservation", "allocation", "lease", "node", "cluster", "--server", "--output"] {
        assert!(stdout.contains(noun), "--help does not mention {noun}:\n{stdout}");
    }
    let (code, stdout, _) = run(hcctl().args(["pool", "create", "--help"]));
    assert_eq!(code, 0);
    assert!(stdout.contains("--route <DST[=GW]>"), "{stdout}");
}

#[test]
fn unreachable_server_exits_3_naming_it() {
    let server = closed_port();
    let (code, stdout, stderr) = run(hcctl().args(["--server", &server, "pool", "list"]));
    assert_eq!(code, 3, "stderr: {stderr}");
    assert!(stdout.is_empty());
    assert!(stderr.starts_with("error: could not reach any allocator"), "{stderr}");
    assert!(stderr.contains(&server) && stderr.trim_end().ends_with("(unreachable)"), "{stderr}");
}

#[test]
fn every_server_in_the_env_list_is_tried() {
    let (a, b) = (closed_port(), closed_port());
    let (code, _, stderr) = run(hcctl().env("HCCTL_SERVER", format!("{a},{b}")).args(["cluster", "status"]));
    assert_eq!(code, 3, "stderr: {stderr}");
    assert!(stderr.contains(&a) && stderr.contains(&b), "{stderr}");
}

#[test]
fn usage_errors_exit_2_before_any_request() {
    // The server is unreachable, so exit 2 (not 3) shows nothing was sent.
    let server = closed_port();
    let cases: &[&[&str]] = &[
        &["pool", "create", "p"],
        &["pool", "create", "p", "--cidr", "10.0.0.0/24", "--route", "10.0.0.0/8=not-an-ip"],
        &["pool", "create", "p", "--cidr", "10.0.0.0/33"],
        &["pool", "create", "-f", "/nonexistent/hcctl-test/pool.json"],
        &["allocation", "release"],
        &["allocation", "get", "not-an-address"],
        &["vlan", "create", "70000"],
    ];
    for args in cases {
        let (code, _, stderr) = run(hcctl().args(["--server", &server]).args(*args));
        assert_eq!(code, 2, "hcctl {args:?}: {stderr}");
        assert!(stderr.contains("error"), "hcctl {args:?}: {stderr}");
    }
    let (code, _, stderr) = run(hcctl().args(["--server", "https://127.0.0.1:7380", "pool", "list"]));
    assert_eq!(code, 2);
    assert!(stderr.contains("TLS"), "{stderr}");
}

#[test]
fn pool_spec_from_stdin_is_checked_before_sending() {
    let server = closed_port();
    let (code, _, stderr) = run_with_stdin(
        hcctl().args(["--server", &server, "pool", "create", "-f", "-"]),
        r#"{"name": "p", "cidr": "10.0.0.0/24", "gatway": "10.0.0.1"}"#,
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("gatway") && stderr.contains("(usage)"), "{stderr}");

    // A valid spec gets as far as the (absent) server.
    let (code, _, stderr) = run_with_stdin(
        hcctl().args(["--server", &server, "pool", "update", "-f", "-"]),
        r#"{"name": "p", "cidr": "10.0.0.0/24", "gateway": "10.0.0.1"}"#,
    );
    assert_eq!(code, 3, "{stderr}");
}
