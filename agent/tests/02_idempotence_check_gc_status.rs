//! ADD repeated for the same container and interface returns the same address and builds
//! nothing twice; CHECK finds a removed address; GC releases exactly the attachments missing
//! from `cni.dev/valid-attachments`; STATUS fails while the agent has no lease and while the
//! network's pool is exhausted. Run as root.

#[path = "../../allocator/tests/common/mod.rs"]
mod alloc;
mod common;
mod e2e;

use anyhow::Result;
use common::Netns;
use e2e::{AgentOpts, Cni, Env, hc_bridge, pool, workspace_bin};
use hc_agent::datapath::host_veth_name;
use serde_json::{Value, json};

fn no_self_healing() -> AgentOpts {
    // CHECK must see the drift the test makes before the reconciler repairs it.
    AgentOpts { reconcile_ms: 600_000, link_events: false, ..AgentOpts::default() }
}

async fn started(pools: &[hc_api::types::PoolSpec]) -> Result<Env> {
    let env = Env::start_with(pools, no_self_healing()).await?;
    env.agent.wait_ready().await?;
    Ok(env)
}

fn flat() -> hc_api::types::PoolSpec {
    pool(json!({"name": "flat", "cidr": "10.93.0.0/24", "gateway": "10.93.0.1"}))
}

/// A verb that needs no container (STATUS, GC).
fn network_call(env: &Env, verb: &str, config: Value) -> e2e::Exec {
    let plugin = workspace_bin("hc-bridge");
    Cni { plugin: &plugin, container_id: "", netns: None, ifname: "", args: "", path: None }
        .exec(verb, &env.bridge_config(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_add_returns_the_same_result_and_builds_nothing_twice() -> Result<()> {
    let env = started(&[flat()]).await?;
    let pod = Netns::new()?;
    let first = hc_bridge(&env, "c1", &pod, "ADD", json!({"pool": "flat"}));
    first.ok();
    let veth = host_veth_name("c1", "eth0");
    let index = env.node.link(&veth)?.map(|l| l["ifindex"].clone());
    let pod_index = pod.link("eth0")?.map(|l| l["ifindex"].clone());
    let again = hc_bridge(&env, "c1", &pod, "ADD", json!({"pool": "flat"}));
    again.ok();
    assert_eq!(again.json(), first.json());
    assert_eq!(env.node.link(&veth)?.map(|l| l["ifindex"].clone()), index, "host veth rebuilt");
    assert_eq!(pod.link("eth0")?.map(|l| l["ifindex"].clone()), pod_index, "pod interface rebuilt");
    assert_eq!(env.allocations().await.len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_finds_a_removed_address() -> Result<()> {
    let env = started(&[flat()]).await?;
    let pod = Netns::new()?;
    let add = hc_bridge(&env, "c1", &pod, "ADD", json!({"pool": "flat"}));
    add.ok();
    let with_prev = json!({"pool": "flat", "prevResult": add.json()});
    hc_bridge(&env, "c1", &pod, "CHECK", with_prev.clone()).ok();
    let address = add.address();
    pod.ip(&["addr", "del", &address, "dev", "eth0"])?;
    let msg = hc_bridge(&env, "c1", &pod, "CHECK", with_prev.clone()).error(999);
    assert!(msg.contains(address.split('/').next().unwrap_or_default()), "{msg}");
    // CHECK of an attachment whose address the allocator no longer gives it.
    let pod2 = Netns::new()?;
    let add2 = hc_bridge(&env, "c2", &pod2, "ADD", json!({"pool": "flat"}));
    add2.ok();
    let ip2: std::net::IpAddr = add2.address().split('/').next().unwrap_or_default().parse()?;
    env.cluster.client().release(None, hc_api::types::ReleaseTarget::Address(ip2)).await?;
    let msg = hc_bridge(&env, "c2", &pod2, "CHECK", json!({"pool": "flat", "prevResult": add2.json()})).error(999);
    assert!(msg.contains("no longer allocated"), "{msg}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_releases_exactly_the_attachments_not_listed() -> Result<()> {
    let env = started(&[flat()]).await?;
    let pods = [Netns::new()?, Netns::new()?, Netns::new()?];
    let mut addresses = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        let add = hc_bridge(&env, &format!("c{i}"), pod, "ADD", json!({"pool": "flat"}));
        add.ok();
        addresses.push(add.address());
    }
    let gc = json!({"cniVersion": "1.1.0", "pool": "flat",
        "cni.dev/valid-attachments": [{"containerID": "c0", "ifname": "eth0"}, {"containerID": "c2", "ifname": "eth0"}]});
    network_call(&env, "GC", gc.clone()).ok();
    let held: Vec<String> = env.allocations().await.iter().map(|a| a.owner.container_id.clone()).collect();
    let mut held_sorted = held.clone();
    held_sorted.sort();
    assert_eq!(held_sorted, vec!["c0", "c2"]);
    assert!(env.node.link(&host_veth_name("c1", "eth0"))?.is_none(), "GC left c1's veth");
    assert!(env.node.link(&host_veth_name("c0", "eth0"))?.is_some());
    // Repeated: nothing more to do.
    network_call(&env, "GC", gc).ok();
    assert_eq!(env.allocations().await.len(), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_fails_while_the_pool_is_exhausted() -> Result<()> {
    // A /30 with its gateway: one address to hand out.
    let env = started(&[pool(json!({"name": "tiny", "cidr": "10.94.0.0/30", "gateway": "10.94.0.1"}))]).await?;
    let v11 = json!({"cniVersion": "1.1.0", "pool": "tiny"});
    network_call(&env, "STATUS", v11.clone()).ok();
    let (p1, p2) = (Netns::new()?, Netns::new()?);
    hc_bridge(&env, "c1", &p1, "ADD", v11.clone()).ok();
    // The agent asks the allocator: exhausted before any ADD has failed.
    let msg = network_call(&env, "STATUS", v11.clone()).error(50);
    assert!(msg.contains("exhausted") && msg.contains("tiny (1 of 1 used)"), "{msg}");
    let msg = hc_bridge(&env, "c2", &p2, "ADD", v11.clone()).error(999);
    assert!(msg.contains("exhausted"), "{msg}");
    assert!(p2.link("eth0")?.is_none(), "a refused ADD left an interface");
    let msg = network_call(&env, "STATUS", v11.clone()).error(50);
    assert!(msg.contains("exhausted"), "{msg}");
    hc_bridge(&env, "c1", &p1, "DEL", v11.clone()).ok();
    network_call(&env, "STATUS", v11).ok();
    // Filled behind this agent's back (another node, an operator): seen too.
    let other = hc_api::types::AllocateRequest {
        owner: hc_api::types::Owner { container_id: "elsewhere".into(), node: "n9".into(), ..Default::default() },
        pool: Some("tiny".into()),
        ..Default::default()
    };
    env.cluster.client().allocate(None, other).await?;
    let msg = network_call(&env, "STATUS", json!({"cniVersion": "1.1.0", "pool": "tiny"})).error(50);
    assert!(msg.contains("exhausted"), "{msg}");
    // A network naming a pool that does not exist.
    let msg = network_call(&env, "STATUS", json!({"cniVersion": "1.1.0", "pool": "nope"})).error(50);
    assert!(msg.contains("nope"), "{msg}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_lease_status_fails_and_add_asks_to_retry() -> Result<()> {
    // The agent is pointed at a socket that is bound but never listens: connecting is refused,
    // and while it is held no allocator of a test running beside this one can take its port.
    let held = tokio::net::TcpSocket::new_v4()?;
    held.bind("127.0.0.1:0".parse()?)?;
    let dead = held.local_addr()?.to_string();
    let env = Env::start_with(&[flat()], AgentOpts { allocators: Some(vec![dead]), ..AgentOpts::default() }).await?;
    let v11 = json!({"cniVersion": "1.1.0", "pool": "flat"});
    let msg = network_call(&env, "STATUS", v11.clone()).error(50);
    assert!(msg.contains("lease"), "{msg}");
    let pod = Netns::new()?;
    hc_bridge(&env, "c1", &pod, "ADD", v11).error(11);
    assert!(pod.link("eth0")?.is_none());
    assert!(!env.agent.ready().await);
    drop(held);
    Ok(())
}
