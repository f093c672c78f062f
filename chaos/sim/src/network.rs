//! [`Net`]: the simulated network between replicas (Raft RPCs) and from clients to replicas.
//!
//! Every message gets its fate when it is sent, from the network's own seeded [`Rng`]:
//! - the target is down → the sender learns at once (connection refused: `Unreachable`);
//! - the link is cut (partition, one-way cut) or the message is lost → it vanishes and the
//!   sender times out;
//! - otherwise it arrives after a random delay, and its reply travels back after another; the
//!   reply is lost if the reverse link is cut by then, or with the loss rate. Independent random
//!   delays reorder messages that are in flight together.
//!
//! Faults change the network's state: [`Net::cut`] / [`Net::uncut`] count overlapping cuts per
//! directed link; [`Net::set_loss`] and [`Net::set_slow`] change rates. A replica is reachable
//! only while it is registered with [`Net::set_up`].

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable};
use openraft::network::{RPCOption, RPCTypes, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};

use crate::node::Live;
use crate::raft::{SnapshotData, TypeConfig, Vote};
use crate::rng::Rng;

/// The fate of one message, decided when it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Arrives after `there`; its reply (if not `reply_lost`) arrives `back` later.
    Deliver { there: Duration, back: Duration, reply_lost: bool },
    /// Vanishes: lost on the wire.
    Lost,
    /// Vanishes: the link is cut.
    Cut,
    /// The target is not running: refused at once.
    Down,
}

/// Counters for the run's summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    pub cut: u64,
    pub down: u64,
    /// Snapshots a replica answered from its own log instead of installing (`hc-snapshot-guard`).
    pub snapshots_covered: u64,
}

/// What the network is doing right now. Guarded by [`Net`]'s mutex, never held across an await.
#[derive(Debug)]
struct NetState<E> {
    rng: Rng,
    /// Running replicas, by id.
    live: BTreeMap<u64, Arc<E>>,
    /// Directed links `(from, to)` that are cut, with how many faults cut each.
    cuts: BTreeMap<(u64, u64), u32>,
    /// Loss rate per message, in per mille.
    loss_per_mille: u64,
    /// One-way delay bounds in ms.
    delay_ms: (u64, u64),
    stats: NetStats,
}

/// Generic over what runs at each replica (`E`), so that its faults can be tested without Raft.
pub struct Net<E = Live> {
    state: Mutex<NetState<E>>,
}

impl<E> std::fmt::Debug for Net<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net").finish_non_exhaustive()
    }
}

/// The delay of a healthy network, one way, in ms.
pub const BASE_DELAY_MS: (u64, u64) = (1, 8);

impl<E> Net<E> {
    pub fn new(rng: Rng) -> Self {
        Net {
            state: Mutex::new(NetState {
                rng,
                live: BTreeMap::new(),
                cuts: BTreeMap::new(),
                loss_per_mille: 0,
                delay_ms: BASE_DELAY_MS,
                stats: NetStats::default(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, NetState<E>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn set_up(&self, id: u64, live: Arc<E>) {
        self.lock().live.insert(id, live);
    }

    /// Takes `id` off the network (it crashed); returns its running instance.
    pub fn set_down(&self, id: u64) -> Option<Arc<E>> {
        self.lock().live.remove(&id)
    }

    pub fn live(&self, id: u64) -> Option<Arc<E>> {
        self.lock().live.get(&id).cloned()
    }

    pub fn live_ids(&self) -> BTreeSet<u64> {
        self.lock().live.keys().copied().collect()
    }

    /// Cuts the directed link `from → to` (counted: overlapping faults each cut and uncut).
    pub fn cut(&self, from: u64, to: u64) {
        *self.lock().cuts.entry((from, to)).or_insert(0) += 1;
    }

    pub fn uncut(&self, from: u64, to: u64) {
        let mut s = self.lock();
        if let Some(n) = s.cuts.get_mut(&(from, to)) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.cuts.remove(&(from, to));
            }
        }
    }

    pub fn is_cut(&self, from: u64, to: u64) -> bool {
        self.lock().cuts.contains_key(&(from, to))
    }

    pub fn set_loss(&self, per_mille: u64) {
        self.lock().loss_per_mille = per_mille.min(1000);
    }

    pub fn set_delay(&self, delay_ms: (u64, u64)) {
        self.lock().delay_ms = delay_ms;
    }

    pub fn stats(&self) -> NetStats {
        self.lock().stats
    }

    fn count_covered_snapshot(&self) {
        self.lock().stats.snapshots_covered += 1;
    }

    /// Decides the fate of a message `from → to`. `from == None` is a client: clients are not
    /// partitioned from replicas (they sit beside every one), but see loss and delay.
    pub fn route(&self, from: Option<u64>, to: u64) -> Route {
        let mut s = self.lock();
        s.stats.sent += 1;
        let route = if !s.live.contains_key(&to) {
            Route::Down
        } else if from.is_some_and(|f| s.cuts.contains_key(&(f, to))) {
            Route::Cut
        } else {
            let loss = s.loss_per_mille;
            let (lo, hi) = s.delay_ms;
            if s.rng.per_mille(loss) {
                Route::Lost
            } else {
                let there = Duration::from_millis(s.rng.range(lo, hi));
                let back = Duration::from_millis(s.rng.range(lo, hi));
                let reply_lost = s.rng.per_mille(loss);
                Route::Deliver { there, back, reply_lost }
            }
        };
        if std::env::var_os("HC_SIM_NETLOG").is_some() {
            eprintln!("{:?} {from:?}->{to} {route:?}", tokio::time::Instant::now());
        }
        match route {
            Route::Deliver { .. } => s.stats.delivered += 1,
            Route::Lost => s.stats.lost += 1,
            Route::Cut => s.stats.cut += 1,
            Route::Down => s.stats.down += 1,
        }
        route
    }

    /// The instance a message arriving now at `to` reaches: `None` if `to` is down or the link
    /// was cut while the message was in flight.
    pub fn arrive(&self, from: Option<u64>, to: u64) -> Option<Arc<E>> {
        let s = self.lock();
        if from.is_some_and(|f| s.cuts.contains_key(&(f, to))) {
            return None;
        }
        s.live.get(&to).cloned()
    }

    /// Whether a reply from `from` to `to` (a replica, or a client when `None`) gets through now.
    fn reply_passes(&self, from: u64, to: Option<u64>) -> bool {
        let s = self.lock();
        to.is_none_or(|t| !s.cuts.contains_key(&(from, t)))
    }

    /// Carries one request and its reply, within `ttl`. `handle` runs at the target; its error is
    /// the target refusing (e.g. it is shutting down). `Err(None)` is a timeout: the message or
    /// its reply vanished, or the target took too long.
    pub async fn carry<T, Fut>(
        &self,
        from: Option<u64>,
        to: u64,
        ttl: Duration,
        handle: impl FnOnce(Arc<E>) -> Fut,
    ) -> Result<T, Option<String>>
    where
        Fut: Future<Output = Result<T, String>>,
    {
        match self.route(from, to) {
            Route::Down => {
                tokio::time::sleep(Duration::from_millis(1)).await;
                Err(Some(format!("replica {to} is down")))
            }
            Route::Cut | Route::Lost => {
                tokio::time::sleep(ttl).await;
                Err(None)
            }
            Route::Deliver { there, back, reply_lost } => {
                let trip = async {
                    tokio::time::sleep(there).await;
                    let Some(live) = self.arrive(from, to) else {
                        return std::future::pending().await;
                    };
                    let reply = handle(live).await;
                    tokio::time::sleep(back).await;
                    if reply_lost || !self.reply_passes(to, from) {
                        return std::future::pending().await;
                    }
                    reply
                };
                match tokio::time::timeout(ttl, trip).await {
                    Ok(reply) => reply.map_err(Some),
                    Err(_elapsed) => Err(None),
                }
            }
        }
    }
}

/// openraft's network for replica `from`.
#[derive(Debug, Clone)]
pub struct SimNetworkFactory {
    pub from: u64,
    pub net: Arc<Net<Live>>,
}

impl RaftNetworkFactory<TypeConfig> for SimNetworkFactory {
    type Network = SimPeer;

    async fn new_client(&mut self, target: u64, _node: &openraft::impls::BasicNode) -> SimPeer {
        SimPeer { from: self.from, to: target, net: self.net.clone() }
    }
}

/// One replica's connection to one peer.
#[derive(Debug)]
pub struct SimPeer {
    from: u64,
    to: u64,
    net: Arc<Net<Live>>,
}

type RpcError = RPCError<TypeConfig>;

impl SimPeer {
    async fn rpc<T, Fut>(
        &self,
        action: RPCTypes,
        option: &RPCOption,
        handle: impl FnOnce(Arc<Live>) -> Fut,
    ) -> Result<T, RpcError>
    where
        Fut: Future<Output = Result<T, String>>,
    {
        let ttl = option.soft_ttl();
        match self.net.carry(Some(self.from), self.to, ttl, handle).await {
            Ok(v) => Ok(v),
            Err(Some(refused)) => Err(RPCError::Unreachable(Unreachable::from_string(refused))),
            Err(None) => Err(RPCError::Timeout(Timeout { action, id: self.from, target: self.to, timeout: ttl })),
        }
    }
}

impl RaftNetworkV2<TypeConfig> for SimPeer {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RpcError> {
        self.rpc(RPCTypes::AppendEntries, &option, |live| async move {
            live.raft.append_entries(rpc).await.map_err(|e| e.to_string())
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RpcError> {
        self.rpc(RPCTypes::Vote, &option, |live| async move { live.raft.vote(rpc).await.map_err(|e| e.to_string()) })
            .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RpcError> {
        self.rpc(
            RPCTypes::Vote,
            &option,
            |live| async move { live.raft.pre_vote(rpc).await.map_err(|e| e.to_string()) },
        )
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: crate::raft::Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let net = self.net.clone();
        let send = self.rpc(RPCTypes::InstallSnapshot, &option, |live| async move {
            // The allocator's receiving side (`raft/service.rs`): a snapshot the log already
            // covers is answered, not installed.
            let covered = hc_snapshot_guard::covered_by_log(&live.raft, &vote, snapshot.meta.last_log_id.as_ref())
                .await
                .map_err(|e| e.to_string())?;
            match covered {
                Some(done) => {
                    net.count_covered_snapshot();
                    Ok(done)
                }
                None => live.raft.install_full_snapshot(vote, snapshot).await.map_err(|e| e.to_string()),
            }
        });
        tokio::select! {
            // `biased`: no random branch choice, so the run stays deterministic.
            biased;
            closed = cancel => Err(StreamingError::Closed(closed)),
            sent = send => sent.map_err(StreamingError::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> Net<()> {
        Net::new(Rng::derive(1, 2))
    }

    #[test]
    fn a_message_to_a_replica_that_is_down_is_refused() {
        let n = net();
        assert_eq!(n.route(Some(1), 2), Route::Down);
        assert_eq!(n.route(None, 2), Route::Down);
        assert_eq!(n.stats().down, 2);
    }

    #[test]
    fn a_cut_link_delivers_nothing_one_way_only_and_heals_after_every_cut_is_undone() {
        let n = net();
        n.lock().live.insert(1, Arc::new(()));
        n.lock().live.insert(2, Arc::new(()));
        n.cut(1, 2);
        n.cut(1, 2);
        for _ in 0..50 {
            assert_eq!(n.route(Some(1), 2), Route::Cut);
            assert!(matches!(n.route(Some(2), 1), Route::Deliver { .. }));
        }
        assert!(n.arrive(Some(1), 2).is_none());
        assert!(n.arrive(Some(2), 1).is_some());
        // Clients are not partitioned.
        assert!(matches!(n.route(None, 2), Route::Deliver { .. }));
        n.uncut(1, 2);
        assert_eq!(n.route(Some(1), 2), Route::Cut, "one of two overlapping cuts is still there");
        n.uncut(1, 2);
        assert!(matches!(n.route(Some(1), 2), Route::Deliver { .. }));
        assert!(!n.is_cut(1, 2));
    }

    #[test]
    fn full_loss_loses_every_message_and_no_loss_delivers_every_one_within_the_delay_bounds() {
        let n = net();
        n.lock().live.insert(2, Arc::new(()));
        n.set_loss(1000);
        assert!((0..100).all(|_| n.route(Some(1), 2) == Route::Lost));
        n.set_loss(0);
        n.set_delay((5, 9));
        for _ in 0..100 {
            let Route::Deliver { there, back, reply_lost } = n.route(Some(1), 2) else {
                panic!("not delivered with no loss");
            };
            assert!(!reply_lost);
            for d in [there, back] {
                assert!((5..=9).contains(&d.as_millis()), "{d:?}");
            }
        }
        assert_eq!(n.stats().lost, 100);
        assert_eq!(n.stats().delivered, 100);
    }

    #[test]
    fn a_message_in_flight_when_its_link_is_cut_is_not_delivered() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build();
        let rt = rt.expect("a runtime");
        rt.block_on(async {
            let n = Arc::new(net());
            n.lock().live.insert(2, Arc::new(()));
            n.set_delay((50, 50));
            let handled = Arc::new(Mutex::new(0));
            let counter = handled.clone();
            let carrying = {
                let n = n.clone();
                tokio::spawn(async move {
                    n.carry(Some(1), 2, Duration::from_millis(500), |_| async move {
                        *counter.lock().unwrap_or_else(PoisonError::into_inner) += 1;
                        Ok::<_, String>(())
                    })
                    .await
                })
            };
            tokio::time::sleep(Duration::from_millis(10)).await;
            n.cut(1, 2);
            let result = carrying.await.expect("the carrying task");
            assert_eq!(result, Err(None), "the sender times out");
            assert_eq!(*handled.lock().unwrap_or_else(PoisonError::into_inner), 0, "the target never saw it");
            // Healed: the next message gets through and is handled once.
            n.uncut(1, 2);
            let counter = handled.clone();
            let ok = n
                .carry(Some(1), 2, Duration::from_millis(500), |_| async move {
                    *counter.lock().unwrap_or_else(PoisonError::into_inner) += 1;
                    Ok::<_, String>(7)
                })
                .await;
            assert_eq!(ok, Ok(7));
            assert_eq!(*handled.lock().unwrap_or_else(PoisonError::into_inner), 1);
        });
    }

    #[test]
    fn a_reply_is_lost_when_the_reverse_link_is_cut_after_the_request_arrived() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build();
        let rt = rt.expect("a runtime");
        rt.block_on(async {
            let n = Arc::new(net());
            n.lock().live.insert(2, Arc::new(()));
            n.set_delay((50, 50));
            let handled = Arc::new(Mutex::new(0));
            let counter = handled.clone();
            let net = n.clone();
            let result = n
                .carry(Some(1), 2, Duration::from_millis(500), |_| async move {
                    *counter.lock().unwrap_or_else(PoisonError::into_inner) += 1;
                    // The partition starts while the target works on it.
                    net.cut(2, 1);
                    Ok::<_, String>(())
                })
                .await;
            assert_eq!(result, Err(None), "applied, but the sender only sees a timeout");
            assert_eq!(*handled.lock().unwrap_or_else(PoisonError::into_inner), 1);
        });
    }
}
