//! [`SnapshotStore`]: the latest snapshot, one file on disk, replaced atomically; and
//! [`SnapshotFile`], the open handle openraft passes around (to send, or to install).
//!
//! Layout of the directory:
//! - `current.snap`: the latest snapshot, MessagePack of `{version, meta, state}` (the state's
//!   own layout and version are `hc-allocator-state`'s; both of its versions are read);
//! - `*.tmp`: a snapshot being written (built here or copied from a leader), renamed over
//!   `current.snap` once synced;
//! - `*.part`: a snapshot being received from the leader.
//!
//! Leftover `*.tmp` and `*.part` files are removed on open: they are from a crash mid-write.
//!
//! Every function here does blocking file I/O; callers run them on the blocking pool.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hc_allocator_state::{Replicated, State};
use serde::{Deserialize, Serialize};

use crate::raft::type_config::SnapshotMeta;

const CURRENT: &str = "current.snap";
/// Bumped when the file layout changes incompatibly.
const FORMAT_VERSION: u32 = 1;

/// What a snapshot file holds, as written.
#[derive(Serialize)]
struct SnapshotRef<'a> {
    version: u32,
    meta: &'a SnapshotMeta,
    state: &'a Replicated,
}

/// What a snapshot file holds, as read.
#[derive(Deserialize)]
struct SnapshotOwned {
    version: u32,
    meta: SnapshotMeta,
    state: State,
}

/// An open snapshot file, positioned anywhere (readers seek to the start). The file may already
/// be unlinked (replaced by a newer snapshot); the handle keeps its content readable.
#[derive(Debug)]
pub struct SnapshotFile {
    file: File,
}

impl SnapshotFile {
    pub fn new(file: File) -> Self {
        Self { file }
    }

    pub fn into_file(self) -> File {
        self.file
    }
}

pub struct SnapshotStore {
    dir: PathBuf,
    /// Meta of `current.snap`, `None` while there is none. Also serializes replacing the file:
    /// "is the new snapshot newer", the rename, and the meta update happen under this lock, and
    /// readers open `current.snap` under it, so they never see a file with someone else's meta.
    current: Mutex<Option<SnapshotMeta>>,
    /// Names temporary files uniquely within this process (RocksDB's lock keeps other
    /// processes out of the data directory).
    next_tmp: AtomicU64,
}

impl SnapshotStore {
    /// Opens (creating) the directory and loads the latest snapshot, if any.
    pub(crate) fn open(dir: &Path) -> io::Result<(Self, Option<(SnapshotMeta, State)>)> {
        fs::create_dir_all(dir)?;
        for item in fs::read_dir(dir)? {
            let path = item?.path();
            let leftover = path.extension().is_some_and(|ext| ext == "tmp" || ext == "part");
            if leftover {
                tracing::info!(path = %path.display(), "removing leftover snapshot file");
                fs::remove_file(&path)?;
            }
        }

        let current_path = dir.join(CURRENT);
        let loaded = match File::open(&current_path) {
            Ok(file) => {
                // Timed: loading the snapshot is part of every cold restart.
                let started = std::time::Instant::now();
                let snapshot = read_snapshot(file)?;
                tracing::info!(
                    snapshot = %snapshot.meta,
                    allocations = snapshot.state.allocation_count(),
                    secs = started.elapsed().as_secs_f64(),
                    "read and decoded the snapshot file"
                );
                Some((snapshot.meta, snapshot.state))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let store = Self {
            dir: dir.to_owned(),
            current: Mutex::new(loaded.as_ref().map(|(meta, _)| meta.clone())),
            next_tmp: AtomicU64::new(0),
        };
        Ok((store, loaded))
    }

    /// Writes a snapshot built from this replica's state and makes it the current one, unless a
    /// newer one was installed meanwhile. Returns a handle on what was written either way.
    pub(crate) fn save_built(&self, meta: &SnapshotMeta, state: &Replicated) -> io::Result<File> {
        let tmp = self.tmp_path("built", "tmp");
        let file = File::create(&tmp)?;
        let mut writer = BufWriter::new(file);
        let snapshot = SnapshotRef { version: FORMAT_VERSION, meta, state };
        rmp_serde::encode::write_named(&mut writer, &snapshot)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let file = writer.into_inner().map_err(io::IntoInnerError::into_error)?;
        // Durable before it becomes current: openraft purges the log up to this snapshot as soon
        // as building returns, so the snapshot must survive any crash from then on.
        file.sync_all()?;
        let reader = File::open(&tmp)?;
        self.replace_current(&tmp, meta)?;
        Ok(reader)
    }

    /// Copies a snapshot received from the leader (or the current one, on restart) into this
    /// store, checks it decodes and matches `meta`, makes it current, and returns its state.
    pub(crate) fn install(&self, meta: &SnapshotMeta, source: SnapshotFile) -> io::Result<State> {
        let mut source = source.into_file();
        source.seek(SeekFrom::Start(0))?;
        let tmp = self.tmp_path("install", "tmp");
        let mut writer = BufWriter::new(File::create(&tmp)?);
        io::copy(&mut BufReader::new(source), &mut writer)?;
        let file = writer.into_inner().map_err(io::IntoInnerError::into_error)?;
        // Durable before it becomes current: once installed, openraft may purge the log this
        // snapshot covers, and the state machine is rebuilt from this file after a restart.
        file.sync_all()?;

        let snapshot = read_snapshot(File::open(&tmp)?)?;
        if &snapshot.meta != meta {
            let _ = fs::remove_file(&tmp);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("snapshot file holds {}, expected {}", snapshot.meta, meta),
            ));
        }

        let mut current = self.lock_current();
        fs::rename(&tmp, self.dir.join(CURRENT))?;
        // Durable rename: the directory entry must point at the new file after a crash.
        sync_dir(&self.dir)?;
        *current = Some(meta.clone());
        Ok(snapshot.state)
    }

    /// The current snapshot's meta and an open handle on its file.
    pub(crate) fn current(&self) -> io::Result<Option<(SnapshotMeta, File)>> {
        let current = self.lock_current();
        match &*current {
            Some(meta) => Ok(Some((meta.clone(), File::open(self.dir.join(CURRENT))?))),
            None => Ok(None),
        }
    }

    /// A new file to receive a snapshot into. The caller removes it when done with it.
    pub(crate) fn create_incoming(&self) -> io::Result<(PathBuf, File)> {
        let path = self.tmp_path("incoming", "part");
        let file = fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
        Ok((path, file))
    }

    fn replace_current(&self, tmp: &Path, meta: &SnapshotMeta) -> io::Result<()> {
        let mut current = self.lock_current();
        let newer_exists = current.as_ref().is_some_and(|cur| cur.last_log_id >= meta.last_log_id);
        if newer_exists {
            // A snapshot at least as new was installed while this one was being built; keep it.
            // The caller's open handle still reads the unlinked file.
            fs::remove_file(tmp)?;
            return Ok(());
        }
        fs::rename(tmp, self.dir.join(CURRENT))?;
        // Durable rename: see `install`.
        sync_dir(&self.dir)?;
        *current = Some(meta.clone());
        Ok(())
    }

    fn lock_current(&self) -> std::sync::MutexGuard<'_, Option<SnapshotMeta>> {
        // Nothing is left half-done under this lock by a panic (the meta is assigned last), so a
        // poisoned lock still holds a consistent value.
        self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn tmp_path(&self, kind: &str, ext: &str) -> PathBuf {
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{kind}-{n}.{ext}"))
    }
}

/// Reads and decodes a whole snapshot file. The file is read into memory first (a few tens of
/// bytes per allocation, freed once decoded): decoding from a slice is faster than through a
/// reader, and restart time is bounded by loading the snapshot.
fn read_snapshot(mut file: File) -> io::Result<SnapshotOwned> {
    let mut bytes = Vec::with_capacity(file.metadata().map(|m| m.len() as usize).unwrap_or(0));
    io::Read::read_to_end(&mut file, &mut bytes)?;
    let snapshot: SnapshotOwned =
        rmp_serde::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    if snapshot.version != FORMAT_VERSION {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("snapshot format version {} is not the supported {FORMAT_VERSION}", snapshot.version),
        ));
    }
    Ok(snapshot)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
