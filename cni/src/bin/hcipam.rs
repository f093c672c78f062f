//! `hcipam`, the IPAM-only CNI plugin: hc-agent allocates from hc-bridge pools and another main
//! plugin (the reference `bridge`, `macvlan`, …) builds the interface.

fn main() {
    std::process::exit(hc_cni::plugin::main(hc_cni::protocol::Plugin::Ipam));
}
