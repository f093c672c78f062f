//! What a replica keeps across a restart: each test writes through one `open_storage`, drops
//! everything, and checks what a second `open_storage` on the same directory sees.

use openraft::storage::{RaftLogReader, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{LogState, Vote};

use super::{append, apply, blank, log_id, membership, normal};
use crate::raft::{SnapshotFile, open_storage};

#[tokio::test]
async fn log_vote_and_pointers_survive_reopen() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let vote = Vote::new_committed(3, 1);
    {
        let (mut log, _sm) = open_storage(dir.path()).await?;
        log.save_vote(&vote).await?;
        append(&mut log, vec![blank(1, 1), membership(1, 2, &[1, 2, 3]), normal(1, 3, "node-a")]).await?;
        log.save_committed(Some(log_id(1, 2))).await?;
        append(&mut log, vec![blank(2, 4)]).await?;
        log.purge(log_id(1, 1)).await?;
    }

    let (mut log, _sm) = open_storage(dir.path()).await?;
    let mut reader = log.get_log_reader().await;
    assert_eq!(reader.read_vote().await?, Some(vote));
    let entries = reader.try_get_log_entries(0..10).await?;
    assert_eq!(entries, vec![membership(1, 2, &[1, 2, 3]), normal(1, 3, "node-a"), blank(2, 4)]);
    assert_eq!(
        log.get_log_state().await?,
        LogState { last_purged_log_id: Some(log_id(1, 1)), last_log_id: Some(log_id(2, 4)) }
    );
    assert_eq!(log.read_committed().await?, Some(log_id(1, 2)));
    Ok(())
}

#[tokio::test]
async fn truncation_removes_the_tail_only() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut log, _sm) = open_storage(dir.path()).await?;
    append(&mut log, vec![blank(1, 1), blank(1, 2), blank(1, 3)]).await?;
    log.truncate_after(Some(log_id(1, 1))).await?;
    append(&mut log, vec![blank(2, 2)]).await?;

    let entries = log.get_log_reader().await.try_get_log_entries(..).await?;
    assert_eq!(entries, vec![blank(1, 1), blank(2, 2)]);
    Ok(())
}

#[tokio::test]
async fn snapshot_restores_state_after_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (before, snapshot_meta) = {
        let (_log, mut sm) = open_storage(dir.path()).await?;
        apply(&mut sm, vec![membership(1, 1, &[1]), normal(1, 2, "node-a"), normal(1, 3, "node-b")]).await?;
        let before = read_state(&sm);
        let snapshot = sm.get_snapshot_builder().await.build_snapshot().await?;
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 3)));
        // Applied after the snapshot and never persisted: gone after the restart (openraft
        // re-applies it from the log).
        apply(&mut sm, vec![normal(1, 4, "node-c")]).await?;
        (before, snapshot.meta)
    };

    let (_log, mut sm) = open_storage(dir.path()).await?;
    let (applied, last_membership) = sm.applied_state().await?;
    assert_eq!(applied, Some(log_id(1, 3)));
    assert_eq!(last_membership.log_id(), &Some(log_id(1, 1)));
    let after = read_state(&sm);
    assert_eq!(after, before);
    assert!(after.lease("node-a").is_some() && after.lease("node-c").is_none());
    assert_eq!(after.last_applied_index(), 3);
    let current = sm.get_current_snapshot().await?.map(|s| s.meta);
    assert_eq!(current, Some(snapshot_meta));
    Ok(())
}

#[tokio::test]
async fn installed_snapshot_replaces_state_and_survives_restart() -> anyhow::Result<()> {
    let leader_dir = tempfile::tempdir()?;
    let follower_dir = tempfile::tempdir()?;
    let (_leader_log, mut leader) = open_storage(leader_dir.path()).await?;
    apply(&mut leader, vec![membership(1, 1, &[1, 2]), normal(1, 2, "node-a"), normal(1, 3, "node-b")]).await?;
    leader.get_snapshot_builder().await.build_snapshot().await?;
    let snapshot = leader.get_current_snapshot().await?.ok_or_else(|| anyhow::anyhow!("no snapshot"))?;

    {
        let (_log, mut follower) = open_storage(follower_dir.path()).await?;
        apply(&mut follower, vec![normal(1, 1, "stale")]).await?;
        follower.install_snapshot(&snapshot.meta, snapshot.snapshot).await?;
        assert_eq!(read_state(&follower), read_state(&leader));
        assert_eq!(follower.applied_state().await?.0, Some(log_id(1, 3)));
    }

    let (_log, mut follower) = open_storage(follower_dir.path()).await?;
    assert_eq!(read_state(&follower), read_state(&leader));
    assert_eq!(follower.applied_state().await?.0, Some(log_id(1, 3)));
    Ok(())
}

/// Guards the race between building a snapshot (in a separate task) and installing a newer
/// one from the leader: the older, built one must not become current.
#[tokio::test]
async fn built_snapshot_does_not_replace_a_newer_installed_one() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let other_dir = tempfile::tempdir()?;
    let (_log, mut sm) = open_storage(dir.path()).await?;
    apply(&mut sm, vec![membership(1, 1, &[1]), normal(1, 2, "node-a")]).await?;
    let mut old_builder = sm.get_snapshot_builder().await;

    let (_other_log, mut other) = open_storage(other_dir.path()).await?;
    apply(&mut other, vec![membership(1, 1, &[1]), normal(1, 2, "node-a"), normal(1, 3, "node-b")]).await?;
    let newer = other.get_snapshot_builder().await.build_snapshot().await?;
    sm.install_snapshot(&newer.meta, newer.snapshot).await?;

    let old = old_builder.build_snapshot().await?;
    assert_eq!(old.meta.last_log_id, Some(log_id(1, 2)));
    let current = sm.get_current_snapshot().await?.map(|s| s.meta.last_log_id);
    assert_eq!(current, Some(Some(log_id(1, 3))));
    Ok(())
}

#[tokio::test]
async fn snapshot_not_matching_its_meta_is_rejected() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_log, mut sm) = open_storage(dir.path()).await?;
    apply(&mut sm, vec![membership(1, 1, &[1]), normal(1, 2, "node-a")]).await?;
    let built = sm.get_snapshot_builder().await.build_snapshot().await?;

    let mut claimed = built.meta.clone();
    claimed.last_log_id = Some(log_id(1, 9));
    let file = SnapshotFile::new(built.snapshot.into_file());
    assert!(sm.install_snapshot(&claimed, file).await.is_err());
    assert_eq!(sm.applied_state().await?.0, Some(log_id(1, 2)));
    let current = sm.get_current_snapshot().await?.map(|s| s.meta);
    assert_eq!(current, Some(built.meta));
    Ok(())
}

fn read_state(sm: &crate::raft::StateMachineStore) -> hc_allocator_state::State {
    sm.state().read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
}

/// Snapshots wait until the log since the last one is `percent` % of the allocations held; a
/// forced one (openraft's storage suite, a manual trigger) does not wait.
#[tokio::test]
async fn snapshots_are_deferred_until_the_log_is_a_share_of_the_state() -> anyhow::Result<()> {
    use hc_allocator_state::{Command, Request};
    use hc_api::types::{AllocateRequest, Owner, PoolSpec};

    let dir = tempfile::tempdir()?;
    let (_log, mut sm) = open_storage(dir.path()).await?;
    sm.set_snapshot_log_percent(50);
    let pool: PoolSpec = serde_json::from_value(serde_json::json!({"name": "p", "cidr": "10.0.0.0/16"}))?;
    let entry = |index: u64, command: Command| {
        openraft::entry::RaftEntry::new_normal(log_id(1, index), Request { time_ms: 1_000, command })
    };
    let allocate = |index: u64| {
        let owner = Owner { container_id: format!("c{index}"), node: "n".into(), ..Default::default() };
        let request = AllocateRequest { owner, pool: Some("p".into()), ..Default::default() };
        entry(index, Command::Allocate { fence: None, request })
    };
    let mut entries = vec![membership(1, 1, &[1]), entry(2, Command::CreatePool(pool))];
    entries.extend((3..=102).map(allocate));
    apply(&mut sm, entries).await?;
    assert_eq!(read_state(&sm).allocation_count(), 100);

    // 102 entries since no snapshot, 100 allocations: 102 >= 50, so one is built now.
    let first = sm.try_create_snapshot_builder(false).await;
    assert!(first.is_some(), "the first snapshot is due");
    // Then 49 more allocations: 49 entries since, 149 allocations (wants 74): deferred.
    apply(&mut sm, (103..=151).map(allocate).collect()).await?;
    assert!(sm.try_create_snapshot_builder(false).await.is_none(), "deferred while the log is short");
    // A forced one is never deferred.
    assert!(sm.try_create_snapshot_builder(true).await.is_some(), "forced");
    // 80 more: 80 entries since the forced one, 229 allocations (wants 114): still deferred;
    // 40 more: 120 since, 269 allocations (wants 134): deferred; 20 more: 140 since, 289
    // allocations (wants 144): deferred; 10 more: 150 since, wants 149: due.
    let mut next = 152;
    for (more, due) in [(80, false), (40, false), (20, false), (10, true)] {
        apply(&mut sm, (next..next + more).map(allocate).collect()).await?;
        next += more;
        assert_eq!(sm.try_create_snapshot_builder(false).await.is_some(), due, "at index {}", next - 1);
    }
    // With the share at 0, every policy-driven request is built.
    sm.set_snapshot_log_percent(0);
    assert!(sm.try_create_snapshot_builder(false).await.is_some());
    Ok(())
}
