//! The local record of attachments: an append-only journal in the state directory
//! (`attachments.journal`), so the agent knows after a restart what it built and what the
//! allocator should still hold for this node.
//!
//! Each ADD appends a `put` entry and each DEL a `del` entry, and the call returns only once the
//! entry is on disk (one `fdatasync`; concurrent calls share the disk's flushes). The file is
//! rewritten with the live records only when the agent starts and when dead entries outnumber
//! live ones, through a temporary file, an fsync and a rename.
//!
//! Format: the 8-byte magic `hcjrnl1\n`, then entries of `length: u32 LE | crc32: u32 LE |
//! JSON`. A crash can leave a torn last entry, whose call never returned; on open, replay stops
//! at the first entry whose length or checksum does not hold and the rest is dropped (with a
//! warning), as RocksDB's point-in-time recovery does. A whole entry that is not a record is
//! an error: an operator must look at it, as the address it names would otherwise leak or,
//! worse, be released under a running pod.
//!
//! Records of older agents (one `<container>@<ifname>.json` file each) are taken into the
//! journal on open, and their files are then removed.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use hc_cni::protocol::Plugin;
use hc_cni::result::CniResult;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::datapath::{AttachmentId, DesiredAttachment};

/// One attachment as the agent built it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub container_id: String,
    pub ifname: String,
    /// The CNI network (`network.name`); GC is scoped by it.
    pub network: String,
    /// hc-bridge (datapath built by us) or hcipam (address only).
    pub plugin: Plugin,
    pub netns: Option<String>,
    pub namespace: String,
    pub pod: String,
    pub pool: String,
    pub vlan: Option<u16>,
    pub addresses: Vec<IpNet>,
    pub gateway: Option<IpAddr>,
    /// What the datapath should look like; `None` for hcipam.
    pub desired: Option<DesiredAttachment>,
    /// The result ADD answered, returned as is on a repeated ADD.
    pub result: CniResult,
}

impl Record {
    pub fn id(&self) -> AttachmentId {
        AttachmentId { container_id: self.container_id.clone(), ifname: self.ifname.clone() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Corrupt { path: PathBuf, source: serde_json::Error },
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
}

/// One journal entry.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Entry<R, I> {
    Put(R),
    Del(I),
}

const JOURNAL: &str = "attachments.journal";
const MAGIC: &[u8; 8] = b"hcjrnl1\n";
/// Length and checksum in front of each entry.
const FRAME_HEADER: usize = 8;
/// Dead entries tolerated beyond the live ones before the journal is rewritten.
const COMPACT_SLACK: u64 = 1024;

/// The journal file open for appending.
#[derive(Debug)]
struct Journal {
    /// Shared with the flushes, which run outside the journal's mutex.
    file: Arc<File>,
    /// Bytes written to the file.
    len: u64,
    /// Why nothing may be written any more, after a failure that left the file unknown.
    broken: Option<String>,
}

/// The records on disk and their in-memory copy.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    /// Guards the in-memory copy; held only around map updates, never across file I/O, so
    /// that one attachment's fsyncs do not hold up another's. The map changes after the disk,
    /// and operations on one attachment are serialized by the caller (the CNI handler's
    /// per-attachment lock), so disk and map change in the same order for each attachment.
    records: Mutex<BTreeMap<AttachmentId, Record>>,
    /// Host veth names of the recorded hc-bridge attachments, so that a kernel link event can
    /// be matched to a pod without hashing every record's name. Changed under `records`' lock.
    ports: Mutex<HashSet<String>>,
    /// The open journal. Appends hold the mutex for the `write` only; the flush runs outside it.
    journal: Mutex<Journal>,
    /// Bytes of the journal known to be on disk. One flush runs at a time, under this mutex, and
    /// an append whose bytes an earlier flush covered returns without one (group commit). A
    /// flush's result is thus known to every append it covers: Linux reports a failed writeback
    /// to only one `fdatasync` of a file.
    durable: Mutex<u64>,
    /// Held shared from an append to the map update after its flush, and exclusively by a
    /// rewrite, so that a rewrite sees every entry appended to the file it replaces.
    rewrite: RwLock<()>,
    /// Entries in the journal file (live or dead).
    entries: AtomicU64,
    /// Entries beyond which the journal is next rewritten; pushed further after a failed rewrite.
    rewrite_at: AtomicU64,
    /// Dead entries tolerated beyond the live ones (`COMPACT_SLACK`; lower in tests).
    slack: u64,
}

impl Store {
    /// Opens (creating) `dir`, loads the journal and any older per-file records, and rewrites
    /// the journal with the live records (dropping a torn tail and taking the older files in).
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let io = |op, source| StoreError::Io { op, path: dir.to_path_buf(), source };
        fs::create_dir_all(dir).map_err(|e| io("create", e))?;
        let loaded = load(dir)?;
        if let Some(torn) = &loaded.torn {
            // Kept for an operator: the rewrite below replaces the file.
            let aside = dir.join(format!("{JOURNAL}.torn"));
            fs::copy(dir.join(JOURNAL), &aside).map_err(|source| StoreError::Io {
                op: "copy",
                path: aside.clone(),
                source,
            })?;
            warn!(
                journal = %dir.join(JOURNAL).display(), copy = %aside.display(),
                "{torn}; the calls that wrote it never returned, so it is dropped"
            );
        }
        if !loaded.legacy.is_empty() {
            info!(records = loaded.legacy.len(), "taking per-file attachment records into the journal");
        }
        let journal = write_journal(dir, loaded.records.values())?;
        if let Some(why) = journal.broken {
            return Err(StoreError::Format { path: dir.join(JOURNAL), reason: why });
        }
        for path in &loaded.legacy {
            fs::remove_file(path).map_err(|source| StoreError::Io { op: "remove", path: path.clone(), source })?;
        }
        for path in &loaded.leftovers {
            let _ = fs::remove_file(path);
        }
        if !loaded.legacy.is_empty() {
            sync_dir(dir)?;
        }
        let records = loaded.records;
        let ports = records.values().filter_map(host_port).collect();
        let live = records.len() as u64;
        Ok(Store {
            dir: dir.to_path_buf(),
            entries: AtomicU64::new(live),
            rewrite_at: AtomicU64::new(2 * live + COMPACT_SLACK),
            slack: COMPACT_SLACK,
            records: Mutex::new(records),
            ports: Mutex::new(ports),
            durable: Mutex::new(journal.len),
            journal: Mutex::new(journal),
            rewrite: RwLock::new(()),
        })
    }

    pub fn get(&self, id: &AttachmentId) -> Option<Record> {
        self.lock().get(id).cloned()
    }

    pub fn all(&self) -> Vec<Record> {
        self.lock().values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether `name` is the host end of a recorded hc-bridge attachment.
    pub fn has_port(&self, name: &str) -> bool {
        self.ports.lock().unwrap_or_else(|p| p.into_inner()).contains(name)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the record durably before it is visible: an ADD is answered only once its record
    /// would survive a crash, or a restarted agent would reconcile the address away from a
    /// running pod. Blocks on the disk: call it from async code through [`blocking`].
    pub fn put(&self, record: Record) -> Result<(), StoreError> {
        let frame = frame(&Entry::<&Record, &AttachmentId>::Put(&record), &self.journal_path())?;
        {
            let _appending = self.rewrite.read().unwrap_or_else(|p| p.into_inner());
            self.append(&frame)?;
            let mut records = self.lock();
            if let Some(port) = host_port(&record) {
                self.ports.lock().unwrap_or_else(|p| p.into_inner()).insert(port);
            }
            records.insert(record.id(), record);
        }
        self.compact_if_due();
        Ok(())
    }

    /// Removes the record; nothing there is fine. Durable for the same reason as `put`: a
    /// resurrected record would make a restarted agent claim an address it released. Blocks on
    /// the disk, like [`Store::put`]. Refused while the journal is broken, also for a record
    /// not in memory: a put that failed in its flush may still be on disk.
    pub fn remove(&self, id: &AttachmentId) -> Result<(), StoreError> {
        if let Some(why) = &self.journal.lock().unwrap_or_else(|p| p.into_inner()).broken {
            return Err(self.broken_error(why));
        }
        if self.get(id).is_none() {
            return Ok(());
        }
        let frame = frame(&Entry::<&Record, &AttachmentId>::Del(id), &self.journal_path())?;
        {
            let _appending = self.rewrite.read().unwrap_or_else(|p| p.into_inner());
            self.append(&frame)?;
            let mut records = self.lock();
            if records.remove(id).is_some_and(|r| r.desired.is_some()) {
                self.ports.lock().unwrap_or_else(|p| p.into_inner()).remove(&id.host_veth());
            }
        }
        self.compact_if_due();
        Ok(())
    }

    /// Appends one entry and returns once it is on disk. A failed write is cut off again, so
    /// that no later entry lands behind a partial one (replay would stop there); if that or a
    /// flush fails, what the file holds is unknown and every later write is refused until the
    /// agent restarts.
    fn append(&self, frame: &[u8]) -> Result<(), StoreError> {
        let path = self.journal_path();
        let end = {
            let mut journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(why) = &journal.broken {
                return Err(self.broken_error(why));
            }
            if let Err(e) = (&*journal.file).write_all(frame) {
                let len = journal.len;
                if let Err(te) = journal.file.set_len(len) {
                    journal.broken = Some(format!("a failed append could not be cut off ({te})"));
                }
                return Err(StoreError::Io { op: "append", path, source: e });
            }
            journal.len += frame.len() as u64;
            journal.len
        };
        self.entries.fetch_add(1, Ordering::Relaxed);
        self.flush_to(end)
    }

    /// Returns once the journal is on disk up to byte `end`, flushing it unless an earlier
    /// flush covered that far. The flush covers everything written before it started.
    fn flush_to(&self, end: u64) -> Result<(), StoreError> {
        let mut durable = self.durable.lock().unwrap_or_else(|p| p.into_inner());
        if *durable >= end {
            return Ok(());
        }
        let (file, target) = {
            let journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(why) = &journal.broken {
                return Err(self.broken_error(why));
            }
            (journal.file.clone(), journal.len)
        };
        match file.sync_data() {
            Ok(()) => {
                *durable = target;
                Ok(())
            }
            Err(e) => {
                self.journal.lock().unwrap_or_else(|p| p.into_inner()).broken =
                    Some(format!("a failed fdatasync ({e})"));
                Err(StoreError::Io { op: "fdatasync", path: self.journal_path(), source: e })
            }
        }
    }

    fn broken_error(&self, why: &str) -> StoreError {
        StoreError::Format { path: self.journal_path(), reason: format!("not written since {why}; restart hc-agent") }
    }

    /// Rewrites the journal with the live records once dead entries outnumber them by `slack`.
    /// A failure is logged and tried again `slack` entries later: the entry that triggered it
    /// is already on disk, and the old journal stays in use unless the new one replaced it.
    fn compact_if_due(&self) {
        let due = |store: &Store| store.entries.load(Ordering::Relaxed) > store.rewrite_at.load(Ordering::Relaxed);
        if !due(self) {
            return;
        }
        let _exclusive = self.rewrite.write().unwrap_or_else(|p| p.into_inner());
        if !due(self) {
            return; // another call rewrote it meanwhile
        }
        let records = self.lock().clone();
        let live = records.len() as u64;
        match write_journal(&self.dir, records.values()) {
            Ok(journal) => {
                // No append is in flight (they hold `rewrite` shared), so nothing is lost between
                // the old file's last flush and the swap.
                if let Some(why) = &journal.broken {
                    warn!(reason = %why, "the rewritten attachment journal may not survive a crash; refusing writes");
                }
                *self.durable.lock().unwrap_or_else(|p| p.into_inner()) = journal.len;
                *self.journal.lock().unwrap_or_else(|p| p.into_inner()) = journal;
                self.entries.store(live, Ordering::Relaxed);
                self.rewrite_at.store(2 * live + self.slack, Ordering::Relaxed);
            }
            Err(e) => {
                warn!(error = %e, "cannot rewrite the attachment journal; keeping the current one");
                self.rewrite_at.store(self.entries.load(Ordering::Relaxed) + self.slack, Ordering::Relaxed);
            }
        }
    }

    fn journal_path(&self) -> PathBuf {
        self.dir.join(JOURNAL)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<AttachmentId, Record>> {
        // A panic while holding the lock leaves a consistent map (updates are single inserts).
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The records in `dir` as an agent would load them, without changing anything there: for
/// tools and tests that look at a state directory (also while an agent runs).
pub fn recorded(dir: &Path) -> Result<Vec<Record>, StoreError> {
    Ok(load(dir)?.records.into_values().collect())
}

/// What `dir` holds.
struct Loaded {
    records: BTreeMap<AttachmentId, Record>,
    /// Why replay stopped before the end of the journal, if it did.
    torn: Option<String>,
    /// Per-file records of older agents.
    legacy: Vec<PathBuf>,
    /// Temporary files of an interrupted write.
    leftovers: Vec<PathBuf>,
}

fn load(dir: &Path) -> Result<Loaded, StoreError> {
    let mut loaded = Loaded { records: BTreeMap::new(), torn: None, legacy: Vec::new(), leftovers: Vec::new() };
    let path = dir.join(JOURNAL);
    match fs::read(&path) {
        Ok(bytes) => loaded.torn = replay(&path, &bytes, &mut loaded.records)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(StoreError::Io { op: "read", path, source }),
    }
    let read_dir =
        fs::read_dir(dir).map_err(|source| StoreError::Io { op: "read", path: dir.to_path_buf(), source })?;
    for entry in read_dir {
        let path = entry.map_err(|source| StoreError::Io { op: "read", path: dir.to_path_buf(), source })?.path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => {
                let bytes =
                    fs::read(&path).map_err(|source| StoreError::Io { op: "read", path: path.clone(), source })?;
                let record: Record = serde_json::from_slice(&bytes)
                    .map_err(|source| StoreError::Corrupt { path: path.clone(), source })?;
                // A crash while taking these files in leaves them beside a journal that already
                // holds them; the journal is newer.
                loaded.records.entry(record.id()).or_insert(record);
                loaded.legacy.push(path);
            }
            Some("tmp") => loaded.leftovers.push(path),
            _ => {}
        }
    }
    Ok(loaded)
}

/// Applies the journal's entries to `records`; returns why it stopped early, if it did.
fn replay(
    path: &Path,
    bytes: &[u8],
    records: &mut BTreeMap<AttachmentId, Record>,
) -> Result<Option<String>, StoreError> {
    if bytes.len() < MAGIC.len() {
        // Torn while being created: nothing was ever recorded in it.
        return Ok((!bytes.is_empty()).then(|| format!("a {}-byte journal without its header", bytes.len())));
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err(StoreError::Format { path: path.to_path_buf(), reason: "not an hc-agent journal".into() });
    }
    let mut at = MAGIC.len();
    while at < bytes.len() {
        let rest = &bytes[at..];
        let torn = |what: &str| Some(format!("{what} at byte {at}, {} bytes from the end", rest.len()));
        let Some((header, after)) = rest.split_first_chunk::<FRAME_HEADER>() else {
            return Ok(torn("a partial entry header"));
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len == 0 {
            // Never written (every entry has a payload): zeros a crash left at the end.
            return Ok(torn("an empty entry"));
        }
        let Some(payload) = after.get(..len) else {
            return Ok(torn("an entry longer than the file"));
        };
        if crc32fast::hash(payload) != crc {
            return Ok(torn("an entry whose checksum does not match"));
        }
        let entry: Entry<Record, AttachmentId> = serde_json::from_slice(payload)
            .map_err(|source| StoreError::Corrupt { path: path.to_path_buf(), source })?;
        match entry {
            Entry::Put(r) => {
                records.insert(r.id(), r);
            }
            Entry::Del(id) => {
                records.remove(&id);
            }
        }
        at += FRAME_HEADER + len;
    }
    Ok(None)
}

fn frame<R: Serialize, I: Serialize>(entry: &Entry<R, I>, path: &Path) -> Result<Vec<u8>, StoreError> {
    let payload =
        serde_json::to_vec(entry).map_err(|source| StoreError::Corrupt { path: path.to_path_buf(), source })?;
    let len = u32::try_from(payload.len())
        .map_err(|_| StoreError::Format { path: path.to_path_buf(), reason: "record too large".into() })?;
    let mut out = Vec::with_capacity(FRAME_HEADER + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Writes a journal holding `records` (temporary file, fsync, rename, fsync of the directory)
/// and returns it open for appending. An error before the rename leaves the current journal in
/// place; once renamed, the new one is returned even if the directory's fsync fails, marked
/// broken (the rename may not survive a crash, and appends to it would then be lost).
fn write_journal<'a>(dir: &Path, records: impl Iterator<Item = &'a Record>) -> Result<Journal, StoreError> {
    let path = dir.join(JOURNAL);
    let tmp = dir.join(format!("{JOURNAL}.tmp"));
    let io = |op, source| StoreError::Io { op, path: tmp.clone(), source };
    let mut bytes = MAGIC.to_vec();
    for r in records {
        bytes.extend(frame(&Entry::<&Record, &AttachmentId>::Put(r), &path)?);
    }
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("remove", e)),
    }
    // Opened for appending before the rename: the handle follows the file to its new name.
    let mut file = OpenOptions::new().append(true).create_new(true).open(&tmp).map_err(|e| io("create", e))?;
    file.write_all(&bytes).map_err(|e| io("write", e))?;
    file.sync_all().map_err(|e| io("fsync", e))?;
    fs::rename(&tmp, &path).map_err(|e| io("rename", e))?;
    let broken = sync_dir(dir).err().map(|e| format!("a failed fsync of the directory after a rewrite ({e})"));
    Ok(Journal { file: Arc::new(file), len: bytes.len() as u64, broken })
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|source| StoreError::Io {
        op: "fsync",
        path: dir.to_path_buf(),
        source,
    })
}

/// Runs `f`, which blocks on the disk (an fsync takes milliseconds on a busy disk), without
/// stalling the other tasks of the runtime's worker thread: the agent serves many CNI calls on
/// two worker threads. On a current-thread runtime (unit tests) `f` simply runs.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The host veth of an attachment whose datapath the agent built.
fn host_port(record: &Record) -> Option<String> {
    record.desired.as_ref().map(|_| record.id().host_veth())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(cid: &str, ifname: &str) -> Record {
        Record {
            container_id: cid.into(),
            ifname: ifname.into(),
            network: "net".into(),
            plugin: Plugin::Bridge,
            netns: Some("/run/netns/x".into()),
            namespace: "ns".into(),
            pod: "p".into(),
            pool: "web".into(),
            vlan: Some(100),
            addresses: vec!["10.0.0.2/24".parse().expect("net")],
            gateway: Some("10.0.0.1".parse().expect("ip")),
            desired: Some(DesiredAttachment::new(cid, ifname, "/run/netns/x")),
            result: CniResult::default(),
        }
    }

    fn journal_len(dir: &Path) -> u64 {
        fs::metadata(dir.join(JOURNAL)).expect("journal").len()
    }

    #[test]
    fn records_survive_a_reopen_and_removal_is_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        store.put(record("c1", "eth0")).expect("put");
        store.put(record("c/2..", "eth0")).expect("put");
        store.put(record("c1", "net1")).expect("put");
        store.remove(&record("c1", "net1").id()).expect("remove");
        store.remove(&record("never", "eth0").id()).expect("removing nothing is fine");
        std::fs::write(dir.path().join(format!("{JOURNAL}.tmp")), b"half").expect("tmp");
        // What a second process reads while the agent runs.
        assert_eq!(recorded(dir.path()).expect("recorded"), vec![record("c/2..", "eth0"), record("c1", "eth0")]);
        drop(store);
        let reopened = Store::open(dir.path()).expect("reopen");
        assert_eq!(reopened.all(), vec![record("c/2..", "eth0"), record("c1", "eth0")]);
        assert!(reopened.has_port(&record("c1", "eth0").id().host_veth()));
        assert!(!reopened.has_port(&record("c1", "net1").id().host_veth()), "removed");
        assert!(!dir.path().join(format!("{JOURNAL}.tmp")).exists());
        // Reopening rewrote the journal with the live records only.
        let live = journal_len(dir.path());
        reopened.put(record("c3", "eth0")).expect("put");
        assert!(journal_len(dir.path()) > live, "a put appends");
    }

    #[test]
    fn a_torn_last_entry_is_dropped_and_the_rest_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        store.put(record("c1", "eth0")).expect("put");
        store.put(record("c2", "eth0")).expect("put");
        drop(store);
        // A crash in the middle of appending the second entry: the file ends inside it.
        let path = dir.path().join(JOURNAL);
        let full = journal_len(dir.path());
        let one_entry = frame(&Entry::<&Record, &AttachmentId>::Put(&record("c2", "eth0")), &path).expect("frame");
        for cut in [1, 5, FRAME_HEADER + 3, one_entry.len() - 1] {
            let f = OpenOptions::new().write(true).open(&path).expect("open");
            f.set_len(full - cut as u64).expect("truncate");
            let reopened = Store::open(dir.path()).expect("a torn tail is not an error");
            assert_eq!(reopened.all(), vec![record("c1", "eth0")], "cut {cut} bytes off the end");
            reopened.put(record("c2", "eth0")).expect("put after recovery");
            drop(reopened);
            assert_eq!(Store::open(dir.path()).expect("reopen").len(), 2, "appends after a recovery are readable");
        }
        // Zeros after the last entry (a crash after the file grew, before its data landed).
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(&[0; 64]).expect("zeros");
        drop(f);
        assert_eq!(
            Store::open(dir.path()).expect("zeros are a torn tail").all(),
            vec![record("c1", "eth0"), record("c2", "eth0")]
        );
        assert!(dir.path().join(format!("{JOURNAL}.torn")).exists(), "the torn journal is kept aside");
        let full = journal_len(dir.path());
        OpenOptions::new().write(true).open(&path).expect("open").set_len(full - 1).expect("truncate");
        // A flipped bit in the last entry: its checksum fails, so it is a torn write as well.
        let mut bytes = fs::read(&path).expect("read");
        let last = bytes.len() - 2;
        bytes[last] ^= 0x20;
        fs::write(&path, &bytes).expect("write");
        assert_eq!(Store::open(dir.path()).expect("open").all(), vec![record("c1", "eth0")]);
    }

    #[test]
    fn a_journal_beside_leftover_per_file_records_wins() {
        // A crash while taking per-file records in: the journal holds them (and newer entries),
        // some of the old files are still there.
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let mut newer = record("c1", "eth0");
        newer.pod = "newer".into();
        store.put(newer.clone()).expect("put");
        drop(store);
        fs::write(dir.path().join("c1@eth0.json"), serde_json::to_vec(&record("c1", "eth0")).expect("json"))
            .expect("write");
        let reopened = Store::open(dir.path()).expect("open");
        assert_eq!(reopened.all(), vec![newer]);
        assert!(!dir.path().join("c1@eth0.json").exists());
    }

    #[test]
    fn a_checksummed_entry_that_is_not_a_record_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(JOURNAL);
        let mut bytes = MAGIC.to_vec();
        let payload = br#"{"put":{"container_id":"c1"}}"#;
        bytes.extend((payload.len() as u32).to_le_bytes());
        bytes.extend(crc32fast::hash(payload).to_le_bytes());
        bytes.extend(payload);
        fs::write(&path, &bytes).expect("write");
        assert!(matches!(Store::open(dir.path()), Err(StoreError::Corrupt { .. })));
        fs::write(&path, b"something else entirely").expect("write");
        assert!(matches!(Store::open(dir.path()), Err(StoreError::Format { .. })));
    }

    #[test]
    fn per_file_records_of_older_agents_are_taken_in() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, r) in [("c1@eth0.json", record("c1", "eth0")), ("c%2F2@eth0.json", record("c/2", "eth0"))] {
            fs::write(dir.path().join(name), serde_json::to_vec_pretty(&r).expect("json")).expect("write");
        }
        fs::write(dir.path().join("c9@eth0.tmp"), b"{half").expect("tmp");
        let store = Store::open(dir.path()).expect("open");
        assert_eq!(store.all(), vec![record("c/2", "eth0"), record("c1", "eth0")]);
        let left: Vec<_> = fs::read_dir(dir.path()).expect("ls").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from(JOURNAL)], "the old files are gone");
        drop(store);
        assert_eq!(Store::open(dir.path()).expect("reopen").len(), 2);
        // A corrupt per-file record is still an error.
        fs::write(dir.path().join("c3@eth0.json"), b"{").expect("write");
        assert!(matches!(Store::open(dir.path()), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn churn_rewrites_the_journal_and_loses_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        store.put(record("keep", "eth0")).expect("put");
        let mut peak = 0;
        for i in 0..1500 {
            let r = record(&format!("c{i}"), "eth0");
            store.put(r.clone()).expect("put");
            store.remove(&r.id()).expect("remove");
            peak = peak.max(journal_len(dir.path()));
        }
        let entries = store.entries.load(Ordering::Relaxed);
        assert!(entries <= 2 + COMPACT_SLACK + 2, "{entries} entries: the journal was never rewritten");
        assert!(journal_len(dir.path()) < peak, "rewritten smaller");
        drop(store);
        assert_eq!(Store::open(dir.path()).expect("reopen").all(), vec![record("keep", "eth0")]);
    }

    #[test]
    fn concurrent_puts_all_survive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("open");
        // Rewrites every few dozen entries, so that they race with the other threads' appends.
        store.slack = 16;
        store.rewrite_at.store(16, Ordering::Relaxed);
        let store = Arc::new(store);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        let r = record(&format!("t{t}-{i}"), "eth0");
                        store.put(r.clone()).expect("put");
                        if i % 2 == 0 {
                            store.remove(&r.id()).expect("remove");
                        }
                        if i % 50 == 0 {
                            // Removing what is not there writes nothing.
                            store.remove(&record("never", "eth0").id()).expect("remove nothing");
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(store.len(), 800);
        assert!(store.entries.load(Ordering::Relaxed) < 2400, "the journal was never rewritten");
        let in_memory = store.all();
        drop(store);
        assert_eq!(Store::open(dir.path()).expect("reopen").all(), in_memory);
    }
}
