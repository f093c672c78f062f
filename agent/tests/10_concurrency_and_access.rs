//! The socket under load and its access rules: concurrent ADDs on a fresh node (the bridge is
//! created once, every pod gets its own address) with more requests than the agent serves at
//! once; the socket is mode 0600 and a non-root peer is refused by its credentials even when
//! the file mode would let it in. Run as root.

#[path = "../../allocator/tests/common/mod.rs"]
mod alloc;
mod common;
mod e2e;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use anyhow::Result;
use common::Netns;
use e2e::{Env, hc_bridge, pool, run_with_stdin, workspace_bin};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_adds_on_a_fresh_node_all_succeed_with_distinct_addresses() -> Result<()> {
    let env = Env::start(&[pool(json!({"name": "flat", "cidr": "10.87.0.0/24", "gateway": "10.87.0.1"}))]).await?;
    let pods: Vec<Netns> = (0..24).map(|_| Netns::new()).collect::<Result<_>>()?;
    let started = std::time::Instant::now();
    let results: Vec<e2e::Exec> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, pod)| {
                let env = &env;
                s.spawn(move || hc_bridge(env, &format!("c{i}"), pod, "ADD", json!({"pool": "flat"})))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let took = started.elapsed();
    let addresses: BTreeSet<String> = results.iter().map(|r| r.ok().address()).collect();
    eprintln!("{} concurrent ADDs on a fresh node took {took:?} in all", pods.len());
    assert_eq!(addresses.len(), pods.len(), "duplicate addresses: {addresses:?}");
    assert_eq!(env.allocations().await.len(), pods.len());
    let bridges = env.node.ip_json(&["link", "show", "type", "bridge"])?;
    assert_eq!(bridges.len(), 1, "{bridges:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_is_0600_and_non_root_peers_are_refused() -> Result<()> {
    let env = Env::start(&[pool(json!({"name": "flat", "cidr": "10.86.0.0/24"}))]).await?;
    let mode = std::fs::metadata(&env.agent.socket)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");
    // Open the way on purpose: only the peer-credential check stands in between now.
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o711))?;
    std::fs::set_permissions(&env.agent.socket, std::fs::Permissions::from_mode(0o666))?;
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(workspace_bin("hc-bridge"))
        .env_clear()
        .env("CNI_COMMAND", "STATUS")
        .env("CNI_PATH", "/nonexistent");
    let config = env.bridge_config(json!({"cniVersion": "1.1.0"}));
    let out = run_with_stdin(cmd, &config.to_string());
    assert_ne!(out.status, 0, "{out:?}");
    assert!(out.stdout.contains("uid 65534"), "{out:?}");
    Ok(())
}
