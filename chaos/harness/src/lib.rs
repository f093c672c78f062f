//! hc-chaos: a real `hc-allocator` cluster under seeded faults, with a recorded workload,
//! checked by the independent history checker (`hc-checker`).
//!
//! Each schedule starts a fresh cluster: 3 or 5 `hc-allocator` processes, each in its own
//! network namespace with its own address on a test bridge; the agents (`hc-chaos-agent`
//! processes, each with its own node name, lease, fencing token, keep-alives and attachment
//! record, restarted now and then with `kill -9`) run in the root namespace and reach the
//! replicas through the bridge's address. They allocate in the first pool, in pools created
//! during the run, at explicit addresses and for StatefulSet members with reservations. Faults run one after another and each heals:
//! leader / follower isolation, one-way cuts and minority|majority splits (iptables inside the
//! namespaces), `kill -9` of the leader, of a follower or of every replica and a restart from
//! the data directories, SIGSTOP / SIGCONT of the leader, an agent whose lease lapses, and
//! random packet loss. After the last heal the workload runs on for a while, the leader's listing is recorded as the final state, and the history is checked.
//! Namespaces, links, rules and processes are removed on drop, on panic and on Ctrl-C or
//! SIGTERM; after a SIGKILL of the harness itself they stay, under names no later run reuses.
//!
//! Needs root, `iproute2` and `iptables` (`scripts/deps.sh`), and a built `hc-allocator`.
//!
//! ```text
//! cargo build -p hc-allocator -p hc-chaos
//! # the short run (CI; also tests/short_run.rs): 3 schedules × 22 s
//! target/debug/hc-chaos --seed 1 --schedules 3 --schedule-secs 22 --out /tmp/chaos-short
//! # the long run: 50 schedules × 20 s (about 17 minutes)
//! target/debug/hc-chaos --seed 42 --schedules 50 --schedule-secs 20 --out /tmp/chaos-long
//! ```
//! Every schedule has a leader kill and a partition; any three consecutive schedules of a run
//! cover the seven main kinds (`FaultKind::COVERED`), and the rest of each schedule's time is
//! filled with kinds drawn from all ten. Add `--replicas 5` for five replicas; script the
//! faults with `--faults kill-all=1500,split-minority,lease-lapse` (kinds in order, optional
//! hold in ms; gaps and targets still come from the seed). `--replay-schedule K` reruns only
//! schedule K of a seed. The exit status is 0 only when no schedule found a violation or failed
//! to run. Each run writes `report.json`, `report.md` and per schedule `history.jsonl` (which
//! `hc-check` re-checks) and the replicas' logs.
//!
//! # Layout
//! - `network.rs`: bridge, namespaces, iptables partitions; `cleanup.rs`: the registry of
//!   everything to remove, and the signal handler.
//! - `cluster.rs`: the allocator processes; `fault.rs`: fault kinds and the seeded plan.
//! - `agent.rs`: one agent process (`src/bin/hc-chaos-agent.rs`); `workload.rs`: starting,
//!   steering, restarting the agents and recording what they report; `schedule.rs`: one schedule end to end;
//!   `run.rs`: a run and its report; `rng.rs`: the seeded generator.

pub mod agent;
pub mod cleanup;
pub mod cluster;
pub mod fault;
pub mod network;
pub mod rng;
pub mod run;
pub mod schedule;
pub mod workload;
