//! The load drivers. [`run_row`] runs one store row: every client starts at the same instant and
//! allocates back to back until the window closes (or a count is reached). [`SteadyLoad`] keeps
//! clients allocating until stopped, while its [`Probe`] notes the first success of an
//! allocation started after a given instant (the kill of a leader).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout_at};

use crate::config::RowLength;
use crate::workload::{Acked, AllocError, AllocatorClient};

/// Lets every client be spawned and parked before the common start.
const START_DELAY: Duration = Duration::from_millis(200);
/// Pause after a failed allocation before the next, so a client never spins.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);
/// Upper bound of a row run by count.
const COUNT_ROW_LIMIT: Duration = Duration::from_secs(3600);
/// Upper bound of one allocation under steady load.
const STEADY_OP_TIMEOUT: Duration = Duration::from_secs(30);

/// What the clients of a run did, merged.
#[derive(Debug, Default)]
pub struct Tally {
    /// Latency of every acknowledged allocation, in microseconds.
    pub latencies_us: Vec<u64>,
    pub acked: Vec<Acked>,
    /// Failed allocations by kind.
    pub errors: BTreeMap<&'static str, u64>,
    pub first_error: Option<String>,
    /// Attempts lost to concurrent writers (etcd layouts).
    pub conflicts: u64,
    /// Allocations still in flight when the run's deadline passed.
    pub abandoned: u64,
    /// Acknowledged allocations that completed inside the measurement window.
    pub in_window: u64,
    /// When the last acknowledged allocation completed.
    pub last_completion: Option<Instant>,
}

impl Tally {
    fn success(&mut self, started: Instant, ended: Instant, acked: Acked, window_end: Instant) {
        self.latencies_us.push(ended.duration_since(started).as_micros() as u64);
        self.conflicts += u64::from(acked.conflicts);
        self.acked.push(acked);
        if ended <= window_end {
            self.in_window += 1;
        }
        self.last_completion = self.last_completion.max(Some(ended));
    }

    fn failure(&mut self, e: &AllocError) {
        *self.errors.entry(e.kind()).or_default() += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.acked.extend(other.acked);
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.first_error = self.first_error.take().or(other.first_error);
        self.conflicts += other.conflicts;
        self.abandoned += other.abandoned;
        self.in_window += other.in_window;
        self.last_completion = self.last_completion.max(other.last_completion);
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// A finished store row.
#[derive(Debug)]
pub struct RowOutcome {
    pub tally: Tally,
    /// The time the throughput is measured over.
    pub measured: Duration,
}

impl RowOutcome {
    /// Acknowledged allocations per second over the measured time.
    pub fn per_sec(&self) -> f64 {
        let secs = self.measured.as_secs_f64();
        if secs > 0.0 { self.tally.in_window as f64 / secs } else { 0.0 }
    }
}

/// Runs one row. With a window, throughput counts what completed inside it, and allocations in
/// flight when it closes may finish within `grace` (their latencies count); those still running
/// then are abandoned. With a count, clients stop after that many allocations were started.
pub async fn run_row<C: AllocatorClient>(clients: Vec<C>, length: RowLength, grace: Duration) -> RowOutcome {
    let start = Instant::now() + START_DELAY;
    let (window_end, hard_end, quota) = match length {
        RowLength::Window { secs } => {
            let end = start + Duration::from_secs_f64(secs);
            (end, end + grace, None)
        }
        RowLength::Count { allocations } => {
            (start + COUNT_ROW_LIMIT, start + COUNT_ROW_LIMIT, Some((Arc::new(AtomicU64::new(0)), allocations)))
        }
    };
    let tasks: Vec<JoinHandle<Tally>> = clients
        .into_iter()
        .map(|mut client| {
            let quota = quota.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                sleep_until(start).await;
                for seq in 0.. {
                    let now = Instant::now();
                    let more = match &quota {
                        Some((issued, max)) => issued.fetch_add(1, Ordering::Relaxed) < *max && now < hard_end,
                        None => now < window_end,
                    };
                    if !more {
                        break;
                    }
                    match timeout_at(hard_end, client.allocate(seq)).await {
                        Ok(Ok(a)) => tally.success(now, Instant::now(), a, window_end),
                        Ok(Err(e)) => {
                            tally.failure(&e);
                            sleep_until((Instant::now() + ERROR_BACKOFF).min(hard_end)).await;
                        }
                        Err(_) => {
                            tally.abandoned += 1;
                            break;
                        }
                    }
                }
                tally
            })
        })
        .collect();
    let mut tally = Tally::default();
    for t in tasks {
        match t.await {
            Ok(part) => tally.merge(part),
            Err(e) => {
                *tally.errors.entry("client_panicked").or_default() += 1;
                tally.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let measured = match length {
        RowLength::Window { secs } => Duration::from_secs_f64(secs),
        RowLength::Count { .. } => tally.last_completion.map_or(Duration::ZERO, |l| l.duration_since(start)),
    };
    RowOutcome { tally, measured }
}

/// Watches for the first acknowledged allocation started after an instant.
#[derive(Debug, Default)]
pub struct Probe {
    successes: AtomicU64,
    /// Guards the armed instant and the earliest completion of an allocation started after it.
    armed: Mutex<Option<(Instant, Option<Instant>)>>,
}

impl Probe {
    fn record(&self, started: Instant, ended: Instant) {
        self.successes.fetch_add(1, Ordering::Relaxed);
        let mut armed = self.armed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((after, first)) = armed.as_mut()
            && started > *after
        {
            *first = Some(first.map_or(ended, |f| f.min(ended)));
        }
    }

    /// From now on, note allocations started after `after`.
    pub fn arm(&self, after: Instant) {
        *self.armed.lock().unwrap_or_else(|p| p.into_inner()) = Some((after, None));
    }

    pub fn disarm(&self) {
        *self.armed.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// When the first allocation started after the armed instant was acknowledged. Once this
    /// returns `Some`, no later call returns an earlier instant: allocations that have not
    /// completed yet will complete after it.
    pub fn first_success(&self) -> Option<Instant> {
        self.armed.lock().unwrap_or_else(|p| p.into_inner()).and_then(|(_, f)| f)
    }

    pub fn successes(&self) -> u64 {
        self.successes.load(Ordering::Relaxed)
    }
}

/// Clients allocating back to back until [`SteadyLoad::stop`] or `limit`.
#[derive(Debug)]
pub struct SteadyLoad {
    stop: Arc<AtomicBool>,
    probe: Arc<Probe>,
    tasks: Vec<JoinHandle<Tally>>,
}

impl SteadyLoad {
    pub fn start<C: AllocatorClient>(clients: Vec<C>, limit: Duration) -> SteadyLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let probe = Arc::new(Probe::default());
        let end = Instant::now() + limit;
        let tasks = clients
            .into_iter()
            .map(|mut client| {
                let (stop, probe) = (stop.clone(), probe.clone());
                tokio::spawn(async move {
                    let mut tally = Tally::default();
                    for seq in 0.. {
                        let now = Instant::now();
                        if stop.load(Ordering::Relaxed) || now >= end {
                            break;
                        }
                        match timeout_at(now + STEADY_OP_TIMEOUT, client.allocate(seq)).await {
                            Ok(Ok(a)) => {
                                let ended = Instant::now();
                                probe.record(now, ended);
                                tally.success(now, ended, a, end);
                            }
                            Ok(Err(e)) => {
                                tally.failure(&e);
                                sleep_until((Instant::now() + ERROR_BACKOFF).min(end)).await;
                            }
                            Err(_) => tally.abandoned += 1,
                        }
                    }
                    tally
                })
            })
            .collect();
        SteadyLoad { stop, probe, tasks }
    }

    pub fn probe(&self) -> &Probe {
        &self.probe
    }

    /// Stops the clients (each finishes the allocation in flight) and merges what they did.
    pub async fn stop(mut self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut tally = Tally::default();
        for t in std::mem::take(&mut self.tasks) {
            match t.await {
                Ok(part) => tally.merge(part),
                Err(e) => {
                    *tally.errors.entry("client_panicked").or_default() += 1;
                    tally.first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        tally
    }
}

impl Drop for SteadyLoad {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    /// A fake system: each allocation takes `delay` and gets the next address.
    struct Fake {
        id: usize,
        delay: Duration,
    }

    impl AllocatorClient for Fake {
        async fn allocate(&mut self, seq: u64) -> Result<Acked, AllocError> {
            tokio::time::sleep(self.delay).await;
            let n = (self.id as u32) << 16 | seq as u32;
            Ok(Acked { address: Ipv4Addr::from(n), owner: format!("{}-{seq}", self.id), conflicts: 0 })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn window_row_counts_what_completed_inside() {
        let clients = (0..4).map(|id| Fake { id, delay: Duration::from_millis(10) }).collect();
        let out = run_row(clients, RowLength::Window { secs: 1.0 }, Duration::from_secs(1)).await;
        assert_eq!(out.tally.in_window, 400);
        assert_eq!(out.per_sec(), 400.0);
        assert_eq!(out.tally.abandoned, 0);
        assert!(crate::stats::duplicates(&out.tally.acked).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn slow_allocations_are_abandoned_after_the_grace() {
        let clients = vec![Fake { id: 0, delay: Duration::from_secs(5) }];
        let out = run_row(clients, RowLength::Window { secs: 1.0 }, Duration::from_secs(1)).await;
        assert_eq!((out.tally.in_window, out.tally.abandoned), (0, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn count_row_stops_at_the_count() {
        let clients = (0..3).map(|id| Fake { id, delay: Duration::from_millis(1) }).collect();
        let out = run_row(clients, RowLength::Count { allocations: 100 }, Duration::ZERO).await;
        assert_eq!(out.tally.acked.len(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn probe_sees_only_allocations_started_after_the_arm() {
        let load = SteadyLoad::start(vec![Fake { id: 0, delay: Duration::from_millis(100) }], Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(150)).await;
        let armed = Instant::now();
        load.probe().arm(armed);
        // The allocation in flight started at 100 ms and ends at 200 ms: not counted. The next
        // one starts at 200 ms and ends at 300 ms.
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(load.probe().first_success(), None);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let first = load.probe().first_success().expect("a success after the arm");
        assert_eq!(first.duration_since(armed), Duration::from_millis(150));
        let tally = load.stop().await;
        assert!(tally.acked.len() >= 3);
    }
}
