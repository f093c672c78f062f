//! `/v1/openapi.json`: the REST API's paths and operations (OpenAPI 3.0). Bodies are the
//! JSON of the `hc_api::types` named in each operation's description.

use serde_json::{Map, Value, json};

/// (path, method, summary, request body type, success status)
const OPERATIONS: &[(&str, &str, &str, Option<&str>, u16)] = &[
    ("/v1/pools", "get", "List pools with size, used, reserved_idle, cooling and free counts", None, 200),
    ("/v1/pools", "post", "Create a pool", Some("PoolSpec"), 201),
    ("/v1/pools/{name}", "get", "Get a pool with its counts", None, 200),
    ("/v1/pools/{name}", "put", "Update a pool (the CIDR may only grow)", Some("PoolSpec"), 200),
    (
        "/v1/pools/{name}",
        "delete",
        "Delete a pool; refused while addresses are allocated unless ?force=true",
        None,
        204,
    ),
    ("/v1/vlans", "get", "List VLANs", None, 200),
    ("/v1/vlans", "post", "Create or replace a VLAN", Some("VlanSpec"), 201),
    ("/v1/vlans/{id}", "delete", "Delete a VLAN no pool uses", None, 204),
    ("/v1/reservations", "get", "List fixed-IP reservations", None, 200),
    ("/v1/reservations", "post", "Create or move a reservation", Some("Reservation"), 201),
    ("/v1/reservations/{key}", "get", "Get a reservation (the key may contain '/')", None, 200),
    ("/v1/reservations/{key}", "delete", "Delete a reservation", None, 204),
    ("/v1/allocations", "get", "List allocations, filtered by ?pool=, ?node=, ?namespace=", None, 200),
    (
        "/v1/allocations",
        "post",
        "Allocate an address as an operator (idempotent per container id and interface)",
        Some("AllocateRequest"),
        201,
    ),
    ("/v1/allocations/release", "post", "Release by owner or by address (idempotent)", Some("ReleaseTarget"), 200),
    ("/v1/allocations/{address}", "get", "Get the allocation holding an address", None, 200),
    ("/v1/allocations/{address}", "delete", "Release an address (idempotent)", None, 200),
    ("/v1/leases", "get", "List node leases", None, 200),
    (
        "/v1/nodes/{node}/gone",
        "post",
        "Declare a node gone: release all its allocations, quarantined ones included",
        None,
        200,
    ),
    ("/v1/cluster", "get", "Members, leader, term, commit and applied index", None, 200),
    (
        "/v1/cluster/snapshot",
        "post",
        "Build a snapshot of this replica's state now and compact its log; answers its status after",
        None,
        200,
    ),
    (
        "/v1/cluster/learners",
        "post",
        "Add a replica as a learner ({id, grpc_addr, rest_addr}) and wait for it to catch up",
        Some("Learner"),
        200,
    ),
    ("/v1/cluster/voters", "post", "Promote a learner to voter ({id})", Some("Voter"), 200),
    ("/v1/cluster/members/{id}", "delete", "Remove a replica from the cluster", None, 200),
    ("/metrics", "get", "Prometheus metrics (hc_allocator_*)", None, 200),
    ("/healthz", "get", "Liveness", None, 200),
    ("/readyz", "get", "Readiness: this replica knows a leader", None, 200),
];

pub fn spec() -> Value {
    let mut paths = Map::new();
    for (path, method, summary, body, status) in OPERATIONS {
        let mut op = json!({
            "summary": summary,
            "responses": {
                status.to_string(): {"description": "success"},
                "default": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        });
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if let Some(ty) = body {
            op["requestBody"] = json!({
                "required": true,
                "description": format!("hc_api::types::{ty} as JSON"),
                "content": {"application/json": {"schema": {"type": "object"}}}
            });
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "hc-allocator management API", "version": "v1"},
        "paths": paths,
        "components": {"schemas": {"Error": {
            "type": "object",
            "required": ["kind", "message"],
            "properties": {"kind": {"type": "string"}, "message": {"type": "string"}}
        }}}
    })
}
