//! `hcctl` end to end against a real 3-replica `hc-allocator` cluster (the allocator's test
//! harness, real processes and RocksDB): every noun through a follower, JSON output for
//! scripts, typed errors, and online membership changes (add a learner, promote, remove).
#![allow(clippy::unwrap_used)]

#[path = "../../allocator/tests/common/mod.rs"]
mod common;

use std::process::Output;
use std::time::Duration;

use common::Cluster;
use serde_json::Value;

fn hcctl(server: &str, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_hcctl")).arg("--server").arg(server).args(args).output().unwrap()
}

fn ok(server: &str, args: &[&str]) -> String {
    let out = hcctl(server, args);
    assert!(
        out.status.success(),
        "hcctl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(server: &str, args: &[&str]) -> Value {
    let mut a = vec!["-o", "json"];
    a.extend_from_slice(args);
    serde_json::from_str(&ok(server, &a)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hcctl_manages_pools_reservations_allocations_and_membership_through_any_replica() {
    let mut cluster = Cluster::start(3, &[]).await;
    let leader = cluster.leader_async(Duration::from_secs(10)).await;
    let follower = cluster.replicas[(leader + 1) % 3].rest.clone();
    let f = follower.as_str();

    ok(
        f,
        &[
            "pool",
            "create",
            "web",
            "--cidr",
            "10.90.0.0/24",
            "--gateway",
            "10.90.0.1",
            "--vlan",
            "120",
            "--route",
            "10.0.0.0/8",
        ],
    );
    let table = ok(f, &["pool", "list"]);
    assert!(table.contains("web") && table.contains("10.90.0.0/24") && table.contains("120"), "{table}");
    ok(f, &["vlan", "create", "120", "--name", "web"]);
    ok(f, &["reservation", "create", "prod/db/0", "--pool", "web", "--address", "10.90.0.50"]);
    let a = json(
        f,
        &[
            "allocation",
            "allocate",
            "--container-id",
            "c1",
            "--node",
            "n1",
            "--namespace",
            "prod",
            "--reservation-key",
            "prod/db/0",
        ],
    );
    assert_eq!(a["allocation"]["address"], "10.90.0.50", "{a}");
    let b = json(f, &["allocation", "allocate", "--container-id", "c2", "--node", "n1", "--pool", "web"]);
    assert_ne!(b["allocation"]["address"], "10.90.0.50");

    let pools = json(f, &["pool", "list"]);
    assert_eq!(pools[0]["used"], 2, "{pools}");
    let list = json(f, &["allocation", "list", "--pool", "web"]);
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");

    // Typed refusals: exit 1 and the error kind on stderr; nothing changes.
    let out = hcctl(f, &["pool", "create", "other", "--cidr", "10.90.0.128/25"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pool_overlap"), "{out:?}");
    let out = hcctl(f, &["pool", "delete", "web"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pool_in_use"), "{out:?}");

    ok(f, &["allocation", "release", "--container-id", "c1"]);
    ok(f, &["allocation", "release", b["allocation"]["address"].as_str().unwrap()]);
    let list = json(f, &["allocation", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 0, "{list}");
    ok(f, &["reservation", "delete", "prod/db/0"]);
    ok(f, &["pool", "delete", "web"]);
    assert_eq!(json(f, &["pool", "list"]).as_array().unwrap().len(), 0);

    // A snapshot on demand, on the replica that answers (long before the policy's 20,000 entries).
    let before = json(f, &["cluster", "status"]);
    let s = json(f, &["cluster", "snapshot"]);
    assert!(s["snapshot_index"].as_u64() >= before["applied_index"].as_u64(), "{s} after {before}");

    // Membership: a fourth replica joins as a learner, becomes a voter, and is removed.
    let i = cluster.add_unstarted();
    cluster.wait_healthy(i, Duration::from_secs(20)).await;
    let (id, grpc, rest) = {
        let r = &cluster.replicas[i];
        (r.id.to_string(), r.grpc.clone(), r.rest.clone())
    };
    ok(f, &["cluster", "add-learner", &id, "--grpc-addr", &grpc, "--rest-addr", &rest]);
    let s = json(f, &["cluster", "status"]);
    assert!(s["learners"].as_array().unwrap().iter().any(|v| v.to_string() == id), "{s}");
    ok(f, &["cluster", "promote", &id]);
    let s = json(f, &["cluster", "status"]);
    assert_eq!(s["voters"].as_array().unwrap().len(), 4, "{s}");
    // The new voter has the log: it answers with the same membership from its own state.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = json(&rest, &["cluster", "status"]);
        if s["voters"].as_array().is_some_and(|v| v.len() == 4) && s["applied_index"].as_u64().is_some() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "replica {id} did not catch up: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ok(f, &["cluster", "remove", &id]);
    let s = json(f, &["cluster", "status"]);
    assert_eq!(s["voters"].as_array().unwrap().len(), 3, "{s}");
    assert!(!s["members"].as_object().unwrap().contains_key(&id), "{s}");
}
