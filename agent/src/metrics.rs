//! Prometheus metrics (`hc_agent_*`), recorded through the `metrics` facade and served with
//! `/healthz` and `/readyz` on the metrics address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::sync::watch;

use crate::lease::LeaseHandle;

pub const CNI_SECONDS: &str = "hc_agent_cni_duration_seconds";
pub const CNI_STEP_SECONDS: &str = "hc_agent_cni_step_duration_seconds";
pub const LEASE_VALID: &str = "hc_agent_lease_valid";
pub const LEASE_TOKEN: &str = "hc_agent_lease_token";
pub const LEASE_GRANTS: &str = "hc_agent_lease_grants_total";
pub const REPAIRS: &str = "hc_agent_repairs_total";
pub const RECONCILES: &str = "hc_agent_reconciles_total";
pub const RECLAIMS: &str = "hc_agent_reclaims_total";
pub const ATTACHMENTS: &str = "hc_agent_attachments";
pub const ANNOUNCEMENTS: &str = "hc_agent_announcements_total";
pub const UPLINK_UP: &str = "hc_agent_uplink_up";

/// Installs the global recorder; only the first call in a process installs.
pub fn install() -> PrometheusHandle {
    let buckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
        .expect("bucket list is not empty")
        .build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_err() {
        tracing::warn!("a metrics recorder is already installed; /metrics stays empty");
    }
    describe();
    handle
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        CNI_SECONDS,
        Unit::Seconds,
        "Time to serve one CNI request, by verb and result (ok or the CNI error code)."
    );
    describe_histogram!(
        CNI_STEP_SECONDS,
        Unit::Seconds,
        "Time one step of a CNI ADD or DEL took, by verb and step: gate_wait (queued behind a \
         whole-node pass or a call for the same attachment), allocate / release (the replicated \
         allocator write), prepare (an ADD's veth pair, built during its allocate step), \
         datapath_wait (queued for the node's datapath), datapath (netlink work), record (the \
         durable attachment record)."
    );
    describe_gauge!(LEASE_VALID, "1 while the node holds a valid, reconciled lease (CNI ADD is served).");
    describe_gauge!(LEASE_TOKEN, "Fencing token of the current lease.");
    describe_counter!(LEASE_GRANTS, "Leases granted to this agent.");
    describe_counter!(REPAIRS, "Datapath drifts repaired by the reconciler, by kind.");
    describe_counter!(RECONCILES, "Reconcile passes, by what (allocator, datapath) and result.");
    describe_counter!(RECLAIMS, "Addresses of running pods the allocator had lost, claimed back, by result.");
    describe_gauge!(ATTACHMENTS, "Attachments in the local record.");
    describe_gauge!(UPLINK_UP, "1 while the uplink is up (absent without an uplink).");
    describe_counter!(
        ANNOUNCEMENTS,
        "Gratuitous ARPs and unsolicited neighbour advertisements sent after the uplink came back."
    );
    for (dir, what) in [("rx", "received"), ("tx", "sent")] {
        describe_counter!(
            format!("hc_agent_pod_{dir}_bytes_total"),
            Unit::Bytes,
            format!("Bytes the pod {what}, from its host veth.")
        );
        describe_counter!(
            format!("hc_agent_pod_{dir}_packets_total"),
            format!("Packets the pod {what}, from its host veth.")
        );
        describe_counter!(
            format!("hc_agent_pod_{dir}_drops_total"),
            format!("Packets the pod {what} that were dropped, from its host veth.")
        );
    }
}

pub fn cni_request(verb: &'static str, result: &str, took: Duration) {
    histogram!(CNI_SECONDS, "verb" => verb, "result" => result.to_owned()).record(took.as_secs_f64());
}

/// One step of a CNI request (see [`CNI_STEP_SECONDS`]): where an ADD's time goes.
pub fn cni_step(verb: &'static str, step: &'static str, took: Duration) {
    histogram!(CNI_STEP_SECONDS, "verb" => verb, "step" => step).record(took.as_secs_f64());
}

pub fn lease_valid(valid: bool) {
    gauge!(LEASE_VALID).set(if valid { 1.0 } else { 0.0 });
}

pub fn lease_granted(token: u64) {
    counter!(LEASE_GRANTS).increment(1);
    gauge!(LEASE_TOKEN).set(token as f64);
}

pub fn repaired(kind: &'static str) {
    counter!(REPAIRS, "kind" => kind).increment(1);
}

pub fn reconciled(what: &'static str, ok: bool) {
    counter!(RECONCILES, "what" => what, "result" => if ok { "ok" } else { "error" }).increment(1);
}

/// An address the allocator had lost, claimed back for its running pod (or not).
pub fn reclaimed(ok: bool) {
    counter!(RECLAIMS, "result" => if ok { "ok" } else { "error" }).increment(1);
}

pub fn uplink_up(up: Option<bool>) {
    if let Some(up) = up {
        gauge!(UPLINK_UP).set(if up { 1.0 } else { 0.0 });
    }
}

pub fn announced(frames: usize) {
    counter!(ANNOUNCEMENTS).increment(frames as u64);
}

pub fn attachments(n: usize) {
    gauge!(ATTACHMENTS).set(n as f64);
}

#[derive(Clone)]
struct Ctx {
    handle: PrometheusHandle,
    lease: Arc<LeaseHandle>,
}

/// Serves `/metrics`, `/healthz` (the process is up) and `/readyz` (a valid, reconciled lease)
/// on `listener` until `shutdown` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    lease: Arc<LeaseHandle>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(|State(c): State<Ctx>| async move { c.handle.render() }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State(c): State<Ctx>| async move {
                if c.lease.status().ready(tokio::time::Instant::now()) {
                    (StatusCode::OK, "ready\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "no valid lease\n")
                }
            }),
        )
        .with_state(Ctx { handle, lease });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await
}

/// Binds the metrics address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
