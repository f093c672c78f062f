//! What hcctl prints: aligned tables and `Label: value` blocks for people, or pretty JSON.
//! Pure functions of the API's values (and of "now", for ages).

use std::fmt::Display;

use hc_api::types::{
    Allocated, Allocation, AllocationState, Lease, LeaseState, PoolStatus, Released, Reservation, Selector, VlanSpec,
};
use serde::Serialize;

use crate::cluster_status::ClusterStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// `value` as the server sent it, pretty-printed.
pub fn json<T: Serialize>(value: &T) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(value).map(|s| s + "\n")
}

/// Columns padded to their widest cell, two spaces apart, no trailing spaces.
#[derive(Debug)]
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Table {
        Table { header: header.to_vec(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let header: Vec<String> = self.header.iter().map(|h| (*h).to_owned()).collect();
        let lines: Vec<&Vec<String>> = std::iter::once(&header).chain(&self.rows).collect();
        let columns = lines.iter().map(|l| l.len()).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| lines.iter().filter_map(|l| l.get(c)).map(|cell| cell.chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for line in lines {
            let mut text = String::new();
            for (c, cell) in line.iter().enumerate() {
                if c > 0 {
                    text.push_str("  ");
                }
                text.push_str(cell);
                let pad = widths[c].saturating_sub(cell.chars().count());
                text.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `Label:  value` lines with the values aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(label, _)| label.chars().count()).max().unwrap_or(0) + 1;
    pairs.iter().map(|(label, value)| format!("{:<width$}  {value}\n", format!("{label}:"))).collect()
}

/// An optional value, or `-`.
fn or_dash<T: Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn non_empty(s: &str) -> String {
    if s.is_empty() { "-".to_owned() } else { s.to_owned() }
}

fn yes_no(b: bool) -> String {
    (if b { "yes" } else { "no" }).to_owned()
}

/// Time since `then_ms` the way `kubectl` shows ages: 42s, 7m, 5h, 3d.
pub fn age(now_ms: u64, then_ms: u64) -> String {
    let s = now_ms.saturating_sub(then_ms) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn duration_ms(ms: u64) -> String {
    if ms.is_multiple_of(1000) { format!("{}s", ms / 1000) } else { format!("{ms}ms") }
}

/// Container ids are long hashes; a table shows the first 12 characters, as container tools do.
fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

fn join<T: Display>(items: &[T], sep: &str) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(sep)
}

// ---- pools ----

pub fn pools(list: &[PoolStatus]) -> String {
    let mut t = Table::new(&["NAME", "CIDR", "VLAN", "GATEWAY", "SIZE", "USED", "FREE", "DEFAULT"]);
    for p in list {
        t.row(vec![
            p.spec.name.clone(),
            p.spec.cidr.to_string(),
            or_dash(p.spec.vlan),
            or_dash(p.spec.gateway),
            p.size.to_string(),
            p.used.to_string(),
            p.free.to_string(),
            yes_no(p.spec.default),
        ]);
    }
    t.render()
}

fn selector(s: &Selector) -> String {
    if s.is_empty() {
        return "- (reached only by name, reservation or as the default)".to_owned();
    }
    let labels = |m: &std::collections::BTreeMap<String, String>| {
        m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
    };
    let mut parts = Vec::new();
    if !s.namespaces.is_empty() {
        parts.push(format!("namespaces={}", s.namespaces.join(",")));
    }
    if !s.nodes.is_empty() {
        parts.push(format!("nodes={}", s.nodes.join(",")));
    }
    if !s.pod_labels.is_empty() {
        parts.push(format!("pod-labels={}", labels(&s.pod_labels)));
    }
    if !s.node_labels.is_empty() {
        parts.push(format!("node-labels={}", labels(&s.node_labels)));
    }
    parts.join(" ")
}

pub fn pool(p: &PoolStatus) -> String {
    let s = &p.spec;
    let routes: Vec<String> = s
        .routes
        .iter()
        .map(|r| format!("{} via {}", r.dst, r.gw.map_or_else(|| "gateway".to_owned(), |g| g.to_string())))
        .collect();
    let mut dns = join(&s.dns.nameservers, ", ");
    if let Some(domain) = &s.dns.domain {
        dns.push_str(&format!(" domain {domain}"));
    }
    if !s.dns.search.is_empty() {
        dns.push_str(&format!(" search {}", s.dns.search.join(" ")));
    }
    if !s.dns.options.is_empty() {
        dns.push_str(&format!(" options {}", s.dns.options.join(" ")));
    }
    fields(&[
        ("Name", s.name.clone()),
        ("CIDR", s.cidr.to_string()),
        ("Gateway", or_dash(s.gateway)),
        ("VLAN", or_dash(s.vlan)),
        ("Default", yes_no(s.default)),
        ("Routes", non_empty(&routes.join(", "))),
        ("DNS", non_empty(dns.trim())),
        ("Exclude", non_empty(&join(&s.exclude, ", "))),
        ("Selector", selector(&s.selector)),
        ("Cooldown", format!("{}s", s.reuse_cooldown_secs)),
        (
            "Addresses",
            format!(
                "size {}, used {}, reserved idle {}, cooling {}, free {}",
                p.size, p.used, p.reserved_idle, p.cooling, p.free
            ),
        ),
    ])
}

// ---- VLANs and reservations ----

pub fn vlans(list: &[VlanSpec]) -> String {
    let mut t = Table::new(&["ID", "NAME", "NODES"]);
    for v in list {
        let nodes = if v.nodes.is_empty() { "(all)".to_owned() } else { v.nodes.join(",") };
        t.row(vec![v.id.to_string(), non_empty(&v.name), nodes]);
    }
    t.render()
}

pub fn reservations(list: &[Reservation]) -> String {
    let mut t = Table::new(&["KEY", "POOL", "ADDRESS"]);
    for r in list {
        t.row(vec![r.key.clone(), r.pool.clone(), r.address.to_string()]);
    }
    t.render()
}

// ---- allocations ----

fn allocation_state(s: AllocationState) -> String {
    match s {
        AllocationState::Active => "active",
        AllocationState::Quarantined => "quarantined",
    }
    .to_owned()
}

pub fn allocations(list: &[Allocation], now_ms: u64) -> String {
    let mut t = Table::new(&["ADDRESS", "POOL", "NODE", "NAMESPACE", "POD", "CONTAINER", "IFACE", "STATE", "AGE"]);
    for a in list {
        t.row(vec![
            a.address.to_string(),
            a.pool.clone(),
            a.owner.node.clone(),
            non_empty(&a.owner.namespace),
            non_empty(&a.owner.pod),
            short_id(&a.owner.container_id),
            a.owner.interface.clone(),
            allocation_state(a.state),
            age(now_ms, a.allocated_at_ms),
        ]);
    }
    t.render()
}

pub fn allocation(a: &Allocation, now_ms: u64) -> String {
    let pod = match (a.owner.namespace.as_str(), a.owner.pod.as_str()) {
        ("", "") => "-".to_owned(),
        (ns, pod) => format!("{}/{}", non_empty(ns), non_empty(pod)),
    };
    fields(&[
        ("Address", a.address.to_string()),
        ("Pool", a.pool.clone()),
        ("State", allocation_state(a.state)),
        ("Container", format!("{} ({})", a.owner.container_id, a.owner.interface)),
        ("Pod", pod),
        ("Node", a.owner.node.clone()),
        ("Reservation", or_dash(a.reservation.as_ref())),
        ("Allocated", format!("{} ago, log index {}", age(now_ms, a.allocated_at_ms), a.log_index)),
    ])
}

pub fn allocated(a: &Allocated, now_ms: u64) -> String {
    let what = if a.created {
        format!("allocated {} from pool {}", a.allocation.address, a.pool.name)
    } else {
        format!("this attachment already held {} (pool {})", a.allocation.address, a.pool.name)
    };
    format!("{what}\n{}", allocation(&a.allocation, now_ms))
}

pub fn released(r: &Released, now_ms: u64) -> String {
    match r.released.len() {
        0 => "nothing to release\n".to_owned(),
        1 => format!("released 1 address\n{}", allocations(&r.released, now_ms)),
        n => format!("released {n} addresses\n{}", allocations(&r.released, now_ms)),
    }
}

// ---- leases and the cluster ----

pub fn leases(list: &[Lease], now_ms: u64) -> String {
    let mut t = Table::new(&["NODE", "LEASE", "TOKEN", "TTL", "STATE", "AGE"]);
    for l in list {
        let state = match l.state {
            LeaseState::Active => "active",
            LeaseState::Expired => "expired",
        };
        t.row(vec![
            l.node.clone(),
            l.lease_id.to_string(),
            l.token.to_string(),
            duration_ms(l.ttl_ms),
            state.to_owned(),
            age(now_ms, l.granted_at_ms),
        ]);
    }
    t.render()
}

pub fn cluster(s: &ClusterStatus) -> String {
    let leader = match (s.leader_id, &s.leader) {
        (Some(id), Some(m)) => format!("{id} ({})", m.rest_addr),
        (Some(id), None) => id.to_string(),
        (None, _) => "none known".to_owned(),
    };
    let mut out = fields(&[
        ("Answered by", format!("replica {}", s.id)),
        ("Leader", leader),
        ("Term", s.term.to_string()),
        (
            "Log",
            format!(
                "last {}, committed {}, applied {}, snapshot {}, purged {}",
                or_dash(s.last_log_index),
                or_dash(s.committed_index),
                or_dash(s.applied_index),
                or_dash(s.snapshot_index),
                or_dash(s.purged_index)
            ),
        ),
    ]);
    let mut t = Table::new(&["ID", "ROLE", "RAFT ADDRESS", "REST ADDRESS"]);
    for (id, m) in &s.members {
        let role = if s.leader_id == Some(*id) {
            "leader"
        } else if s.voters.contains(id) {
            "voter"
        } else {
            "learner"
        };
        t.row(vec![id.to_string(), role.to_owned(), m.raft_addr.clone(), m.rest_addr.clone()]);
    }
    out.push('\n');
    out.push_str(&t.render());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool_status(json: serde_json::Value) -> PoolStatus {
        serde_json::from_value(json).expect("a PoolStatus")
    }

    #[test]
    fn table_pads_columns_and_trims_line_ends() {
        let mut t = Table::new(&["NAME", "CIDR", "VLAN"]);
        t.row(vec!["a-long-name".into(), "10.0.0.0/24".into(), "-".into()]);
        t.row(vec!["b".into(), "fd00::/64".into(), "4094".into()]);
        assert_eq!(
            t.render(),
            "NAME         CIDR         VLAN\n\
             a-long-name  10.0.0.0/24  -\n\
             b            fd00::/64    4094\n"
        );
    }

    #[test]
    fn table_with_no_rows_is_its_header() {
        assert_eq!(Table::new(&["ID", "NAME"]).render(), "ID  NAME\n");
    }

    #[test]
    fn pool_list_from_the_servers_json() {
        let p = pool_status(serde_json::json!({
            "name": "blue", "cidr": "10.1.0.0/24", "gateway": "10.1.0.1", "vlan": 100, "default": true,
            "size": 253, "used": 3, "reserved_idle": 1, "cooling": 0, "free": 249
        }));
        // Sizes past u64 (a /48) arrive as plain JSON integers; `serde_json::Value` cannot hold
        // them, so this one is parsed from text.
        let q: PoolStatus = serde_json::from_str(
            r#"{"name": "v6", "cidr": "fd00:1::/48", "size": 1208925819614629174706175, "used": 0,
                "reserved_idle": 0, "cooling": 0, "free": 1208925819614629174706175}"#,
        )
        .expect("a PoolStatus");
        assert_eq!(
            pools(&[p, q]),
            "NAME  CIDR         VLAN  GATEWAY   SIZE                       USED  FREE                       DEFAULT\n\
             blue  10.1.0.0/24  100   10.1.0.1  253                        3     249                        yes\n\
             v6    fd00:1::/48  -     -         1208925819614629174706175  0     1208925819614629174706175  no\n"
        );
    }

    #[test]
    fn pool_detail_and_json_round_trip() {
        let text = r#"{"name":"blue","cidr":"10.1.0.0/24","gateway":"10.1.0.1","routes":[{"dst":"10.0.0.0/8","gw":"10.1.0.254"},{"dst":"192.168.0.0/16"}],"dns":{"nameservers":["10.1.0.53"],"search":["db.svc"]},"exclude":["10.1.0.2-10.1.0.9"],"selector":{"namespaces":["db"],"pod_labels":{"app":"mysql"}},"default":false,"reuse_cooldown_secs":30,"size":245,"used":3,"reserved_idle":1,"cooling":2,"free":239}"#;
        let p: PoolStatus = serde_json::from_str(text).expect("a PoolStatus");
        assert_eq!(
            pool(&p),
            "Name:       blue\n\
             CIDR:       10.1.0.0/24\n\
             Gateway:    10.1.0.1\n\
             VLAN:       -\n\
             Default:    no\n\
             Routes:     10.0.0.0/8 via 10.1.0.254, 192.168.0.0/16 via gateway\n\
             DNS:        10.1.0.53 search db.svc\n\
             Exclude:    10.1.0.2-10.1.0.9\n\
             Selector:   namespaces=db pod-labels=app=mysql\n\
             Cooldown:   30s\n\
             Addresses:  size 245, used 3, reserved idle 1, cooling 2, free 239\n"
        );
        // `-o json` re-serializes what it decoded: the same document.
        let again: serde_json::Value = serde_json::from_str(&json(&p).expect("serializes")).expect("json");
        assert_eq!(again, serde_json::from_str::<serde_json::Value>(text).expect("json"));
    }

    fn allocation_json(address: &str, state: &str) -> Allocation {
        serde_json::from_value(serde_json::json!({
            "address": address, "pool": "blue",
            "owner": {"container_id": "0123456789abcdef0123", "interface": "eth0", "namespace": "db", "pod": "mysql-0", "node": "n1"},
            "reservation": "db/mysql/0", "log_index": 17, "allocated_at_ms": 1_000_000, "state": state
        }))
        .expect("an Allocation")
    }

    #[test]
    fn allocation_table_and_detail() {
        let list = [allocation_json("10.1.0.5", "active"), allocation_json("10.1.0.12", "quarantined")];
        assert_eq!(
            allocations(&list, 1_000_000 + 420_000),
            "ADDRESS    POOL  NODE  NAMESPACE  POD      CONTAINER     IFACE  STATE        AGE\n\
             10.1.0.5   blue  n1    db         mysql-0  0123456789ab  eth0   active       7m\n\
             10.1.0.12  blue  n1    db         mysql-0  0123456789ab  eth0   quarantined  7m\n"
        );
        assert_eq!(
            allocation(&list[0], 1_000_000 + 5_000),
            "Address:      10.1.0.5\n\
             Pool:         blue\n\
             State:        active\n\
             Container:    0123456789abcdef0123 (eth0)\n\
             Pod:          db/mysql-0\n\
             Node:         n1\n\
             Reservation:  db/mysql/0\n\
             Allocated:    5s ago, log index 17\n"
        );
    }

    #[test]
    fn release_summaries() {
        assert_eq!(released(&Released { released: vec![] }, 0), "nothing to release\n");
        let one = released(&Released { released: vec![allocation_json("10.1.0.5", "active")] }, 1_000_000);
        assert!(one.starts_with("released 1 address\nADDRESS"), "{one}");
    }

    #[test]
    fn vlan_with_no_nodes_is_on_every_node() {
        let list = [
            VlanSpec { id: 100, name: "db".into(), nodes: vec![] },
            VlanSpec { id: 200, name: String::new(), nodes: vec!["n1".into(), "n2".into()] },
        ];
        assert_eq!(vlans(&list), "ID   NAME  NODES\n100  db    (all)\n200  -     n1,n2\n");
    }

    #[test]
    fn ages_like_kubectl() {
        assert_eq!(age(59_999, 0), "59s");
        assert_eq!(age(60_000, 0), "1m");
        assert_eq!(age(3_600_000 * 5 + 1, 0), "5h");
        assert_eq!(age(86_400_000 * 3, 0), "3d");
        // A leader clock ahead of ours is not a negative age.
        assert_eq!(age(0, 10_000), "0s");
    }

    #[test]
    fn lease_table() {
        let l: Lease = serde_json::from_value(serde_json::json!({
            "node": "n1", "lease_id": 4, "token": 9, "ttl_ms": 15000, "state": "expired", "granted_at_ms": 0
        }))
        .expect("a Lease");
        assert_eq!(
            leases(&[l], 2_000),
            "NODE  LEASE  TOKEN  TTL  STATE    AGE\nn1    4      9      15s  expired  2s\n"
        );
    }

    #[test]
    fn cluster_status_with_roles() {
        let s: ClusterStatus = serde_json::from_value(serde_json::json!({
            "id": 1, "leader_id": 2, "leader": {"raft_addr": "h2:7381", "rest_addr": "h2:7380"}, "term": 3,
            "last_log_index": 9, "committed_index": 9, "applied_index": 8, "snapshot_index": null, "purged_index": null,
            "voters": [1, 2], "learners": [3],
            "members": {
                "1": {"raft_addr": "h1:7381", "rest_addr": "h1:7380"},
                "2": {"raft_addr": "h2:7381", "rest_addr": "h2:7380"},
                "3": {"raft_addr": "h3:7381", "rest_addr": "h3:7380"}
            }
        }))
        .expect("a ClusterStatus");
        assert_eq!(
            cluster(&s),
            "Answered by:  replica 1\n\
             Leader:       2 (h2:7380)\n\
             Term:         3\n\
             Log:          last 9, committed 9, applied 8, snapshot -, purged -\n\
             \n\
             ID  ROLE     RAFT ADDRESS  REST ADDRESS\n\
             1   voter    h1:7381       h1:7380\n\
             2   leader   h2:7381       h2:7380\n\
             3   learner  h3:7381       h3:7380\n"
        );
    }
}
