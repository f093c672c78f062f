//! The leader's lease keeper. Keep-alives are not written to the log (thousands of nodes
//! renewing every few seconds must not become thousands of log writes): the leader keeps each
//! lease's deadline in memory, and proposes `ExpireLease` once a deadline passes. A replica
//! that becomes leader first gives every active lease a fresh TTL, so a leader change never
//! expires a lease whose node kept renewing with the old leader.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hc_allocator_state::Command;
use hc_api::IpamError;
use hc_api::types::{Lease, LeaseState};
use tokio::time::Instant;

use crate::replica::Replica;

/// Deadlines of the leases this replica tracks as leader.
#[derive(Default)]
pub struct LeaseKeeper {
    /// node → (lease id, deadline). Guards only this map; never held across an await.
    deadlines: Mutex<HashMap<String, (u64, Instant)>>,
    /// The term in which this replica last (re)built its deadlines as leader.
    leader_term: Mutex<Option<u64>>,
}

impl LeaseKeeper {
    fn deadlines(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, Instant)>> {
        self.deadlines.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a new grant (the leader just committed it).
    pub fn granted(&self, lease: &Lease) {
        let deadline = Instant::now() + Duration::from_millis(lease.ttl_ms);
        self.deadlines().insert(lease.node.clone(), (lease.lease_id, deadline));
    }

    /// Renews a lease if `(lease_id, token)` is the node's current active grant; returns the TTL.
    /// Must run on the leader.
    pub fn keep_alive(&self, replica: &Replica, node: &str, lease_id: u64, token: u64) -> Result<u64, IpamError> {
        let lease = replica.read(|s| s.lease(node)).ok_or_else(|| IpamError::NoLease { node: node.to_owned() })?;
        if lease.state != LeaseState::Active {
            return Err(IpamError::StaleToken { node: node.to_owned(), presented: token, current: lease.token });
        }
        if lease.lease_id != lease_id || lease.token != token {
            return Err(IpamError::StaleToken { node: node.to_owned(), presented: token, current: lease.token });
        }
        let mut deadlines = self.deadlines();
        match deadlines.get(node) {
            // Already expiring: the ExpireLease proposal is in flight, the keep-alive is too late.
            Some((id, _)) if *id != lease_id => {
                return Err(IpamError::StaleToken { node: node.to_owned(), presented: token, current: lease.token });
            }
            _ => {}
        }
        deadlines.insert(node.to_owned(), (lease_id, Instant::now() + Duration::from_millis(lease.ttl_ms)));
        Ok(lease.ttl_ms)
    }

    /// One pass of the expiry loop: on a new leadership, refresh every TTL; then propose the
    /// expiry of every lease whose deadline has passed.
    pub async fn tick(&self, replica: &Replica) {
        let status = replica.status();
        if status.leader_id != Some(replica.id) {
            *self.leader_term.lock().unwrap_or_else(|p| p.into_inner()) = None;
            self.deadlines().clear();
            return;
        }
        let now = Instant::now();
        let active: Vec<Lease> =
            replica.read(|s| s.leases()).into_iter().filter(|l| l.state == LeaseState::Active).collect();
        let expired: Vec<(String, u64)> = {
            let mut term = self.leader_term.lock().unwrap_or_else(|p| p.into_inner());
            let mut deadlines = self.deadlines();
            if *term != Some(status.term) {
                // New leadership: every active lease starts a fresh TTL from now.
                *term = Some(status.term);
                deadlines.clear();
                for l in &active {
                    deadlines.insert(l.node.clone(), (l.lease_id, now + Duration::from_millis(l.ttl_ms)));
                }
                tracing::info!(leases = active.len(), term = status.term, "became leader: refreshed every lease TTL");
            }
            // Leases granted or re-granted since (e.g. through a previous leader's log) that we
            // do not track yet start their TTL now; stale entries are dropped.
            let current: HashMap<&str, &Lease> = active.iter().map(|l| (l.node.as_str(), l)).collect();
            deadlines.retain(|node, (id, _)| current.get(node.as_str()).is_some_and(|l| l.lease_id == *id));
            for l in &active {
                deadlines.entry(l.node.clone()).or_insert((l.lease_id, now + Duration::from_millis(l.ttl_ms)));
            }
            deadlines.iter().filter(|(_, (_, d))| *d <= now).map(|(n, (id, _))| (n.clone(), *id)).collect()
        };
        for (node, lease_id) in expired {
            tracing::warn!(%node, lease_id, "lease expired: no keep-alive for a whole TTL; quarantining the node's allocations");
            match replica.propose(Command::ExpireLease { node: node.clone(), lease_id }, true).await {
                Ok(_) => {
                    metrics::counter!(crate::metrics::LEASE_EXPIRIES).increment(1);
                    self.deadlines().remove(&node);
                }
                Err(e) => tracing::warn!(%node, error = %e, "could not propose lease expiry; will retry"),
            }
        }
    }

    /// Runs `tick` every `every` until `shutdown` fires.
    pub async fn run(
        self: Arc<Self>,
        replica: Arc<Replica>,
        every: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => self.tick(&replica).await,
                _ = shutdown.changed() => return,
            }
        }
    }
}
