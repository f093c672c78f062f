//! [`Supervisor`]: owns every child process and the scratch directory of one run. Children are
//! killed (SIGKILL) and the scratch directory removed when the last handle is dropped — also
//! when the run fails — or when [`Supervisor::shutdown`] is called from the Ctrl-C handler.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A handle on one child process of the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProcId(u64);

#[derive(Debug)]
pub struct Supervisor {
    root: PathBuf,
    /// Guards the scratch directory; `None` once removed by `shutdown`.
    scratch: Mutex<Option<tempfile::TempDir>>,
    /// Guards the running children, by handle. A child leaves the map when it is killed.
    children: Mutex<BTreeMap<ProcId, Child>>,
    next: AtomicU64,
    /// Work for `shutdown` after the children are gone (e.g. deleting network namespaces).
    cleanups: Mutex<Cleanups>,
}

/// Closures run once at shutdown.
#[derive(Default)]
struct Cleanups(Vec<Box<dyn FnOnce() + Send>>);

impl std::fmt::Debug for Cleanups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} cleanups", self.0.len())
    }
}

impl Supervisor {
    /// Creates a fresh scratch directory `hc-bench-*` under `work_dir`.
    pub fn new(work_dir: &Path) -> io::Result<Supervisor> {
        let scratch = tempfile::Builder::new().prefix("hc-bench-").tempdir_in(work_dir)?;
        Ok(Supervisor {
            root: scratch.path().to_owned(),
            scratch: Mutex::new(Some(scratch)),
            children: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(1),
            cleanups: Mutex::new(Cleanups::default()),
        })
    }

    /// A path inside the scratch directory.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    /// Starts `cmd` with stdin and stdout closed and stderr appended to `log`.
    pub fn spawn(&self, mut cmd: Command, log: &Path) -> io::Result<ProcId> {
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        if self.scratch.lock().unwrap_or_else(|p| p.into_inner()).is_none() {
            return Err(io::Error::other("the run is shutting down"));
        }
        let err = File::options().create(true).append(true).open(log)?;
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(err).spawn()?;
        let id = ProcId(self.next.fetch_add(1, Ordering::Relaxed));
        children.insert(id, child);
        Ok(id)
    }

    /// `kill -9` of the child, then reaps it. Returns false if it was not running.
    pub fn kill(&self, id: ProcId) -> bool {
        let child = self.children.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        match child {
            Some(mut c) => {
                // std's `Child::kill` sends SIGKILL on Unix: no graceful leader hand-over.
                let _ = c.kill();
                let _ = c.wait();
                true
            }
            None => false,
        }
    }

    /// The exit status if the child has died on its own (it stays registered until `kill`).
    pub fn exited(&self, id: ProcId) -> Option<ExitStatus> {
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        children.get_mut(&id).and_then(|c| c.try_wait().ok().flatten())
    }

    /// The child's process id while it runs (for `/proc/PID/...` readings).
    pub fn pid(&self, id: ProcId) -> Option<u32> {
        self.children.lock().unwrap_or_else(|p| p.into_inner()).get(&id).map(Child::id)
    }

    /// CPU time (user + system, all threads) the child has used so far.
    pub fn cpu_time(&self, id: ProcId) -> Option<Duration> {
        let pid = self.children.lock().unwrap_or_else(|p| p.into_inner()).get(&id).map(Child::id)?;
        cpu_time_of(&format!("/proc/{pid}/stat"))
    }

    /// Runs `f` at shutdown, after every child is killed: for what lives outside the scratch
    /// directory (network namespaces), so that Ctrl-C leaves it behind no more than a failure.
    pub fn on_shutdown(&self, f: impl FnOnce() + Send + 'static) {
        self.cleanups.lock().unwrap_or_else(|p| p.into_inner()).0.push(Box::new(f));
    }

    /// Kills every child, runs the cleanups and removes the scratch directory. Idempotent.
    pub fn shutdown(&self) {
        let children = std::mem::take(&mut *self.children.lock().unwrap_or_else(|p| p.into_inner()));
        for (_, mut c) in children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let cleanups = std::mem::take(&mut self.cleanups.lock().unwrap_or_else(|p| p.into_inner()).0);
        for f in cleanups {
            f();
        }
        if let Some(dir) = self.scratch.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = dir.close();
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A free loopback port: bound to port 0, then released for a child to bind. Another process may
/// take it in between; cluster start-up retries with fresh ports when a child fails to come up.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Linux reports `/proc/*/stat` times in USER_HZ, which is 100 on every mainstream architecture.
const USER_HZ: u64 = 100;

/// CPU time of this process (the benchmark's clients).
pub fn own_cpu_time() -> Option<Duration> {
    cpu_time_of("/proc/self/stat")
}

fn cpu_time_of(stat_path: &str) -> Option<Duration> {
    parse_cpu_ticks(&std::fs::read_to_string(stat_path).ok()?)
        .map(|ticks| Duration::from_millis(ticks * 1000 / USER_HZ))
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted after its last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The last `n` lines of a log file, for error reports.
pub fn tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_kills_children_and_removes_scratch() {
        let work = tempfile::tempdir().expect("tempdir");
        let sup = Supervisor::new(work.path()).expect("supervisor");
        let root = sup.path("");
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let id = sup.spawn(cmd, &sup.path("sleep.log")).expect("spawn sleep");
        assert!(sup.exited(id).is_none());
        sup.shutdown();
        assert!(!root.exists());
        assert!(!sup.kill(id), "shutdown should have reaped the child");
        assert!(sup.spawn(Command::new("true"), &work.path().join("x.log")).is_err());
    }

    #[test]
    fn cpu_ticks_from_proc_stat() {
        let line = "4242 (a (weird) name) S 1 2 3 4 5 6 7 8 9 10 250 30 0 0 20 0 4 0 100 0 0";
        assert_eq!(parse_cpu_ticks(line), Some(280));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        assert!(own_cpu_time().is_some());
    }

    #[test]
    fn kill_reaps_one_child() {
        let work = tempfile::tempdir().expect("tempdir");
        let sup = Supervisor::new(work.path()).expect("supervisor");
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let id = sup.spawn(cmd, &sup.path("sleep.log")).expect("spawn sleep");
        assert!(sup.kill(id));
        assert!(!sup.kill(id));
    }
}
