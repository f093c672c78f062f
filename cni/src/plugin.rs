//! One plugin invocation: parse and validate everything, then make one call to the agent, then
//! print the result or the error.
//!
//! Order of checks, each with its code, so the first problem is the one reported:
//! CNI_COMMAND (4) → VERSION answers here → stdin (5) → JSON (6) → `cniVersion` (1) → the verb
//! exists in that version (1: CHECK needs 0.4.0, STATUS and GC 1.1.0) → the verb's variables
//! (4) → the configuration (7) → the verb's required fields (7: CHECK needs `prevResult`, GC
//! `cni.dev/valid-attachments`) → the agent.
//!
//! When the agent cannot be reached (no socket, refused, hung up, no reply in time):
//! - ADD, CHECK, GC → 11, try again later.
//! - DEL → 11 as well. Only the agent can release the address; answering success would make
//!   the runtime forget the attachment, and the address would wait for a GC or the agent's
//!   reconciliation instead. The runtime retries a failed DEL (kubelet keeps retrying the
//!   sandbox teardown), and the agent is a node-local daemon that is back within seconds. DEL
//!   of an attachment the agent does not know is its business and answers `ok` (exit 0).
//! - STATUS → 50: the plugin cannot serve ADD. An agent's 11 on STATUS (no quorum) becomes 50
//!   too, since STATUS reports only 50 or 51 for unavailability.

use std::io::{Read, Write};

use crate::client::{self, AgentTarget, ClientError};
use crate::config::{self, PluginConfig};
use crate::error::{CniError, code};
use crate::protocol::{AttachmentRequest, Call, GcRequest, Plugin, Reply, Request, StatusRequest};
use crate::spec::{self, Command, EnvSource, ProcessEnv};
use crate::version::{CniVersion, version_info};

/// Talks to the agent: the unix socket for the binaries, a fake in unit tests.
pub trait Transport {
    fn call(&self, target: &AgentTarget, request: &Request) -> Result<Reply, ClientError>;
}

/// The agent's unix socket.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnixTransport;

impl Transport for UnixTransport {
    fn call(&self, target: &AgentTarget, request: &Request) -> Result<Reply, ClientError> {
        client::call(target, request)
    }
}

/// What the process prints on stdout and its exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub exit_code: i32,
}

/// The binaries' `main`: process environment, stdin, stdout, the agent's socket.
pub fn main(plugin: Plugin) -> i32 {
    let outcome = run(plugin, &ProcessEnv, &mut std::io::stdin().lock(), &UnixTransport);
    let mut stdout = std::io::stdout().lock();
    // If stdout is gone the runtime is gone too; the exit status is all that is left to say.
    let _ = stdout.write_all(outcome.stdout.as_bytes()).and_then(|()| stdout.flush());
    outcome.exit_code
}

/// Runs one invocation.
pub fn run(plugin: Plugin, env: &dyn EnvSource, stdin: &mut dyn Read, transport: &dyn Transport) -> Outcome {
    let command = match spec::command(env) {
        Ok(command) => command,
        Err(e) => return failure(&e, None),
    };
    if command == Command::Version {
        // VERSION's stdin ({"cniVersion": …}) does not change the answer, so it is not read.
        return Outcome { stdout: version_info() + "\n", exit_code: 0 };
    }
    let mut version = None;
    match execute(plugin, command, env, stdin, transport, &mut version) {
        Ok(stdout) => Outcome { stdout, exit_code: 0 },
        Err(e) => failure(&e, version),
    }
}

fn failure(e: &CniError, version: Option<CniVersion>) -> Outcome {
    Outcome { stdout: e.to_json(version) + "\n", exit_code: 1 }
}

/// Everything after CNI_COMMAND. `version` is set as soon as the configuration's is known, so
/// the error JSON can carry it.
fn execute(
    plugin: Plugin,
    command: Command,
    env: &dyn EnvSource,
    stdin: &mut dyn Read,
    transport: &dyn Transport,
    version: &mut Option<CniVersion>,
) -> Result<String, CniError> {
    let mut input = Vec::new();
    stdin.read_to_end(&mut input).map_err(|e| CniError::Stdin { reason: e.to_string() })?;
    let raw = config::decode(&input)?;
    *version = Some(raw.version);
    check_verb_in_version(command, raw.version)?;
    let attachment = match command {
        Command::Add | Command::Del | Command::Check => Some(spec::attachment_env(command, env)?),
        Command::Status | Command::Gc | Command::Version => None,
    };
    let conf = raw.validate(plugin)?;

    let call = match attachment {
        Some(a) => {
            if command == Command::Check && conf.prev_result.is_none() {
                return Err(CniError::invalid_config("prevResult", "required for CHECK"));
            }
            let mut args = conf.args.clone();
            for ip in a.args.ips {
                if !args.ips.contains(&ip) {
                    args.ips.push(ip);
                }
            }
            let request = AttachmentRequest {
                container_id: a.container_id,
                ifname: a.ifname,
                netns: a.netns,
                k8s: a.args.k8s,
                network: conf.network(),
                runtime_config: conf.runtime_config.clone(),
                args,
                prev_result: conf.prev_result.clone(),
            };
            match command {
                Command::Add => Call::Add(request),
                Command::Del => Call::Del(request),
                _ => Call::Check(request),
            }
        }
        None if command == Command::Gc => {
            let Some(valid_attachments) = conf.valid_attachments.clone() else {
                // Sending an empty list instead would release every attachment of the network.
                return Err(CniError::invalid_config("cni.dev/valid-attachments", "required for GC"));
            };
            Call::Gc(GcRequest { network: conf.network(), valid_attachments })
        }
        None => Call::Status(StatusRequest { network: conf.network() }),
    };

    let reply = transport.call(&conf.agent, &Request::new(plugin, call)).map_err(|e| unreachable(command, &conf, e))?;
    match reply {
        Reply::Ok(result) if command == Command::Add => Ok(match plugin {
            Plugin::Bridge => result.to_json(conf.cni_version) + "\n",
            Plugin::Ipam => result.into_ipam_only().to_json(conf.cni_version) + "\n",
        }),
        Reply::Ok(_) => Ok(String::new()),
        Reply::Err(e) if command == Command::Status && e.code == code::TRY_AGAIN_LATER => {
            Err(CniError::NotAvailable { reason: e.msg })
        }
        Reply::Err(e) => Err(CniError::Agent { code: e.code, msg: e.msg, details: e.details }),
    }
}

fn check_verb_in_version(command: Command, version: CniVersion) -> Result<(), CniError> {
    let needs = match command {
        Command::Check if !version.has_check() => CniVersion::V0_4_0,
        Command::Status | Command::Gc if !version.has_gc_and_status() => CniVersion::V1_1_0,
        _ => return Ok(()),
    };
    Err(CniError::VerbNotInVersion { verb: command.as_str(), version, needs })
}

/// Maps a failed call to its CNI error (see the module documentation).
fn unreachable(command: Command, conf: &PluginConfig, e: ClientError) -> CniError {
    let socket = conf.agent.socket.clone();
    match (command, e) {
        (_, ClientError::Protocol(e)) => CniError::BadReply { reason: e.to_string() },
        (Command::Status, e) => {
            CniError::NotAvailable { reason: format!("hc-agent at {} does not answer: {e}", socket.display()) }
        }
        (_, ClientError::Timeout { timeout }) => CniError::AgentTimeout { socket, seconds: timeout.as_secs() },
        (_, e) => CniError::AgentUnreachable { socket, reason: e.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::ffi::OsString;
    use std::time::Duration;

    use serde_json::{Value, json};

    use super::*;
    use crate::protocol::AgentError;
    use crate::result::CniResult;

    /// Records requests and answers each with `reply`.
    struct FakeAgent {
        reply: Result<Reply, ClientError>,
        requests: RefCell<Vec<Request>>,
    }

    impl FakeAgent {
        fn answering(reply: Result<Reply, ClientError>) -> FakeAgent {
            FakeAgent { reply, requests: RefCell::new(Vec::new()) }
        }
    }

    impl Transport for FakeAgent {
        fn call(&self, _: &AgentTarget, request: &Request) -> Result<Reply, ClientError> {
            self.requests.borrow_mut().push(request.clone());
            self.reply.clone()
        }
    }

    fn env(vars: Vec<(&'static str, String)>) -> impl EnvSource {
        move |key: &str| vars.iter().find(|(k, _)| *k == key).map(|(_, v)| OsString::from(v))
    }

    fn attach_env(command: &str) -> impl EnvSource {
        env(vec![
            ("CNI_COMMAND", command.into()),
            ("CNI_CONTAINERID", "c1".into()),
            ("CNI_NETNS", "/var/run/netns/p1".into()),
            ("CNI_IFNAME", "eth0".into()),
            ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0".into()),
        ])
    }

    fn run_with(plugin: Plugin, env: &dyn EnvSource, config: Value, agent: &FakeAgent) -> (Outcome, Value) {
        let outcome = run(plugin, env, &mut config.to_string().as_bytes(), agent);
        let json =
            if outcome.stdout.is_empty() { Value::Null } else { serde_json::from_str(&outcome.stdout).expect("JSON") };
        (outcome, json)
    }

    fn result() -> CniResult {
        serde_json::from_value(json!({
            "interfaces":[{"name":"hcc1","mac":"5a:1e:0c:33:71:02"},{"name":"eth0","sandbox":"/var/run/netns/p1"}],
            "ips":[{"interface":1,"address":"10.1.0.7/24","gateway":"10.1.0.1"}],
            "routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1"}]
        }))
        .expect("result")
    }

    #[test]
    fn version_needs_no_stdin() {
        let agent = FakeAgent::answering(Err(ClientError::Connect { reason: "unused".into() }));
        let mut stdin: &[u8] = b"";
        let outcome = run(Plugin::Bridge, &env(vec![("CNI_COMMAND", "VERSION".into())]), &mut stdin, &agent);
        assert_eq!(outcome.exit_code, 0);
        assert_eq!(outcome.stdout, version_info() + "\n");
        assert!(agent.requests.borrow().is_empty());
    }

    #[test]
    fn add_prints_the_result_shaped_to_the_config_version() {
        let agent = FakeAgent::answering(Ok(Reply::Ok(result())));
        let config = json!({"cniVersion":"0.3.1","name":"hc","type":"hc-bridge","pool":"web"});
        let (outcome, out) = run_with(Plugin::Bridge, &attach_env("ADD"), config, &agent);
        assert_eq!(outcome.exit_code, 0, "{}", outcome.stdout);
        assert_eq!(out["cniVersion"], "0.3.1");
        assert_eq!(out["ips"][0]["version"], "4");
        let requests = agent.requests.borrow();
        let Call::Add(add) = &requests[0].call else { panic!("not an ADD: {:?}", requests[0]) };
        assert_eq!(add.k8s.as_ref().map(|k| k.pod.as_str()), Some("web-0"));
        assert_eq!(add.network.config.pool.as_deref(), Some("web"));
    }

    #[test]
    fn hcipam_prints_no_interfaces() {
        let agent = FakeAgent::answering(Ok(Reply::Ok(result())));
        let config = json!({"cniVersion":"1.0.0","name":"ref","type":"bridge","ipam":{"type":"hcipam"}});
        let (outcome, out) = run_with(Plugin::Ipam, &attach_env("ADD"), config, &agent);
        assert_eq!(outcome.exit_code, 0, "{}", outcome.stdout);
        assert_eq!(
            out,
            json!({"cniVersion":"1.0.0","ips":[{"address":"10.1.0.7/24","gateway":"10.1.0.1"}],
                   "routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1"}]})
        );
        assert_eq!(agent.requests.borrow()[0].plugin, Plugin::Ipam);
    }

    #[test]
    fn invalid_input_reaches_no_agent() {
        let cases: Vec<(Box<dyn EnvSource>, Value, u32)> = vec![
            (Box::new(attach_env("ADD")), json!({"name":"hc","type":"hc-bridge"}), 1),
            (Box::new(attach_env("ADD")), json!({"cniVersion":"9.9.9","name":"hc","type":"hc-bridge"}), 1),
            (Box::new(attach_env("CHECK")), json!({"cniVersion":"0.3.1","name":"hc","type":"hc-bridge"}), 1),
            (
                Box::new(env(vec![("CNI_COMMAND", "GC".into())])),
                json!({"cniVersion":"1.0.0","name":"hc","type":"hc-bridge"}),
                1,
            ),
            (
                Box::new(env(vec![("CNI_COMMAND", "ADD".into())])),
                json!({"cniVersion":"1.0.0","name":"hc","type":"hc-bridge"}),
                4,
            ),
            (Box::new(attach_env("ADD")), json!({"cniVersion":"1.0.0","name":"hc","type":"hc-bridge","mtu":1}), 7),
            (Box::new(attach_env("CHECK")), json!({"cniVersion":"1.0.0","name":"hc","type":"hc-bridge"}), 7),
            (
                Box::new(env(vec![("CNI_COMMAND", "GC".into())])),
                json!({"cniVersion":"1.1.0","name":"hc","type":"hc-bridge"}),
                7,
            ),
        ];
        for (env, config, want) in cases {
            let agent = FakeAgent::answering(Ok(Reply::Ok(CniResult::default())));
            let (outcome, out) = run_with(Plugin::Bridge, env.as_ref(), config.clone(), &agent);
            assert_eq!(outcome.exit_code, 1, "{config}");
            assert_eq!(out["code"], want, "{config}: {out}");
            assert!(agent.requests.borrow().is_empty(), "{config}: sent to the agent");
        }
        let agent = FakeAgent::answering(Ok(Reply::Ok(CniResult::default())));
        let mut stdin: &[u8] = b"{\"cniVersion\":";
        let outcome = run(Plugin::Bridge, &attach_env("ADD"), &mut stdin, &agent);
        assert!(outcome.stdout.contains("\"code\":6"), "{}", outcome.stdout);
        assert!(agent.requests.borrow().is_empty());
    }

    #[test]
    fn errors_carry_the_config_version_once_known() {
        let agent = FakeAgent::answering(Ok(Reply::Ok(CniResult::default())));
        let config = json!({"cniVersion":"0.4.0","name":"hc","type":"hc-bridge","vlan":0});
        let (_, out) = run_with(Plugin::Bridge, &attach_env("ADD"), config, &agent);
        assert_eq!(out["cniVersion"], "0.4.0");
        let (_, out) = run_with(Plugin::Bridge, &env(vec![]), json!({}), &agent);
        assert_eq!(out, json!({"cniVersion":"1.1.0","code":4,"msg":"CNI_COMMAND is not set"}));
    }

    #[test]
    fn unreachable_agent_codes_per_verb() {
        let config = json!({"cniVersion":"1.1.0","name":"hc","type":"hc-bridge","cni.dev/valid-attachments":[],
                            "prevResult":{"ips":[{"address":"10.1.0.7/24"}]}});
        let cases = [("ADD", 11), ("DEL", 11), ("CHECK", 11), ("GC", 11), ("STATUS", 50)];
        for failure in [
            ClientError::Connect { reason: "No such file or directory (os error 2)".into() },
            ClientError::Timeout { timeout: Duration::from_secs(3) },
            ClientError::Connection { reason: "hung up".into() },
        ] {
            for (verb, want) in cases {
                let agent = FakeAgent::answering(Err(failure.clone()));
                let (outcome, out) = run_with(Plugin::Bridge, &attach_env(verb), config.clone(), &agent);
                assert_eq!(outcome.exit_code, 1);
                assert_eq!(out["code"], want, "{verb} with {failure:?}: {out}");
            }
        }
    }

    #[test]
    fn agent_errors_pass_through_and_status_maps_try_again_to_not_available() {
        let exhausted = Reply::Err(AgentError::refused("pool web is exhausted: no free address left"));
        let agent = FakeAgent::answering(Ok(exhausted));
        let config = json!({"cniVersion":"1.0.0","name":"hc","type":"hc-bridge"});
        let (_, out) = run_with(Plugin::Bridge, &attach_env("ADD"), config, &agent);
        assert_eq!(out, json!({"cniVersion":"1.0.0","code":999,"msg":"pool web is exhausted: no free address left"}));

        let no_quorum = Reply::Err(AgentError::try_again_later("the allocator has no quorum"));
        let agent = FakeAgent::answering(Ok(no_quorum));
        let config = json!({"cniVersion":"1.1.0","name":"hc","type":"hc-bridge"});
        let (_, out) = run_with(Plugin::Bridge, &env(vec![("CNI_COMMAND", "STATUS".into())]), config.clone(), &agent);
        assert_eq!(out["code"], 50);
        let (_, out) = run_with(Plugin::Bridge, &attach_env("ADD"), config, &agent);
        assert_eq!(out["code"], 11);
    }

    #[test]
    fn del_check_gc_status_print_nothing_on_success() {
        let config = json!({"cniVersion":"1.1.0","name":"hc","type":"hc-bridge",
                            "cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}],
                            "prevResult":{"ips":[{"address":"10.1.0.7/24"}]}});
        for verb in ["DEL", "CHECK", "GC", "STATUS"] {
            let agent = FakeAgent::answering(Ok(Reply::Ok(CniResult::default())));
            let (outcome, _) = run_with(Plugin::Bridge, &attach_env(verb), config.clone(), &agent);
            assert_eq!(outcome, Outcome { stdout: String::new(), exit_code: 0 }, "{verb}");
            assert_eq!(agent.requests.borrow()[0].call.verb(), verb.to_ascii_lowercase());
        }
    }

    #[test]
    fn cni_args_ips_join_the_config_args() {
        let agent = FakeAgent::answering(Ok(Reply::Ok(result())));
        let e = env(vec![
            ("CNI_COMMAND", "ADD".into()),
            ("CNI_CONTAINERID", "c1".into()),
            ("CNI_NETNS", "/n".into()),
            ("CNI_IFNAME", "eth0".into()),
            ("CNI_ARGS", "IP=10.1.0.9,10.1.0.8".into()),
        ]);
        let config = json!({"cniVersion":"1.0.0","name":"hc","type":"hc-bridge","args":{"cni":{"ips":["10.1.0.8"]}}});
        let (outcome, _) = run_with(Plugin::Bridge, &e, config, &agent);
        assert_eq!(outcome.exit_code, 0, "{}", outcome.stdout);
        let requests = agent.requests.borrow();
        let Call::Add(add) = &requests[0].call else { panic!("not an ADD") };
        let ips: Vec<String> = add.args.ips.iter().map(ToString::to_string).collect();
        assert_eq!(ips, vec!["10.1.0.8", "10.1.0.9"]);
        assert_eq!(add.k8s, None);
    }
}
