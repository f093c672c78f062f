//! The CNI plugins `hc-bridge` and `hcipam`, and the protocol they speak with hc-agent.
//!
//! The container runtime execs a plugin once per CNI call. The plugin validates the call,
//! sends one request over hc-agent's unix socket and prints the CNI result or error. All
//! decisions (pool, address, datapath) are the agent's; the plugins only translate between
//! the CNI specification (1.1.0, and configurations of 0.3.x, 0.4.0 and 1.0.0) and the
//! protocol. They have no async runtime and start in a millisecond or two.
//!
//! - `hc-bridge` is the main plugin: the agent allocates the address and builds the pod's
//!   interface on the bridge and VLAN of its pool.
//! - `hcipam` is an IPAM plugin for other main plugins (the reference `bridge` or `macvlan`):
//!   the agent allocates only, and the result has addresses, routes and DNS.
//!
//! # Layout
//!
//! - [`protocol`]: the request and reply types shared with hc-agent, their framing and the
//!   documented wire format. The agent's socket server is written against this module.
//! - [`spec`]: CNI_COMMAND, the attachment variables and CNI_ARGS.
//! - [`config`]: the network configuration on stdin, validated field by field.
//! - [`version`]: the supported CNI versions and the VERSION reply.
//! - [`result`]: the version-neutral result and its shaping per version.
//! - [`error`]: every failure and its CNI error code.
//! - [`client`]: one request over the socket, with a deadline.
//! - [`plugin`]: one invocation from environment and stdin to stdout and exit status; the
//!   binaries in `src/bin/` only call [`plugin::main`].

pub mod client;
pub mod config;
pub mod error;
pub mod plugin;
pub mod protocol;
pub mod result;
pub mod spec;
pub mod version;
