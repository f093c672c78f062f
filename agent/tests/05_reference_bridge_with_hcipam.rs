//! Debian's reference `bridge` plugin with `hcipam` as its IPAM gets its address from our
//! pool, and DEL releases it. The reference plugin runs in the test's node namespace (its
//! bridge is created there), like the agent's datapath. Needs `containernetworking-plugins`.
//! Run as root.

#[path = "../../allocator/tests/common/mod.rs"]
mod alloc;
mod common;
mod e2e;

use std::path::Path;
use std::process::Command;

use anyhow::Result;
use common::Netns;
use e2e::{Env, pool, run_with_stdin, workspace_bin};
use serde_json::{Value, json};

const REFERENCE_BRIDGE: &str = "/usr/lib/cni/bridge";

fn reference(env: &Env, verb: &str, cid: &str, pod: &Netns, config: &Value) -> e2e::Exec {
    let ours = workspace_bin("hcipam");
    let cni_path = format!("{}:/usr/lib/cni", ours.parent().unwrap_or(Path::new("/")).display());
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &env.node.name, REFERENCE_BRIDGE])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", verb)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", pod.path())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", cni_path);
    run_with_stdin(cmd, &config.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_bridge_gets_addresses_from_our_pool() -> Result<()> {
    assert!(
        Path::new(REFERENCE_BRIDGE).exists(),
        "{REFERENCE_BRIDGE} missing: apt-get install containernetworking-plugins"
    );
    let env = Env::start(&[pool(json!({"name": "ref", "cidr": "10.95.0.0/24", "gateway": "10.95.0.1"}))]).await?;
    let config = json!({"cniVersion": "1.0.0", "name": env.network, "type": "bridge", "bridge": "hcref0",
        "ipam": {"type": "hcipam", "pool": "ref", "agentSocket": env.agent.socket}});
    let (p1, p2) = (Netns::new()?, Netns::new()?);
    let a1 = reference(&env, "ADD", "r1", &p1, &config);
    a1.ok();
    let a2 = reference(&env, "ADD", "r2", &p2, &config);
    a2.ok();
    let (addr1, addr2) = (a1.address(), a2.address());
    assert!(addr1.starts_with("10.95.0.") && addr2.starts_with("10.95.0.") && addr1 != addr2, "{addr1} {addr2}");
    assert_eq!(p1.addresses("eth0")?, vec![addr1.clone()]);
    let held = env.allocations().await;
    assert_eq!(held.len(), 2);
    assert!(held.iter().all(|a| a.pool == "ref"));
    let ip2 = addr2.split('/').next().unwrap_or_default();
    assert!(p1.reaches(ip2, std::time::Duration::from_secs(10))?, "no traffic over the reference bridge");

    let mut with_prev = config.clone();
    with_prev["prevResult"] = a1.json();
    reference(&env, "DEL", "r1", &p1, &with_prev).ok();
    let held = env.allocations().await;
    assert_eq!(held.iter().map(|a| a.owner.container_id.as_str()).collect::<Vec<_>>(), vec!["r2"]);
    reference(&env, "DEL", "r1", &p1, &with_prev).ok();
    Ok(())
}
