//! VLANs across two nodes, in both datapath modes. Two node namespaces joined by a veth
//! "wire" (each node's uplink); on each node pods in VLAN 100, VLAN 200 and untagged, all in
//! one IP subnet, so only VLAN separation keeps pods of different VLANs apart.
//!
//! This kernel has neither bridge VLAN filtering nor 802.1Q links, so on it the test re-runs
//! its own binary inside user-mode-linux (`../shared/tools/uml/uml-run.sh`) with `HC_IN_UML=1`;
//! where the kernel has both it runs directly. It never skips. Run as root.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::{Netns, attachment, node};
use hc_agent::datapath::{Datapath, DatapathMode, DesiredAttachment, Drift, NetnsRef, PortVlan, probe_kernel};

const TEST_NAME: &str = "vlan_modes_across_two_nodes";

#[tokio::test]
async fn vlan_modes_across_two_nodes() -> Result<()> {
    let in_uml = std::env::var("HC_IN_UML").is_ok_and(|v| v == "1");
    let support = probe_kernel().await?;
    let native = support.vlan_filtering && support.vlan_links;
    if !in_uml && !native {
        println!("kernel lacks VLAN support ({support:?}): running the VLAN test under user-mode-linux");
        return run_under_uml();
    }
    ensure!(native, "no VLAN support even here: {support:?}");
    use DatapathMode::{PerVlanBridge, VlanFiltering};
    for (a, b) in [(VlanFiltering, VlanFiltering), (PerVlanBridge, PerVlanBridge), (VlanFiltering, PerVlanBridge)] {
        println!("== node A {a:?}, node B {b:?}");
        two_nodes(a, b).await.with_context(|| format!("node A {a:?}, node B {b:?}"))?;
    }
    Ok(())
}

/// One node with its pods.
struct Node {
    ns: Netns,
    dp: Datapath,
    mode: DatapathMode,
    /// (VLAN, pod namespace, attachment)
    pods: Vec<(Option<u16>, Netns, DesiredAttachment)>,
}

impl Node {
    fn pod(&self, vlan: Option<u16>) -> &Netns {
        &self.pods.iter().find(|p| p.0 == vlan).expect("pod").1
    }
    fn att(&self, vlan: Option<u16>) -> &DesiredAttachment {
        &self.pods.iter().find(|p| p.0 == vlan).expect("pod").2
    }
}

async fn build_node(mode: DatapathMode, ns: Netns, host_octet: u8) -> Result<Node> {
    let dp = Datapath::connect(node(mode, Some("wire")), NetnsRef::path(ns.path())).await?;
    let mut pods = Vec::new();
    for (i, vlan) in [None, Some(100), Some(200)].into_iter().enumerate() {
        let pod = Netns::new()?;
        let a = attachment(&pod, vlan, &format!("10.60.0.{}/24", host_octet + i as u8), None);
        dp.setup(&a).await.with_context(|| format!("setup of the VLAN {vlan:?} pod"))?;
        pods.push((vlan, pod, a));
    }
    Ok(Node { ns, dp, mode, pods })
}

async fn two_nodes(mode_a: DatapathMode, mode_b: DatapathMode) -> Result<()> {
    let (na, nb) = (Netns::new()?, Netns::new()?);
    na.ip(&["link", "add", "wire", "type", "veth", "peer", "name", "wire", "netns", &nb.name])?;
    // Pods .10 (untagged), .11 (VLAN 100), .12 (VLAN 200) on A; .20, .21, .22 on B.
    let a = build_node(mode_a, na, 10).await?;
    let b = build_node(mode_b, nb, 20).await?;
    for n in [&a, &b] {
        check_node_layout(n)?;
        for (_, _, att) in &n.pods {
            assert_eq!(n.dp.check(att).await?, vec![], "{:?} {:?}", n.mode, att.vlan);
        }
    }

    let wait = Duration::from_secs(10);
    // Same VLAN, across the wire.
    ensure!(a.pod(Some(100)).reaches("10.60.0.21", wait)?, "VLAN 100: A cannot reach B");
    ensure!(a.pod(Some(200)).reaches("10.60.0.22", wait)?, "VLAN 200: A cannot reach B");
    ensure!(b.pod(None).reaches("10.60.0.10", wait)?, "untagged: B cannot reach A");
    // Different VLANs, same subnet: nothing gets through, on one node or across.
    for (from, to) in [
        (a.pod(Some(100)), "10.60.0.22"),
        (a.pod(Some(100)), "10.60.0.12"),
        (a.pod(Some(100)), "10.60.0.20"),
        (b.pod(None), "10.60.0.11"),
        (b.pod(Some(200)), "10.60.0.21"),
    ] {
        ensure!(!from.ping_once(to)?, "{} reached {to} across VLANs", from.name);
    }

    // 802.1Q tags on the wire; the untagged pool's frames carry none.
    wire_capture(&a.ns, "vlan 100 and icmp", || a.pod(Some(100)).ping_once("10.60.0.21"), "vlan 100,", "vlan 200")?;
    wire_capture(&a.ns, "vlan 200 and icmp", || a.pod(Some(200)).ping_once("10.60.0.22"), "vlan 200,", "vlan 100")?;
    wire_capture(&a.ns, "icmp", || a.pod(None).ping_once("10.60.0.20"), "ethertype IPv4", "802.1Q")?;

    // Self-healing of a lost VLAN (filtering mode) or a pod port off its VLAN bridge.
    let att = a.att(Some(100));
    match a.mode {
        DatapathMode::VlanFiltering => {
            a.ns.exec(&["bridge", "vlan", "del", "dev", &att.host_veth, "vid", "100"])?;
            let drifts = a.dp.check(att).await?;
            ensure!(
                drifts == vec![Drift::PortVlanMissing { port: att.host_veth.clone(), vlan: PortVlan::access(100) }],
                "{drifts:?}"
            );
        }
        DatapathMode::PerVlanBridge => {
            a.ns.ip(&["link", "set", &att.host_veth, "master", "br0"])?;
            let drifts = a.dp.check(att).await?;
            ensure!(matches!(&drifts[..], [Drift::NotInBridge { want, .. }] if want == "br0.100"), "{drifts:?}");
        }
    }
    ensure!(!a.pod(Some(100)).ping_once("10.60.0.21")?, "the broken port still forwards");
    let atts: Vec<DesiredAttachment> = a.pods.iter().map(|p| p.2.clone()).collect();
    let started = Instant::now();
    let report = a.dp.reconcile(&atts).await;
    println!("repair took {:?}: {:?}", started.elapsed(), report.repaired);
    ensure!(report.failed.is_empty(), "{:?}", report.failed);
    ensure!(a.pod(Some(100)).reaches("10.60.0.21", wait)?, "VLAN 100 not repaired");

    // Node-level breakages: each is found by CHECK and repaired by one reconcile pass.
    let breakages: Vec<(&str, Vec<&str>)> = match a.mode {
        DatapathMode::VlanFiltering => vec![
            ("vlan_filtering off", vec!["ip", "link", "set", "br0", "type", "bridge", "vlan_filtering", "0"]),
            ("trunk lost VLAN 100", vec!["bridge", "vlan", "del", "dev", "wire", "vid", "100"]),
            ("bridge down", vec!["ip", "link", "set", "br0", "down"]),
        ],
        DatapathMode::PerVlanBridge => vec![
            ("VLAN link deleted", vec!["ip", "link", "del", "wire.100"]),
            ("VLAN bridge down", vec!["ip", "link", "set", "br0.100", "down"]),
        ],
    };
    for (what, cmd) in breakages {
        let out = a.ns.exec(&cmd)?;
        ensure!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
        let drifts = a.dp.check(att).await?;
        ensure!(!drifts.is_empty(), "{what}: CHECK found nothing");
        let report = a.dp.reconcile(&atts).await;
        ensure!(report.failed.is_empty(), "{what}: {:?}", report.failed);
        ensure!(a.dp.check(att).await?.is_empty(), "{what}: not repaired");
        ensure!(a.pod(Some(100)).reaches("10.60.0.21", wait)?, "{what}: VLAN 100 not working after repair");
        println!("{what}: found {drifts:?}, repaired");
    }
    check_node_layout(&a)?;

    // Teardown: every host veth gone, twice.
    for n in [&a, &b] {
        let ids: Vec<_> = n.pods.iter().map(|p| p.2.id()).collect();
        n.dp.teardown_all(&ids).await?;
        n.dp.teardown_all(&ids).await?;
        for (_, pod, att) in &n.pods {
            ensure!(n.ns.link(&att.host_veth)?.is_none() && pod.link("eth0")?.is_none(), "veth left after teardown");
        }
    }
    Ok(())
}

/// Checks the node's links with `ip -j -d` / `bridge -j`, independently of the datapath.
fn check_node_layout(n: &Node) -> Result<()> {
    let details = n.ns.ip_json(&["-d", "link", "show"])?;
    let link = |name: &str| details.iter().find(|l| l["ifname"] == name).cloned();
    match n.mode {
        DatapathMode::VlanFiltering => {
            let br = link("br0").context("br0")?;
            ensure!(br["linkinfo"]["info_data"]["vlan_filtering"] == 1, "br0 not vlan_filtering: {br}");
            let vlans: Vec<serde_json::Value> =
                serde_json::from_str(&common::run("bridge", &["-j", "-n", &n.ns.name, "vlan", "show"])?)?;
            let port_vlans = |dev: &str| -> Vec<(u64, bool, bool)> {
                vlans
                    .iter()
                    .filter(|e| e["ifname"] == dev)
                    .flat_map(|e| e["vlans"].as_array().cloned().unwrap_or_default())
                    .map(|v| {
                        let flags = v["flags"].as_array().cloned().unwrap_or_default();
                        let has = |f: &str| flags.iter().any(|x| x == f);
                        (v["vlan"].as_u64().unwrap_or(0), has("PVID"), has("Egress Untagged"))
                    })
                    .collect()
            };
            // The trunk: native VLAN 1 untagged, 100 and 200 tagged.
            let trunk = port_vlans("wire");
            for want in [(1, true, true), (100, false, false), (200, false, false)] {
                ensure!(trunk.contains(&want), "trunk lacks {want:?}: {trunk:?}");
            }
            // Each pod port: only its VLAN, as PVID, untagged.
            for (vlan, _, att) in &n.pods {
                let want = vec![(u64::from(vlan.unwrap_or(1)), true, true)];
                ensure!(port_vlans(&att.host_veth) == want, "{}: {:?}", att.host_veth, port_vlans(&att.host_veth));
            }
        }
        DatapathMode::PerVlanBridge => {
            for vid in [100, 200] {
                let sub = link(&format!("wire.{vid}")).with_context(|| format!("wire.{vid}"))?;
                ensure!(sub["linkinfo"]["info_kind"] == "vlan" && sub["linkinfo"]["info_data"]["id"] == vid, "{sub}");
                ensure!(sub["master"] == format!("br0.{vid}").as_str(), "{sub}");
                ensure!(link(&format!("br0.{vid}")).is_some(), "br0.{vid} missing");
            }
            ensure!(link("wire").context("wire")?["master"] == "br0");
        }
    }
    for (vlan, _, att) in &n.pods {
        let want = match (n.mode, vlan) {
            (DatapathMode::PerVlanBridge, Some(v)) => format!("br0.{v}"),
            _ => "br0".to_string(),
        };
        ensure!(
            link(&att.host_veth).context("host veth")?["master"] == want.as_str(),
            "{} not in {want}",
            att.host_veth
        );
    }
    Ok(())
}

/// Captures on the node's wire while `traffic` runs; every captured frame's line must contain
/// `want` and not `unwanted`.
/// Without tcpdump on the machine this one sub-check is skipped, loudly.
fn wire_capture(
    node: &Netns,
    filter: &str,
    mut traffic: impl FnMut() -> Result<bool>,
    want: &str,
    unwanted: &str,
) -> Result<()> {
    if Command::new("tcpdump").arg("--version").output().is_err() {
        println!("SKIPPED sub-check: tcpdump is not installed, 802.1Q tags on the wire not verified ({filter})");
        return Ok(());
    }
    let mut child = Command::new("ip")
        .args(["netns", "exec", &node.name, "tcpdump", "-Z", "root", "-i", "wire", "-e", "-n", "-l", "-c", "2", filter])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // tcpdump says "listening on wire" once it captures.
    let mut stderr = BufReader::new(child.stderr.take().context("stderr")?);
    let mut line = String::new();
    while !line.contains("listening on") {
        line.clear();
        if stderr.read_line(&mut line)? == 0 {
            bail!("tcpdump exited before capturing");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            child.kill()?;
            child.wait()?;
            break None;
        }
        traffic()?;
    };
    let mut out = String::new();
    child.stdout.take().context("stdout")?.read_to_string(&mut out)?;
    println!("tcpdump '{filter}':\n{}", out.trim_end());
    ensure!(status.is_some_and(|s| s.success()), "tcpdump saw no '{filter}' frames");
    ensure!(out.lines().count() == 2, "expected two frames");
    ensure!(
        out.lines().all(|l| l.contains(want) && !l.contains(unwanted)),
        "expected '{want}', not '{unwanted}', on every frame"
    );
    Ok(())
}

/// Runs this test's own binary inside user-mode-linux, streaming its output.
fn run_under_uml() -> Result<()> {
    let script = std::env::var_os("HC_UML_RUN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/tools/uml/uml-run.sh"));
    ensure!(script.exists(), "{} not found: the VLAN test cannot run (set HC_UML_RUN)", script.display());
    ensure!(
        PathBuf::from("/usr/bin/linux.uml").exists(),
        "user-mode-linux is not installed: apt-get install -y user-mode-linux kmod iproute2 iputils-ping gcc"
    );
    let exe = std::env::current_exe()?;
    let scratch = tempfile::tempdir()?;
    let status = Command::new("bash")
        .arg(&script)
        .args(["-t", "300", "--"])
        .arg(&exe)
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env("HC_IN_UML", "1")
        .current_dir(scratch.path())
        .status()
        .context("starting uml-run.sh")?;
    match status.code() {
        Some(0) => Ok(()),
        Some(125) => bail!("user-mode-linux died or timed out (uml-run.sh exit 125)"),
        other => bail!("the VLAN test failed inside user-mode-linux (exit {other:?})"),
    }
}
