//! Acceptance tests of the allocator as a cluster of real `hc-allocator` processes on loopback
//! with real RocksDB: concurrent allocation through every replica, `kill -9` of the leader under
//! load, restart and catch-up through a snapshot.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Cluster, allocate_many, allocate_many_timed, assert_distinct, pool};
use hc_api::command::Command;

/// Every acknowledged allocation must be in the applied state of every running replica.
async fn assert_everywhere(cluster: &Cluster, pool: &str, acked: &HashMap<String, IpAddr>) {
    let client = cluster.client();
    let leader = cluster.leader_async(Duration::from_secs(20)).await;
    let commit = client.status_at(leader).await.unwrap().committed;
    cluster.wait_applied(commit, Duration::from_secs(60)).await;
    for (i, r) in cluster.replicas.iter().enumerate() {
        if r.child.is_none() {
            continue;
        }
        let list = client.list_allocations_at(i, Some(pool), None).await.unwrap();
        let held: HashMap<&str, IpAddr> = list.iter().map(|a| (a.owner.container_id.as_str(), a.address)).collect();
        let holders: HashSet<IpAddr> = list.iter().map(|a| a.address).collect();
        assert_eq!(holders.len(), list.len(), "replica {} lists an address twice", r.id);
        for (c, addr) in acked {
            assert_eq!(held.get(c.as_str()), Some(addr), "replica {} lost acknowledged allocation {c}", r.id);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_64_clients_allocate_10000_distinct_addresses_visible_on_every_replica() {
    let cluster = Cluster::start(3, &[]).await;
    let client = cluster.client();
    client.propose(&Command::CreatePool(pool("load", "10.20.0.0/16"))).await.unwrap();

    let started = Instant::now();
    let acked = allocate_many(&cluster, "load", "c", 64, 10_000, Arc::new(AtomicUsize::new(0))).await;
    let elapsed = started.elapsed();
    println!(
        "10000 allocations by 64 clients through 3 replicas: {:.2} s, {:.0} allocations/s",
        elapsed.as_secs_f64(),
        10_000.0 / elapsed.as_secs_f64()
    );
    assert_eq!(acked.len(), 10_000);
    assert_distinct(&acked);
    assert_everywhere(&cluster, "load", &acked).await;

    // Concurrent allocations share log entries (hc-batcher): the leader wrote fewer entries
    // than allocations. (A leader change would split the counts between replicas; sum them.)
    let (mut commands, mut entries) = (0.0, 0.0);
    for i in 0..cluster.replicas.len() {
        let page = metrics_page(&cluster, i).await;
        commands += sample(&page, "hc_allocator_proposal_batch_commands_sum");
        entries += sample(&page, "hc_allocator_proposal_batch_commands_count");
    }
    println!("{commands} allocations in {entries} batcher entries");
    assert!(commands >= 10_000.0, "the batcher wrote {commands} commands for 10000 allocations");
    assert!(entries < commands, "no entry carried more than one allocation");

    // A client may not propose a batch itself: it is the allocator's to form.
    let batch = Command::Batch(vec![Command::Allocate { fence: None, request: common::request("load", "c-batch") }]);
    let e = client.propose(&batch).await.unwrap_err();
    assert!(matches!(e, hc_api::IpamError::InvalidArgument { .. }), "{e:?}");
    assert!(
        client
            .list_allocations_at(0, Some("load"), None)
            .await
            .unwrap()
            .iter()
            .all(|a| a.owner.container_id != "c-batch")
    );
}

/// `--batch-proposals false` (for rolling upgrades from builds before batching): every
/// allocation is an entry of its own, however many clients write at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_batching_off_every_allocation_is_an_entry_of_its_own() {
    let cluster = Cluster::start(3, &["--batch-proposals", "false"]).await;
    let client = cluster.client();
    client.propose(&Command::CreatePool(pool("plain", "10.23.0.0/16"))).await.unwrap();
    let leader = cluster.leader_async(Duration::from_secs(10)).await;
    let before = client.status_at(leader).await.unwrap().committed;

    let acked = allocate_many(&cluster, "plain", "p", 64, 2_000, Arc::new(AtomicUsize::new(0))).await;
    assert_eq!(acked.len(), 2_000);
    assert_distinct(&acked);
    assert_everywhere(&cluster, "plain", &acked).await;

    let leader = cluster.leader_async(Duration::from_secs(10)).await;
    let entries = client.status_at(leader).await.unwrap().committed - before;
    println!("2000 allocations by 64 clients with batching off: {entries} entries");
    assert!(entries >= 2_000, "2000 allocations took only {entries} entries with batching off");
    for i in 0..cluster.replicas.len() {
        let page = metrics_page(&cluster, i).await;
        assert_eq!(sample(&page, "hc_allocator_proposal_batch_commands_count"), 0.0, "replica {i} batched");
    }
}

async fn metrics_page(cluster: &Cluster, i: usize) -> String {
    let url = format!("http://{}/metrics", cluster.replicas[i].rest);
    reqwest::Client::new().get(url).send().await.unwrap().text().await.unwrap()
}

/// The value of the unlabelled sample `name` on a `/metrics` page, 0 if absent.
fn sample(page: &str, name: &str) -> f64 {
    page.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_kill_under_load_loses_nothing_and_the_restarted_replica_catches_up_through_a_snapshot() {
    // Snapshot (and compact the log) every 500 entries whatever the state's size, so the log the
    // killed replica misses is gone from the others by the time it returns.
    let mut cluster = Cluster::start(3, &["--snapshot-every", "500", "--snapshot-log-percent", "0"]).await;
    let client = cluster.client();
    client.propose(&Command::CreatePool(pool("churn", "10.21.0.0/16"))).await.unwrap();

    let progress = Arc::new(AtomicUsize::new(0));
    let leader = cluster.leader_async(Duration::from_secs(10)).await;
    let killed_id = cluster.replicas[leader].id;

    // Load from 16 clients; kill -9 the leader once 1000 allocations are acknowledged.
    let load = allocate_many_timed(&cluster, "churn", "k", 16, 4_000, progress.clone());
    let ((acked, spans), (killed_at, kill_commit)) = {
        let progress = progress.clone();
        let pid = cluster.pid(leader).unwrap();
        let status_client = cluster.client();
        let killer = async move {
            while progress.load(Ordering::Relaxed) < 1_000 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let kill_commit = status_client.status_at(leader).await.unwrap().committed;
            // SIGKILL: no chance to hand leadership over.
            std::process::Command::new("kill").arg("-9").arg(pid.to_string()).status().unwrap();
            (Instant::now(), kill_commit)
        };
        tokio::join!(load, killer)
    };
    // Unavailability: from the kill to the first acknowledgement of an allocation that was
    // started after it (earlier ones may have committed before the kill).
    let unavailable = spans
        .iter()
        .filter(|(started, _)| *started > killed_at)
        .map(|(_, acked)| acked.duration_since(killed_at))
        .min()
        .expect("allocations continued after the kill");
    println!(
        "leader {killed_id} killed under load at commit index {kill_commit}: first allocation started after the kill acknowledged {unavailable:?} later"
    );
    // Reap the killed process.
    cluster.kill(leader);

    assert_eq!(acked.len(), 4_000);
    assert_distinct(&acked);
    assert_everywhere(&cluster, "churn", &acked).await;

    // Write until the survivors snapshot and purge well past everything the killed replica had.
    // In rounds: concurrent allocations share entries (`hc-batcher`), so how many entries a
    // number of allocations takes depends on the load. The killed replica's log ends near
    // `kill_commit` (plus at most a few uncommitted entries); with the leader's log purged well
    // past that, catching up needs a snapshot.
    let http = reqwest::Client::new();
    let mut more = HashMap::new();
    let mut round = 0;
    let (purged, committed) = loop {
        more.extend(
            allocate_many(&cluster, "churn", &format!("m{round}-"), 16, 1_500, Arc::new(AtomicUsize::new(0))).await,
        );
        round += 1;
        let new_leader = cluster.leader_async(Duration::from_secs(10)).await;
        let committed = client.status_at(new_leader).await.unwrap().committed;
        let (_, cl) =
            common::rest(&http, reqwest::Method::GET, &cluster.replicas[new_leader].rest, "/v1/cluster", None).await;
        let purged = cl["purged_index"].as_u64().unwrap_or(0);
        if purged > kill_commit + 100 || round == 8 {
            break (purged, committed);
        }
    };
    println!("{} more allocations in {round} rounds: committed {committed}, purged {purged}", more.len());
    assert!(
        purged > kill_commit + 100,
        "the leader should have compacted its log past the kill point (purged {purged}, kill at {kill_commit}, committed {committed})"
    );

    // Restart the killed replica from its data directory; it must catch up (via snapshot).
    let restarted_at = Instant::now();
    cluster.spawn(leader);
    let mut all = acked.clone();
    all.extend(more);
    assert_everywhere(&cluster, "churn", &all).await;
    println!("killed replica restarted and caught up in {:?}", restarted_at.elapsed());
    let (_, cl) = common::rest(&http, reqwest::Method::GET, &cluster.replicas[leader].rest, "/v1/cluster", None).await;
    assert!(cl["snapshot_index"].as_u64().unwrap_or(0) > 0, "restarted replica has no snapshot: {cl}");
}

/// Sum of `hc_allocator_raft_replication_failures_total` towards replica `target` on the
/// `/metrics` page of replica `i`.
async fn replication_failures(cluster: &Cluster, i: usize, target: u64) -> u64 {
    let page = metrics_page(cluster, i).await;
    let label = format!("target=\"{target}\"");
    page.lines()
        .filter(|l| l.starts_with("hc_allocator_raft_replication_failures_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_follower_is_redialed_at_the_backoff_pace_and_not_in_a_loop() {
    let mut cluster = Cluster::start(3, &["--heartbeat-ms", "50"]).await;
    let client = cluster.client();
    client.propose(&Command::CreatePool(pool("down", "10.22.0.0/16"))).await.unwrap();
    let leader = cluster.leader_async(Duration::from_secs(10)).await;
    let follower = (leader + 1) % cluster.replicas.len();
    let follower_id = cluster.replicas[follower].id;
    cluster.kill(follower);

    // Writes keep coming (each one wakes replication to every peer) while the follower is down.
    let writer = cluster.client_via(leader);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = replication_failures(&cluster, leader, follower_id).await;
    let window = Instant::now();
    let mut writes = 0;
    while window.elapsed() < Duration::from_secs(3) {
        writer.allocate(None, common::request("down", &format!("w{writes}"))).await.unwrap();
        writes += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = window.elapsed();
    let failures = replication_failures(&cluster, leader, follower_id).await - before;
    println!("follower down for {elapsed:?}: {failures} failed replication streams to it, {writes} writes meanwhile");
    // Each 50 ms heartbeat (set above) dials once, and replication retries after openraft's
    // 200 ms backoff: about 75 in 3 s. Redialing at once after each refusal made thousands
    // (14,285 once).
    assert!(failures >= 1, "the dead follower was not even tried");
    let ms = elapsed.as_millis() as u64;
    let bound = (ms / 50 + ms / 200) * 2 + 10;
    assert!(
        failures <= bound,
        "{failures} failed streams to a dead follower in {elapsed:?} (at most {bound} expected)"
    );
}
