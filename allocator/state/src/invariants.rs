//! [`State::check_invariants`]: the state's own rules, checked from scratch. For tests, fuzzers
//! and the chaos checker; O(size of the state).

use hc_api::types::LeaseState;

use crate::pool::to_u128;
use crate::state::State;

/// A rule the state breaks. Never expected: it means a bug.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("state invariant broken: {0}")]
pub struct InvariantViolation(pub String);

impl State {
    /// Checks that the indexes agree with the replicated data (by rebuilding them), that every
    /// allocation, reservation and cooldown sits on a usable address of its pool, that no address
    /// is both allocated and cooling, that every pool's counts add up to its size and agree with
    /// its search index, and that leases never carry a token above the node's maximum.
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        let fail = |m: String| Err(InvariantViolation(m));
        let rebuilt = match State::from_snapshot(self.to_snapshot()) {
            Ok(s) => s,
            Err(e) => return fail(e.to_string()),
        };
        if rebuilt != *self {
            return fail("indexes differ from the ones rebuilt from the replicated data".to_owned());
        }
        for (key, r) in &self.reservations {
            if *key != r.key {
                return fail(format!("reservation stored under {key} names {}", r.key));
            }
        }
        for pool in self.pools.values() {
            let st = self.status_of(pool);
            let sum = u128::from(st.used) + u128::from(st.reserved_idle) + u128::from(st.cooling) + st.free;
            if sum != st.size {
                return fail(format!("pool {}: counts add up to {sum}, size is {}", pool.name(), st.size));
            }
            // What a search can find, counted from the index, is exactly `free`.
            let (lo, hi) = (to_u128(pool.first()), to_u128(pool.last()));
            let span = (hi - lo).saturating_add(1);
            let free_in_index = span - pool.occupied_count();
            if free_in_index != st.free {
                return fail(format!(
                    "pool {}: index has {free_in_index} free addresses, counts say {}",
                    pool.name(),
                    st.free
                ));
            }
            for address in pool.cooling.keys() {
                if self.allocations.contains_key(address) {
                    return fail(format!("{address} is allocated and cooling down"));
                }
            }
        }
        for lease in self.leases.values() {
            if self.max_tokens.get(&lease.node).is_none_or(|t| *t < lease.token) {
                return fail(format!("lease of {} is above the node's maximum token", lease.node));
            }
            if lease.state == LeaseState::Active && lease.lease_id != lease.token {
                return fail(format!("lease of {} has id {} but token {}", lease.node, lease.lease_id, lease.token));
            }
        }
        Ok(())
    }
}
