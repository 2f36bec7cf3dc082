//! The standard metrics of the mesh, registered once in the process-wide Prometheus registry.
//!
//! Label values are bounded: routes are path patterns, never raw paths; subjects are RPC
//! subjects of known operations; outcomes are error codes.

use std::sync::LazyLock;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, register_histogram_vec,
    register_int_counter_vec, register_int_gauge,
};

/// Latency buckets in seconds, from 0.5 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn histogram(name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    register_histogram_vec!(
        HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
        labels
    )
    .expect("metric registered once")
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register_int_counter_vec!(Opts::new(name, help), labels).expect("metric registered once")
}

/// HTTP requests served by the edge, by route pattern, method and status.
pub static HTTP_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "mesh_http_requests_total",
        "HTTP requests by route, method and status",
        &["route", "method", "status"],
    )
});

/// HTTP request latency by route pattern and method.
pub static HTTP_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "mesh_http_request_duration_seconds",
        "HTTP request latency",
        &["route", "method"],
    )
});

/// RPC calls made by clients (the edge), by subject and outcome (`ok` or an error kind).
pub static RPC_CLIENT_CALLS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "mesh_rpc_client_calls_total",
        "RPC calls by subject and outcome",
        &["subject", "outcome"],
    )
});

/// RPC call latency seen by clients.
pub static RPC_CLIENT_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "mesh_rpc_client_duration_seconds",
        "RPC latency seen by the caller",
        &["subject"],
    )
});

/// RPC requests handled by services, by subject and outcome (`ok` or an error code).
pub static RPC_SERVER_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "mesh_rpc_server_requests_total",
        "RPC requests handled, by subject and outcome",
        &["subject", "outcome"],
    )
});

/// RPC handling latency inside services.
pub static RPC_SERVER_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "mesh_rpc_server_duration_seconds",
        "RPC handling latency",
        &["subject"],
    )
});

/// Authentication failures at the edge, by reason.
pub static AUTH_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "mesh_auth_failures_total",
        "Authentication failures by reason",
        &["reason"],
    )
});

/// Revoked sessions currently known to this process.
pub static REVOKED_SESSIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("mesh_revoked_sessions", "Revoked sessions held in memory")
        .expect("metric registered once")
});

/// NATS connection state changes, by event.
pub static NATS_EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "mesh_nats_connection_events_total",
        "NATS connection events",
        &["event"],
    )
});

/// Cache lookups by cache and result (`hit` or `miss`).
pub static CACHE_LOOKUPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "mesh_cache_lookups_total",
        "Cache lookups by cache and result",
        &["cache", "result"],
    )
});

/// Encodes every registered metric in the Prometheus text format.
pub fn render() -> String {
    let families = prometheus::gather();
    prometheus::TextEncoder::new()
        .encode_to_string(&families)
        .unwrap_or_else(|err| format!("# encode error: {err}\n"))
}

/// Registers every standard metric so they show up (at zero) before first use.
pub fn touch_all() {
    LazyLock::force(&HTTP_REQUESTS);
    LazyLock::force(&HTTP_DURATION);
    LazyLock::force(&RPC_CLIENT_CALLS);
    LazyLock::force(&RPC_CLIENT_DURATION);
    LazyLock::force(&RPC_SERVER_REQUESTS);
    LazyLock::force(&RPC_SERVER_DURATION);
    LazyLock::force(&AUTH_FAILURES);
    LazyLock::force(&REVOKED_SESSIONS);
    LazyLock::force(&NATS_EVENTS);
    LazyLock::force(&CACHE_LOOKUPS);
}
