//! Working inside another network namespace.
//!
//! A socket belongs to the namespace of the thread that created it, for its whole life. So to
//! talk netlink (or send raw frames) in a pod's namespace, a short-lived dedicated thread joins
//! the namespace with `setns(2)`, creates the socket, and exits; the socket is then used from
//! the agent's runtime like any other. The thread is never a pooled one (tokio's blocking pool
//! would hand a thread stuck in a pod's namespace to unrelated work). Everything here goes
//! through nix's safe wrappers: no `unsafe` is needed.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};
use tokio::sync::oneshot;

use super::error::NetnsError;

/// A network namespace the datapath works in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NetnsRef {
    /// The agent's own namespace (the node's, in production).
    Current,
    /// A namespace file: `/var/run/netns/NAME` or `/proc/PID/ns/net`.
    Path(PathBuf),
}

impl NetnsRef {
    pub fn path(path: impl Into<PathBuf>) -> Self {
        NetnsRef::Path(path.into())
    }
}

impl std::fmt::Display for NetnsRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetnsRef::Current => write!(f, "the current network namespace"),
            NetnsRef::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Opens the namespace file; `Ok(None)` when it does not exist (the pod is gone).
pub fn open(path: &Path) -> Result<Option<File>, NetnsError> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(NetnsError::Open { path: path.to_path_buf(), source }),
    }
}

/// Runs `f` on a fresh thread that has joined the namespace `ns` (an open namespace file) and
/// waits for it without blocking the runtime. The thread ends with `f`.
pub async fn run_in<T, F>(path: &Path, ns: File, f: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let owned_path = path.to_path_buf();
    std::thread::Builder::new()
        .name("hc-netns".into())
        .spawn(move || {
            let result = setns(&ns, CloneFlags::CLONE_NEWNET)
                .map_err(|source| NetnsError::Enter { path: owned_path, source })
                .map(|()| f());
            // The receiver only goes away when the caller was cancelled; nothing to tell then.
            let _ = tx.send(result);
        })
        .map_err(|source| NetnsError::Thread { path: path.to_path_buf(), source })?;
    rx.await.map_err(|_| NetnsError::ThreadDied { path: path.to_path_buf() })?
}
