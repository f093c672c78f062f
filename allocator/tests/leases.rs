//! Leases and fencing on a real 3-replica cluster: stale tokens are refused, a re-grant fences
//! the previous holder, keep-alives keep a lease without log writes, and an expired lease
//! quarantines the node's allocations until a reconcile or a node-gone releases them
//! (invariants 3 and 4).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::Cluster;
use hc_api::IpamError;
use hc_api::command::{Command, Output};
use hc_api::types::{
    AllocateRequest, AllocationState, AttachmentId, Fence, Lease, LeaseState, Owner, PoolSpec, ReleaseTarget,
};

fn owner(container: &str, node: &str) -> Owner {
    Owner {
        container_id: container.into(),
        interface: "eth0".into(),
        namespace: "ns".into(),
        pod: container.into(),
        node: node.into(),
    }
}

fn req(container: &str, node: &str) -> AllocateRequest {
    AllocateRequest { owner: owner(container, node), pool: Some("p".into()), ..Default::default() }
}

fn fence(l: &Lease) -> Option<Fence> {
    Some(Fence { node: l.node.clone(), token: l.token })
}

async fn lease_state(cluster: &Cluster, node: &str) -> Option<Lease> {
    let http = reqwest::Client::new();
    let (_, v) = common::rest(&http, reqwest::Method::GET, &cluster.replicas[0].rest, "/v1/leases", None).await;
    let leases: Vec<Lease> = serde_json::from_value(v).unwrap();
    leases.into_iter().find(|l| l.node == node)
}

async fn setup() -> Cluster {
    let cluster = Cluster::start(3, &["--lease-check-ms", "50"]).await;
    let spec: PoolSpec = serde_json::from_value(serde_json::json!({"name": "p", "cidr": "10.40.0.0/24"})).unwrap();
    cluster.client().propose(&Command::CreatePool(spec)).await.unwrap();
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_token_is_rejected_and_a_regrant_fences_the_previous_holder() {
    let cluster = setup().await;
    let client = cluster.client_via(1); // through a follower
    let first = client.grant_lease("node-a", Duration::from_secs(30)).await.unwrap();
    let a = client.allocate(fence(&first), req("c1", "node-a")).await.unwrap();

    let second = client.grant_lease("node-a", Duration::from_secs(30)).await.unwrap();
    assert!(second.token > first.token, "tokens only grow: {} then {}", first.token, second.token);

    // The old holder is fenced on every write path.
    let e = client.allocate(fence(&first), req("c2", "node-a")).await.unwrap_err();
    assert!(
        matches!(e, IpamError::StaleToken { presented, current, .. } if presented == first.token && current == second.token),
        "{e:?}"
    );
    let e = client
        .release(
            fence(&first),
            ReleaseTarget::Owner(AttachmentId { container_id: "c1".into(), interface: "eth0".into() }),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, IpamError::StaleToken { .. }), "{e:?}");
    let e = client
        .propose(&Command::Reconcile { fence: Fence { node: "node-a".into(), token: first.token }, valid: vec![] })
        .await
        .unwrap_err();
    assert!(matches!(e, IpamError::StaleToken { .. }), "{e:?}");
    let e = client.keep_alive(&first).await.unwrap_err();
    assert!(matches!(e, IpamError::StaleToken { .. }), "{e:?}");
    // Nothing was released by the stale writes.
    cluster.sync().await;
    let held = client.list_allocations_at(0, Some("p"), Some("node-a")).await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].address, a.allocation.address);

    // The new holder writes; a token for another node does not work for this one.
    client.allocate(fence(&second), req("c2", "node-a")).await.unwrap();
    let e = client.allocate(fence(&second), req("c3", "node-b")).await.unwrap_err();
    assert!(matches!(e, IpamError::InvalidArgument { .. } | IpamError::NoLease { .. }), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alives_hold_a_lease_and_write_nothing_to_the_log() {
    let cluster = setup().await;
    let client = cluster.client_via(2);
    let lease = client.grant_lease("node-k", Duration::from_millis(800)).await.unwrap();
    let leader = cluster.leader_async(Duration::from_secs(5)).await;
    // `status_at` takes an index into the client's endpoints; `client_via(2)` rotated them.
    let status = cluster.client();
    let before = status.status_at(leader).await.unwrap();
    let until = Instant::now() + Duration::from_secs(3);
    let mut renewals = 0;
    while Instant::now() < until {
        client.keep_alive(&lease).await.unwrap();
        renewals += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let after = status.status_at(leader).await.unwrap();
    assert_eq!(lease_state(&cluster, "node-k").await.unwrap().state, LeaseState::Active);
    let (entries, elections) = (after.committed - before.committed, after.term - before.term);
    println!(
        "{renewals} keep-alives over 3 s (TTL 800 ms): {entries} log entries committed meanwhile, {elections} new terms"
    );
    // A loaded host can miss heartbeats, and each new leader commits one blank entry; nothing else
    // may reach the log. Logged keep-alives would add one entry per renewal.
    assert!(
        entries <= elections,
        "keep-alives must not be written to the log: {entries} entries in {elections} new terms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_quarantines_allocations_until_reconcile_or_node_gone() {
    let cluster = setup().await;
    let client = cluster.client();
    let lease = client.grant_lease("node-q", Duration::from_millis(500)).await.unwrap();
    let kept = client.allocate(fence(&lease), req("keep", "node-q")).await.unwrap().allocation;
    let dropped = client.allocate(fence(&lease), req("drop", "node-q")).await.unwrap().allocation;

    // No keep-alives: the leader expires the lease.
    let deadline = Instant::now() + Duration::from_secs(10);
    while lease_state(&cluster, "node-q").await.unwrap().state != LeaseState::Expired {
        // (replica 0's view; it may lag the leader by a heartbeat)
        assert!(Instant::now() < deadline, "lease did not expire");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.sync().await;
    let held = client.list_allocations_at(1, Some("p"), Some("node-q")).await.unwrap();
    assert_eq!(held.len(), 2, "expiry must not free the node's addresses");
    assert!(held.iter().all(|a| a.state == AllocationState::Quarantined), "{held:?}");

    // Writes with the expired token are refused; nobody else can take a quarantined address.
    let e = client.allocate(fence(&lease), req("late", "node-q")).await.unwrap_err();
    assert!(matches!(e, IpamError::StaleToken { .. } | IpamError::NoLease { .. }), "{e:?}");
    let mut other = req("thief", "node-z");
    other.address = Some(kept.address);
    let e = client.allocate(None, other).await.unwrap_err();
    assert!(matches!(e, IpamError::AddressInUse { .. }), "{e:?}");

    // The agent comes back: re-grant and reconcile with what it still runs.
    let back = client.grant_lease("node-q", Duration::from_secs(30)).await.unwrap();
    assert!(back.token > lease.token);
    let out = client
        .propose(&Command::Reconcile {
            fence: Fence { node: "node-q".into(), token: back.token },
            valid: vec![AttachmentId { container_id: "keep".into(), interface: "eth0".into() }],
        })
        .await
        .unwrap();
    match out {
        Output::Reconciled { kept: n, released } => {
            assert_eq!(n, 1);
            assert_eq!(released, vec![dropped.address]);
        }
        other => panic!("unexpected {other:?}"),
    }
    cluster.sync().await;
    let held = client.list_allocations_at(2, Some("p"), Some("node-q")).await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].address, kept.address);
    assert_eq!(held[0].state, AllocationState::Active);

    // The operator declares the node gone: everything it held is released.
    client.propose(&Command::NodeGone { node: "node-q".into() }).await.unwrap();
    cluster.sync().await;
    let held = client.list_allocations_at(0, Some("p"), Some("node-q")).await.unwrap();
    assert!(held.is_empty(), "{held:?}");
    // Tokens stay monotonic across node-gone.
    let again = client.grant_lease("node-q", Duration::from_secs(30)).await.unwrap();
    assert!(again.token > back.token);
}
