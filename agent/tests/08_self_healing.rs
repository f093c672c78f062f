//! Self-healing: a pod port detached from its bridge, and the bridge set down, are repaired —
//! once on the kernel's link events alone (the periodic reconcile set to a minute, longer than
//! the test waits) and once by the periodic reconcile alone (events off); each case prints its
//! repair times and checks the repairs are counted in `hc_agent_repairs_total`. While the
//! uplink is down STATUS answers 51. Run as root.

#[path = "../../allocator/tests/common/mod.rs"]
mod alloc;
mod common;
mod e2e;

use std::time::{Duration, Instant};

use anyhow::Result;
use common::Netns;
use e2e::{AgentOpts, Cni, Env, eventually, hc_bridge, pool, workspace_bin};
use hc_agent::datapath::host_veth_name;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_events_repair_a_detached_port_and_a_downed_bridge() -> Result<()> {
    // The periodic pass runs at start and then not for a minute: what is repaired within the
    // 10 s the test waits was repaired on a link event.
    let opts = AgentOpts { reconcile_ms: 60_000, ..AgentOpts::default() };
    detached_port_and_downed_bridge_are_repaired(opts, "10.90.0", "link events only").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_reconcile_repairs_a_detached_port_and_a_downed_bridge() -> Result<()> {
    let opts = AgentOpts { reconcile_ms: 200, link_events: false, ..AgentOpts::default() };
    detached_port_and_downed_bridge_are_repaired(opts, "10.91.0", "periodic reconcile every 200 ms only").await
}

async fn detached_port_and_downed_bridge_are_repaired(opts: AgentOpts, net: &str, how: &str) -> Result<()> {
    let pools = [pool(json!({"name": "flat", "cidr": format!("{net}.0/24"), "gateway": format!("{net}.1")}))];
    let env = Env::start_with(&pools, opts).await?;
    env.agent.wait_ready().await?;
    let (p1, p2) = (Netns::new()?, Netns::new()?);
    hc_bridge(&env, "c1", &p1, "ADD", json!({"pool": "flat"})).ok();
    let a2 = hc_bridge(&env, "c2", &p2, "ADD", json!({"pool": "flat"}));
    a2.ok();
    let ip2 = a2.address().split('/').next().unwrap_or_default().to_owned();
    let veth = host_veth_name("c1", "eth0");
    // Past the start-up pass, so that it cannot be what repairs.
    tokio::time::sleep(Duration::from_millis(500)).await;

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
        "self-healing ({how}): port re-attached after {port_repair:?}, bridge up after {bridge_repair:?}; \
         {repairs} repairs counted"
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
    // The agent has seen it down; STATUS says running pods are cut off too.
    eventually(Duration::from_secs(5), "agent sees the uplink down", async || {
        (env.agent.metric("hc_agent_uplink_up").await? == 0.0).then_some(())
    })
    .await?;
    let msg = network_call(&env, "STATUS").error(51);
    assert!(msg.contains("up0"), "{msg}");
    env.node.ip(&["link", "set", "up0sw", "up"])?;
    let up = Instant::now();
    let after = eventually(Duration::from_secs(10), "addresses re-announced", async || {
        let n = announced().await;
        (n > before).then_some(n)
    })
    .await?;
    eprintln!("failover: {} frames re-announced {:?} after the uplink came back", after - before, up.elapsed());
    network_call(&env, "STATUS").ok();
    Ok(())
}

/// STATUS on the environment's network, with the pool the tests use.
fn network_call(env: &Env, verb: &str) -> e2e::Exec {
    let plugin = workspace_bin("hc-bridge");
    Cni { plugin: &plugin, container_id: "", netns: None, ifname: "", args: "", path: None }
        .exec(verb, &env.bridge_config(json!({"cniVersion": "1.1.0", "pool": "flat"})))
}
