//! podman (CNI backend, configuration outside /etc as in ENVIRONMENT.md) runs a container on an
//! hc-bridge network: the container has its address and the default route via the pool's
//! gateway, and removing the container releases the address. Needs `podman runc
//! busybox-static`. Run as root.

#[path = "../../allocator/tests/common/mod.rs"]
mod alloc;
mod common;
mod e2e;

use std::process::Command;

use anyhow::{Context, Result};
use e2e::{Env, pool, workspace_bin};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_container_gets_its_address_and_route() -> Result<()> {
    let env = Env::start(&[pool(json!({"name": "pm", "cidr": "10.96.0.0/24", "gateway": "10.96.0.1"}))]).await?;
    let s = env.dir.path();
    let plugins = workspace_bin("hc-bridge").parent().context("plugin dir")?.to_path_buf();
    let (nets, rootfs) = (s.join("networks"), s.join("rootfs"));
    std::fs::create_dir_all(&nets)?;
    std::fs::create_dir_all(rootfs.join("bin"))?;
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).context("busybox-static missing")?;
    for tool in ["sh", "ip", "sleep", "cat"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(tool))?;
    }
    let conflist = json!({"cniVersion": "1.0.0", "name": env.network,
        "plugins": [{"type": "hc-bridge", "pool": "pm", "agentSocket": env.agent.socket}]});
    std::fs::write(nets.join(format!("{}.conflist", env.network)), conflist.to_string())?;
    std::fs::write(
        s.join("containers.conf"),
        format!(
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
             [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\", \"/usr/lib/cni\"]\nnetwork_config_dir = \"{}\"\n\
             [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\ntmp_dir = \"{}\"\n",
            plugins.display(),
            nets.display(),
            s.join("tmp").display()
        ),
    )?;
    std::fs::write(
        s.join("storage.conf"),
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            s.join("root").display(),
            s.join("runroot").display()
        ),
    )?;
    let podman = |args: &[&str]| {
        Command::new("podman")
            .env("CONTAINERS_CONF", s.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", s.join("storage.conf"))
            .args(args)
            .output()
    };
    let out = podman(&[
        "run",
        "--rm",
        "--network",
        &env.network,
        "--rootfs",
        &rootfs.display().to_string(),
        "/bin/sh",
        "-c",
        "ip -4 addr show eth0; ip -4 route",
    ])
    .context("podman missing: apt-get install podman runc busybox-static")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        env.dump();
        panic!("podman failed ({}): {stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    assert!(stdout.contains("inet 10.96.0."), "no pool address in the container: {stdout}");
    assert!(stdout.contains("default via 10.96.0.1"), "no default route via the gateway: {stdout}");
    // --rm: podman ran DEL, which released the address.
    assert!(env.allocations().await.is_empty(), "address not released: {:?}", env.allocations().await);
    assert!(hc_agent::store::recorded(&env.agent.state_dir)?.is_empty(), "record left behind");
    Ok(())
}
