//! What the plugins print: the agent's result shaped to each configuration version (the same
//! golden files as the unit tests), and the agent's refusals passed on with their codes. The
//! agent is the stand-in test double (see `common`).

mod common;

use common::{BRIDGE, IPAM, StandInAgent, attach_env, bridge_config, exec, ipam_config};
use hc_cni::protocol::{AgentError, Reply};
use hc_cni::result::CniResult;
use serde_json::{Value, json};

fn agent_result() -> CniResult {
    serde_json::from_str(include_str!("../testdata/result/input.json")).expect("golden input")
}

fn golden(file: &str) -> Value {
    serde_json::from_str(file).expect("golden file")
}

#[test]
fn add_result_per_version() {
    let goldens = [
        ("0.3.0", include_str!("../testdata/result/0.3.0.json")),
        ("0.3.1", include_str!("../testdata/result/0.3.1.json")),
        ("0.4.0", include_str!("../testdata/result/0.4.0.json")),
        ("1.0.0", include_str!("../testdata/result/1.0.0.json")),
        ("1.1.0", include_str!("../testdata/result/1.1.0.json")),
    ];
    let agent = StandInAgent::bind();
    for (version, file) in goldens {
        let received = agent.answer_next(Reply::Ok(agent_result()));
        let out = exec(BRIDGE, &attach_env("ADD", &[]), &bridge_config(version, &agent.socket, json!({})));
        assert_eq!(out.status, 0, "{version}: {out:?}");
        assert_eq!(out.json(), golden(file), "{version}: {}", out.stdout);
        received.request();
    }
}

#[test]
fn hcipam_result_has_no_interfaces() {
    let agent = StandInAgent::bind();
    let received = agent.answer_next(Reply::Ok(agent_result()));
    let out = exec(IPAM, &attach_env("ADD", &[]), &ipam_config("0.4.0", &agent.socket, json!({})));
    assert_eq!(out.status, 0, "{out:?}");
    assert_eq!(out.json(), golden(include_str!("../testdata/result/ipam-0.4.0.json")), "{}", out.stdout);
    received.request();
}

#[test]
fn agent_refusals_reach_the_runtime_with_their_code() {
    let agent = StandInAgent::bind();
    let config = bridge_config("0.4.0", &agent.socket, json!({"pool": "web"}));
    let cases = [
        (
            AgentError::refused("pool web is exhausted: no free address left")
                .with_details("254 of 254 addresses in use"),
            999,
        ),
        (AgentError::invalid_config("pool web is on VLAN 200, this network is pinned to VLAN 100"), 7),
        (AgentError::try_again_later("the allocator has no quorum"), 11),
    ];
    for (refusal, code) in cases {
        let received = agent.answer_next(Reply::Err(refusal.clone()));
        let out = exec(BRIDGE, &attach_env("ADD", &[]), &config);
        let err = out.expect_error(code);
        let mut want = json!({"cniVersion": "0.4.0", "code": code, "msg": refusal.msg});
        if let Some(details) = &refusal.details {
            want["details"] = json!(details);
        }
        assert_eq!(err, want);
        received.request();
    }
}

#[test]
fn del_of_nothing_succeeds_when_the_agent_says_so() {
    let agent = StandInAgent::bind();
    let received = agent.answer_next(Reply::Ok(CniResult::default()));
    exec(BRIDGE, &attach_env("DEL", &[]), &bridge_config("1.0.0", &agent.socket, json!({}))).expect_silent_success();
    received.request();
}

#[test]
fn an_unreadable_reply_is_our_error_not_a_retry() {
    // A reply this plugin cannot decode means plugin and agent disagree on the protocol;
    // retrying will not help.
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("agent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let agent = std::thread::spawn(move || {
        use std::io::{BufRead, Write};
        let (stream, _) = listener.accept().expect("accept");
        let mut reader = std::io::BufReader::new(stream);
        let mut line = Vec::new();
        reader.read_until(b'\n', &mut line).expect("read");
        reader.get_mut().write_all(b"{\"maybe\":true}\n").expect("write");
    });
    let err = exec(BRIDGE, &attach_env("ADD", &[]), &bridge_config("1.0.0", &socket, json!({}))).expect_error(999);
    assert!(err["msg"].as_str().is_some_and(|m| m.contains("cannot read")), "{err}");
    agent.join().expect("agent thread");
}
