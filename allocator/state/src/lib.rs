//! The allocator's replicated state machine: pools, VLANs, reservations, allocations and node
//! leases, and the commands that change them.
//!
//! Pure and deterministic: no I/O, no clock (time comes from the log entry), no randomness.
//! Every replica applying the same log reaches the same state. The Raft layer in `hc-allocator`
//! stores [`State`] as a snapshot and feeds it [`Request`]s.
//!
//! Layout:
//! - `command.rs`: the log's commands and their outputs;
//! - `state.rs`: [`State`], `apply`, the bookkeeping shared by all commands, and the reads;
//! - `apply/`: the command handlers, one file per kind of object (pools, VLANs, reservations,
//!   allocate, release, leases and fencing);
//! - `record.rs`: an allocation as kept in memory, its repeated names as ids into one table;
//! - `pool.rs`: one pool's address index (search, counts) — memory in proportion to the
//!   addresses in use, not to the pool's size; `interval.rs`: the interval set under it;
//! - `validate.rs`: checks on specs that need nothing but the spec (also usable before proposing);
//! - `snapshot.rs`: the serialized form of [`State`]; indexes are rebuilt on load;
//! - `invariants.rs`: [`State::check_invariants`], the state's rules checked from scratch.

mod addr;
mod apply;
mod command;
mod interval;
mod invariants;
mod pool;
mod record;
mod snapshot;
mod state;
#[cfg(test)]
mod testing;
pub mod validate;

pub use command::{Command, Output, Request, Response};

/// True only in a build with the `deliberate-bug` feature, where allocate accepts stale fencing
/// tokens. Binaries that can be built with it (`hc-sim`) print a warning at startup when it is
/// set; nothing else may enable the feature.
pub const DELIBERATE_BUG: bool = cfg!(feature = "deliberate-bug");
#[cfg(feature = "deliberate-bug")]
#[deprecated(note = "hc-allocator-state is built with `deliberate-bug`: allocate skips the fencing check")]
const _DELIBERATE_BUG_BUILD: () = ();
#[cfg(feature = "deliberate-bug")]
const _WARN: () = _DELIBERATE_BUG_BUILD;
pub use invariants::InvariantViolation;
pub use snapshot::SnapshotError;
pub use state::{ApplyContext, Replicated, State};

#[cfg(test)]
mod tests {
    /// Cargo unifies features across a workspace build: one manifest naming `deliberate-bug`
    /// would ship the broken fencing check in every binary. `cargo test --workspace` must never
    /// see it on.
    #[test]
    #[allow(clippy::assertions_on_constants)]
    fn the_deliberate_bug_is_off_in_a_workspace_build() {
        assert!(!super::DELIBERATE_BUG, "hc-allocator-state was built with `deliberate-bug`: find who enables it");
    }
}
