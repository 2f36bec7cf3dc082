//! Observability shared by every role: JSON logs, OpenTelemetry traces and Prometheus metrics.
//!
//! `init` is the single place that installs the global subscriber and propagator; `metrics`
//! holds the standard metrics every crate records into; `server` serves `/metrics`; `spans`
//! continues, suppresses and reads traces; `db` turns Postgres statements into spans and metrics;
//! `log_fields` is how the logs keep span fields; `outage` is how a retrying loop logs an
//! outage (once, not per attempt).

mod db;
mod log_fields;
mod log_writer;
pub mod metrics;
pub mod outage;
pub mod server;
pub mod spans;
mod tracing_init;

pub use server::{Readiness, metrics_endpoint, serve_metrics};
pub use tracing_init::{PUBLISH_SPAN, TracingGuard, exports_traces, flush_logs, init};
