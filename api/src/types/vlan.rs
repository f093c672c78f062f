//! A VLAN known to the cluster and the nodes whose uplinks carry it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VlanSpec {
    /// 802.1Q id, 1–4094.
    pub id: u16,
    #[serde(default)]
    pub name: String,
    /// Nodes whose uplink carries this VLAN; empty means every node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
}

impl VlanSpec {
    pub fn carried_by(&self, node: &str) -> bool {
        self.nodes.is_empty() || self.nodes.iter().any(|n| n == node)
    }
}
