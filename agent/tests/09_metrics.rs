//! Observability: `/healthz`, `/readyz` (ready = a valid, reconciled lease), CNI latency by
//! verb and result, the lease gauge, and per-pod traffic from the host veth counters,
//! labelled by pod namespace and name. Run as root.

#[path = "../../allocator/tests/common/mod.rs"]
mod alloc;
mod common;
mod e2e;

use std::time::Duration;

use anyhow::Result;
use common::Netns;
use e2e::{AgentOpts, Cni, Env, eventually, pool, workspace_bin};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_per_pod_traffic() -> Result<()> {
    let pools = [pool(json!({"name": "flat", "cidr": "10.89.0.0/24", "gateway": "10.89.0.1"}))];
    let env = Env::start_with(&pools, AgentOpts { reconcile_ms: 200, ..AgentOpts::default() }).await?;
    env.agent.wait_ready().await?;
    assert_eq!(env.agent.get("/healthz").await.map(|r| r.0), Some(200));
    assert_eq!(env.agent.metric("hc_agent_lease_valid").await, Some(1.0));

    let plugin = workspace_bin("hc-bridge");
    let (p1, p2) = (Netns::new()?, Netns::new()?);
    let mut addresses = Vec::new();
    for (cid, pod, name) in [("c1", &p1, "web-0"), ("c2", &p2, "web-1")] {
        let path = pod.path();
        let args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME={name}");
        let cni =
            Cni { plugin: &plugin, container_id: cid, netns: Some(&path), ifname: "eth0", args: &args, path: None };
        let add = cni.exec("ADD", &env.bridge_config(json!({"pool": "flat"})));
        add.ok();
        addresses.push(add.address().split('/').next().unwrap_or_default().to_owned());
    }
    assert!(p1.reaches(&addresses[1], Duration::from_secs(10))?);

    let text = eventually(Duration::from_secs(10), "per-pod traffic exported", async || {
        let (_, text) = env.agent.get("/metrics").await?;
        text.lines()
            .any(|l| l.starts_with("hc_agent_pod_rx_bytes_total{") && l.contains("pod=\"web-0\"") && !l.ends_with(" 0"))
            .then_some(text)
    })
    .await?;
    for needle in [
        "hc_agent_cni_duration_seconds_bucket{verb=\"add\",result=\"ok\"",
        "hc_agent_pod_tx_packets_total{namespace=\"shop\",pod=\"web-1\"",
        "hc_agent_lease_token ",
        "hc_agent_attachments 2",
    ] {
        assert!(text.contains(needle), "{needle} missing from /metrics:\n{text}");
    }
    // Each ADD built its veth pair while its address was being committed.
    let prepared = text.lines().find(|l| {
        l.starts_with("hc_agent_cni_step_duration_seconds_count{") && l.contains("verb=\"ADD\",step=\"prepare\"")
    });
    assert_eq!(prepared.and_then(|l| l.rsplit(' ').next()), Some("2"), "{prepared:?} in /metrics:\n{text}");
    Ok(())
}
