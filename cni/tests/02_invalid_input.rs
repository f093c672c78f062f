//! Invalid input gets the right CNI error code and message, and nothing reaches the agent: a
//! stand-in agent listens on the configured socket and must see no connection.

mod common;

use common::{BRIDGE, IPAM, StandInAgent, attach_env, bridge_config, exec, ipam_config, network_env};
use serde_json::json;

#[test]
fn malformed_json_is_code_6() {
    let agent = StandInAgent::bind();
    for stdin in ["", "{\"cniVersion\":", "not json", "[1,2,3]"] {
        let out = exec(BRIDGE, &attach_env("ADD", &[]), stdin);
        out.expect_error(6);
    }
    agent.assert_nothing_sent();
}

#[test]
fn missing_or_unsupported_version_is_code_1() {
    let agent = StandInAgent::bind();
    let socket = agent.socket.to_string_lossy().to_string();
    let no_version = json!({"name":"hc","type":"hc-bridge","agentSocket":socket}).to_string();
    let out = exec(BRIDGE, &attach_env("ADD", &[]), &no_version);
    assert!(out.expect_error(1)["msg"].as_str().is_some_and(|m| m.contains("cniVersion")), "{out:?}");
    for version in ["0.1.0", "0.2.0", "1.2.0", "latest"] {
        exec(BRIDGE, &attach_env("ADD", &[]), &bridge_config(version, &agent.socket, json!({}))).expect_error(1);
    }
    agent.assert_nothing_sent();
}

#[test]
fn verbs_newer_than_the_config_version_are_code_1() {
    let agent = StandInAgent::bind();
    let prev = json!({"prevResult": {"ips": [{"version": "4", "address": "10.1.0.7/24"}]}});
    let out = exec(BRIDGE, &attach_env("CHECK", &[]), &bridge_config("0.3.1", &agent.socket, prev));
    out.expect_error(1);
    for verb in ["GC", "STATUS"] {
        let config = bridge_config("1.0.0", &agent.socket, json!({"cni.dev/valid-attachments": []}));
        let out = exec(BRIDGE, &network_env(verb), &config);
        assert!(out.expect_error(1)["msg"].as_str().is_some_and(|m| m.contains("1.1.0")), "{out:?}");
    }
    agent.assert_nothing_sent();
}

#[test]
fn missing_or_bad_environment_is_code_4_naming_the_variable() {
    let agent = StandInAgent::bind();
    let config = bridge_config("1.0.0", &agent.socket, json!({}));
    // (verb, environment changes, the variable the message must name)
    type Case = (&'static str, &'static [(&'static str, &'static str)], &'static str);
    let cases: [Case; 7] = [
        ("ADD", &[("CNI_IFNAME", "")], "CNI_IFNAME"),
        ("ADD", &[("CNI_NETNS", "")], "CNI_NETNS"),
        ("DEL", &[("CNI_CONTAINERID", "")], "CNI_CONTAINERID"),
        ("CHECK", &[("CNI_NETNS", "")], "CNI_NETNS"),
        ("ADD", &[("CNI_IFNAME", "this-is-too-long0")], "CNI_IFNAME"),
        ("ADD", &[("CNI_ARGS", "K8S_POD_NAME=web-0;K8S_POD_NAMESPACE=shop;FOO=1")], "CNI_ARGS"),
        // (K8S_POD_NAME alone is podman's way and accepted; a namespace alone is not.)
        ("ADD", &[("CNI_ARGS", "K8S_POD_NAMESPACE=shop")], "CNI_ARGS"),
    ];
    for (verb, changes, var) in cases {
        let out = exec(BRIDGE, &attach_env(verb, changes), &config);
        let err = out.expect_error(4);
        assert!(err["msg"].as_str().is_some_and(|m| m.contains(var)), "{verb} {changes:?}: {err}");
    }
    for command in ["", "add", "TELEPORT"] {
        let out = exec(BRIDGE, &attach_env(command, &[]), &config);
        assert!(out.expect_error(4)["msg"].as_str().is_some_and(|m| m.contains("CNI_COMMAND")), "{out:?}");
    }
    agent.assert_nothing_sent();
}

#[test]
fn invalid_fields_are_code_7_naming_the_field() {
    let agent = StandInAgent::bind();
    let cases = [
        (json!({"mtu": 70000}), "mtu"),
        (json!({"mtu": "1500"}), "mtu"),
        (json!({"vlan": 4095}), "vlan"),
        (json!({"vlan": 0}), "vlan"),
        (json!({"pool": "Web_Pool"}), "pool"),
        (json!({"vlanid": 100}), "vlanid"),
        (json!({"ipam": {"type": "host-local"}}), "ipam"),
        (json!({"runtimeConfig": {"mac": "ff:ff:ff:ff:ff:ff"}}), "runtimeConfig.mac"),
        (json!({"runtimeConfig": {"ips": ["10.1.0.300"]}}), "runtimeConfig.ips[0]"),
        (json!({"args": {"cni": {"pool": "no such!"}}}), "args.cni.pool"),
        (json!({"name": "-bad-name"}), "name"),
        (json!({"timeoutSeconds": 0}), "timeoutSeconds"),
    ];
    for (extra, field) in cases {
        let out = exec(BRIDGE, &attach_env("ADD", &[]), &bridge_config("1.0.0", &agent.socket, extra.clone()));
        let err = out.expect_error(7);
        assert!(err["msg"].as_str().is_some_and(|m| m.contains(field)), "{extra}: {err}");
        assert_eq!(err["cniVersion"], "1.0.0", "errors carry the config's version");
    }
    agent.assert_nothing_sent();
}

#[test]
fn check_without_prev_result_and_gc_without_attachments_are_code_7() {
    let agent = StandInAgent::bind();
    let config = bridge_config("1.1.0", &agent.socket, json!({}));
    let out = exec(BRIDGE, &attach_env("CHECK", &[]), &config);
    assert!(out.expect_error(7)["msg"].as_str().is_some_and(|m| m.contains("prevResult")));
    // An empty list would release every attachment of the network: a missing one is refused.
    let out = exec(BRIDGE, &network_env("GC"), &config);
    assert!(out.expect_error(7)["msg"].as_str().is_some_and(|m| m.contains("cni.dev/valid-attachments")));
    agent.assert_nothing_sent();
}

#[test]
fn hcipam_checks_its_ipam_section() {
    let agent = StandInAgent::bind();
    let typo =
        ipam_config("1.0.0", &agent.socket, json!({})).replace(r#""type":"hcipam""#, r#""type":"hcipam","pol":"web""#);
    let err = exec(IPAM, &attach_env("ADD", &[]), &typo).expect_error(7);
    assert!(err["msg"].as_str().is_some_and(|m| m.contains("ipam.pol")), "{err}");
    let vlan =
        ipam_config("1.0.0", &agent.socket, json!({})).replace(r#""type":"hcipam""#, r#""type":"hcipam","vlan":100"#);
    exec(IPAM, &attach_env("ADD", &[]), &vlan).expect_error(7);
    exec(IPAM, &attach_env("ADD", &[]), r#"{"cniVersion":"1.0.0","name":"ref","type":"bridge"}"#).expect_error(7);
    agent.assert_nothing_sent();
}
