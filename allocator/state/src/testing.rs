//! Test helpers: a harness that numbers entries and keeps the leader's clock, builders for
//! specs and requests, and `refused`, which checks that a refusal changed nothing.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;

use hc_api::IpamError;
use hc_api::types::{AllocateRequest, Allocated, Fence, Lease, Owner, PoolSpec, PoolStatus, ReleaseTarget, Released};

use crate::command::{Command, Output, Request, Response};
use crate::state::{ApplyContext, State};

pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub(crate) fn pool(name: &str, cidr: &str) -> PoolSpec {
    PoolSpec {
        name: name.into(),
        cidr: cidr.parse().unwrap(),
        gateway: None,
        vlan: None,
        routes: vec![],
        dns: Default::default(),
        exclude: vec![],
        selector: Default::default(),
        default: false,
        reuse_cooldown_secs: 0,
    }
}

pub(crate) fn owner(container: &str, node: &str) -> Owner {
    Owner {
        container_id: container.into(),
        interface: "eth0".into(),
        namespace: "ns".into(),
        pod: format!("pod-{container}"),
        node: node.into(),
    }
}

/// A request for `container` on `node` from `pool`.
pub(crate) fn req_in(container: &str, node: &str, pool: &str) -> AllocateRequest {
    AllocateRequest { owner: owner(container, node), pool: Some(pool.into()), ..Default::default() }
}

pub(crate) struct Harness {
    pub(crate) state: State,
    pub(crate) index: u64,
    /// The leader clock the next entry carries.
    pub(crate) now: u64,
}

impl Harness {
    pub(crate) fn new() -> Harness {
        Harness { state: State::default(), index: 0, now: 1_000_000 }
    }

    /// Applies `command` as the next log entry, then checks the state's invariants.
    pub(crate) fn apply(&mut self, command: Command) -> Response {
        self.index += 1;
        let r = self.state.apply(ApplyContext { log_index: self.index }, &Request { time_ms: self.now, command });
        self.state.check_invariants().unwrap();
        r
    }

    pub(crate) fn ok(&mut self, command: Command) -> Output {
        let c = format!("{command:?}");
        self.apply(command).unwrap_or_else(|e| panic!("{c} refused: {e}"))
    }

    /// Applies a command that must be refused, and checks that it changed nothing: the state
    /// after equals the state before, also serialized (only the applied index moves).
    pub(crate) fn refused(&mut self, command: Command) -> IpamError {
        // Let the clock reach `now` first, so that only the command itself could change things.
        self.ok(Command::ExpireLease { node: String::new(), lease_id: 0 });
        let before = self.state.clone();
        let c = format!("{command:?}");
        let Err(e) = self.apply(command) else { panic!("{c} was not refused") };
        let mut after = self.state.clone();
        assert_eq!(after.last_applied, self.index);
        after.last_applied = before.last_applied;
        assert_eq!(after, before, "{c} was refused with {e} but changed the state");
        assert_eq!(rmp_serde::to_vec_named(&after).unwrap(), rmp_serde::to_vec_named(&before).unwrap());
        e
    }

    pub(crate) fn create(&mut self, spec: PoolSpec) {
        self.ok(Command::CreatePool(spec));
    }

    pub(crate) fn grant(&mut self, node: &str) -> Fence {
        let Output::Lease(l) = self.ok(Command::GrantLease { node: node.into(), ttl_ms: 10_000 }) else {
            panic!("not a lease")
        };
        Fence { node: node.into(), token: l.token }
    }

    pub(crate) fn lease(&self, node: &str) -> Lease {
        self.state.lease(node).unwrap()
    }

    pub(crate) fn try_alloc(&mut self, fence: Option<Fence>, request: AllocateRequest) -> Response {
        self.apply(Command::Allocate { fence, request })
    }

    pub(crate) fn alloc(&mut self, fence: Option<Fence>, request: AllocateRequest) -> Allocated {
        match self.ok(Command::Allocate { fence, request }) {
            Output::Allocated(a) => *a,
            o => panic!("unexpected {o:?}"),
        }
    }

    /// Allocates for `container` on `node` from `pool`, unfenced; returns the address.
    pub(crate) fn take(&mut self, container: &str, node: &str, pool: &str) -> IpAddr {
        self.alloc(None, req_in(container, node, pool)).allocation.address
    }

    pub(crate) fn release(&mut self, fence: Option<Fence>, target: ReleaseTarget) -> Released {
        match self.ok(Command::Release { fence, target }) {
            Output::Released(r) => r,
            o => panic!("unexpected {o:?}"),
        }
    }

    pub(crate) fn status(&self, pool: &str) -> PoolStatus {
        self.state.pool(pool).unwrap()
    }
}
