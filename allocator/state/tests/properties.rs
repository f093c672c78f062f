//! Property tests: random sequences of allocate, release, lease grants and expiries, reconciles,
//! node losses, reservations, clock steps (also backwards) and snapshot round trips, checked
//! against a model built only from the replies:
//! - an address never has two holders (invariant 1), quarantined ones included (invariant 4);
//! - a stale or foreign token never gets a write through, tokens only grow (invariant 3);
//! - ADD is idempotent per attachment, DEL of nothing succeeds (invariant 5);
//! - a released address is not handed to a new owner before its cooldown ends;
//! - pool counts are exact (used + reserved_idle + cooling + free == size, each as modelled);
//! - a state survives serialization unchanged, and a restored state decides the same.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use hc_allocator_state::{ApplyContext, Command, Output, Request, Response, State};
use hc_api::IpamError;
use hc_api::types::{
    AllocateRequest, AllocationState, AttachmentId, Fence, LeaseState, Owner, PoolSpec, ReleaseTarget, Reservation,
};
use proptest::prelude::*;

const NODES: usize = 3;
const CONTAINERS: usize = 14;
const KEYS: usize = 3;
const COOLDOWN_SECS: u64 = 5;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Two 16-address pools: IPv4 with a gateway, an exclusion and a cooldown; IPv6 as the default.
fn pools() -> Vec<PoolSpec> {
    vec![
        PoolSpec {
            name: "p4".into(),
            cidr: "10.0.0.0/28".parse().unwrap(),
            gateway: Some(ip("10.0.0.1")),
            vlan: Some(10),
            routes: vec![],
            dns: Default::default(),
            exclude: vec!["10.0.0.14".parse().unwrap()],
            selector: Default::default(),
            default: false,
            reuse_cooldown_secs: COOLDOWN_SECS,
        },
        PoolSpec {
            name: "p6".into(),
            cidr: "fd00::/124".parse().unwrap(),
            gateway: None,
            vlan: None,
            routes: vec![],
            dns: Default::default(),
            exclude: vec![],
            selector: Default::default(),
            default: true,
            reuse_cooldown_secs: 0,
        },
    ]
}

/// Address number `n` (0–15) of pool `p` (0 or 1).
fn addr(p: usize, n: u8) -> IpAddr {
    if p == 0 { ip(&format!("10.0.0.{n}")) } else { ip(&format!("fd00::{n:x}")) }
}

/// Addresses the pool never hands out.
fn fixed(p: usize, n: u8) -> bool {
    if p == 0 { [0, 1, 14, 15].contains(&n) } else { n == 0 }
}

fn node(i: usize) -> String {
    format!("n{i}")
}

fn attachment(c: usize) -> AttachmentId {
    AttachmentId { container_id: format!("c{c}"), interface: "eth0".into() }
}

#[derive(Debug, Clone, Copy)]
enum TokenMode {
    Current,
    Stale,
    Future,
}

#[derive(Debug, Clone)]
enum Op {
    Tick(u64),
    ClockBack(u64),
    Grant(usize),
    Expire {
        node: usize,
        current: bool,
    },
    Allocate {
        container: usize,
        node: usize,
        pool: Option<usize>,
        address: Option<u8>,
        keys: Vec<usize>,
        fenced: Option<TokenMode>,
    },
    ReleaseOwner {
        container: usize,
        fenced: Option<(usize, TokenMode)>,
    },
    ReleaseAddress {
        pool: usize,
        n: u8,
        fenced: Option<(usize, TokenMode)>,
    },
    Reconcile {
        node: usize,
        valid: Vec<usize>,
        token: TokenMode,
    },
    NodeGone(usize),
    PutReservation {
        key: usize,
        pool: usize,
        n: u8,
    },
    DeleteReservation(usize),
    Snapshot,
}

fn token_mode() -> impl Strategy<Value = TokenMode> {
    prop_oneof![8 => Just(TokenMode::Current), 1 => Just(TokenMode::Stale), 1 => Just(TokenMode::Future)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u64..8_000).prop_map(Op::Tick),
        1 => (0u64..20_000).prop_map(Op::ClockBack),
        2 => (0..NODES).prop_map(Op::Grant),
        1 => (0..NODES, any::<bool>()).prop_map(|(node, current)| Op::Expire { node, current }),
        10 => (
            0..CONTAINERS,
            0..NODES,
            proptest::option::of(0usize..2),
            proptest::option::weighted(0.2, 0u8..16),
            proptest::collection::vec(0..KEYS, 0..2),
            proptest::option::weighted(0.6, token_mode()),
        )
            .prop_map(|(container, node, pool, address, keys, fenced)| Op::Allocate {
                container,
                node,
                pool,
                address,
                keys,
                fenced
            }),
        4 => (0..CONTAINERS, proptest::option::of((0..NODES, token_mode())))
            .prop_map(|(container, fenced)| Op::ReleaseOwner { container, fenced }),
        2 => (0usize..2, 0u8..16, proptest::option::of((0..NODES, token_mode())))
            .prop_map(|(pool, n, fenced)| Op::ReleaseAddress { pool, n, fenced }),
        1 => (0..NODES, proptest::collection::vec(0..CONTAINERS, 0..6), token_mode())
            .prop_map(|(node, valid, token)| Op::Reconcile { node, valid, token }),
        1 => (0..NODES).prop_map(Op::NodeGone),
        2 => (0..KEYS, 0usize..2, 0u8..16).prop_map(|(key, pool, n)| Op::PutReservation { key, pool, n }),
        1 => (0..KEYS).prop_map(Op::DeleteReservation),
        1 => Just(Op::Snapshot),
    ]
}

/// What the replies have told us.
#[derive(Default)]
struct Model {
    /// Acknowledged holders: address → (attachment, node).
    holders: BTreeMap<IpAddr, (AttachmentId, String)>,
    /// Released addresses → time from which another owner may get them.
    cooling: BTreeMap<IpAddr, u64>,
    /// Node → (current token, active).
    leases: BTreeMap<String, (u64, bool)>,
    /// Node → highest token ever seen.
    max_token: BTreeMap<String, u64>,
}

struct Run {
    state: State,
    index: u64,
    leader_ms: u64,
    model: Model,
    /// Every entry applied, with its response.
    log: Vec<(ApplyContext, Request, Response)>,
}

impl Run {
    fn apply(&mut self, command: Command) -> Response {
        self.index += 1;
        let ctx = ApplyContext { log_index: self.index };
        let request = Request { time_ms: self.leader_ms, command };
        let response = self.state.apply(ctx, &request);
        self.log.push((ctx, request, response.clone()));
        response
    }

    fn fence(&self, node: usize, mode: TokenMode) -> Fence {
        let n = self::node(node);
        let (current, _) = self.model.leases.get(&n).copied().unwrap_or((0, false));
        let token = match mode {
            TokenMode::Current => current,
            TokenMode::Stale => current.saturating_sub(1),
            TokenMode::Future => current + 1,
        };
        Fence { node: n, token }
    }

    /// Whether the model expects a fenced write with `fence` to pass the fencing check.
    fn admits(&self, fence: &Fence) -> bool {
        self.model.leases.get(&fence.node).is_some_and(|&(t, active)| active && t == fence.token)
    }

    /// Addresses of pool `p` a plain search may take now, as the model sees it.
    fn free_in(&self, p: usize) -> u128 {
        let now = self.state.time_ms();
        let reserved: BTreeSet<IpAddr> = self.state.reservations().iter().map(|r| r.address).collect();
        (0..16u8)
            .filter(|n| !fixed(p, *n))
            .map(|n| addr(p, n))
            .filter(|a| {
                !self.model.holders.contains_key(a)
                    && !reserved.contains(a)
                    && self.model.cooling.get(a).is_none_or(|u| *u <= now)
            })
            .count() as u128
    }

    fn record_released(&mut self, released: &[hc_api::types::Allocation]) -> Result<(), TestCaseError> {
        for a in released {
            let held = self.model.holders.remove(&a.address);
            prop_assert_eq!(held.map(|h| h.0), Some(a.owner.attachment()), "released an address nobody held");
            if a.pool == "p4" {
                self.model.cooling.insert(a.address, self.state.time_ms() + COOLDOWN_SECS * 1000);
            }
        }
        Ok(())
    }

    fn step(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Tick(ms) => {
                self.leader_ms += ms;
                self.apply(Command::ExpireLease { node: "nobody".into(), lease_id: 0 }).unwrap();
            }
            Op::ClockBack(ms) => {
                self.leader_ms = self.leader_ms.saturating_sub(ms);
                let before = self.state.time_ms();
                self.apply(Command::ExpireLease { node: "nobody".into(), lease_id: 0 }).unwrap();
                prop_assert_eq!(self.state.time_ms(), before, "the state's clock stepped back");
            }
            Op::Grant(i) => {
                let n = node(i);
                let Ok(Output::Lease(l)) = self.apply(Command::GrantLease { node: n.clone(), ttl_ms: 1000 }) else {
                    return Err(TestCaseError::fail("grant refused"));
                };
                let max = self.model.max_token.get(&n).copied().unwrap_or(0);
                prop_assert!(l.token > max, "token {} not above {}", l.token, max);
                self.model.max_token.insert(n.clone(), l.token);
                self.model.leases.insert(n, (l.token, true));
            }
            Op::Expire { node: i, current } => {
                let n = node(i);
                let id = self.state.lease(&n).map_or(0, |l| if current { l.lease_id } else { l.lease_id - 1 });
                prop_assert_eq!(self.apply(Command::ExpireLease { node: n.clone(), lease_id: id }), Ok(Output::Done));
                if current && let Some(l) = self.model.leases.get_mut(&n) {
                    l.1 = false;
                }
                for a in self.state.allocations(None, Some(&n), None) {
                    if self.model.leases.get(&n).is_some_and(|l| !l.1) {
                        prop_assert_eq!(a.state, AllocationState::Quarantined);
                    }
                }
            }
            Op::Allocate { container, node: i, pool, address, keys, fenced } => {
                let fence = fenced.map(|m| self.fence(i, m));
                let request = AllocateRequest {
                    owner: Owner {
                        container_id: format!("c{container}"),
                        interface: "eth0".into(),
                        namespace: "ns".into(),
                        pod: format!("pod{container}"),
                        node: node(i),
                    },
                    pool: pool.map(|p| ["p4", "p6"][p].to_owned()),
                    address: address.map(|n| addr(pool.unwrap_or(0), n)),
                    reservation_keys: keys.iter().map(|k| format!("k{k}")).collect(),
                    ..Default::default()
                };
                let plain_search = request.address.is_none() && request.reservation_keys.is_empty();
                let free_before = pool.map(|p| self.free_in(p));
                let r = self.apply(Command::Allocate { fence: fence.clone(), request: request.clone() });
                if let Some(f) = &fence
                    && !self.admits(f)
                {
                    prop_assert!(
                        matches!(r, Err(IpamError::StaleToken { .. } | IpamError::NoLease { .. })),
                        "fenced write with a bad token got {:?}",
                        r
                    );
                    return Ok(());
                }
                match r {
                    Ok(Output::Allocated(a)) => {
                        let att = request.owner.attachment();
                        let addr = a.allocation.address;
                        if a.created {
                            prop_assert!(
                                !self.model.holders.contains_key(&addr),
                                "{} given to {:?} while held by {:?}",
                                addr,
                                att,
                                self.model.holders.get(&addr)
                            );
                            prop_assert!(
                                !self.model.holders.values().any(|h| h.0 == att),
                                "attachment got a second address"
                            );
                            if a.allocation.reservation.is_none() {
                                let now = self.state.time_ms();
                                let until = self.model.cooling.get(&addr).copied().unwrap_or(0);
                                prop_assert!(now >= until, "{} reused at {} before {}", addr, now, until);
                            }
                            self.model.cooling.remove(&addr);
                            self.model.holders.insert(addr, (att, request.owner.node.clone()));
                        } else {
                            prop_assert_eq!(self.model.holders.get(&addr).map(|h| &h.0), Some(&att));
                        }
                    }
                    Err(IpamError::PoolExhausted { .. }) if plain_search => {
                        if let Some(free) = free_before {
                            prop_assert_eq!(free, 0, "PoolExhausted with free addresses");
                        }
                    }
                    Err(_) => {
                        if let (Some(free), true) = (free_before, plain_search) {
                            let held = self.model.holders.values().any(|h| h.0 == request.owner.attachment());
                            prop_assert!(free == 0 || held, "plain allocation refused with {} free", free);
                        }
                    }
                    Ok(o) => return Err(TestCaseError::fail(format!("unexpected {o:?}"))),
                }
            }
            Op::ReleaseOwner { container, fenced } => {
                let target = ReleaseTarget::Owner(attachment(container));
                self.release(target, fenced)?;
            }
            Op::ReleaseAddress { pool, n, fenced } => {
                self.release(ReleaseTarget::Address(addr(pool, n)), fenced)?;
            }
            Op::Reconcile { node: i, valid, token } => {
                let fence = self.fence(i, token);
                let valid: Vec<AttachmentId> = valid.into_iter().map(attachment).collect();
                let r = self.apply(Command::Reconcile { fence: fence.clone(), valid: valid.clone() });
                if !self.admits(&fence) {
                    prop_assert!(
                        matches!(r, Err(IpamError::StaleToken { .. } | IpamError::NoLease { .. })),
                        "bad token got {:?}",
                        r
                    );
                    return Ok(());
                }
                let Ok(Output::Reconciled { released, .. }) = r else {
                    return Err(TestCaseError::fail(format!("reconcile gave {r:?}")));
                };
                let mut gone = Vec::new();
                for a in released {
                    let held = self.model.holders.get(&a).cloned();
                    prop_assert!(held.as_ref().is_some_and(|h| h.1 == fence.node && !valid.contains(&h.0)));
                    gone.push(hc_api::types::Allocation {
                        address: a,
                        pool: if a.is_ipv4() { "p4" } else { "p6" }.into(),
                        owner: Owner {
                            container_id: held.as_ref().map(|h| h.0.container_id.clone()).unwrap_or_default(),
                            interface: "eth0".into(),
                            ..Default::default()
                        },
                        reservation: None,
                        log_index: 0,
                        allocated_at_ms: 0,
                        state: AllocationState::Active,
                    });
                }
                self.record_released(&gone)?;
                for a in self.state.allocations(None, Some(&fence.node), None) {
                    prop_assert_eq!(a.state, AllocationState::Active);
                }
            }
            Op::NodeGone(i) => {
                let n = node(i);
                let Ok(Output::Released(r)) = self.apply(Command::NodeGone { node: n.clone() }) else {
                    return Err(TestCaseError::fail("node gone refused"));
                };
                prop_assert!(r.released.iter().all(|a| a.owner.node == n));
                self.record_released(&r.released)?;
                self.model.leases.remove(&n);
                prop_assert!(self.state.lease(&n).is_none());
            }
            Op::PutReservation { key, pool, n } => {
                let r = Reservation { key: format!("k{key}"), pool: ["p4", "p6"][pool].into(), address: addr(pool, n) };
                let _ = self.apply(Command::PutReservation(r));
            }
            Op::DeleteReservation(key) => {
                let _ = self.apply(Command::DeleteReservation { key: format!("k{key}") });
            }
            Op::Snapshot => {
                let bytes = rmp_serde::to_vec_named(&self.state).unwrap();
                let back: State = rmp_serde::from_slice(&bytes).unwrap();
                prop_assert_eq!(&back, &self.state);
                let json = serde_json::to_vec(&self.state).unwrap();
                let back2: State = serde_json::from_slice(&json).unwrap();
                prop_assert_eq!(&back2, &self.state);
                self.state = back;
            }
        }
        Ok(())
    }

    fn release(&mut self, target: ReleaseTarget, fenced: Option<(usize, TokenMode)>) -> Result<(), TestCaseError> {
        let fence = fenced.map(|(i, m)| self.fence(i, m));
        let r = self.apply(Command::Release { fence: fence.clone(), target });
        if let Some(f) = &fence
            && !self.admits(f)
        {
            prop_assert!(
                matches!(r, Err(IpamError::StaleToken { .. } | IpamError::NoLease { .. })),
                "bad token got {:?}",
                r
            );
            return Ok(());
        }
        let Ok(Output::Released(r)) = r else {
            return Err(TestCaseError::fail(format!("release gave {r:?}")));
        };
        prop_assert!(r.released.len() <= 1);
        if let Some(f) = &fence {
            prop_assert!(
                r.released.iter().all(|a| a.owner.node == f.node),
                "fenced release took another node's address"
            );
        }
        self.record_released(&r.released)
    }

    /// Everything the model knows must match the state.
    fn check(&self) -> Result<(), TestCaseError> {
        self.state.check_invariants().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let held: BTreeMap<IpAddr, AttachmentId> =
            self.state.allocations(None, None, None).into_iter().map(|a| (a.address, a.owner.attachment())).collect();
        let model: BTreeMap<IpAddr, AttachmentId> = self.model.holders.iter().map(|(a, h)| (*a, h.0.clone())).collect();
        prop_assert_eq!(held, model);
        for (n, &(token, active)) in &self.model.leases {
            let l = self.state.lease(n).unwrap();
            prop_assert_eq!(l.token, token);
            prop_assert_eq!(l.state == LeaseState::Active, active);
        }
        let now = self.state.time_ms();
        let reserved: BTreeSet<IpAddr> = self.state.reservations().iter().map(|r| r.address).collect();
        for (p, spec) in pools().iter().enumerate() {
            let st = self.state.pool(&spec.name).unwrap();
            let usable: Vec<IpAddr> = (0..16u8).filter(|n| !fixed(p, *n)).map(|n| addr(p, n)).collect();
            let used = usable.iter().filter(|a| self.model.holders.contains_key(a)).count() as u64;
            let reserved_idle =
                usable.iter().filter(|a| reserved.contains(a) && !self.model.holders.contains_key(a)).count() as u64;
            let cooling = usable
                .iter()
                .filter(|a| {
                    !reserved.contains(a)
                        && !self.model.holders.contains_key(a)
                        && self.model.cooling.get(a).is_some_and(|u| *u > now)
                })
                .count() as u64;
            prop_assert_eq!(st.size, usable.len() as u128);
            prop_assert_eq!(
                (st.used, st.reserved_idle, st.cooling),
                (used, reserved_idle, cooling),
                "pool {}",
                spec.name
            );
            prop_assert_eq!(st.free, self.free_in(p));
            prop_assert_eq!(st.used as u128 + st.reserved_idle as u128 + st.cooling as u128 + st.free, st.size);
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn random_histories_keep_every_invariant(ops in proptest::collection::vec(op(), 1..80)) {
        let mut run = Run { state: State::default(), index: 0, leader_ms: 1_000_000, model: Model::default(), log: Vec::new() };
        for spec in pools() {
            prop_assert!(run.apply(Command::CreatePool(spec)).is_ok());
        }
        for op in ops {
            run.step(op)?;
            run.check()?;
        }
        // A replica restored from a snapshot before every entry decides exactly alike.
        let mut twin = State::default();
        for (ctx, request, response) in &run.log {
            twin = rmp_serde::from_slice(&rmp_serde::to_vec_named(&twin).unwrap()).unwrap();
            prop_assert_eq!(&twin.apply(*ctx, request), response);
        }
        prop_assert_eq!(&twin, &run.state);
    }
}
