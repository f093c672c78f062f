//! `net.bridge.bridge-nf-call-iptables=1`: bridged pod traffic goes through iptables, so
//! kube-proxy's Service rules (ClusterIPs) apply to it.

use std::path::Path;

use tracing::warn;

/// Where sysctls live; tests point [`enable`] at a directory of their own.
pub const PROC_SYS: &str = "/proc/sys";

/// The sysctl, relative to [`PROC_SYS`].
const KEY: &str = "net/bridge/bridge-nf-call-iptables";

/// What [`enable`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrNetfilter {
    /// The sysctl is now 1.
    Enabled,
    /// No such sysctl (br_netfilter is not loaded or not built), or it could not be written;
    /// a warning has been logged. Services still work for routed traffic, not bridged.
    Unavailable { reason: String },
}

/// Sets `<proc_sys>/net/bridge/bridge-nf-call-iptables` to 1 where it exists; warns where not.
/// Never fails: the datapath works without it.
pub fn enable(proc_sys: &Path) -> BrNetfilter {
    let path = proc_sys.join(KEY);
    if !path.exists() {
        let reason = format!("{} does not exist (br_netfilter not loaded)", path.display());
        warn!(%reason, "bridged traffic bypasses iptables: Service ClusterIPs may not work for pods");
        return BrNetfilter::Unavailable { reason };
    }
    match std::fs::write(&path, "1\n") {
        Ok(()) => BrNetfilter::Enabled,
        Err(e) => {
            let reason = format!("cannot write {}: {e}", path.display());
            warn!(%reason, "bridged traffic bypasses iptables: Service ClusterIPs may not work for pods");
            BrNetfilter::Unavailable { reason }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_one_where_the_sysctl_exists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bridge = dir.path().join("net/bridge");
        std::fs::create_dir_all(&bridge).expect("mkdir");
        std::fs::write(bridge.join("bridge-nf-call-iptables"), "0\n").expect("write");
        assert_eq!(enable(dir.path()), BrNetfilter::Enabled);
        let value = std::fs::read_to_string(bridge.join("bridge-nf-call-iptables")).expect("read");
        assert_eq!(value.trim(), "1");
    }

    #[test]
    fn reports_unavailable_where_it_does_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(enable(dir.path()), BrNetfilter::Unavailable { .. }));
        assert!(!dir.path().join(KEY).exists(), "must not create the sysctl file");
    }
}
