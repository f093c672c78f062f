//! Address search costs memory in proportion to the addresses allocated, not to the pool's
//! size: a /8 IPv4 pool and a /64 IPv6 pool each take 100,000 allocations on a real replica.
//! Prints the replica's resident memory per allocation (measured, not asserted: the figure is
//! for the benchmark report).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use common::{Cluster, allocate_many, assert_distinct, pool};
use hc_api::command::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slash_8_and_a_slash_64_pool_each_take_100000_allocations() {
    let cluster = Cluster::start(1, &[]).await;
    let client = cluster.client();
    client.propose(&Command::CreatePool(pool("v4-slash8", "10.0.0.0/8"))).await.unwrap();
    client.propose(&Command::CreatePool(pool("v6-slash64", "fd00:64::/64"))).await.unwrap();
    let rss_before = cluster.rss_bytes(0);
    for (name, prefix) in [("v4-slash8", "a"), ("v6-slash64", "b")] {
        let started = Instant::now();
        let acked = allocate_many(&cluster, name, prefix, 64, 100_000, Arc::new(AtomicUsize::new(0))).await;
        assert_eq!(acked.len(), 100_000);
        assert_distinct(&acked);
        println!(
            "{name}: 100000 allocations in {:.1} s ({:.0}/s)",
            started.elapsed().as_secs_f64(),
            100_000.0 / started.elapsed().as_secs_f64()
        );
    }
    let http = reqwest::Client::new();
    for name in ["v4-slash8", "v6-slash64"] {
        let (_, v) =
            common::rest(&http, reqwest::Method::GET, &cluster.replicas[0].rest, &format!("/v1/pools/{name}"), None)
                .await;
        assert_eq!(v["used"], 100_000, "{v}");
        println!("{name}: size {} used {} free {}", v["size"], v["used"], v["free"]);
    }
    let rss_after = cluster.rss_bytes(0);
    println!(
        "replica resident memory: {} MiB before, {} MiB after 200000 allocations: {} bytes per allocation (includes RocksDB memtables and the unpurged log)",
        rss_before >> 20,
        rss_after >> 20,
        rss_after.saturating_sub(rss_before) / 200_000
    );
}
