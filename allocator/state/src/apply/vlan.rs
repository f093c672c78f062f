//! PutVlan, DeleteVlan.

use hc_api::IpamError;
use hc_api::types::VlanSpec;

use crate::command::{Output, Response};
use crate::state::State;
use crate::validate::validate_vlan_spec;

impl State {
    /// Creates or replaces a VLAN. Pools may name VLANs that were never declared; declaring one
    /// records its name and which nodes carry it.
    pub(crate) fn put_vlan(&mut self, spec: &VlanSpec) -> Response {
        validate_vlan_spec(spec)?;
        self.vlans.insert(spec.id, spec.clone());
        Ok(Output::Done)
    }

    pub(crate) fn delete_vlan(&mut self, id: u16) -> Response {
        if !self.vlans.contains_key(&id) {
            return Err(IpamError::VlanNotFound { vlan: id });
        }
        if let Some(pool) = self.pools.values().find(|p| p.spec.vlan == Some(id)) {
            return Err(IpamError::VlanInUse { vlan: id, pool: pool.spec.name.clone() });
        }
        self.vlans.remove(&id);
        Ok(Output::Done)
    }
}

#[cfg(test)]
mod tests {
    use hc_api::IpamError;
    use hc_api::types::{PoolSpec, VlanSpec};

    use crate::command::Command;
    use crate::testing::{Harness, pool};

    fn vlan(id: u16) -> VlanSpec {
        VlanSpec { id, name: format!("v{id}"), nodes: vec![] }
    }

    #[test]
    fn put_vlan_refuses_ids_outside_1_to_4094() {
        let mut h = Harness::new();
        assert_eq!(h.refused(Command::PutVlan(vlan(0))), IpamError::InvalidVlan { vlan: 0 });
        assert_eq!(h.refused(Command::PutVlan(vlan(4095))), IpamError::InvalidVlan { vlan: 4095 });
        let e = h.refused(Command::PutVlan(VlanSpec { nodes: vec![String::new()], ..vlan(5) }));
        assert!(matches!(e, IpamError::InvalidArgument { .. }));
    }

    #[test]
    fn put_vlan_creates_and_replaces() {
        let mut h = Harness::new();
        h.ok(Command::PutVlan(vlan(4094)));
        h.ok(Command::PutVlan(vlan(1)));
        let v = VlanSpec { id: 1, name: "mgmt".into(), nodes: vec!["n1".into()] };
        h.ok(Command::PutVlan(v.clone()));
        assert_eq!(h.state.vlans(), vec![v.clone(), vlan(4094)]);
        assert_eq!(h.state.vlan(1), Some(&v));
    }

    #[test]
    fn delete_vlan_is_refused_while_a_pool_uses_it() {
        let mut h = Harness::new();
        h.ok(Command::PutVlan(vlan(100)));
        h.create(PoolSpec { vlan: Some(100), ..pool("p", "10.0.0.0/24") });
        assert_eq!(h.refused(Command::DeleteVlan { id: 100 }), IpamError::VlanInUse { vlan: 100, pool: "p".into() });
        h.ok(Command::DeletePool { name: "p".into(), force: false });
        h.ok(Command::DeleteVlan { id: 100 });
        assert!(h.state.vlans().is_empty());
    }

    #[test]
    fn delete_vlan_of_an_unknown_id_is_not_found() {
        let mut h = Harness::new();
        assert_eq!(h.refused(Command::DeleteVlan { id: 7 }), IpamError::VlanNotFound { vlan: 7 });
    }
}
