//! `Command::Batch`: several allocations and releases in one entry (the leader's batcher,
//! `hc-batcher`). Handled in `State::apply`; this file holds its tests.

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use hc_api::IpamError;
    use hc_api::types::{AttachmentId, Fence, ReleaseTarget};

    use crate::command::{Command, Output, Response};
    use crate::testing::*;

    fn alloc(container: &str, fence: Option<Fence>) -> Command {
        Command::Allocate { fence, request: req_in(container, "n1", "p") }
    }

    fn release(container: &str, fence: Option<Fence>) -> Command {
        let owner = AttachmentId { container_id: container.into(), interface: "eth0".into() };
        Command::Release { fence, target: ReleaseTarget::Owner(owner) }
    }

    /// What a result says, without the entry it came from (a batch's commands share one).
    fn outcome(r: &Response) -> String {
        match r {
            Ok(Output::Allocated(a)) => {
                format!("{} {} created={}", a.allocation.owner.container_id, a.allocation.address, a.created)
            }
            Ok(Output::Released(r)) => {
                format!("released {:?}", r.released.iter().map(|a| a.address).collect::<Vec<_>>())
            }
            Ok(o) => format!("{o:?}"),
            Err(e) => format!("refused: {e}"),
        }
    }

    /// Two harnesses with the same pool (a /29: 6 addresses) and lease, one stale fence.
    fn twins() -> (Harness, Harness, Fence, Fence) {
        let mut hs = [Harness::new(), Harness::new()];
        let mut fences = Vec::new();
        for h in &mut hs {
            h.create(pool("p", "10.0.0.0/29"));
            let stale = h.grant("n1");
            fences.push((h.grant("n1"), stale));
        }
        let [a, b] = hs;
        let (fence, stale) = fences.pop().unwrap();
        (a, b, fence, stale)
    }

    #[test]
    fn a_batch_gives_what_its_commands_give_one_entry_each_and_leaves_the_same_addresses() {
        let (mut batched, mut single, fence, stale) = twins();
        let f = || Some(fence.clone());
        let commands = vec![
            alloc("c1", f()),
            alloc("c2", f()),
            alloc("c1", f()), // the same attachment again: idempotent, as in two entries
            release("c1", f()),
            alloc("c3", Some(stale.clone())), // refused alone
            alloc("c4", f()),
            release("c9", f()), // nothing to release: not an error
            alloc("c5", None),
        ];
        let Output::Batch(results) = batched.ok(Command::Batch(commands.clone())) else { panic!("not a batch result") };
        let expected: Vec<String> = commands.into_iter().map(|c| outcome(&single.apply(c))).collect();
        let got: Vec<String> = results.iter().map(outcome).collect();
        assert_eq!(got, expected);
        assert!(got[4].starts_with("refused: stale fencing token"), "{}", got[4]);

        let listing = |h: &Harness| -> Vec<String> {
            h.state
                .allocations(None, None, None)
                .iter()
                .map(|a| format!("{} {}", a.owner.container_id, a.address))
                .collect()
        };
        assert_eq!(listing(&batched), listing(&single));
        // Every allocation the batch made records the batch's entry and time.
        for a in batched.state.allocations(None, None, None) {
            assert_eq!((a.log_index, a.allocated_at_ms), (batched.index, batched.now));
        }
        assert_eq!(batched.state.last_applied_index(), batched.index);
    }

    #[test]
    fn only_allocations_and_releases_may_be_batched_and_a_refused_one_changes_nothing() {
        let mut h = Harness::new();
        h.create(pool("p", "10.0.0.0/30")); // two usable addresses
        let before = h.state.lease("n1");
        let commands = vec![
            Command::GrantLease { node: "n1".into(), ttl_ms: 10_000 },
            Command::Batch(vec![alloc("c0", None)]),
            alloc("c1", None),
            alloc("c2", None),
            alloc("c3", None), // the pool is exhausted by then
        ];
        let Output::Batch(results) = h.ok(Command::Batch(commands)) else { panic!("not a batch result") };
        assert_eq!(results.len(), 5);
        for r in &results[..2] {
            assert!(matches!(r, Err(IpamError::InvalidArgument { field, .. }) if field == "command"), "{r:?}");
        }
        assert!(matches!(&results[2], Ok(Output::Allocated(_))));
        assert!(matches!(&results[3], Ok(Output::Allocated(_))));
        assert_eq!(results[4], Err(IpamError::PoolExhausted { pool: "p".into() }));
        assert_eq!(h.state.lease("n1"), before, "a grant inside a batch must not apply");
        assert_eq!(h.state.allocation_count(), 2, "c0 (nested) and c3 (refused) hold nothing");
    }

    #[test]
    fn a_batch_survives_the_log_encoding() {
        let request = crate::command::Request {
            time_ms: 7,
            command: Command::Batch(vec![alloc("c1", None), release("c1", None)]),
        };
        let bytes = rmp_serde::to_vec_named(&request).unwrap();
        assert_eq!(rmp_serde::from_slice::<crate::command::Request>(&bytes).unwrap(), request);
    }
}
