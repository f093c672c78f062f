//! An agent restarted with pods running: no address changes, attachments intact, and the
//! lease token grew; an address released behind the agent's back is claimed back for its pod
//! after the restart. Run as root.

#[path = "../../allocator/tests/common/mod.rs"]
mod alloc;
mod common;
mod e2e;

use std::time::Duration;

use anyhow::Result;
use common::Netns;
use e2e::{Env, hc_bridge, pool};
use hc_agent::datapath::host_veth_name;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_addresses_and_attachments_and_grows_the_token() -> Result<()> {
    let mut env = Env::start(&[pool(json!({"name": "flat", "cidr": "10.97.0.0/24", "gateway": "10.97.0.1"}))]).await?;
    let (p1, p2) = (Netns::new()?, Netns::new()?);
    let a1 = hc_bridge(&env, "c1", &p1, "ADD", json!({"pool": "flat"}));
    a1.ok();
    let a2 = hc_bridge(&env, "c2", &p2, "ADD", json!({"pool": "flat"}));
    a2.ok();
    let token_before = env.agent.metric("hc_agent_lease_token").await.unwrap_or_default();
    let veths: Vec<_> =
        ["c1", "c2"].iter().map(|c| env.node.link(&host_veth_name(c, "eth0"))).collect::<Result<_>>()?;
    let held_before = env.allocations().await;

    env.agent.stop();
    env.agent.spawn();
    env.agent.wait_ready().await?;

    let token_after = env.agent.metric("hc_agent_lease_token").await.unwrap_or_default();
    assert!(token_after > token_before, "token {token_before} -> {token_after}");
    let veths_after: Vec<_> =
        ["c1", "c2"].iter().map(|c| env.node.link(&host_veth_name(c, "eth0"))).collect::<Result<_>>()?;
    assert_eq!(
        veths.iter().map(|l| l.as_ref().map(|l| l["ifindex"].clone())).collect::<Vec<_>>(),
        veths_after.iter().map(|l| l.as_ref().map(|l| l["ifindex"].clone())).collect::<Vec<_>>(),
        "attachments were rebuilt"
    );
    assert_eq!(p1.addresses("eth0")?, vec![a1.address()]);
    assert_eq!(p2.addresses("eth0")?, vec![a2.address()]);
    let held_after = env.allocations().await;
    assert_eq!(
        held_before.iter().map(|a| (a.address, a.owner.container_id.clone())).collect::<Vec<_>>(),
        held_after.iter().map(|a| (a.address, a.owner.container_id.clone())).collect::<Vec<_>>()
    );
    assert!(held_after.iter().all(|a| a.state == hc_api::types::AllocationState::Active));
    // The record answers a repeated ADD after the restart.
    let again = hc_bridge(&env, "c1", &p1, "ADD", json!({"pool": "flat"}));
    assert_eq!(again.json(), a1.json());
    let ip2 = a2.address().split('/').next().unwrap_or_default().to_owned();
    assert!(p1.reaches(&ip2, Duration::from_secs(10))?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_released_behind_the_agents_back_is_reclaimed_for_its_pod() -> Result<()> {
    let mut env = Env::start(&[pool(json!({"name": "flat", "cidr": "10.87.0.0/24", "gateway": "10.87.0.1"}))]).await?;
    let (p1, p2) = (Netns::new()?, Netns::new()?);
    let a1 = hc_bridge(&env, "c1", &p1, "ADD", json!({"pool": "flat"}));
    a1.ok();
    hc_bridge(&env, "c2", &p2, "ADD", json!({"pool": "flat"})).ok();
    let held_before = env.allocations().await;
    let ip1: std::net::IpAddr = a1.address().split('/').next().unwrap_or_default().parse()?;

    // While the agent is down, an operator releases c1's address (unfenced, by address).
    env.agent.stop();
    let released = env.cluster.client().release(None, hc_api::types::ReleaseTarget::Address(ip1)).await?;
    assert_eq!(released.released.len(), 1);
    assert_eq!(env.allocations().await.len(), 1);

    env.agent.spawn();
    env.agent.wait_ready().await?;
    let held_after = e2e::eventually(Duration::from_secs(10), "c1's address re-claimed", async || {
        let held = env.allocations().await;
        (held.len() == 2).then_some(held)
    })
    .await?;
    assert_eq!(
        held_before.iter().map(|a| (a.address, a.owner.container_id.clone())).collect::<Vec<_>>(),
        held_after.iter().map(|a| (a.address, a.owner.container_id.clone())).collect::<Vec<_>>(),
        "the pod did not get its own address back"
    );
    assert_eq!(p1.addresses("eth0")?, vec![a1.address()]);
    assert_eq!(env.agent.metric("hc_agent_reclaims_total{result=\"ok\"}").await, Some(1.0));
    Ok(())
}
