//! The REST API of a real single-replica `hc-allocator` (the README's `--dev` mode, on free
//! ports): bad input is refused with a clear error and changes nothing; reservations hold;
//! data survives a restart.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

struct Dev {
    child: Child,
    rest: String,
    grpc: String,
    dir: tempfile::TempDir,
}

impl Dev {
    async fn start(dir: Option<tempfile::TempDir>) -> Dev {
        let dir = dir.unwrap_or_else(|| tempfile::tempdir().unwrap());
        let rest = format!("127.0.0.1:{}", common::free_port());
        let grpc = format!("127.0.0.1:{}", common::free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_hc-allocator"))
            .args(["--dev", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--rest-addr", &rest, "--grpc-addr", &grpc])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let dev = Dev { child, rest, grpc, dir };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("http://{}/readyz", dev.rest)).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(Instant::now() < deadline, "dev allocator not ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        dev
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        common::rest(&reqwest::Client::new(), method, &self.rest, path, body).await
    }

    /// SIGTERM, then wait: a graceful stop.
    fn stop(mut self) -> tempfile::TempDir {
        let pid = self.child.id();
        Command::new("kill").arg("-TERM").arg(pid.to_string()).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "hc-allocator exited with {status} after SIGTERM");
                break;
            }
            assert!(Instant::now() < deadline, "no graceful exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn bad_input_is_refused_with_a_clear_error_and_changes_nothing() {
    let dev = Dev::start(None).await;
    let (s, _) = dev
        .call(
            Method::POST,
            "/v1/pools",
            Some(json!({"name": "a", "cidr": "10.50.0.0/24", "gateway": "10.50.0.1", "vlan": 100})),
        )
        .await;
    assert_eq!(s, 201);
    let (_, before) = dev.call(Method::GET, "/v1/pools", None).await;

    let cases = [
        (json!({"name": "b", "cidr": "10.50.0.0/33"}), 400, "invalid_argument"),
        (json!({"name": "b", "cidr": "10.50.0.0/16"}), 409, "pool_overlap"),
        (json!({"name": "b", "cidr": "10.51.0.0/24", "gateway": "10.52.0.1"}), 400, "gateway_outside_pool"),
        (json!({"name": "b", "cidr": "10.51.0.0/24", "vlan": 0}), 400, "invalid_vlan"),
        (json!({"name": "b", "cidr": "10.51.0.0/24", "vlan": 4095}), 400, "invalid_vlan"),
        (json!({"name": "b", "cidr": "10.51.0.0/24", "colour": "red"}), 400, "invalid_argument"),
        (json!({"name": "a", "cidr": "10.60.0.0/24"}), 409, "pool_exists"),
    ];
    for (body, status, kind) in cases {
        let (s, v) = dev.call(Method::POST, "/v1/pools", Some(body.clone())).await;
        assert_eq!((s, v["kind"].as_str().unwrap_or("")), (status, kind), "{body} → {v}");
        assert!(!v["message"].as_str().unwrap_or("").is_empty(), "error without a message: {v}");
    }
    let (_, after) = dev.call(Method::GET, "/v1/pools", None).await;
    assert_eq!(before, after, "a refused request changed the pools");

    let alloc = |extra: Value| {
        let mut b = json!({"owner": {"container_id": "c1", "interface": "eth0", "node": "n1"}});
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        b
    };
    for (body, status, kind) in [
        (alloc(json!({"pool": "nope"})), 404, "pool_not_found"),
        (alloc(json!({"pool": "a", "address": "10.99.0.5"})), 400, "address_outside_pool"),
        (alloc(json!({"pool": "a", "address": "10.50.0.1"})), 400, "address_excluded"),
    ] {
        let (s, v) = dev.call(Method::POST, "/v1/allocations", Some(body.clone())).await;
        assert_eq!((s, v["kind"].as_str().unwrap_or("")), (status, kind), "{body} → {v}");
    }
    let (s, v) =
        dev.call(Method::POST, "/v1/allocations", Some(alloc(json!({"pool": "a", "address": "10.50.0.7"})))).await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = dev
        .call(Method::POST, "/v1/allocations", Some(json!({"owner": {"container_id": "c2", "interface": "eth0", "node": "n1"}, "pool": "a", "address": "10.50.0.7"})))
        .await;
    assert_eq!((s, v["kind"].as_str().unwrap()), (409, "address_in_use"), "{v}");
    let (s, v) = dev.call(Method::DELETE, "/v1/pools/a", None).await;
    assert_eq!((s, v["kind"].as_str().unwrap()), (409, "pool_in_use"), "{v}");
    let (s, v) = dev.call(Method::GET, "/v1/pools/a", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["used"], 1);
    // /24 less network, broadcast and gateway.
    assert_eq!(v["size"], 253);
    assert_eq!(v["free"], 252);
}

#[tokio::test]
async fn exhausted_pool_has_its_own_error_kind() {
    let dev = Dev::start(None).await;
    dev.call(Method::POST, "/v1/pools", Some(json!({"name": "tiny", "cidr": "10.70.0.0/30"}))).await;
    for i in 0..2 {
        let (s, v) = dev
            .call(Method::POST, "/v1/allocations", Some(json!({"owner": {"container_id": format!("c{i}"), "interface": "eth0", "node": "n"}, "pool": "tiny"})))
            .await;
        assert_eq!(s, 201, "{v}");
    }
    let (s, v) = dev
        .call(
            Method::POST,
            "/v1/allocations",
            Some(json!({"owner": {"container_id": "c9", "interface": "eth0", "node": "n"}, "pool": "tiny"})),
        )
        .await;
    assert_eq!((s, v["kind"].as_str().unwrap()), (507, "pool_exhausted"), "{v}");
}

#[tokio::test]
async fn a_reserved_key_always_gets_its_address_and_nobody_else_ever_does() {
    let dev = Dev::start(None).await;
    dev.call(Method::POST, "/v1/pools", Some(json!({"name": "db", "cidr": "10.80.0.0/26", "gateway": "10.80.0.1"})))
        .await;
    let (s, v) = dev
        .call(
            Method::POST,
            "/v1/reservations",
            Some(json!({"key": "prod/mysql/0", "pool": "db", "address": "10.80.0.10"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = dev
        .call(
            Method::POST,
            "/v1/reservations",
            Some(json!({"key": "prod/mysql/1", "pool": "db", "address": "10.80.0.10"})),
        )
        .await;
    assert_eq!((s, v["kind"].as_str().unwrap()), (409, "reservation_conflict"), "{v}");

    let member = |cid: &str| json!({"owner": {"container_id": cid, "interface": "eth0", "namespace": "prod", "pod": "mysql-0", "node": "n1"}, "reservation_keys": ["prod/mysql/0"]});
    for round in 0..5 {
        let cid = format!("mysql-0-run{round}");
        let (s, v) = dev.call(Method::POST, "/v1/allocations", Some(member(&cid))).await;
        assert_eq!(s, 201, "{v}");
        assert_eq!(v["allocation"]["address"], "10.80.0.10", "round {round}: {v}");
        assert_eq!(v["allocation"]["reservation"], "prod/mysql/0");
        // Repeating the ADD returns the same allocation.
        let (s, again) = dev.call(Method::POST, "/v1/allocations", Some(member(&cid))).await;
        assert_eq!(s, 200);
        assert_eq!(again["allocation"]["address"], "10.80.0.10");
        assert_eq!(again["created"], false);
        // Everybody else fills the pool around the reserved address, never getting it.
        for i in 0..10 {
            let (s, v) = dev
                .call(Method::POST, "/v1/allocations", Some(json!({"owner": {"container_id": format!("o{round}-{i}"), "interface": "eth0", "node": "n1"}, "pool": "db"})))
                .await;
            assert_eq!(s, 201, "{v}");
            assert_ne!(v["allocation"]["address"], "10.80.0.10");
            dev.call(
                Method::DELETE,
                &format!("/v1/allocations/{}", v["allocation"]["address"].as_str().unwrap()),
                None,
            )
            .await;
        }
        let (s, v) = dev
            .call(Method::POST, "/v1/allocations", Some(json!({"owner": {"container_id": "thief", "interface": "eth0", "node": "n1"}, "pool": "db", "address": "10.80.0.10"})))
            .await;
        assert!(s == 409, "{v}");
        let (s, v) = dev
            .call(
                Method::POST,
                "/v1/allocations/release",
                Some(json!({"owner": {"container_id": cid, "interface": "eth0"}})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["released"][0]["address"], "10.80.0.10");
    }
    // DEL is idempotent.
    let (s, v) = dev
        .call(
            Method::POST,
            "/v1/allocations/release",
            Some(json!({"owner": {"container_id": "mysql-0-run0", "interface": "eth0"}})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["released"], json!([]));
}

#[tokio::test]
async fn allocations_survive_a_graceful_restart() {
    let dev = Dev::start(None).await;
    let _ = &dev.grpc;
    dev.call(Method::POST, "/v1/pools", Some(json!({"name": "keep", "cidr": "fd00:10::/64"}))).await;
    let (s, v) = dev
        .call(
            Method::POST,
            "/v1/allocations",
            Some(json!({"owner": {"container_id": "c1", "interface": "eth0", "node": "n"}, "pool": "keep"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let addr = v["allocation"]["address"].as_str().unwrap().to_owned();
    let dir = dev.stop();
    let dev = Dev::start(Some(dir)).await;
    let (s, v) = dev.call(Method::GET, &format!("/v1/allocations/{addr}"), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["owner"]["container_id"], "c1");
    let (_, m) = dev.call(Method::GET, "/metrics", None).await;
    let text = m.as_str().unwrap_or_default().to_owned();
    assert!(text.contains("hc_allocator_raft_term"), "{text}");
    assert!(text.contains("hc_allocator_pool_used_addresses{pool=\"keep\"} 1"), "{text}");
    // The log's RocksDB reports its memory: the memtables hold at least the entries just
    // replayed, and the block cache is reported even while empty.
    let gauge = |kind: &str| -> Option<f64> {
        let prefix = format!("hc_allocator_storage_memory_bytes{{kind=\"{kind}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(prefix.as_str())).and_then(|v| v.parse().ok())
    };
    assert!(gauge("memtables").is_some_and(|b| b > 0.0), "{text}");
    assert!(gauge("block_cache").is_some(), "{text}");
    assert!(gauge("table_readers").is_some(), "{text}");
}

/// `POST /v1/cluster/snapshot` builds a snapshot now — long before the policy would (20,000
/// entries by default) — and it covers everything applied: after a restart the state is there.
#[tokio::test]
async fn an_operator_snapshot_covers_the_applied_state_and_survives_a_restart() {
    let dev = Dev::start(None).await;
    dev.call(Method::POST, "/v1/pools", Some(json!({"name": "snap", "cidr": "10.71.0.0/24"}))).await;
    for i in 0..5 {
        let (s, v) = dev
            .call(Method::POST, "/v1/allocations", Some(json!({"owner": {"container_id": format!("s{i}"), "interface": "eth0", "node": "n"}, "pool": "snap"})))
            .await;
        assert_eq!(s, 201, "{v}");
    }
    let (_, before) = dev.call(Method::GET, "/v1/cluster", None).await;
    assert_eq!(before["snapshot_index"], Value::Null, "no snapshot yet: {before}");
    // Two at once: openraft ignores a trigger while a build runs, and neither may be lost.
    let ((s, after), (s2, after2)) = tokio::join!(
        dev.call(Method::POST, "/v1/cluster/snapshot", None),
        dev.call(Method::POST, "/v1/cluster/snapshot", None)
    );
    assert_eq!((s, s2), (200, 200), "{after} {after2}");
    let applied = before["applied_index"].as_u64().unwrap();
    for a in [&after, &after2] {
        assert!(a["snapshot_index"].as_u64().unwrap() >= applied, "snapshot {a} behind applied {applied}");
    }

    let dir = dev.stop();
    let dev = Dev::start(Some(dir)).await;
    let (_, status) = dev.call(Method::GET, "/v1/cluster", None).await;
    assert!(status["snapshot_index"].as_u64().unwrap() >= applied, "{status}");
    let (_, allocations) = dev.call(Method::GET, "/v1/allocations?pool=snap", None).await;
    assert_eq!(allocations.as_array().map(Vec::len), Some(5), "{allocations}");
}
