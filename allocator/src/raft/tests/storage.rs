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
