//! Faults: what they are, how a seed turns into a schedule of them (pure), and how each is
//! injected into a [`Cluster`] and healed. Faults run one after another; each heals before the
//! next starts, and its `start` / `stop` are recorded in the history.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// iptables INPUT/OUTPUT DROP inside the leader's namespace.
    IsolateLeader,
    /// The same for one follower.
    IsolateFollower,
    /// The leader's traffic to one follower is dropped; the follower's to the leader is not.
    OneWayCut,
    /// `kill -9` of the leader, then a restart from its data directory.
    KillLeader,
    /// SIGSTOP of the leader; it wakes up (SIGCONT) after the others moved on.
    PauseLeader,
    /// One agent stops its keep-alives past the lease TTL, then re-grants.
    LeaseLapse,
    /// Every replica drops a fraction of what it receives.
    PacketLoss,
    /// `kill -9` of one follower, then a restart.
    KillFollower,
    /// `kill -9` of every replica, then a restart of all from their data directories.
    KillAll,
    /// The replicas split into a minority (the leader among them) and a majority that cannot
    /// reach each other; clients still reach both sides. With 3 replicas the minority is one.
    SplitMinority,
}

impl FaultKind {
    pub const ALL: [FaultKind; 10] = [
        FaultKind::IsolateLeader,
        FaultKind::IsolateFollower,
        FaultKind::OneWayCut,
        FaultKind::KillLeader,
        FaultKind::PauseLeader,
        FaultKind::LeaseLapse,
        FaultKind::PacketLoss,
        FaultKind::KillFollower,
        FaultKind::KillAll,
        FaultKind::SplitMinority,
    ];
    /// The kinds any three consecutive schedules are sure to cover; the others only fill the
    /// rest of a schedule's time at random.
    pub const COVERED: [FaultKind; 7] = [
        FaultKind::IsolateLeader,
        FaultKind::IsolateFollower,
        FaultKind::OneWayCut,
        FaultKind::KillLeader,
        FaultKind::PauseLeader,
        FaultKind::LeaseLapse,
        FaultKind::PacketLoss,
    ];
    const PARTITIONS: [FaultKind; 3] = [FaultKind::IsolateLeader, FaultKind::IsolateFollower, FaultKind::OneWayCut];
    const OTHERS: [FaultKind; 3] = [FaultKind::PauseLeader, FaultKind::LeaseLapse, FaultKind::PacketLoss];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::IsolateFollower => "isolate-follower",
            FaultKind::OneWayCut => "one-way-cut",
            FaultKind::KillLeader => "kill-leader",
            FaultKind::PauseLeader => "pause-leader",
            FaultKind::LeaseLapse => "lease-lapse",
            FaultKind::PacketLoss => "packet-loss",
            FaultKind::KillFollower => "kill-follower",
            FaultKind::KillAll => "kill-all",
            FaultKind::SplitMinority => "split-minority",
        }
    }

    pub fn parse(s: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// One planned fault: wait `gap`, inject, hold for `hold`, heal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedFault {
    pub kind: FaultKind,
    pub gap_ms: u64,
    pub hold_ms: u64,
    /// Which follower / agent, as an index taken modulo the candidates when injected.
    pub pick: u64,
    /// Packet loss only.
    pub loss: f64,
}

impl PlannedFault {
    pub fn gap(&self) -> Duration {
        Duration::from_millis(self.gap_ms)
    }

    pub fn hold(&self) -> Duration {
        Duration::from_millis(self.hold_ms)
    }
}

/// The faults of schedule `index` of a run with `seed`, filling about `budget`.
///
/// Every schedule has a leader kill and a partition; schedule k takes the k-th partition kind
/// and the k-th other kind of per-run shuffles, so any three consecutive schedules of a run
/// cover every kind in [`FaultKind::COVERED`]. The rest of the budget is filled with kinds drawn at random.
pub fn plan(seed: u64, index: u64, budget: Duration, lease_ttl: Duration) -> Vec<PlannedFault> {
    let mut run = Rng::new(seed);
    let mut partitions = FaultKind::PARTITIONS;
    let mut others = FaultKind::OTHERS;
    run.shuffle(&mut partitions);
    run.shuffle(&mut others);
    let mut rng = Rng::derive(seed, index + 1);
    let mut kinds = vec![FaultKind::KillLeader, partitions[(index % 3) as usize], others[(index % 3) as usize]];
    rng.shuffle(&mut kinds);
    let mut faults = Vec::new();
    let mut used = Duration::ZERO;
    let mut k = 0;
    loop {
        let kind = match kinds.get(k) {
            Some(kind) => *kind,
            None => FaultKind::ALL[rng.below(FaultKind::ALL.len() as u64) as usize],
        };
        let fault = PlannedFault {
            kind,
            gap_ms: rng.range(800, 2000),
            hold_ms: match kind {
                // Past the TTL, and long enough for the leader to expire the lease.
                FaultKind::LeaseLapse => lease_ttl.as_millis() as u64 + rng.range(1000, 2000),
                FaultKind::KillLeader | FaultKind::KillFollower | FaultKind::KillAll => rng.range(300, 2000),
                _ => rng.range(1500, 4000),
            },
            pick: rng.next_u64(),
            loss: [0.1, 0.2, 0.3][rng.below(3) as usize],
        };
        let cost = fault.gap() + fault.hold();
        if k >= kinds.len() && used + cost > budget {
            break;
        }
        used += cost;
        faults.push(fault);
        k += 1;
    }
    faults
}

/// A scripted step: `KIND` or `KIND=HOLD_MS` (e.g. `kill-all=1500`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub kind: FaultKind,
    pub hold_ms: Option<u64>,
}

impl std::str::FromStr for Step {
    type Err = String;

    fn from_str(s: &str) -> Result<Step, String> {
        let (name, hold) = s.split_once('=').map_or((s, None), |(n, h)| (n, Some(h)));
        let kind = FaultKind::parse(name).ok_or_else(|| {
            let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
            format!("unknown fault {name:?}; one of {}", names.join(", "))
        })?;
        let hold_ms = hold.map(|h| h.parse::<u64>().map_err(|e| format!("{s}: hold: {e}"))).transpose()?;
        Ok(Step { kind, hold_ms })
    }
}

/// Schedule `index` following `steps` in order: the kinds (and holds) are the script's, gaps,
/// holds left open and picks still come from the seed.
pub fn scripted(seed: u64, index: u64, steps: &[Step], lease_ttl: Duration) -> Vec<PlannedFault> {
    let drawn = plan(seed, index, Duration::ZERO, lease_ttl);
    let mut rng = Rng::derive(seed, index + 1);
    steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let mut f = drawn.get(i).cloned().unwrap_or_else(|| drawn[0].clone());
            f.kind = step.kind;
            f.hold_ms = step.hold_ms.unwrap_or(match step.kind {
                FaultKind::LeaseLapse => lease_ttl.as_millis() as u64 + rng.range(1000, 2000),
                _ => rng.range(1500, 4000),
            });
            f
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_three_schedules_cover_every_kind_and_each_kills_a_leader() {
        for seed in 0..50 {
            let plans: Vec<_> =
                (0..3).map(|i| plan(seed, i, Duration::from_secs(20), Duration::from_secs(2))).collect();
            for p in &plans {
                assert!(p.iter().any(|f| f.kind == FaultKind::KillLeader));
                assert!(p.iter().any(|f| FaultKind::PARTITIONS.contains(&f.kind)));
            }
            for kind in FaultKind::COVERED {
                assert!(plans.iter().flatten().any(|f| f.kind == kind), "seed {seed} misses {kind:?}");
            }
        }
    }

    #[test]
    fn a_seed_names_one_schedule() {
        let ttl = Duration::from_secs(2);
        assert_eq!(plan(9, 4, Duration::from_secs(30), ttl), plan(9, 4, Duration::from_secs(30), ttl));
        assert_ne!(plan(9, 4, Duration::from_secs(30), ttl), plan(10, 4, Duration::from_secs(30), ttl));
    }

    #[test]
    fn a_script_fixes_kinds_and_holds() {
        let steps: Vec<Step> = ["kill-all=1500", "split-minority"].iter().map(|s| s.parse().expect("a step")).collect();
        let p = scripted(3, 0, &steps, Duration::from_secs(2));
        assert_eq!(p.iter().map(|f| f.kind).collect::<Vec<_>>(), [FaultKind::KillAll, FaultKind::SplitMinority]);
        assert_eq!(p[0].hold_ms, 1500);
        assert!("nap=3".parse::<Step>().is_err());
        assert!("kill-all=soon".parse::<Step>().is_err());
    }

    #[test]
    fn names_round_trip() {
        for kind in FaultKind::ALL {
            assert_eq!(FaultKind::parse(kind.name()), Some(kind));
        }
    }
}
