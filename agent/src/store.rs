//! The local record of attachments: one JSON file per (container id, interface) in the state
//! directory, written atomically, so the agent knows after a restart what it built and what the
//! allocator should still hold for this node.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hc_cni::protocol::Plugin;
use hc_cni::result::CniResult;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

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
}

impl Store {
    /// Opens (creating) `dir` and loads every record. Leftover temporary files from a crash
    /// mid-write are removed; a corrupt record is an error (an operator must look at it, as the
    /// address it names would otherwise leak or, worse, be released under a running pod).
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let io = |op, source| StoreError::Io { op, path: dir.to_path_buf(), source };
        fs::create_dir_all(dir).map_err(|e| io("create", e))?;
        let mut records = BTreeMap::new();
        for entry in fs::read_dir(dir).map_err(|e| io("read", e))? {
            let path = entry.map_err(|e| io("read", e))?.path();
            match path.extension().and_then(|e| e.to_str()) {
                Some("json") => {
                    let bytes =
                        fs::read(&path).map_err(|source| StoreError::Io { op: "read", path: path.clone(), source })?;
                    let record: Record = serde_json::from_slice(&bytes)
                        .map_err(|source| StoreError::Corrupt { path: path.clone(), source })?;
                    records.insert(record.id(), record);
                }
                Some("tmp") => {
                    let _ = fs::remove_file(&path);
                }
                _ => {}
            }
        }
        let ports = records.values().filter_map(host_port).collect();
        Ok(Store { dir: dir.to_path_buf(), records: Mutex::new(records), ports: Mutex::new(ports) })
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

    /// Writes the record durably (tmp + fsync + rename + fsync of the directory) before it is
    /// visible: an ADD is answered only once its record would survive a crash, or a restarted
    /// agent would reconcile the address away from a running pod. Blocks on the disk: call it
    /// from async code through [`blocking`].
    pub fn put(&self, record: Record) -> Result<(), StoreError> {
        let path = self.path_of(&record.id());
        let tmp = path.with_extension("tmp");
        let io = |op, source| StoreError::Io { op, path: path.clone(), source };
        let bytes =
            serde_json::to_vec_pretty(&record).map_err(|source| StoreError::Corrupt { path: path.clone(), source })?;
        {
            let mut f = File::create(&tmp).map_err(|e| io("create", e))?;
            f.write_all(&bytes).map_err(|e| io("write", e))?;
            f.sync_all().map_err(|e| io("fsync", e))?;
        }
        fs::rename(&tmp, &path).map_err(|e| io("rename", e))?;
        self.sync_dir()?;
        let mut records = self.lock();
        if let Some(port) = host_port(&record) {
            self.ports.lock().unwrap_or_else(|p| p.into_inner()).insert(port);
        }
        records.insert(record.id(), record);
        Ok(())
    }

    /// Removes the record; nothing there is fine. Durable for the same reason as `put`: a
    /// resurrected record would make a restarted agent claim an address it released. Blocks on
    /// the disk, like [`Store::put`].
    pub fn remove(&self, id: &AttachmentId) -> Result<(), StoreError> {
        let path = self.path_of(id);
        match fs::remove_file(&path) {
            Ok(()) => self.sync_dir()?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(StoreError::Io { op: "remove", path, source }),
        }
        let mut records = self.lock();
        if records.remove(id).is_some_and(|r| r.desired.is_some()) {
            self.ports.lock().unwrap_or_else(|p| p.into_inner()).remove(&id.host_veth());
        }
        Ok(())
    }

    fn sync_dir(&self) -> Result<(), StoreError> {
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|source| StoreError::Io {
            op: "fsync",
            path: self.dir.clone(),
            source,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<AttachmentId, Record>> {
        // A panic while holding the lock leaves a consistent map (updates are single inserts).
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `<container id>@<ifname>.json`, bytes outside `[A-Za-z0-9_.-]` escaped as `%XX`, so any
    /// id the runtime sends maps to one file name and back.
    fn path_of(&self, id: &AttachmentId) -> PathBuf {
        self.dir.join(format!("{}@{}.json", escape(&id.container_id), escape(&id.ifname)))
    }
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

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && !out.is_empty()) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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

    #[test]
    fn records_survive_a_reopen_and_removal_is_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        store.put(record("c1", "eth0")).expect("put");
        store.put(record("c/2..", "eth0")).expect("put");
        store.put(record("c1", "net1")).expect("put");
        store.remove(&record("c1", "net1").id()).expect("remove");
        store.remove(&record("never", "eth0").id()).expect("removing nothing is fine");
        std::fs::write(dir.path().join("c9@eth0.tmp"), b"{half").expect("tmp");
        let reopened = Store::open(dir.path()).expect("reopen");
        assert_eq!(reopened.all(), vec![record("c/2..", "eth0"), record("c1", "eth0")]);
        assert!(reopened.has_port(&record("c1", "eth0").id().host_veth()));
        assert!(!reopened.has_port(&record("c1", "net1").id().host_veth()), "removed");
        assert!(store.has_port(&record("c/2..", "eth0").id().host_veth()));
        assert!(!store.has_port(&record("c1", "net1").id().host_veth()), "removed");
        assert!(!dir.path().join("c9@eth0.tmp").exists());
    }

    #[test]
    fn file_names_are_escaped_and_distinct() {
        assert_eq!(escape("abc-1_2.x"), "abc-1_2.x");
        assert_eq!(escape("../x"), "%2E.%2Fx");
        assert_ne!(escape("a@b"), escape("a%40b"));
    }

    #[test]
    fn a_corrupt_record_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("c1@eth0.json"), b"{").expect("write");
        assert!(matches!(Store::open(dir.path()), Err(StoreError::Corrupt { .. })));
    }
}
