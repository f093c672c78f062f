//! What the running kernel can do, probed in a throw-away network namespace so the node is
//! never touched: bridge VLAN filtering (the default mode) and 802.1Q links (the per-VLAN
//! bridge mode with an uplink).

use futures::TryStreamExt;
use rtnetlink::{LinkBridge, LinkMessageBuilder, LinkVeth, LinkVlan};

use super::error::{DatapathError, NetnsError};

/// The kernel features the datapath modes need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelSupport {
    pub vlan_filtering: bool,
    pub vlan_links: bool,
}

/// Probes the kernel: creates a `vlan_filtering` bridge and an 802.1Q link in a fresh
/// namespace that disappears with the probe.
pub async fn probe() -> Result<KernelSupport, DatapathError> {
    let runtime = tokio::runtime::Handle::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("hc-probe".into())
        .spawn(move || {
            let result = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|source| DatapathError::Netns(NetnsError::Enter { path: "(new namespace)".into(), source }))
                .and_then(|()| {
                    let _entered = runtime.enter();
                    rtnetlink::new_connection().map_err(DatapathError::Socket)
                });
            let _ = tx.send(result);
        })
        .map_err(|source| NetnsError::Thread { path: "(new namespace)".into(), source })?;
    let (conn, handle, _) = rx.await.map_err(|_| NetnsError::ThreadDied { path: "(new namespace)".into() })??;
    let task = tokio::spawn(conn);

    let vlan_filtering = handle
        .link()
        .add(LinkMessageBuilder::<LinkBridge>::new("probe-br").vlan_filtering(true).build())
        .execute()
        .await
        .is_ok();
    let vlan_links = async {
        handle.link().add(LinkVeth::new("probe-a", "probe-b").build()).execute().await.ok()?;
        let parent = handle.link().get().match_name("probe-a").execute().try_next().await.ok()??;
        handle.link().add(LinkVlan::new("probe-a.7", parent.header.index, 7).build()).execute().await.ok()
    }
    .await
    .is_some();
    // Dropping the socket, the namespace's last reference, destroys it and its links.
    drop(handle);
    task.abort();
    Ok(KernelSupport { vlan_filtering, vlan_links })
}
