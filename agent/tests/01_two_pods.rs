//! Two pods on one node in an untagged pool reach each other through the bridge; DEL removes
//! the veths and releases the addresses; a second DEL succeeds. Run as root.

#[path = "../../allocator/tests/common/mod.rs"]
mod alloc;
mod common;
mod e2e;

use std::time::{Duration, Instant};

use anyhow::Result;
use common::Netns;
use e2e::{Env, hc_bridge, pool};
use hc_agent::datapath::host_veth_name;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pods_reach_each_other_and_del_releases() -> Result<()> {
    let env = Env::start(&[pool(json!({"name": "flat", "cidr": "10.91.0.0/24", "gateway": "10.91.0.1"}))]).await?;
    let (p1, p2) = (Netns::new()?, Netns::new()?);
    let cfg = json!({"pool": "flat"});

    let started = Instant::now();
    let a1 = hc_bridge(&env, "c1", &p1, "ADD", cfg.clone());
    a1.ok();
    let first_add = started.elapsed();
    let started = Instant::now();
    let a2 = hc_bridge(&env, "c2", &p2, "ADD", cfg.clone());
    a2.ok();
    let second_add = started.elapsed();
    let (addr1, addr2) = (a1.address(), a2.address());
    assert_ne!(addr1, addr2);
    assert!(addr1.starts_with("10.91.0.") && addr1.ends_with("/24"), "{addr1}");
    assert_eq!(a1.json()["ips"][0]["gateway"], "10.91.0.1");
    assert_eq!(p1.addresses("eth0")?, vec![addr1.clone()]);
    assert!(p1.routes()?.iter().any(|r| r.contains("default via 10.91.0.1")), "{:?}", p1.routes()?);

    let ip2 = addr2.split('/').next().unwrap_or_default();
    assert!(p1.reaches(ip2, Duration::from_secs(10))?, "pod 1 cannot reach pod 2 at {ip2}");
    assert_eq!(env.allocations().await.len(), 2);

    let started = Instant::now();
    for (cid, pod) in [("c1", &p1), ("c2", &p2)] {
        hc_bridge(&env, cid, pod, "DEL", cfg.clone()).ok();
        assert!(env.node.link(&host_veth_name(cid, "eth0"))?.is_none(), "host veth of {cid} left behind");
        assert!(pod.link("eth0")?.is_none(), "eth0 of {cid} left behind");
    }
    let dels = started.elapsed();
    assert!(env.allocations().await.is_empty(), "addresses not released: {:?}", env.allocations().await);
    eprintln!("exec'd hc-bridge ADD: first {first_add:?} (bridge created), second {second_add:?}; two DELs {dels:?}");
    // DEL is idempotent: nothing left to delete is success.
    hc_bridge(&env, "c1", &p1, "DEL", cfg.clone()).ok();
    assert!(hc_agent::store::recorded(&env.agent.state_dir)?.is_empty(), "record left behind");
    Ok(())
}
