//! Helpers for the datapath tests: network namespaces that clean up after themselves, names
//! unique per process, `ip -j` readers, and polling with deadlines.
//!
//! Everything the tests create lives in namespaces they own: a "node" namespace stands in for
//! the host, so no test touches the machine's real interfaces.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hc_agent::datapath::{DatapathMode, DesiredAttachment, DesiredNode};
use serde_json::Value;

/// A name unique to this process and call: `<prefix><pid>x<n>`.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}{}x{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A network namespace from `ip netns add`, deleted on drop (with every link in it; veth pairs
/// reaching into other namespaces go with it).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Result<Self> {
        let name = unique("hct");
        run("ip", &["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip -n NS ARGS…`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// `ip -j -n NS ARGS…`, parsed.
    pub fn ip_json(&self, args: &[&str]) -> Result<Vec<Value>> {
        let mut all = vec!["-j", "-n", &self.name];
        all.extend_from_slice(args);
        let out = run("ip", &all)?;
        if out.trim().is_empty() {
            return Ok(Vec::new());
        }
        serde_json::from_str::<Vec<Value>>(&out).with_context(|| format!("ip -j {args:?}: {out}"))
    }

    /// `ip netns exec NS CMD…`, returning the raw output whatever the exit status.
    pub fn exec(&self, cmd: &[&str]) -> Result<Output> {
        Ok(Command::new("ip").args(["netns", "exec", &self.name]).args(cmd).output()?)
    }

    /// One ping with a one-second wait.
    pub fn ping_once(&self, ip: &str) -> Result<bool> {
        let flag = if ip.contains(':') { "-6" } else { "-4" };
        Ok(self.exec(&["ping", flag, "-c1", "-W1", ip])?.status.success())
    }

    /// Pings until one answer or the deadline.
    pub fn reaches(&self, ip: &str, within: Duration) -> Result<bool> {
        let deadline = Instant::now() + within;
        loop {
            if self.ping_once(ip)? {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
        }
    }

    /// The link `name` as `ip -j link show` reports it, if present.
    pub fn link(&self, name: &str) -> Result<Option<Value>> {
        Ok(self.ip_json(&["link", "show"])?.into_iter().find(|l| l["ifname"] == name))
    }

    /// `(local, prefixlen)` of each global address on `dev`.
    pub fn addresses(&self, dev: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for link in self.ip_json(&["addr", "show", "dev", dev])? {
            for a in link["addr_info"].as_array().into_iter().flatten() {
                if a["scope"] == "global" {
                    out.push(format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]));
                }
            }
        }
        Ok(out)
    }

    /// `dst via gateway dev` of each route of both families, `ip route` style.
    pub fn routes(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for family in ["-4", "-6"] {
            let text = run("ip", &["-j", "-n", &self.name, family, "route", "show"])?;
            let routes: Vec<Value> = if text.trim().is_empty() { Vec::new() } else { serde_json::from_str(&text)? };
            for r in routes {
                let via = r["gateway"].as_str().map(|g| format!(" via {g}")).unwrap_or_default();
                out.push(format!("{}{via} dev {}", r["dst"].as_str().unwrap_or(""), r["dev"].as_str().unwrap_or("")));
            }
        }
        Ok(out)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// Runs a command and returns its stdout; fails with its stderr.
pub fn run(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd).args(args).output().with_context(|| format!("running {cmd}"))?;
    if !out.status.success() {
        bail!("{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Polls `f` until it returns true or `within` passes.
pub fn wait_until(within: Duration, mut f: impl FnMut() -> Result<bool>) -> Result<bool> {
    let deadline = Instant::now() + within;
    loop {
        if f()? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::yield_now();
    }
}

pub fn node(mode: DatapathMode, uplink: Option<&str>) -> DesiredNode {
    DesiredNode { mode, bridge: "br0".into(), uplink: uplink.map(str::to_string), mtu: None }
}

/// An attachment for `pod` with one address (and its /24's .1 as gateway when `gateway`).
pub fn attachment(pod: &Netns, vlan: Option<u16>, cidr: &str, gateway: Option<&str>) -> DesiredAttachment {
    let mut a = DesiredAttachment::new(&unique("ctr"), "eth0", pod.path());
    a.vlan = vlan;
    a.addresses = vec![cidr.parse().expect("cidr")];
    a.gateways = gateway.map(|g| g.parse().expect("gateway")).into_iter().collect();
    a
}
