#!/usr/bin/env bash
# Builds everything and runs every test: unit, property, storage-suite and the integration
# tests that start real hc-allocator processes with real RocksDB on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
. scripts/env.sh
cargo fmt --all -- --check
cargo build --workspace --all-targets
# --nocapture: the integration tests print what they measured (throughput, failover, memory).
cargo test --workspace --no-fail-fast -- --nocapture
# The state machine's criterion micro-benchmarks, each run once at small sizes (test mode).
cargo test -p hc-allocator-state --benches
# The simulation must catch a deliberately broken state machine (allocate skips the fencing
# check). The feature is enabled here, from the command line only: no manifest may name it.
cargo run -p hc-sim --features deliberate-bug -- --seeds 300 --expect-violation
