//! The agent cannot be reached: ADD, CHECK, GC and DEL answer 11 (try again later) and STATUS
//! answers 50 (not available). DEL fails rather than succeeds because only the agent can
//! release the address (see `hc_cni::plugin`).

mod common;

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use common::{BRIDGE, Env, IPAM, attach_env, bridge_config, exec, ipam_config, network_env};
use serde_json::json;

fn all_verbs(config: &str, binary: &str) {
    let verbs: [(&str, Env, u64); 5] = [
        ("ADD", attach_env("ADD", &[]), 11),
        ("DEL", attach_env("DEL", &[]), 11),
        ("CHECK", attach_env("CHECK", &[]), 11),
        ("GC", network_env("GC"), 11),
        ("STATUS", network_env("STATUS"), 50),
    ];
    for (verb, env, code) in verbs {
        let out = exec(binary, &env, config);
        let err = out.expect_error(code);
        assert!(err["msg"].as_str().is_some_and(|m| m.contains("hc-agent")), "{verb}: {err}");
    }
}

fn extra() -> serde_json::Value {
    json!({"cni.dev/valid-attachments": [], "prevResult": {"ips": [{"address": "10.1.0.7/24"}]}})
}

#[test]
fn missing_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("agent.sock");
    all_verbs(&bridge_config("1.1.0", &socket, extra()), BRIDGE);
    all_verbs(&ipam_config("1.1.0", &socket, extra()), IPAM);
}

#[test]
fn stale_socket_file_nobody_listens_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("agent.sock");
    drop(UnixListener::bind(&socket).expect("bind"));
    assert!(socket.exists());
    all_verbs(&bridge_config("1.1.0", &socket, extra()), BRIDGE);
}

#[test]
fn del_with_an_agent_down_is_retried_not_forgotten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = bridge_config("1.0.0", &dir.path().join("agent.sock"), json!({}));
    // Also without CNI_NETNS, as when the runtime already removed the namespace.
    let out = exec(BRIDGE, &attach_env("DEL", &[("CNI_NETNS", "")]), &config);
    let err = out.expect_error(11);
    assert_eq!(err["cniVersion"], "1.0.0");
}

#[test]
fn agent_that_hangs_up_without_a_reply() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&socket).expect("bind");
    let agent = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut request = Vec::new();
        stream.read_to_end(&mut request).expect("read");
        // Closes without answering, like an agent that crashed mid-request.
    });
    let out = exec(BRIDGE, &attach_env("ADD", &[]), &bridge_config("1.0.0", &socket, json!({})));
    out.expect_error(11);
    agent.join().expect("agent thread");
}

#[test]
fn agent_that_never_answers_times_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("agent.sock");
    // Bound and never accepted: the connection sits in the backlog and no reply ever comes.
    let _listener = UnixListener::bind(&socket).expect("bind");
    let config = bridge_config("1.0.0", &socket, json!({"timeoutSeconds": 1}));
    let start = Instant::now();
    let out = exec(BRIDGE, &attach_env("ADD", &[]), &config);
    let elapsed = start.elapsed();
    let err = out.expect_error(11);
    assert!(err["msg"].as_str().is_some_and(|m| m.contains("did not answer within 1 s")), "{err}");
    assert!(elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(10), "{elapsed:?}");
}
