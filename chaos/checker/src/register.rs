//! One address seen as a register whose value is its holder, and what each operation does to it.

use crate::projection::OwnerId;

/// The value of one address's register: its holder, or `None` when free.
pub(crate) type Holder = Option<OwnerId>;

/// What one operation does to one address. `listed` is whether an ok release named this address
/// among those it released; `None` when the outcome is unknown (or the call does not list).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Effect {
    /// Ok: only from free or from the same owner (idempotent repeat). Unknown: a no-op otherwise,
    /// since the allocator would have refused it.
    Allocate {
        owner: OwnerId,
    },
    /// Releasing `owner`'s attachment: listed ⇒ held by `owner` before; not listed ⇒ not held by it.
    ReleaseOwner {
        owner: OwnerId,
        listed: Option<bool>,
    },
    /// Releasing the address whoever holds it. Listed ⇒ anything before (an allocation whose
    /// outcome was unknown and whose address nothing revealed may have been there); not listed ⇒ free.
    ReleaseAddress {
        listed: Option<bool>,
    },
    /// `node_gone` or `reconcile`: releases the holder if it is one of `releases` (the owners
    /// that could be here and that this call drops). Listed ⇒ free or one of them before, for the
    /// same reason as `ReleaseAddress`; not listed ⇒ none of them.
    ReleaseNode {
        releases: Vec<OwnerId>,
        listed: Option<bool>,
    },
    Read {
        holder: Holder,
    },
}

impl Effect {
    /// The holder after this operation takes effect on `holder`, or `None` when it cannot take
    /// effect there with the result it returned.
    pub(crate) fn step(&self, holder: Holder) -> Option<Holder> {
        match self {
            Effect::Allocate { owner } => match holder {
                None => Some(Some(*owner)),
                Some(h) if h == *owner => Some(holder),
                Some(_) => None,
            },
            Effect::ReleaseOwner { owner, listed } => match (listed, holder == Some(*owner)) {
                (Some(true), true) | (None, true) => Some(None),
                (Some(false), false) | (None, false) => Some(holder),
                (Some(true), false) | (Some(false), true) => None,
            },
            Effect::ReleaseAddress { listed } => match listed {
                Some(true) | None => Some(None),
                Some(false) => holder.is_none().then_some(None),
            },
            Effect::ReleaseNode { releases, listed } => {
                let dropped = holder.is_some_and(|h| releases.contains(&h));
                match (listed, dropped) {
                    (Some(true), _) | (None, true) => (holder.is_none() || dropped).then_some(None),
                    (Some(false), false) | (None, false) => Some(holder),
                    (Some(false), true) => None,
                }
            }
            Effect::Read { holder: seen } => (*seen == holder).then_some(holder),
        }
    }

    /// The step of an operation whose outcome is unknown: it has no result to contradict, so it
    /// always applies, as a no-op where the allocator would have refused it.
    pub(crate) fn step_unknown(&self, holder: Holder) -> Holder {
        self.step(holder).unwrap_or(holder)
    }

    /// The holder this operation needs and no other value satisfies.
    pub(crate) fn needs(&self) -> Option<OwnerId> {
        match self {
            Effect::Read { holder: Some(o) } | Effect::ReleaseOwner { owner: o, listed: Some(true) } => Some(*o),
            _ => None,
        }
    }

    /// Whether this operation may end `owner`'s hold on the address.
    pub(crate) fn may_release(&self, owner: OwnerId) -> bool {
        match self {
            Effect::ReleaseOwner { owner: o, listed } => *o == owner && *listed != Some(false),
            Effect::ReleaseAddress { listed } => *listed != Some(false),
            Effect::ReleaseNode { releases, listed } => releases.contains(&owner) && *listed != Some(false),
            Effect::Allocate { .. } | Effect::Read { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_is_idempotent_for_the_same_owner_and_refused_for_another() {
        let a = Effect::Allocate { owner: 1 };
        assert_eq!(a.step(None), Some(Some(1)));
        assert_eq!(a.step(Some(1)), Some(Some(1)));
        assert_eq!(a.step(Some(2)), None);
        assert_eq!(a.step_unknown(Some(2)), Some(2));
    }

    #[test]
    fn a_release_that_listed_the_address_needs_the_owner_there() {
        let r = Effect::ReleaseOwner { owner: 1, listed: Some(true) };
        assert_eq!(r.step(Some(1)), Some(None));
        assert_eq!(r.step(None), None);
        let nothing = Effect::ReleaseOwner { owner: 1, listed: Some(false) };
        assert_eq!(nothing.step(Some(1)), None);
        assert_eq!(nothing.step(Some(2)), Some(Some(2)));
    }

    #[test]
    fn a_node_release_drops_only_its_owners() {
        let listed = Effect::ReleaseNode { releases: vec![1], listed: Some(true) };
        assert_eq!(listed.step(Some(1)), Some(None));
        assert_eq!(listed.step(None), Some(None));
        assert_eq!(listed.step(Some(2)), None);
        let unlisted = Effect::ReleaseNode { releases: vec![1], listed: None };
        assert_eq!(unlisted.step(Some(2)), Some(Some(2)));
        assert_eq!(unlisted.step(Some(1)), Some(None));
    }
}
