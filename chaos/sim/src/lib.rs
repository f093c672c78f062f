//! hc-sim: a deterministic simulation of the allocator.
//!
//! The real state machine (`hc-allocator-state`) under the real consensus engine (openraft, the
//! workspace's version) with in-memory log and state-machine storage, over a simulated network,
//! on a single-threaded tokio runtime with paused time. A seed decides everything: partitions,
//! one-way cuts, message loss, delays and reordering, replica crashes and restarts (from the
//! replica's "disk", losing everything volatile), lease lapses, and what the clients do (lease
//! grants with fencing tokens, allocations, releases, explicit addresses, reservations, new
//! pools, stale-token writes from zombie agents, keep-alives and expiry). Every call is recorded
//! in hc-checker's format and checked by it; after healing, every replica must hold the same
//! applied state and pass `State::check_invariants`.
//!
//! Not covered here: RocksDB, gRPC, REST, the agent's datapath — the chaos harness
//! (`chaos/harness`) runs those for real.
//!
//! Layout:
//! - `raft.rs`: the type config (the allocator's shape), memory log and state machine;
//! - `runtime.rs`: tokio for openraft with its chance taken out (seeded RNG, ordered watch);
//! - `network.rs`: the simulated network and openraft's network over it;
//! - `node.rs`: one running replica and the allocator's request handling and lease keeper;
//! - `cluster.rs`: start, crash, restart, converge;
//! - `workload.rs`: agents, zombies, the operator, the retrying client;
//! - `history.rs`: the history with simulated times, and the trace;
//! - `run.rs`: one seed: faults, workload, checks; `rng.rs`: the seeded generator.

pub mod cluster;
pub mod history;
pub mod network;
pub mod node;
pub mod raft;
pub mod rng;
pub mod run;
pub mod runtime;
pub mod workload;

pub use run::{SeedReport, SimOptions, run_seed};

/// [`run_seed`], with a panic anywhere in the run turned into an error, so that the seed is
/// reported with its repro command rather than taking the whole run down.
pub fn run_seed_caught(seed: u64, options: &SimOptions) -> anyhow::Result<SeedReport> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_seed(seed, options))) {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic".to_owned());
            anyhow::bail!("the run panicked: {what}")
        }
    }
}

/// The command that reruns `seed` with these options, as printed with every failure.
pub fn repro_command(seed: u64, options: &SimOptions) -> String {
    let features = if hc_allocator_state::DELIBERATE_BUG { " --features deliberate-bug" } else { "" };
    format!("cargo run -p hc-sim{features} -- --seed {seed} --replicas {}", options.replicas)
}
