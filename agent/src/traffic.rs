//! Per-pod traffic from the host-side veth counters, exported as `hc_agent_pod_*_total`
//! labelled by pod namespace and name, from the pod's point of view (what the host veth
//! transmits, the pod receives).
//!
//! The counters are read from `/proc/thread-self/net/dev` on a short-lived thread that has
//! joined the node's namespace (the agent's own in production), for the reason `datapath/netns.rs`
//! gives: a thread that changed namespace must never go back to a pool.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};
use tokio::sync::oneshot;

use crate::datapath::host_veth_name;
use crate::store::Record;

/// One interface's counters, as `/proc/net/dev` lists them (the interface's point of view).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DevStats {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_drops: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_drops: u64,
}

/// Parses `/proc/net/dev`: two header lines, then `name: 8 rx fields 8 tx fields`.
pub fn parse_proc_net_dev(text: &str) -> HashMap<String, DevStats> {
    let mut out = HashMap::new();
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else { continue };
        let f: Vec<u64> = rest.split_whitespace().filter_map(|v| v.parse().ok()).collect();
        if f.len() < 16 {
            continue;
        }
        out.insert(
            name.trim().to_owned(),
            DevStats {
                rx_bytes: f[0],
                rx_packets: f[1],
                rx_drops: f[3],
                tx_bytes: f[8],
                tx_packets: f[9],
                tx_drops: f[11],
            },
        );
    }
    out
}

/// Reads the counters of every interface in `netns` (`None`: the agent's namespace).
pub async fn read(netns: Option<PathBuf>) -> std::io::Result<HashMap<String, DevStats>> {
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new().name("hc-traffic".into()).spawn(move || {
        let result = (|| {
            if let Some(path) = &netns {
                let ns = File::open(path)?;
                setns(&ns, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
            }
            std::fs::read_to_string(Path::new("/proc/thread-self/net/dev"))
        })();
        let _ = tx.send(result.map(|t| parse_proc_net_dev(&t)));
    })?;
    rx.await.map_err(|_| std::io::Error::other("the counter thread died"))?
}

/// Exports the counters of the recorded hc-bridge attachments.
pub fn export(records: &[Record], stats: &HashMap<String, DevStats>) {
    for r in records.iter().filter(|r| r.desired.is_some()) {
        let Some(s) = stats.get(&host_veth_name(&r.container_id, &r.ifname)) else { continue };
        let labels = [("namespace", r.namespace.clone()), ("pod", r.pod.clone()), ("interface", r.ifname.clone())];
        // The host end's transmit is the pod's receive, and the other way round.
        metrics::counter!("hc_agent_pod_rx_bytes_total", &labels).absolute(s.tx_bytes);
        metrics::counter!("hc_agent_pod_rx_packets_total", &labels).absolute(s.tx_packets);
        metrics::counter!("hc_agent_pod_rx_drops_total", &labels).absolute(s.tx_drops);
        metrics::counter!("hc_agent_pod_tx_bytes_total", &labels).absolute(s.rx_bytes);
        metrics::counter!("hc_agent_pod_tx_packets_total", &labels).absolute(s.rx_packets);
        metrics::counter!("hc_agent_pod_tx_drops_total", &labels).absolute(s.rx_drops);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_dev_is_parsed() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
 lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0\n\
hc0123456789a: 5000 40 0 3 0 0 0 0 7000 50 0 1 0 0 0 0\n";
        let s = parse_proc_net_dev(text);
        assert_eq!(s.len(), 2);
        assert_eq!(
            s["hc0123456789a"],
            DevStats { rx_bytes: 5000, rx_packets: 40, rx_drops: 3, tx_bytes: 7000, tx_packets: 50, tx_drops: 1 }
        );
    }
}
