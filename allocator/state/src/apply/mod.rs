//! The command handlers, one file per kind of object. Each validates fully against the current
//! state, then mutates: a refused command changes nothing.

mod allocate;
mod batch;
mod lease;
mod pool;
mod release;
mod reservation;
mod vlan;

use hc_api::types::AllocationState;

use crate::record::RecordRef;

/// Who holds an allocation, for error messages.
pub(crate) fn holder(a: RecordRef<'_>) -> String {
    let o = &a;
    let pod = if o.namespace.is_empty() && o.pod.is_empty() {
        String::new()
    } else {
        format!("pod {}/{} ", o.namespace, o.pod)
    };
    let quarantined = match a.state {
        AllocationState::Active => "",
        AllocationState::Quarantined => " (quarantined: its node's lease expired)",
    };
    format!("{pod}(container {}, interface {}) on node {}{quarantined}", o.container_id, o.interface, o.node)
}
