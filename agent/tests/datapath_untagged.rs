//! The datapath on this machine's own kernel (no VLAN filtering, no 802.1Q): a pool without a
//! VLAN on the node's bridge. A "node" namespace stands in for the host; each pod is another
//! namespace. Results are read back with `ip -j`, independently of the datapath's own view.
//! Run as root.

mod common;

use std::time::{Duration, Instant};

use anyhow::Result;
use common::{Netns, attachment, node, wait_until};
use hc_agent::datapath::{BrNetfilter, Datapath, DatapathError, DatapathMode, Drift, NetnsRef, Route, probe_kernel};

/// A node namespace with an uplink: one end of a veth whose other end stays unattached (the
/// "switch" is not needed for pods on one node).
fn node_ns() -> Result<Netns> {
    let n = Netns::new()?;
    n.ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up0sw"])?;
    Ok(n)
}

async fn datapath(n: &Netns) -> Result<Datapath> {
    Ok(Datapath::connect(node(DatapathMode::PerVlanBridge, Some("up0")), NetnsRef::path(n.path())).await?)
}

#[tokio::test]
async fn two_pods_on_the_bridge_reach_each_other_and_teardown_is_idempotent() -> Result<()> {
    let n = node_ns()?;
    let (p1, p2) = (Netns::new()?, Netns::new()?);
    let dp = datapath(&n).await?;

    let mut a1 = attachment(&p1, None, "10.77.0.2/24", Some("10.77.0.1"));
    a1.addresses.push("fd77::2/64".parse()?);
    a1.gateways.push("fd77::1".parse()?);
    a1.routes = vec![Route { dst: "192.168.77.0/24".parse()?, via: None }];
    a1.mac = Some("02:77:00:00:00:02".parse()?);
    a1.mtu = Some(1400);
    let a2 = attachment(&p2, None, "10.77.0.3/24", Some("10.77.0.1"));

    let r1 = dp.setup(&a1).await?;
    let r2 = dp.setup(&a2).await?;
    assert!(!r1.repaired.is_empty() && !r2.repaired.is_empty());
    assert_eq!(r1.pod_mac, a1.mac);

    // What `ip` sees: pod addresses, routes, MTU and MAC; host ports on the bridge and up.
    assert_eq!(p1.addresses("eth0")?, ["10.77.0.2/24", "fd77::2/64"]);
    let routes = p1.routes()?;
    for want in [
        "default via 10.77.0.1 dev eth0",
        "192.168.77.0/24 via 10.77.0.1 dev eth0",
        "10.77.0.0/24 dev eth0",
        "default via fd77::1 dev eth0",
    ] {
        assert!(routes.iter().any(|r| r == want), "missing {want:?} in {routes:?}");
    }
    let pod_link = p1.link("eth0")?.expect("eth0 in pod");
    assert_eq!(pod_link["mtu"], 1400);
    assert_eq!(pod_link["address"], "02:77:00:00:00:02");
    assert!(pod_link["flags"].as_array().expect("flags").iter().any(|f| f == "UP"));
    for a in [&a1, &a2] {
        let port = n.link(&a.host_veth)?.expect("host veth");
        assert_eq!(port["master"], "br0", "{port}");
        assert_eq!(port["operstate"], "UP", "{port}");
    }
    assert_eq!(n.link("up0")?.expect("uplink")["master"], "br0");

    assert!(p1.reaches("10.77.0.3", Duration::from_secs(10))?, "pod 1 cannot reach pod 2");
    assert!(p2.reaches("10.77.0.2", Duration::from_secs(10))?, "pod 2 cannot reach pod 1");

    // A repeated ADD builds nothing and reports the same interface.
    let again = dp.setup(&a1).await?;
    assert!(again.repaired.is_empty(), "{:?}", again.repaired);
    assert_eq!(again.pod_mac, r1.pod_mac);
    assert_eq!(dp.check(&a1).await?, vec![]);

    // DEL removes both ends; a second DEL succeeds.
    dp.teardown(&a1.id()).await?;
    assert!(n.link(&a1.host_veth)?.is_none());
    assert!(p1.link("eth0")?.is_none());
    assert!(n.link(&a2.host_veth)?.is_some(), "the other pod is untouched");
    dp.teardown(&a1.id()).await?;
    dp.teardown_all(&[a1.id(), a2.id()]).await?;
    assert!(n.link(&a2.host_veth)?.is_none());
    Ok(())
}

#[tokio::test]
async fn check_finds_drift_and_reconcile_repairs_it() -> Result<()> {
    let n = node_ns()?;
    let (p1, p2) = (Netns::new()?, Netns::new()?);
    let dp = datapath(&n).await?;
    let a1 = attachment(&p1, None, "10.78.0.2/24", Some("10.78.0.1"));
    let a2 = attachment(&p2, None, "10.78.0.3/24", Some("10.78.0.1"));
    dp.setup(&a1).await?;
    dp.setup(&a2).await?;
    assert!(p1.reaches("10.78.0.3", Duration::from_secs(10))?);

    // A pod port detached from its bridge.
    n.ip(&["link", "set", &a1.host_veth, "nomaster"])?;
    let drifts = dp.check(&a1).await?;
    assert_eq!(drifts, vec![Drift::NotInBridge { link: a1.host_veth.clone(), want: "br0".into(), have: None }]);
    assert!(!p1.ping_once("10.78.0.3")?, "a detached port must cut the pod off");
    let started = Instant::now();
    let report = dp.reconcile(&[a1.clone(), a2.clone()]).await;
    let took = started.elapsed();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.repaired.len(), 1, "{:?}", report.repaired);
    println!("repair of a detached pod port took {took:?}");
    assert_eq!(n.link(&a1.host_veth)?.expect("veth")["master"], "br0");
    assert!(p1.reaches("10.78.0.3", Duration::from_secs(10))?);

    // The bridge set down.
    n.ip(&["link", "set", "br0", "down"])?;
    assert_eq!(dp.check(&a1).await?, vec![Drift::LinkDown { link: "br0".into() }]);
    let started = Instant::now();
    let report = dp.reconcile(&[a1.clone(), a2.clone()]).await;
    println!("repair of a bridge set down took {:?}", started.elapsed());
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert!(p1.reaches("10.78.0.3", Duration::from_secs(10))?);

    // CHECK finds a removed address (and the connected route that went with it).
    p1.ip(&["addr", "del", "10.78.0.2/24", "dev", "eth0"])?;
    let drifts = dp.check(&a1).await?;
    assert!(
        drifts
            .iter()
            .any(|d| matches!(d, Drift::AddressMissing { address, .. } if address.to_string() == "10.78.0.2/24")),
        "{drifts:?}"
    );
    let report = dp.reconcile(&[a1.clone(), a2.clone()]).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(p1.addresses("eth0")?, ["10.78.0.2/24"]);
    assert!(p1.routes()?.iter().any(|r| r == "default via 10.78.0.1 dev eth0"));
    assert_eq!(dp.check(&a1).await?, vec![]);

    // A pod whose namespace is gone is reported, not rebuilt, and does not stop the others.
    drop(p2);
    let report = dp.reconcile(&[a1.clone(), a2.clone()]).await;
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].0, Some(a2.id()));
    assert_eq!(dp.check(&a2).await?, vec![Drift::NetnsMissing { netns: a2.netns.clone() }]);
    Ok(())
}

#[tokio::test]
async fn announce_teaches_neighbours_the_pod_addresses() -> Result<()> {
    let n = node_ns()?;
    let (p1, p2) = (Netns::new()?, Netns::new()?);
    let dp = datapath(&n).await?;
    let mut a1 = attachment(&p1, None, "10.79.0.2/24", None);
    a1.addresses.push("fd79::2/64".parse()?);
    let a2 = attachment(&p2, None, "10.79.0.3/24", None);
    let mac = dp.setup(&a1).await?.pod_mac.expect("pod MAC").to_string();
    dp.setup(&a2).await?;

    // Pod 2 has never heard of pod 1; let it learn from unsolicited announcements.
    p2.exec(&["sysctl", "-qw", "net.ipv4.conf.eth0.arp_accept=1"])?;
    // Linux creates entries from unsolicited NAs only as a router (RFC 9131).
    p2.exec(&["sysctl", "-qw", "net.ipv6.conf.eth0.forwarding=1"])?;
    let na = p2.exec(&["sysctl", "-qw", "net.ipv6.conf.eth0.accept_untracked_na=1"])?.status.success();
    assert_eq!(dp.announce(&a1).await?, 2);
    let learned = |ip: &str| -> Result<bool> {
        Ok(p2.ip_json(&["neigh", "show", ip])?.iter().any(|e| e["lladdr"].as_str() == Some(mac.as_str())))
    };
    assert!(wait_until(Duration::from_secs(5), || learned("10.79.0.2"))?, "no ARP entry from the gratuitous ARP");
    if na {
        assert!(wait_until(Duration::from_secs(5), || learned("fd79::2"))?, "no neighbour entry from the NA");
    } else {
        println!("kernel lacks accept_untracked_na: the IPv6 advertisement was sent but not checked");
    }
    Ok(())
}

#[tokio::test]
async fn setup_refuses_a_foreign_interface_and_bad_input_and_leaves_nothing() -> Result<()> {
    let n = node_ns()?;
    let p = Netns::new()?;
    let dp = datapath(&n).await?;

    // The pod already has an eth0 that is not ours.
    p.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "other0"])?;
    let a = attachment(&p, None, "10.80.0.2/24", None);
    match dp.setup(&a).await {
        Err(DatapathError::Conflict { drifts }) => {
            assert!(matches!(&drifts[..], [Drift::PodLinkTaken { .. }]), "{drifts:?}")
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(n.link(&a.host_veth)?.is_none(), "nothing may be left behind");
    assert!(p.link("eth0")?.is_some() && p.link("other0")?.is_some(), "the foreign interface is untouched");

    // Invalid input fails before anything is built.
    let q = Netns::new()?;
    let bad = attachment(&q, None, "10.80.0.2/24", Some("10.81.0.1"));
    assert!(matches!(dp.setup(&bad).await, Err(DatapathError::Invalid(_))));
    assert!(n.link(&bad.host_veth)?.is_none() && q.link("eth0")?.is_none());

    // A pod namespace that does not exist.
    let mut gone = attachment(&q, None, "10.80.0.3/24", None);
    gone.netns = "/run/netns/hc-no-such-namespace".into();
    assert!(matches!(dp.setup(&gone).await, Err(DatapathError::Conflict { .. })));
    assert!(n.link(&gone.host_veth)?.is_none());

    // A failure after the veth is built: IPv6 is disabled in the pod, so its address is
    // refused. The half-built attachment is removed again.
    let r = Netns::new()?;
    r.exec(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"])?;
    let mut v6 = attachment(&r, None, "10.80.0.4/24", None);
    v6.addresses.push("fd80::4/64".parse()?);
    let err = dp.setup(&v6).await.expect_err("IPv6 address in a pod without IPv6");
    println!("setup failed as expected: {err}");
    assert!(matches!(err, DatapathError::Netlink { op: "add address", .. }), "{err:?}");
    assert!(n.link(&v6.host_veth)?.is_none(), "half-built host veth left behind");
    assert!(r.link("eth0")?.is_none(), "half-built pod interface left behind");
    Ok(())
}

/// An ADD builds the veth pair while its address is committed (`prepare`), then finishes it
/// (`setup_prepared`); an ADD that goes no further removes the pair (`discard`). What existed
/// before `prepare` is never removed by a failed setup.
#[tokio::test]
async fn a_prepared_veth_pair_is_finished_by_setup_or_removed_by_discard() -> Result<()> {
    let n = node_ns()?;
    let (p1, p2, p3) = (Netns::new()?, Netns::new()?, Netns::new()?);
    let dp = datapath(&n).await?;

    // Prepared: the pair exists, the peer in the pod under its final name with its MTU and
    // MAC, down and on no bridge; nothing else is there yet.
    let mut a1 = attachment(&p1, None, "10.83.0.2/24", Some("10.83.0.1"));
    a1.mac = Some("02:83:00:00:00:02".parse()?);
    a1.mtu = Some(1400);
    let mut veth = a1.clone();
    (veth.addresses, veth.gateways) = (Vec::new(), Vec::new());
    let prepared = dp.prepare(&veth).await;
    assert!(prepared.created());
    let port = n.link(&a1.host_veth)?.expect("host veth after prepare");
    assert!(port.get("master").is_none(), "{port}");
    assert_eq!(port["mtu"], 1400);
    let pod_link = p1.link("eth0")?.expect("eth0 in the pod after prepare");
    assert_eq!(pod_link["address"], "02:83:00:00:00:02");
    assert_eq!(pod_link["mtu"], 1400);
    assert!(p1.addresses("eth0")?.is_empty());

    // Finished: the same attachment a plain setup builds, reported with its MACs.
    let done = dp.setup_prepared(&a1, prepared).await?;
    assert!(!done.repaired.is_empty());
    assert_eq!(done.pod_mac, a1.mac);
    let port = n.link(&a1.host_veth)?.expect("host veth");
    assert_eq!(done.host_mac.map(|m| m.to_string()).as_deref(), port["address"].as_str());
    assert_eq!(dp.check(&a1).await?, vec![]);
    assert_eq!(p1.addresses("eth0")?, ["10.83.0.2/24"]);
    assert_eq!(n.link(&a1.host_veth)?.expect("veth")["master"], "br0");

    // A second pair, on a node whose bridge is built now: finished without a first look at
    // it, to the same state.
    let p4 = Netns::new()?;
    let mut a4 = attachment(&p4, None, "10.83.0.6/24", Some("10.83.0.1"));
    a4.mac = Some("02:83:00:00:00:06".parse()?);
    let prepared = dp.prepare(&a4).await;
    assert!(prepared.created());
    let done = dp.setup_prepared(&a4, prepared).await?;
    assert!(matches!(done.repaired.as_slice(), [Drift::VethMissing { .. }]), "{:?}", done.repaired);
    assert_eq!(done.pod_mac, a4.mac);
    assert_eq!(dp.check(&a4).await?, vec![]);
    assert_eq!(p4.addresses("eth0")?, ["10.83.0.6/24"]);
    assert_eq!(n.link(&a4.host_veth)?.expect("veth")["master"], "br0");
    dp.teardown(&a4.id()).await?;

    // A complete attachment prepared again: nothing created, nothing removed on a discard.
    let again = dp.prepare(&veth).await;
    assert!(!again.created());
    dp.discard(again).await;
    assert!(n.link(&a1.host_veth)?.is_some() && p1.link("eth0")?.is_some());

    // Discarded (the allocation failed): both ends are gone.
    let a2 = attachment(&p2, None, "10.83.0.3/24", Some("10.83.0.1"));
    let prepared = dp.prepare(&a2).await;
    assert!(prepared.created() && n.link(&a2.host_veth)?.is_some());
    dp.discard(prepared).await;
    assert!(n.link(&a2.host_veth)?.is_none(), "prepared host veth left behind");
    assert!(p2.link("eth0")?.is_none(), "prepared pod interface left behind");

    // Prepared, then the address turns out invalid for the pod (its gateway off-link): the
    // prepared pair is removed with the refusal.
    let prepared = dp.prepare(&a2).await;
    assert!(prepared.created());
    let mut bad = a2.clone();
    bad.gateways = vec!["10.84.0.1".parse()?];
    assert!(matches!(dp.setup_prepared(&bad, prepared).await, Err(DatapathError::Invalid(_))));
    assert!(n.link(&a2.host_veth)?.is_none() && p2.link("eth0")?.is_none());

    // Prepared, then setup fails in the kernel (IPv6 disabled in the pod): removed too.
    p3.exec(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"])?;
    let mut v6 = attachment(&p3, None, "10.83.0.4/24", None);
    v6.addresses.push("fd83::4/64".parse()?);
    let prepared = dp.prepare(&v6).await;
    assert!(prepared.created());
    dp.setup_prepared(&v6, prepared).await.expect_err("IPv6 address in a pod without IPv6");
    assert!(n.link(&v6.host_veth)?.is_none() && p3.link("eth0")?.is_none(), "half-built attachment left behind");

    // A namespace that is gone: nothing prepared; setup reports it.
    let mut gone = attachment(&p3, None, "10.83.0.5/24", None);
    gone.netns = "/run/netns/hc-no-such-namespace".into();
    let prepared = dp.prepare(&gone).await;
    assert!(!prepared.created());
    assert!(matches!(dp.setup_prepared(&gone, prepared).await, Err(DatapathError::Conflict { .. })));
    assert!(n.link(&gone.host_veth)?.is_none());

    dp.teardown(&a1.id()).await?;
    Ok(())
}

#[tokio::test]
async fn br_netfilter_is_enabled_in_the_node_namespace() -> Result<()> {
    let n = node_ns()?;
    let dp = datapath(&n).await?;
    let path = "/proc/sys/net/bridge/bridge-nf-call-iptables";
    let before = n.exec(&["cat", path])?;
    match dp.enable_br_netfilter().await? {
        BrNetfilter::Enabled => {
            let value = String::from_utf8(n.exec(&["cat", path])?.stdout)?;
            assert_eq!(value.trim(), "1", "before: {}", String::from_utf8_lossy(&before.stdout));
        }
        BrNetfilter::Unavailable { reason } => {
            assert!(!before.status.success(), "the sysctl exists but was reported unavailable: {reason}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn kernel_probe_leaves_no_trace() -> Result<()> {
    let names = || -> Result<Vec<String>> {
        let links: Vec<serde_json::Value> = serde_json::from_str(&common::run("ip", &["-j", "link", "show"])?)?;
        Ok(links.iter().filter_map(|l| l["ifname"].as_str().map(str::to_string)).collect())
    };
    let before = names()?;
    let support = probe_kernel().await?;
    println!("kernel support: {support:?}");
    assert_eq!(names()?, before, "the probe must not create links in this namespace");
    Ok(())
}
