//! What must not outlive a run: every process, namespace and link the harness made is
//! registered here, so that one call removes them all — from `Drop`, after a panic, and from
//! the Ctrl-C / SIGTERM handler (which cannot reach the owners' `Drop`).
//!
//! Removal continues past failures. Deleting a namespace also deletes the veth end and the
//! iptables rules inside it; the bridge lives in the root namespace and is deleted by name.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};

#[derive(Debug, Default)]
struct Registry {
    pids: BTreeSet<u32>,
    namespaces: BTreeSet<String>,
    links: BTreeSet<String>,
}

/// Guards the sets of live resources; held only to update or drain them.
static REGISTRY: Mutex<Registry> =
    Mutex::new(Registry { pids: BTreeSet::new(), namespaces: BTreeSet::new(), links: BTreeSet::new() });

fn with<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    f(&mut REGISTRY.lock().unwrap_or_else(PoisonError::into_inner))
}

pub fn add_pid(pid: u32) {
    with(|r| r.pids.insert(pid));
}

pub fn remove_pid(pid: u32) {
    with(|r| r.pids.remove(&pid));
}

pub fn add_namespace(name: &str) {
    with(|r| r.namespaces.insert(name.to_owned()));
}

pub fn remove_namespace(name: &str) {
    with(|r| r.namespaces.remove(name));
}

pub fn add_link(name: &str) {
    with(|r| r.links.insert(name.to_owned()));
}

pub fn remove_link(name: &str) {
    with(|r| r.links.remove(name));
}

/// Runs a command quietly; true when it exited 0.
pub fn quiet(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Kills every registered process (a stopped one too), then deletes namespaces and links.
/// Returns what could not be removed.
pub fn remove_all() -> Vec<String> {
    let (pids, namespaces, links) =
        with(|r| (std::mem::take(&mut r.pids), std::mem::take(&mut r.namespaces), std::mem::take(&mut r.links)));
    let mut failed = Vec::new();
    for pid in pids {
        let pid = pid.to_string();
        quiet("kill", &["-KILL", &pid]);
        quiet("kill", &["-CONT", &pid]);
    }
    for ns in namespaces {
        if !quiet("ip", &["netns", "del", &ns]) {
            failed.push(format!("netns {ns}"));
        }
    }
    for link in links {
        if !quiet("ip", &["link", "del", &link]) {
            failed.push(format!("link {link}"));
        }
    }
    failed
}

/// On Ctrl-C or SIGTERM: remove everything, then exit 130.
pub fn install_signal_handler() {
    tokio::spawn(async {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else { return };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        let failed = remove_all();
        eprintln!(
            "hc-chaos: interrupted; cleaned up{}",
            if failed.is_empty() { String::new() } else { format!(" except {failed:?}") }
        );
        std::process::exit(130);
    });
}
