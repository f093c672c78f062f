//! Release (CNI DEL, operator release).

use hc_api::types::{Fence, ReleaseTarget, Released};

use crate::command::{Output, Response};
use crate::state::State;

impl State {
    /// Releases what an attachment or an address holds. Releasing nothing succeeds with an empty
    /// list (DEL is idempotent, invariant 5). A fenced release only ever touches its own node's
    /// allocations: another node's address is treated as not found.
    pub(crate) fn release(&mut self, fence: Option<&Fence>, target: &ReleaseTarget) -> Response {
        if let Some(f) = fence {
            self.check_fence(f)?;
        }
        let address = match target {
            ReleaseTarget::Owner(id) => self.attachment_address(&id.container_id, &id.interface),
            ReleaseTarget::Address(a) => Some(*a),
        };
        let found = address.and_then(|a| self.record_at(a).map(|r| (a, r)));
        let mine = found.filter(|(_, r)| fence.is_none_or(|f| r.node == f.node));
        let Some(address) = mine.map(|(a, _)| a) else {
            return Ok(Output::Released(Released { released: Vec::new() }));
        };
        let released = self.remove_allocation(address, true).into_iter().collect();
        Ok(Output::Released(Released { released }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use hc_api::IpamError;
    use hc_api::types::{AttachmentId, Fence, PoolSpec, ReleaseTarget};

    use crate::command::Command;
    use crate::testing::{Harness, owner, pool, req_in};

    fn attachment(container: &str) -> ReleaseTarget {
        ReleaseTarget::Owner(AttachmentId { container_id: container.into(), interface: "eth0".into() })
    }

    #[test]
    fn release_by_attachment_or_by_address() {
        let mut h = Harness::new();
        h.create(pool("p", "10.0.0.0/24"));
        let a = h.take("c1", "n1", "p");
        let b = h.take("c2", "n1", "p");
        let r = h.release(None, attachment("c1"));
        assert_eq!(r.released.len(), 1);
        assert_eq!(r.released[0].address, a);
        assert_eq!(r.released[0].owner, owner("c1", "n1"));
        assert_eq!(h.release(None, ReleaseTarget::Address(b)).released[0].address, b);
        assert_eq!(h.state.allocation_count(), 0);
        assert_eq!(h.status("p").used, 0);
    }

    #[test]
    fn releasing_nothing_succeeds_with_an_empty_list() {
        let mut h = Harness::new();
        h.create(pool("p", "10.0.0.0/24"));
        h.take("c1", "n1", "p");
        assert_eq!(h.release(None, attachment("c1")).released.len(), 1);
        assert!(h.release(None, attachment("c1")).released.is_empty());
        assert!(h.release(None, attachment("never")).released.is_empty());
        assert!(h.release(None, ReleaseTarget::Address(crate::testing::ip("192.0.2.1"))).released.is_empty());
    }

    #[test]
    fn a_fenced_release_never_touches_another_nodes_allocation() {
        let mut h = Harness::new();
        h.create(pool("p", "10.0.0.0/24"));
        let a = h.take("c1", "n1", "p");
        let n2 = h.grant("n2");
        assert!(h.release(Some(n2.clone()), attachment("c1")).released.is_empty());
        assert!(h.release(Some(n2), ReleaseTarget::Address(a)).released.is_empty());
        assert_eq!(h.state.allocation_by_address(a).unwrap().owner.node, "n1");
        let n1 = h.grant("n1");
        assert_eq!(h.release(Some(n1), attachment("c1")).released.len(), 1);
    }

    #[test]
    fn a_fenced_release_with_a_stale_token_is_refused() {
        let mut h = Harness::new();
        h.create(pool("p", "10.0.0.0/24"));
        let old = h.grant("n1");
        h.alloc(Some(old.clone()), req_in("c1", "n1", "p"));
        let cur = h.grant("n1");
        let e = h.refused(Command::Release { fence: Some(old.clone()), target: attachment("c1") });
        assert_eq!(e, IpamError::StaleToken { node: "n1".into(), presented: old.token, current: cur.token });
        let nobody = Fence { node: "n9".into(), token: 1 };
        assert_eq!(
            h.refused(Command::Release { fence: Some(nobody), target: attachment("c1") }),
            IpamError::NoLease { node: "n9".into() }
        );
    }

    #[test]
    fn a_released_address_cools_down_before_anyone_else_gets_it() {
        let mut h = Harness::new();
        h.create(PoolSpec { reuse_cooldown_secs: 30, ..pool("p", "10.0.0.0/30") });
        let a = h.take("c1", "n1", "p");
        let b = h.take("c2", "n1", "p");
        h.release(None, ReleaseTarget::Address(a));
        let st = h.status("p");
        assert_eq!((st.used, st.cooling, st.free), (1, 1, 0));
        // The only other address is cooling: the pool is exhausted for now.
        assert_eq!(
            h.refused(Command::Allocate { fence: None, request: req_in("c3", "n1", "p") }),
            IpamError::PoolExhausted { pool: "p".into() }
        );
        h.now += 29_999;
        assert!(h.apply(Command::Allocate { fence: None, request: req_in("c3", "n1", "p") }).is_err());
        h.now += 1;
        assert_eq!(h.take("c3", "n1", "p"), a);
        assert_ne!(a, b);
        assert_eq!(h.status("p").cooling, 0);
    }

    #[test]
    fn the_clock_never_steps_back_when_a_new_leader_is_behind() {
        let mut h = Harness::new();
        h.create(PoolSpec { reuse_cooldown_secs: 10, ..pool("p", "10.0.0.0/24") });
        let a = h.take("c1", "n1", "p");
        h.now = 5_000_000;
        h.release(None, ReleaseTarget::Address(a));
        // A leader whose clock is an hour behind.
        h.now = 5_000_000 - 3_600_000;
        h.ok(Command::ExpireLease { node: String::new(), lease_id: 0 });
        assert_eq!(h.state.time_ms(), 5_000_000);
        let e = h.refused(Command::Allocate {
            fence: None,
            request: hc_api::types::AllocateRequest { address: Some(a), ..req_in("c2", "n1", "p") },
        });
        assert_eq!(e, IpamError::AddressCoolingDown { address: a, until_ms: 5_010_000 });
        h.now = 5_010_000;
        h.ok(Command::ExpireLease { node: String::new(), lease_id: 0 });
        assert_eq!(h.status("p").cooling, 0);
    }
}
