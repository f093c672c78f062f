//! The history cut into one sub-history per address (P-compositionality): which operations can
//! touch each address, and how.
//!
//! An allocation whose outcome is unknown has no address; it is placed on the addresses that
//! later evidence ties to it: its requested address, its reservation's address (seen on an ok
//! allocation with the same key), and every address where its owner is seen holding (an ok
//! allocation, a read, the final listing, a release of the owner that lists the address). Only
//! anonymous releases could be explained by an unknown allocation left out here, and
//! [`Effect`] lets those start from a free address too, so leaving it out never makes a
//! violation up.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use crate::history::History;
use crate::operation::{Call, OkResult, Outcome, Owner, ReleaseTarget};
use crate::register::Effect;

pub(crate) type OwnerId = u32;

/// Owners interned to small ids.
#[derive(Debug, Default)]
pub(crate) struct Owners {
    list: Vec<Owner>,
    ids: HashMap<Owner, OwnerId>,
}

impl Owners {
    pub(crate) fn intern(&mut self, owner: &Owner) -> OwnerId {
        if let Some(id) = self.ids.get(owner) {
            return *id;
        }
        let id = OwnerId::try_from(self.list.len()).unwrap_or(OwnerId::MAX);
        self.list.push(owner.clone());
        self.ids.insert(owner.clone(), id);
        id
    }

    pub(crate) fn name(&self, id: OwnerId) -> String {
        self.list.get(id as usize).map_or_else(|| format!("owner #{id}"), ToString::to_string)
    }

    fn get(&self, id: OwnerId) -> Option<&Owner> {
        self.list.get(id as usize)
    }
}

/// One operation as seen by one address.
#[derive(Debug, Clone)]
pub(crate) struct Touch {
    /// Operation id (or the final state's id).
    pub op: u64,
    pub invoke_ns: u64,
    /// `u64::MAX` when the outcome is unknown: it may take effect at any time after invoke.
    pub complete_ns: u64,
    /// False for an unknown outcome: the operation may also never take effect.
    pub required: bool,
    pub effect: Effect,
}

#[derive(Debug, Default)]
pub(crate) struct Projection {
    pub owners: Owners,
    pub by_address: BTreeMap<IpAddr, Vec<Touch>>,
}

impl Projection {
    pub(crate) fn new(history: &History) -> Self {
        let mut p = Projection::default();
        let ops: Vec<_> = history.ops().filter(|op| !matches!(op.outcome, Outcome::Fail { .. })).collect();

        // 1. Who is seen holding where, and which address each reservation key gave.
        let mut seen: BTreeMap<IpAddr, BTreeSet<OwnerId>> = BTreeMap::new();
        let mut reserved: HashMap<&str, BTreeSet<IpAddr>> = HashMap::new();
        for op in &ops {
            match (&op.call, &op.outcome) {
                (Call::Allocate { owner, reservation, .. }, Outcome::Ok(OkResult::Allocated { address })) => {
                    seen.entry(*address).or_default().insert(p.owners.intern(owner));
                    if let Some(key) = reservation {
                        reserved.entry(key).or_default().insert(*address);
                    }
                }
                (Call::Read { address }, Outcome::Ok(OkResult::Read { holder: Some(h) })) => {
                    seen.entry(*address).or_default().insert(p.owners.intern(h));
                }
                (
                    Call::Release { target: ReleaseTarget::Owner(owner), .. },
                    Outcome::Ok(OkResult::Released { released }),
                ) => {
                    let id = p.owners.intern(owner);
                    for a in released {
                        seen.entry(*a).or_default().insert(id);
                    }
                }
                _ => {}
            }
        }
        let final_state = history.final_state();
        for h in final_state.iter().flat_map(|f| &f.allocations) {
            seen.entry(h.address).or_default().insert(p.owners.intern(&h.owner));
        }
        let mut seen_at: HashMap<OwnerId, BTreeSet<IpAddr>> = HashMap::new();
        for (a, owners) in &seen {
            for o in owners {
                seen_at.entry(*o).or_default().insert(*a);
            }
        }

        // 2. Where each unknown allocation may have landed; who may hold each address.
        let mut maybe: HashMap<u64, Vec<IpAddr>> = HashMap::new();
        let mut candidates = seen.clone();
        for op in &ops {
            let (Call::Allocate { owner, requested, reservation, .. }, Outcome::Unknown { .. }) =
                (&op.call, &op.outcome)
            else {
                continue;
            };
            let id = p.owners.intern(owner);
            let addresses: BTreeSet<IpAddr> = match requested {
                Some(a) => [*a].into(),
                None => {
                    let by_key = reservation.as_deref().and_then(|k| reserved.get(k)).into_iter().flatten();
                    by_key.chain(seen_at.get(&id).into_iter().flatten()).copied().collect()
                }
            };
            for a in &addresses {
                candidates.entry(*a).or_default().insert(id);
            }
            maybe.insert(op.id, addresses.into_iter().collect());
        }
        let mut candidate_at: HashMap<OwnerId, BTreeSet<IpAddr>> = HashMap::new();
        for (a, owners) in &candidates {
            for o in owners {
                candidate_at.entry(*o).or_default().insert(*a);
            }
        }

        // 3. Each operation on each address it may touch.
        for op in &ops {
            let required = op.outcome.is_ok();
            let complete_ns = if required { op.complete_ns } else { u64::MAX };
            let released: Option<BTreeSet<IpAddr>> = match &op.outcome {
                Outcome::Ok(OkResult::Released { released }) => Some(released.iter().copied().collect()),
                _ => None,
            };
            let listed = |a: &IpAddr| released.as_ref().map(|r| r.contains(a));
            let mut touches: Vec<(IpAddr, Effect)> = Vec::new();
            match &op.call {
                Call::Allocate { owner, .. } => {
                    let owner = p.owners.intern(owner);
                    match &op.outcome {
                        Outcome::Ok(OkResult::Allocated { address }) => {
                            touches.push((*address, Effect::Allocate { owner }));
                        }
                        _ => {
                            for a in maybe.get(&op.id).into_iter().flatten() {
                                touches.push((*a, Effect::Allocate { owner }));
                            }
                        }
                    }
                }
                Call::Release { target: ReleaseTarget::Owner(owner), .. } => {
                    let owner = p.owners.intern(owner);
                    let mut addresses = candidate_at.get(&owner).cloned().unwrap_or_default();
                    addresses.extend(released.iter().flatten());
                    for a in addresses {
                        touches.push((a, Effect::ReleaseOwner { owner, listed: listed(&a) }));
                    }
                }
                Call::Release { target: ReleaseTarget::Address(address), .. } => {
                    let mut addresses: BTreeSet<IpAddr> = [*address].into();
                    addresses.extend(released.iter().flatten());
                    for a in addresses {
                        touches.push((a, Effect::ReleaseAddress { listed: listed(&a) }));
                    }
                }
                Call::NodeGone { node } | Call::Reconcile { fence: crate::operation::Fence { node, .. }, .. } => {
                    let valid = match &op.call {
                        Call::Reconcile { valid, .. } => valid.as_slice(),
                        _ => &[],
                    };
                    let drops = |o: &Owner| o.node == *node && !valid.contains(&o.attachment());
                    let mut addresses: BTreeSet<IpAddr> = released.iter().flatten().copied().collect();
                    for (a, owners) in &candidates {
                        if owners.iter().any(|o| p.owners.get(*o).is_some_and(drops)) {
                            addresses.insert(*a);
                        }
                    }
                    for a in addresses {
                        let releases = candidates
                            .get(&a)
                            .into_iter()
                            .flatten()
                            .copied()
                            .filter(|o| p.owners.get(*o).is_some_and(drops))
                            .collect();
                        touches.push((a, Effect::ReleaseNode { releases, listed: listed(&a) }));
                    }
                }
                Call::Read { address } => {
                    if let Outcome::Ok(OkResult::Read { holder }) = &op.outcome {
                        let holder = holder.as_ref().map(|h| p.owners.intern(h));
                        touches.push((*address, Effect::Read { holder }));
                    }
                }
                Call::Grant { .. } | Call::Expire { .. } => {}
            }
            for (a, effect) in touches {
                p.by_address.entry(a).or_default().push(Touch {
                    op: op.id,
                    invoke_ns: op.invoke_ns,
                    complete_ns,
                    required,
                    effect,
                });
            }
        }

        // 4. The final listing reads every address: the ones it names and every other one we know.
        if let Some(f) = final_state {
            let mut holders: BTreeMap<IpAddr, Option<OwnerId>> = p.by_address.keys().map(|a| (*a, None)).collect();
            for h in &f.allocations {
                holders.insert(h.address, Some(p.owners.intern(&h.owner)));
            }
            for (a, holder) in holders {
                p.by_address.entry(a).or_default().push(Touch {
                    op: f.id,
                    invoke_ns: f.invoke_ns,
                    complete_ns: f.complete_ns,
                    required: true,
                    effect: Effect::Read { holder },
                });
            }
        }
        p
    }
}
