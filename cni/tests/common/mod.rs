//! Shared by the integration tests: exec a plugin binary like a runtime does, and a stand-in
//! for hc-agent.
//!
//! The stand-in is a **test double**: hc-agent's socket server does not exist yet. It speaks
//! the protocol from the agent's side (decoding each request with the same
//! `hc_cni::protocol` types the agent will use, and answering with a reply the test chooses),
//! so these tests check what the plugins send and print. End-to-end tests against the real
//! agent will replace it.

#![allow(dead_code)] // each test file uses a different part

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use hc_cni::protocol::{Reply, Request};
use serde_json::{Value, json};

pub const BRIDGE: &str = env!("CARGO_BIN_EXE_hc-bridge");
pub const IPAM: &str = env!("CARGO_BIN_EXE_hcipam");

/// What a plugin process did.
#[derive(Debug)]
pub struct Exec {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Exec {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// Asserts a CNI error with `code` and returns its JSON.
    pub fn expect_error(&self, code: u64) -> Value {
        assert_ne!(self.status, 0, "expected CNI error {code}: {self:?}");
        let json = self.json();
        assert_eq!(json["code"], code, "{self:?}");
        assert!(json["msg"].as_str().is_some_and(|m| !m.is_empty()), "{self:?}");
        json
    }

    /// Asserts success with nothing on stdout (DEL, CHECK, GC, STATUS).
    pub fn expect_silent_success(&self) {
        assert_eq!(self.status, 0, "{self:?}");
        assert_eq!(self.stdout, "", "{self:?}");
    }
}

/// Environment variables, in order.
pub type Env = Vec<(String, String)>;

/// Runs `binary` with exactly `env` (nothing inherited) and `stdin`.
pub fn exec(binary: &str, env: &Env, stdin: &str) -> Exec {
    let mut child = Command::new(binary)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the plugin");
    let mut input = child.stdin.take().expect("stdin");
    // VERSION does not read stdin and may have exited already: a broken pipe is fine then.
    let _ = input.write_all(stdin.as_bytes());
    drop(input);
    let out = child.wait_with_output().expect("wait for the plugin");
    Exec {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(out.stderr).expect("UTF-8 stderr"),
    }
}

/// The environment of ADD/DEL/CHECK as a Kubernetes runtime sets it, with `changes` applied:
/// a pair replaces the variable, an empty value removes it.
pub fn attach_env(command: &str, changes: &[(&str, &str)]) -> Env {
    let mut env: Env = [
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", "3f6940ab5ab4"),
        ("CNI_NETNS", "/var/run/netns/cni-1234"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;\
             K8S_POD_INFRA_CONTAINER_ID=3f6940ab5ab4;K8S_POD_UID=6f1c2a4e-4be1-4a5e-9d0e-2f3b5f0c9a11",
        ),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    for (k, v) in changes {
        env.retain(|(key, _)| key != k);
        if !v.is_empty() {
            env.push(((*k).to_owned(), (*v).to_owned()));
        }
    }
    env
}

/// The environment of STATUS and GC (and VERSION).
pub fn network_env(command: &str) -> Env {
    vec![("CNI_COMMAND".to_owned(), command.to_owned()), ("CNI_PATH".to_owned(), "/opt/cni/bin".to_owned())]
}

/// An hc-bridge configuration of `version` pointing at `socket`, with `extra` fields merged in.
pub fn bridge_config(version: &str, socket: &std::path::Path, extra: Value) -> String {
    let mut config = json!({"cniVersion": version, "name": "hc", "type": "hc-bridge", "agentSocket": socket});
    merge(&mut config, extra);
    config.to_string()
}

/// A reference-bridge configuration with hcipam as its IPAM, pointing at `socket`.
pub fn ipam_config(version: &str, socket: &std::path::Path, extra: Value) -> String {
    let mut config = json!({
        "cniVersion": version, "name": "ref", "type": "bridge", "bridge": "hcbr-ref", "isGateway": true,
        "ipam": {"type": "hcipam", "agentSocket": socket}
    });
    merge(&mut config, extra);
    config.to_string()
}

fn merge(config: &mut Value, extra: Value) {
    if let (Value::Object(c), Value::Object(e)) = (config, extra) {
        for (k, v) in e {
            c.insert(k, v);
        }
    }
}

/// A test double for hc-agent (see the module documentation), listening in a fresh tempdir.
pub struct StandInAgent {
    _dir: tempfile::TempDir,
    pub socket: PathBuf,
    listener: UnixListener,
}

impl StandInAgent {
    pub fn bind() -> StandInAgent {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&socket).expect("bind the stand-in socket");
        StandInAgent { _dir: dir, socket, listener }
    }

    /// Answers the next connection with `reply`; the receiver yields the request it read, as
    /// JSON, after checking that the agent's side of `hc_cni::protocol` decodes it.
    pub fn answer_next(&self, reply: Reply) -> Received {
        let listener = self.listener.try_clone().expect("clone the listener");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            let mut reader = BufReader::new(stream);
            let mut line = Vec::new();
            reader.read_until(b'\n', &mut line).expect("read the request");
            let decoded = Request::decode(&line).map_err(|e| e.to_string());
            let json: Result<Value, String> = serde_json::from_slice(&line).map_err(|e| e.to_string());
            reader.get_mut().write_all(&reply.encode()).expect("write the reply");
            let _ = tx.send(decoded.and(json));
        });
        Received(rx)
    }

    /// Asserts that no plugin connected. Call it after the plugin exited: a connection it made
    /// would be queued on the listener by then.
    pub fn assert_nothing_sent(&self) {
        self.listener.set_nonblocking(true).expect("nonblocking");
        match self.listener.accept() {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Ok(_) => panic!("the plugin contacted the agent"),
            Err(e) => panic!("accept failed: {e}"),
        }
        self.listener.set_nonblocking(false).expect("blocking");
    }
}

/// The request a stand-in received.
pub struct Received(mpsc::Receiver<Result<Value, String>>);

impl Received {
    /// The request. Call it after the plugin exited; a plugin that never connected fails the
    /// test after a deadline instead of hanging it.
    pub fn request(self) -> Value {
        match self.0.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(request)) => request,
            Ok(Err(e)) => panic!("the agent's side cannot decode the request: {e}"),
            Err(e) => panic!("the plugin sent no request: {e}"),
        }
    }
}
