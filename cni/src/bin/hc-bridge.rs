//! `hc-bridge`, the main CNI plugin: hc-agent allocates the pod's address and builds its
//! interface on the bridge and VLAN of the pool.

fn main() {
    std::process::exit(hc_cni::plugin::main(hc_cni::protocol::Plugin::Bridge));
}
