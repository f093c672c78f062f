//! [`covered_by_log`]: a follower answers a snapshot its own log already covers without
//! installing it.
//!
//! A leader sends a snapshot when it no longer holds the entries a follower needs next, as far
//! as it knows. It can know too little: when the follower's replies were lost (a one-way cut),
//! the follower may already hold entries beyond the snapshot, from this very leader, while they
//! are not yet committed on it. openraft 0.10.0-alpha.37 then installs the snapshot anyway and
//! moves its log I/O cursor back to the snapshot's last entry; with debug assertions (our tests
//! and the simulation) that stops the replica (`io_progress.rs:126`, "expect submitted <
//! new_submitted"), and without them the cursor goes backwards.
//!
//! The Raft paper's rule for this case (§7, InstallSnapshot, step 6) is: when the follower's
//! log holds an entry with the snapshot's last index and term, keep the log and reply. This is
//! that rule, taken only when it is plainly safe:
//! - the snapshot comes under the vote this replica already holds, committed (the same leader,
//!   the same term): nothing about the vote would change by installing it;
//! - this replica's log holds the snapshot's last log id. By the log-matching property, it then
//!   holds (or has applied) every entry the snapshot covers, identical to the leader's, and
//!   replying "done" lets the leader go on from the next entry.
//!
//! In every other case the snapshot is installed as usual. Generic over the Raft type config, so
//! that `hc-allocator` and the simulation (`hc-sim`) run the same rule.

use openraft::errors::Fatal;
use openraft::raft::SnapshotResponse;
use openraft::storage::RaftStateMachine;
use openraft::type_config::alias::{LogIdOf, VoteOf};
use openraft::vote::RaftVote;
use openraft::{Raft, RaftTypeConfig};

/// `Some(response)` when this replica's log already holds `last` (a received snapshot's last
/// log id) under `vote`, which it already holds committed: the snapshot must then not be
/// installed, and `response` is the reply to the leader. `None`: install it.
pub async fn covered_by_log<C, SM>(
    raft: &Raft<C, SM>,
    vote: &VoteOf<C>,
    last: Option<&LogIdOf<C>>,
) -> Result<Option<SnapshotResponse<C>>, Fatal<C>>
where
    C: RaftTypeConfig,
    SM: RaftStateMachine<C>,
{
    let (Some(last), true) = (last.cloned(), vote.is_committed()) else {
        return Ok(None);
    };
    let vote = vote.clone();
    let index = last.index;
    raft.with_raft_state(move |st| {
        let covered = st.vote_ref() == &vote && st.log_ids.get(index).as_ref() == Some(&last);
        if covered {
            tracing::info!(
                snapshot_last = %last,
                local_last = ?st.log_ids.last(),
                "snapshot not installed: the log already holds its last entry from the same leader"
            );
        }
        covered.then(|| SnapshotResponse::new(vote))
    })
    .await
}
