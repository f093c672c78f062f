//! The node's lease: acquired at start, kept alive, and re-acquired when it is lost.
//!
//! The token of the current lease goes on every write the agent makes (the fence). The agent
//! serves ADD only while it holds a lease it believes valid (renewed within the TTL) and has
//! reconciled since the grant; otherwise CNI ADD answers "try again later" (11).
//!
//! Lost means: the allocator answered StaleToken or NoLease (to a keep-alive or to any CNI
//! write, reported through [`LeaseHandle::report_fenced`]), or no renewal succeeded for a whole
//! TTL. Then the keeper marks the node not ready, asks for a new grant (a larger token, which
//! fences anything still in flight under the old one), reconciles, and serves again.

use std::sync::Arc;
use std::time::Duration;

use hc_api::types::{Fence, Lease};
use hc_api::{ErrorKind, IpamError};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::connection::Connection;
use crate::metrics;

/// What the rest of the agent sees of the lease.
#[derive(Debug, Clone, Default)]
pub struct LeaseStatus {
    pub lease: Option<Lease>,
    /// Reconciled since the grant, so ADD may be served.
    pub reconciled: bool,
    /// The lease is valid until this instant unless renewed (last successful renewal's send
    /// time + TTL: conservative, the allocator counts from when it received it).
    pub valid_until: Option<Instant>,
}

impl LeaseStatus {
    /// The fence for writes, if the lease is believed valid now.
    pub fn fence(&self, now: Instant) -> Option<Fence> {
        match (&self.lease, self.valid_until) {
            (Some(l), Some(until)) if now < until => Some(Fence { node: l.node.clone(), token: l.token }),
            _ => None,
        }
    }

    /// May ADD be served: a valid lease and a reconcile since it was granted.
    pub fn ready(&self, now: Instant) -> bool {
        self.reconciled && self.fence(now).is_some()
    }
}

/// Shared between the keeper and whoever writes with the fence.
#[derive(Debug)]
pub struct LeaseHandle {
    tx: watch::Sender<LeaseStatus>,
    /// Wakes the keeper when a write was refused for a stale token or a missing lease.
    fenced: Notify,
}

impl LeaseHandle {
    pub fn new() -> Arc<LeaseHandle> {
        Arc::new(LeaseHandle { tx: watch::Sender::new(LeaseStatus::default()), fenced: Notify::new() })
    }

    pub fn status(&self) -> LeaseStatus {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<LeaseStatus> {
        self.tx.subscribe()
    }

    /// A write with `token` was refused as stale or lease-less: unless a newer lease is already
    /// in place, stop serving and let the keeper re-acquire.
    pub fn report_fenced(&self, token: u64) {
        let changed = self.tx.send_if_modified(|s| match &s.lease {
            Some(l) if l.token == token && s.reconciled => {
                s.reconciled = false;
                true
            }
            _ => false,
        });
        if changed {
            warn!(token, "a write was fenced; re-acquiring the lease");
            metrics::lease_valid(false);
        }
        self.fenced.notify_one();
    }

    fn publish(&self, status: LeaseStatus) {
        metrics::lease_valid(status.ready(Instant::now()));
        self.tx.send_replace(status);
    }
}

/// What to do after one renewal attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Renewed: valid until send time + the granted TTL.
    Renewed(Duration),
    /// The allocator no longer knows this lease: re-acquire now.
    Lost,
    /// No answer, but the lease may still be valid: try again at the next tick.
    Retry,
    /// No answer for a whole TTL: consider it lost.
    Expired,
}

/// Pure decision over one keep-alive's outcome. `result` is `None` on a timeout.
pub fn after_renewal(result: Option<&Result<Duration, IpamError>>, now: Instant, valid_until: Instant) -> Renewal {
    match result {
        Some(Ok(ttl)) => Renewal::Renewed(*ttl),
        Some(Err(e)) if is_fenced(e) => Renewal::Lost,
        _ if now >= valid_until => Renewal::Expired,
        _ => Renewal::Retry,
    }
}

/// StaleToken or NoLease: the write's lease is gone for good.
pub fn is_fenced(e: &IpamError) -> bool {
    matches!(e.kind(), ErrorKind::StaleToken | ErrorKind::NoLease)
}

/// Called after every grant, before serving again: brings the allocator's view of the node in
/// line with the local record (see `reconciler.rs`).
pub trait AfterGrant: Send + Sync {
    fn after_grant(&self, fence: Fence) -> impl Future<Output = Result<(), IpamError>> + Send;
}

pub struct LeaseKeeper {
    pub allocator: Connection,
    pub node: String,
    pub ttl: Duration,
    pub interval: Duration,
    pub handle: Arc<LeaseHandle>,
}

impl LeaseKeeper {
    /// Runs until `shutdown` fires.
    pub async fn run(self, after_grant: &impl AfterGrant, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(self.interval);
        // A grant stuck on a dead connection is abandoned (and the client reconnected) after
        // this, so recovery after a partition heals is bounded by it, not by TCP.
        let grant_patience = self.interval.max(Duration::from_secs(1)).min(self.ttl);
        'acquire: loop {
            // 1. Acquire.
            let (lease, sent) = loop {
                let sent = Instant::now();
                let client = self.allocator.client();
                let attempt = tokio::select! {
                    r = tokio::time::timeout(grant_patience, client.grant_lease(&self.node, self.ttl)) => r,
                    _ = shutdown.changed() => return,
                };
                match attempt {
                    Ok(Ok(lease)) => break (lease, sent),
                    Ok(Err(e)) => {
                        warn!(error = %e, "lease grant failed; retrying");
                        self.allocator.after_error(&e);
                    }
                    Err(_) => {
                        warn!("lease grant timed out; retrying");
                        self.allocator.reconnect();
                    }
                }
                if backoff.wait(&mut shutdown).await {
                    return;
                }
            };
            info!(node = %lease.node, token = lease.token, ttl_ms = lease.ttl_ms, "lease granted");
            metrics::lease_granted(lease.token);
            let mut valid_until = sent + Duration::from_millis(lease.ttl_ms);
            self.handle.publish(LeaseStatus {
                lease: Some(lease.clone()),
                reconciled: false,
                valid_until: Some(valid_until),
            });
            let fence = Fence { node: lease.node.clone(), token: lease.token };

            // 2. Reconcile, then serve.
            loop {
                let result = tokio::select! {
                    r = after_grant.after_grant(fence.clone()) => r,
                    _ = shutdown.changed() => return,
                };
                match result {
                    Ok(()) => break,
                    Err(e) if is_fenced(&e) => continue 'acquire,
                    Err(e) => warn!(error = %e, "reconcile after grant failed; retrying"),
                }
                if Instant::now() >= valid_until {
                    continue 'acquire;
                }
                if backoff.wait(&mut shutdown).await {
                    return;
                }
            }
            backoff.reset();
            self.handle.publish(LeaseStatus {
                lease: Some(lease.clone()),
                reconciled: true,
                valid_until: Some(valid_until),
            });
            info!(token = lease.token, "reconciled; serving");

            // 3. Keep alive.
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(self.interval) => {}
                    _ = self.handle.fenced.notified() => {
                        if !self.handle.status().reconciled { continue 'acquire; }
                    }
                    _ = shutdown.changed() => return,
                }
                let sent = Instant::now();
                // Keep trying while the lease may still be valid, at least one interval.
                let patience = valid_until.saturating_duration_since(sent).max(self.interval);
                let result = tokio::time::timeout(patience, self.allocator.client().keep_alive(&lease)).await.ok();
                match &result {
                    Some(Err(e)) => self.allocator.after_error(e),
                    None => self.allocator.reconnect(),
                    Some(Ok(_)) => {}
                }
                match after_renewal(result.as_ref(), Instant::now(), valid_until) {
                    Renewal::Renewed(ttl) => {
                        valid_until = sent + ttl;
                        let reconciled = self.handle.status().reconciled;
                        if !reconciled {
                            continue 'acquire;
                        }
                        self.handle.publish(LeaseStatus {
                            lease: Some(lease.clone()),
                            reconciled,
                            valid_until: Some(valid_until),
                        });
                    }
                    Renewal::Lost => {
                        warn!(token = lease.token, "the allocator no longer knows this lease; re-acquiring");
                        continue 'acquire;
                    }
                    Renewal::Expired => {
                        warn!(token = lease.token, "no renewal for a whole TTL; re-acquiring");
                        metrics::lease_valid(false);
                        continue 'acquire;
                    }
                    Renewal::Retry => warn!("keep-alive failed; the lease is still valid, retrying"),
                }
            }
        }
    }
}

/// Exponential backoff between retries, capped at the keep-alive interval.
struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Backoff {
    fn new(cap: Duration) -> Backoff {
        Backoff { next: Duration::from_millis(50), cap }
    }

    fn reset(&mut self) {
        self.next = Duration::from_millis(50);
    }

    /// Sleeps; returns true if shutdown fired meanwhile.
    async fn wait(&mut self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let d = self.next;
        self.next = (self.next * 2).min(self.cap);
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = shutdown.changed() => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hc_api::types::LeaseState;

    fn lease(token: u64) -> Lease {
        Lease { node: "n".into(), lease_id: token, token, ttl_ms: 1000, state: LeaseState::Active, granted_at_ms: 0 }
    }

    #[test]
    fn renewal_decisions() {
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        let ok = Ok(Duration::from_secs(10));
        assert_eq!(after_renewal(Some(&ok), now, later), Renewal::Renewed(Duration::from_secs(10)));
        let stale = Err(IpamError::StaleToken { node: "n".into(), presented: 1, current: 2 });
        assert_eq!(after_renewal(Some(&stale), now, later), Renewal::Lost);
        assert_eq!(after_renewal(Some(&Err(IpamError::NoLease { node: "n".into() })), now, later), Renewal::Lost);
        let down = Err(IpamError::Unavailable { reason: "x".into() });
        assert_eq!(after_renewal(Some(&down), now, later), Renewal::Retry);
        assert_eq!(after_renewal(None, now, later), Renewal::Retry);
        assert_eq!(after_renewal(Some(&down), later, later), Renewal::Expired);
        assert_eq!(after_renewal(None, later + Duration::from_millis(1), later), Renewal::Expired);
    }

    #[test]
    fn fence_only_while_valid_and_ready_only_after_reconcile() {
        let now = Instant::now();
        let mut s =
            LeaseStatus { lease: Some(lease(7)), reconciled: false, valid_until: Some(now + Duration::from_secs(1)) };
        assert_eq!(s.fence(now).map(|f| f.token), Some(7));
        assert!(!s.ready(now));
        s.reconciled = true;
        assert!(s.ready(now));
        assert!(!s.ready(now + Duration::from_secs(1)));
        assert!(LeaseStatus::default().fence(now).is_none());
    }

    #[tokio::test]
    async fn a_fenced_write_under_an_old_token_does_not_unready_a_new_lease() {
        let h = LeaseHandle::new();
        let valid_until = Some(Instant::now() + Duration::from_secs(5));
        h.publish(LeaseStatus { lease: Some(lease(9)), reconciled: true, valid_until });
        h.report_fenced(8);
        assert!(h.status().reconciled);
        h.report_fenced(9);
        assert!(!h.status().reconciled);
    }
}
