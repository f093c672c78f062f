//! Self-healing: a pod port detached from its bridge, and the bridge set down, are repaired
//! by the periodic reconcile; the test prints each repair time and checks the repairs are
//! counted in `hc_agent_repairs_total`. Run as root.

#[path = "../../allocator/tests/common/mod.rs"]
mod alloc;
mod common;
mod e2e;

use std::time::{Duration, Instant};

use anyhow::Result;
use common::Netns;
use e2e::{AgentOpts, Env, eventually, hc_bridge, pool};
use hc_agent::datapath::host_veth_name;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detached_port_and_downed_bridge_are_repaired() -> Result<()> {
    let pools = [pool(json!({"name": "flat", "cidr": "10.90.0.0/24", "gateway": "10.90.0.1"}))];
    let env = Env::start_with(&pools, AgentOpts { reconcile_ms: 200, ..AgentOpts::default() }).await?;
    env.agent.wait_ready().await?;
    let (p1, p2) = (Netns::new()?, Netns::new()?);
    hc_bridge(&env, "c1", &p1, "ADD", json!({"pool": "flat"})).ok();
    let a2 = hc_bridge(&env, "c2", &p2, "ADD", json!({"pool": "flat"}));
    a2.ok();
    let ip2 = a2.address().split('/').next().unwrap_or_default().to_owned();
    let veth = host_veth_name("c1", "eth0");

    // A port off its bridge.
    env.node.ip(&["link", "set", &veth, "nomaster"])?;
    let cut = Instant::now();
    eventually(Duration::from_secs(10), "port back on br0", async || {
        let link = env.node.link(&veth).ok()??;
        (link["master"] == "br0").then_some(())
    })
    .await?;
    let port_repair = cut.elapsed();

    // The bridge down.
    env.node.ip(&["link", "set", "br0", "down"])?;
    let cut = Instant::now();
    eventually(Duration::from_secs(10), "br0 up again", async || {
        let link = env.node.link("br0").ok()??;
        link["flags"].as_array()?.iter().any(|f| f == "UP").then_some(())
    })
    .await?;
    let bridge_repair = cut.elapsed();
    assert!(p1.reaches(&ip2, Duration::from_secs(10))?, "pods cannot talk after the repairs");

    let repairs = eventually(Duration::from_secs(5), "repairs counted", async || {
        let (_, text) = env.agent.get("/metrics").await?;
        let n: f64 = text
            .lines()
            .filter(|l| l.starts_with("hc_agent_repairs_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        (n >= 2.0).then_some(n)
    })
    .await?;
    eprintln!(
        "self-healing (reconcile every 200 ms): port re-attached after {port_repair:?}, bridge up after \
         {bridge_repair:?}; {repairs} repairs counted"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphaned_ports_are_removed_and_addresses_reannounced_when_the_uplink_returns() -> Result<()> {
    let pools = [pool(json!({"name": "flat", "cidr": "10.88.0.0/24", "gateway": "10.88.0.1"}))];
    let opts = AgentOpts { reconcile_ms: 200, uplink: true, ..AgentOpts::default() };
    let env = Env::start_with(&pools, opts).await?;
    env.agent.wait_ready().await?;
    let pod = Netns::new()?;
    hc_bridge(&env, "c1", &pod, "ADD", json!({"pool": "flat"})).ok();

    // A port of our naming that no attachment owns (an ADD that crashed before its record).
    env.node.ip(&["link", "add", "hc0123456789a", "type", "veth", "peer", "name", "orphanpeer"])?;
    eventually(Duration::from_secs(10), "orphan removed", async || {
        env.node.link("hc0123456789a").ok()?.is_none().then_some(())
    })
    .await?;
    assert!(env.node.link(&host_veth_name("c1", "eth0"))?.is_some(), "a recorded port was removed");

    // Failover: the switch side goes away and comes back.
    let announced = async || env.agent.metric("hc_agent_announcements_total").await.unwrap_or_default();
    let before = announced().await;
    env.node.ip(&["link", "set", "up0sw", "down"])?;
    eventually(Duration::from_secs(10), "uplink seen down", async || {
        let l = env.node.link("up0").ok()??;
        (l["operstate"] != "UP").then_some(())
    })
    .await?;
    // The agent has seen it down.
    eventually(Duration::from_secs(5), "agent sees the uplink down", async || {
        (env.agent.metric("hc_agent_uplink_up").await? == 0.0).then_some(())
    })
    .await?;
    env.node.ip(&["link", "set", "up0sw", "up"])?;
    let up = Instant::now();
    let after = eventually(Duration::from_secs(10), "addresses re-announced", async || {
        let n = announced().await;
        (n > before).then_some(n)
    })
    .await?;
    eprintln!("failover: {} frames re-announced {:?} after the uplink came back", after - before, up.elapsed());
    Ok(())
}
