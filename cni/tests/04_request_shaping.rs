//! What the plugins send to the agent, checked on the wire by the stand-in agent (a test
//! double; see `common`): the pod from CNI_ARGS, runtimeConfig, args, prevResult on CHECK and
//! DEL, valid attachments on GC, and which plugin asks.

mod common;

use common::{BRIDGE, IPAM, StandInAgent, attach_env, bridge_config, exec, ipam_config, network_env};
use hc_cni::protocol::{AgentError, Reply};
use hc_cni::result::CniResult;
use serde_json::json;

fn ok() -> Reply {
    Reply::Ok(CniResult::default())
}

#[test]
fn add_carries_pod_runtime_config_and_args() {
    let agent = StandInAgent::bind();
    let received = agent.answer_next(ok());
    let config = bridge_config(
        "1.0.0",
        &agent.socket,
        json!({
            "pool": "web", "vlan": 100, "mtu": 1500,
            "dns": {"nameservers": ["10.1.0.53"]},
            "capabilities": {"ips": true, "mac": true},
            "runtimeConfig": {"ips": ["10.1.0.7/24"], "mac": "02:42:0A:01:00:07", "portMappings": []},
            "args": {"cni": {"pool": "web-canary", "ips": ["10.1.0.8"]}, "labels": {"team": "shop"}}
        }),
    );
    let out = exec(BRIDGE, &attach_env("ADD", &[]), &config);
    assert_eq!(out.status, 0, "{out:?}");
    assert_eq!(
        received.request(),
        json!({
            "protocol": 1, "plugin": "hc-bridge", "verb": "add",
            "container_id": "3f6940ab5ab4", "ifname": "eth0", "netns": "/var/run/netns/cni-1234",
            "k8s": {"namespace": "shop", "pod": "web-0", "uid": "6f1c2a4e-4be1-4a5e-9d0e-2f3b5f0c9a11"},
            "network": {"name": "hc", "cni_version": "1.0.0",
                        "config": {"pool": "web", "vlan": 100, "mtu": 1500},
                        "dns": {"nameservers": ["10.1.0.53"]}},
            "runtime_config": {"ips": ["10.1.0.7"], "mac": "02:42:0a:01:00:07"},
            "args": {"pool": "web-canary", "ips": ["10.1.0.8"]}
        })
    );
}

#[test]
fn add_without_kubernetes_has_no_pod_and_takes_ip_from_cni_args() {
    let agent = StandInAgent::bind();
    let received = agent.answer_next(ok());
    let env = attach_env("ADD", &[("CNI_ARGS", "IP=10.1.0.9")]);
    let out = exec(BRIDGE, &env, &bridge_config("0.4.0", &agent.socket, json!({})));
    assert_eq!(out.status, 0, "{out:?}");
    let request = received.request();
    assert_eq!(request.get("k8s"), None);
    assert_eq!(request["args"], json!({"ips": ["10.1.0.9"]}));
    assert_eq!(request["network"], json!({"name": "hc", "cni_version": "0.4.0", "config": {}}));
}

#[test]
fn check_and_del_carry_the_prev_result_version_neutral() {
    let prev = json!({"prevResult": {
        "cniVersion": "0.4.0",
        "interfaces": [{"name": "hc3f6940ab5ab4"}, {"name": "eth0", "sandbox": "/var/run/netns/cni-1234"}],
        "ips": [{"version": "4", "interface": 1, "address": "10.1.0.7/24", "gateway": "10.1.0.1"}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}]
    }});
    let neutral = json!({
        "interfaces": [{"name": "hc3f6940ab5ab4"}, {"name": "eth0", "sandbox": "/var/run/netns/cni-1234"}],
        "ips": [{"interface": 1, "address": "10.1.0.7/24", "gateway": "10.1.0.1"}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}]
    });
    let agent = StandInAgent::bind();
    let config = bridge_config("0.4.0", &agent.socket, prev);

    let received = agent.answer_next(ok());
    exec(BRIDGE, &attach_env("CHECK", &[]), &config).expect_silent_success();
    let request = received.request();
    assert_eq!(request["verb"], "check");
    assert_eq!(request["prev_result"], neutral);

    // DEL without CNI_NETNS: the runtime may have removed the namespace already.
    let received = agent.answer_next(ok());
    exec(BRIDGE, &attach_env("DEL", &[("CNI_NETNS", "")]), &config).expect_silent_success();
    let request = received.request();
    assert_eq!(request["verb"], "del");
    assert_eq!(request.get("netns"), None);
    assert_eq!(request["prev_result"], neutral);
    assert_eq!(request["k8s"]["pod"], "web-0");
}

#[test]
fn gc_carries_the_valid_attachments() {
    let agent = StandInAgent::bind();
    let received = agent.answer_next(ok());
    let config = bridge_config(
        "1.1.0",
        &agent.socket,
        json!({"cni.dev/valid-attachments": [
            {"containerID": "3f6940ab5ab4", "ifname": "eth0"},
            {"containerID": "77aa01", "ifname": "net1"}
        ]}),
    );
    exec(BRIDGE, &network_env("GC"), &config).expect_silent_success();
    assert_eq!(
        received.request(),
        json!({
            "protocol": 1, "plugin": "hc-bridge", "verb": "gc",
            "network": {"name": "hc", "cni_version": "1.1.0", "config": {}},
            "valid_attachments": [
                {"container_id": "3f6940ab5ab4", "ifname": "eth0"},
                {"container_id": "77aa01", "ifname": "net1"}
            ]
        })
    );

    // An empty list is sent as such: the runtime has no attachments left on this network.
    let received = agent.answer_next(ok());
    let config = bridge_config("1.1.0", &agent.socket, json!({"cni.dev/valid-attachments": []}));
    exec(BRIDGE, &network_env("GC"), &config).expect_silent_success();
    assert_eq!(received.request()["valid_attachments"], json!([]));
}

#[test]
fn status_asks_the_agent_and_passes_its_verdict_on() {
    let agent = StandInAgent::bind();
    let config = bridge_config("1.1.0", &agent.socket, json!({"pool": "web"}));

    let received = agent.answer_next(ok());
    exec(BRIDGE, &network_env("STATUS"), &config).expect_silent_success();
    assert_eq!(
        received.request(),
        json!({"protocol": 1, "plugin": "hc-bridge", "verb": "status",
               "network": {"name": "hc", "cni_version": "1.1.0", "config": {"pool": "web"}}})
    );

    let no_lease = AgentError::not_available("hc-agent has no lease for node n1");
    let received = agent.answer_next(Reply::Err(no_lease));
    let err = exec(BRIDGE, &network_env("STATUS"), &config).expect_error(50);
    assert_eq!(err["msg"], "hc-agent has no lease for node n1");
    received.request();

    let uplink = AgentError::limited_connectivity("uplink eth1 is down");
    let received = agent.answer_next(Reply::Err(uplink));
    exec(BRIDGE, &network_env("STATUS"), &config).expect_error(51);
    received.request();

    // The allocator without quorum is "try again later" for ADD but "not available" for STATUS.
    let received = agent.answer_next(Reply::Err(AgentError::try_again_later("the allocator has no quorum")));
    exec(BRIDGE, &network_env("STATUS"), &config).expect_error(50);
    received.request();
}

#[test]
fn hcipam_asks_for_an_allocation_only() {
    let agent = StandInAgent::bind();
    let received = agent.answer_next(ok());
    let config =
        ipam_config("1.0.0", &agent.socket, json!({})).replace(r#""type":"hcipam""#, r#""type":"hcipam","pool":"web""#);
    let out = exec(IPAM, &attach_env("ADD", &[]), &config);
    assert_eq!(out.status, 0, "{out:?}");
    let request = received.request();
    assert_eq!(request["plugin"], "hcipam");
    assert_eq!(request["verb"], "add");
    assert_eq!(request["network"], json!({"name": "ref", "cni_version": "1.0.0", "config": {"pool": "web"}}));
    assert_eq!(request["k8s"]["namespace"], "shop");
}
