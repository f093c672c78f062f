//! A malformed configuration, an unknown pool, a VLAN mismatch, a pod namespace that is gone,
//! and an agent that is down: the right CNI error code and message, and nothing half-built
//! left behind (no interface, no allocation, no record). Run as root.

#[path = "../../allocator/tests/common/mod.rs"]
mod alloc;
mod common;
mod e2e;

use std::path::PathBuf;

use anyhow::Result;
use common::Netns;
use e2e::{Cni, Env, hc_bridge, pool, workspace_bin};
use hc_agent::datapath::host_veth_name;
use serde_json::json;

/// Nothing of container `cid` anywhere.
async fn nothing_left(env: &Env, cid: &str, pod: Option<&Netns>) -> Result<()> {
    assert!(env.node.link(&host_veth_name(cid, "eth0"))?.is_none(), "host veth of {cid} left behind");
    if let Some(pod) = pod {
        assert!(pod.link("eth0")?.is_none(), "eth0 of {cid} left behind");
    }
    assert!(env.allocations().await.iter().all(|a| a.owner.container_id != cid), "address of {cid} left allocated");
    assert!(hc_agent::store::recorded(&env.agent.state_dir)?.is_empty(), "record left behind");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_the_right_code_and_leave_nothing() -> Result<()> {
    let mut env = Env::start(&[pool(json!({"name": "flat", "cidr": "10.99.0.0/24", "gateway": "10.99.0.1"}))]).await?;
    let pod = Netns::new()?;

    // Malformed: not JSON (6), a field of the wrong type (7).
    let plugin = workspace_bin("hc-bridge");
    let path = pod.path();
    let cni = Cni { plugin: &plugin, container_id: "c1", netns: Some(&path), ifname: "eth0", args: "", path: None };
    let mut raw = std::process::Command::new(&plugin);
    raw.env_clear()
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "c1")
        .env("CNI_NETNS", &path)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/nonexistent");
    e2e::run_with_stdin(raw, "{\"cniVersion\":").error(6);
    let msg = cni.exec("ADD", &env.bridge_config(json!({"pool": "flat", "mtu": "big"}))).error(7);
    assert!(msg.contains("mtu"), "{msg}");
    nothing_left(&env, "c1", Some(&pod)).await?;

    // An unknown pool (7), named in the message.
    let msg = hc_bridge(&env, "c1", &pod, "ADD", json!({"pool": "nope"})).error(7);
    assert!(msg.contains("nope"), "{msg}");
    nothing_left(&env, "c1", Some(&pod)).await?;

    // A network pinned to a VLAN the pool is not on (7): the address is released again.
    let msg = hc_bridge(&env, "c1", &pod, "ADD", json!({"pool": "flat", "vlan": 200})).error(7);
    assert!(msg.contains("VLAN"), "{msg}");
    nothing_left(&env, "c1", Some(&pod)).await?;

    // The datapath fails (the pod's namespace is gone): the address is released before the answer.
    let gone = PathBuf::from(format!("/run/netns/{}-gone", pod.name));
    let cni_gone = Cni { netns: Some(&gone), ..cni };
    let out = cni_gone.exec("ADD", &env.bridge_config(json!({"pool": "flat"})));
    assert_ne!(out.status, 0, "{out:?}");
    nothing_left(&env, "c1", None).await?;

    // The agent is down: 11, and the message names the socket.
    env.agent.stop();
    let msg = hc_bridge(&env, "c1", &pod, "ADD", json!({"pool": "flat"})).error(11);
    assert!(msg.contains("agent") || msg.contains(&env.agent.socket.display().to_string()), "{msg}");
    let status = Cni { container_id: "", netns: None, ifname: "", ..cni }
        .exec("STATUS", &env.bridge_config(json!({"cniVersion": "1.1.0"})));
    assert_eq!(status.json()["code"], 50, "{status:?}");
    nothing_left(&env, "c1", Some(&pod)).await?;
    Ok(())
}
