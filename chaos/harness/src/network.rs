//! [`Network`]: a test bridge in the root namespace and one network namespace per replica,
//! each with a veth on the bridge and its own address; the root namespace reaches them through
//! the bridge's own address (`.254`). Partitions are iptables rules inside the replicas'
//! namespaces, so nothing is ever added to the host's own tables.
//!
//! Names and the `10.x.y.0/24` subnet are derived from the process id, so parallel runs and
//! leftovers of a killed run never collide.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{Context, bail};

use crate::cleanup;

#[derive(Debug)]
pub struct Network {
    pub bridge: String,
    pub namespaces: Vec<String>,
    /// The root-namespace ends of the replicas' veths.
    veths: Vec<String>,
    /// The first three octets of the subnet.
    prefix: [u8; 3],
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program).args(args).output().with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

impl Network {
    /// Makes the bridge and `replicas` namespaces. `tag` makes names unique within one process.
    pub fn create(replicas: usize, tag: u32) -> anyhow::Result<Network> {
        let pid = std::process::id();
        // 10.(100..=227).(0..=255): pid-derived; the tag spreads the schedules of one run.
        let key = pid.wrapping_mul(31).wrapping_add(tag);
        let prefix = [10, 100 + (key >> 8) as u8 % 128, key as u8];
        let bridge = format!("hcc{}b{}", pid % 100_000, tag % 100);
        let mut net = Network { bridge: bridge.clone(), namespaces: Vec::new(), veths: Vec::new(), prefix };
        cleanup::add_link(&bridge);
        run("ip", &["link", "add", &bridge, "type", "bridge"])?;
        run("ip", &["addr", "add", &format!("{}/24", net.host_addr()), "dev", &bridge])?;
        run("ip", &["link", "set", &bridge, "up"])?;
        for i in 0..replicas {
            let ns = format!("hcc{}s{}r{}", pid, tag, i + 1);
            let host_end = format!("hcc{}v{}{}", pid % 100_000, tag % 100, i + 1);
            cleanup::add_namespace(&ns);
            net.namespaces.push(ns.clone());
            run("ip", &["netns", "add", &ns])?;
            cleanup::add_link(&host_end);
            net.veths.push(host_end.clone());
            run("ip", &["link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            run("ip", &["link", "set", &host_end, "master", &bridge, "up"])?;
            run("ip", &["-n", &ns, "addr", "add", &format!("{}/24", net.replica_addr(i)), "dev", "eth0"])?;
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    pub fn host_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.prefix[0], self.prefix[1], self.prefix[2], 254)
    }

    pub fn replica_addr(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(self.prefix[0], self.prefix[1], self.prefix[2], i as u8 + 1)
    }

    pub fn subnet(&self) -> String {
        format!("{}.{}.{}.0/24", self.prefix[0], self.prefix[1], self.prefix[2])
    }

    fn iptables(&self, i: usize, rule: &[&str]) -> anyhow::Result<()> {
        let mut args = vec!["netns", "exec", &self.namespaces[i], "iptables", "-w"];
        args.extend_from_slice(rule);
        run("ip", &args)
    }

    /// Cuts replica `i` off from everyone (peers and clients), both ways.
    pub fn isolate(&self, i: usize) -> anyhow::Result<()> {
        let subnet = self.subnet();
        self.iptables(i, &["-A", "INPUT", "-s", &subnet, "-j", "DROP"])?;
        self.iptables(i, &["-A", "OUTPUT", "-d", &subnet, "-j", "DROP"])
    }

    /// Drops what `from` sends to `to` (one way: `to` still reaches `from`).
    pub fn cut_one_way(&self, from: usize, to: usize) -> anyhow::Result<()> {
        self.iptables(to, &["-A", "INPUT", "-s", &self.replica_addr(from).to_string(), "-j", "DROP"])
    }

    /// Replicas in `minority` and the others drop each other's traffic, both ways; the
    /// root namespace (the clients) still reaches everyone.
    pub fn split(&self, minority: &[usize]) -> anyhow::Result<()> {
        for a in minority.iter().copied() {
            for b in (0..self.namespaces.len()).filter(|b| !minority.contains(b)) {
                for (me, peer) in [(a, b), (b, a)] {
                    let peer = self.replica_addr(peer).to_string();
                    self.iptables(me, &["-A", "INPUT", "-s", &peer, "-j", "DROP"])?;
                    self.iptables(me, &["-A", "OUTPUT", "-d", &peer, "-j", "DROP"])?;
                }
            }
        }
        Ok(())
    }

    /// Every replica drops this fraction of what it receives from the subnet.
    pub fn lossy(&self, probability: f64) -> anyhow::Result<()> {
        let subnet = self.subnet();
        let p = format!("{probability:.2}");
        for i in 0..self.namespaces.len() {
            let rule = ["-A", "INPUT", "-s", &subnet, "-m", "statistic", "--mode", "random", "--probability", &p];
            let mut rule = rule.to_vec();
            rule.extend_from_slice(&["-j", "DROP"]);
            self.iptables(i, &rule)?;
        }
        Ok(())
    }

    /// Removes every rule in every replica's namespace.
    pub fn heal(&self) -> anyhow::Result<()> {
        for i in 0..self.namespaces.len() {
            self.iptables(i, &["-F"])?;
        }
        Ok(())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            cleanup::quiet("ip", &["netns", "del", ns]);
            cleanup::remove_namespace(ns);
        }
        // Gone with their peers' namespaces; deleting again is harmless.
        for link in self.veths.iter().chain(std::iter::once(&self.bridge)) {
            cleanup::quiet("ip", &["link", "del", link]);
            cleanup::remove_link(link);
        }
    }
}
