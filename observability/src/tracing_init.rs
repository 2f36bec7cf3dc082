//! One-time installation of logging and tracing for the whole process.

use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::{FilterExt, Targets, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::db::{DbQueries, SQLX_TARGET};
use crate::log_fields::SpanFields;
use crate::log_writer::BatchedWriter;

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();
/// The logs' writer (fixed by the first `init`).
static LOG_WRITER: OnceLock<BatchedWriter> = OnceLock::new();
/// Whether the provider `init` built exports spans (fixed by the first `init`).
static EXPORTING: OnceLock<bool> = OnceLock::new();

/// The tracing name of a NATS publish's PRODUCER span. Such spans are exported but left out
/// of the logs: nothing is logged inside one that its caller's span does not say, and
/// formatting their fields for every publish cost more than the publish.
pub const PUBLISH_SPAN: &str = "nats.publish";

/// The log filter when `RUST_LOG` is not set: `info`, and `warn` for each of the `quiet`
/// targets (a client crate that writes a line per routine event the mesh logs itself, e.g. the
/// NATS client's connection events).
fn default_filter(quiet: &[&str]) -> String {
    std::iter::once("info".to_owned())
        .chain(quiet.iter().map(|target| format!("{target}=warn")))
        .collect::<Vec<_>>()
        .join(",")
}

/// Flushes buffered log lines and spans when dropped at the end of `main`.
pub struct TracingGuard;

impl Drop for TracingGuard {
    fn drop(&mut self) {
        flush_logs();
        if let Some(provider) = PROVIDER.get()
            && let Err(err) = provider.shutdown()
        {
            eprintln!("failed to flush traces: {err}");
        }
    }
}

/// Installs JSON logs (filter from `RUST_LOG`; without it `info`, and `warn` for the `quiet`
/// targets), OpenTelemetry tracing (spans at `info` and above) and the Postgres statement metrics and spans; statements outside any
/// span that names its service count under `default_service`.
///
/// Spans always get W3C trace ids so that a trace crosses NATS even when nothing exports it;
/// they are recorded and exported over OTLP/HTTP only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set
/// (`OTEL_BSP_SCHEDULE_DELAY` and the other batch settings apply; `OTEL_TRACES_SAMPLER` and
/// `OTEL_TRACES_SAMPLER_ARG` choose which traces, by default every one). Calling it again (tests start
/// many meshes in one process) is harmless: the first call wins.
pub fn init(service_name: &str, default_service: &str, quiet: &[&str]) -> TracingGuard {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let exporting = *EXPORTING.get_or_init(exports);
    let provider = PROVIDER.get_or_init(|| build_provider(service_name, exporting));
    let tracer = provider.tracer("nats-mesh");
    opentelemetry::global::set_tracer_provider(provider.clone());

    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter(quiet)));
    let log_cap = filter.max_level_hint().unwrap_or(LevelFilter::TRACE);
    let writer = LOG_WRITER
        .get_or_init(|| {
            // A panic's report comes after the lines logged before it.
            let report = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                flush_logs();
                report(info);
            }));
            BatchedWriter::stderr()
        })
        .clone();
    let logs = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(true)
        .with_target(true)
        .fmt_fields(SpanFields)
        .with_writer(writer)
        .with_filter(filter.and(filter_fn(|meta| {
            !(meta.is_span() && meta.name() == PUBLISH_SPAN)
        })));
    // Nothing here reads OpenTelemetry's "current context", so entering a span does not set
    // it. Source locations, threads and busy/idle times are span attributes: worth their cost
    // only when spans are exported.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_context_activation(false)
        .with_location(exporting)
        .with_threads(exporting)
        .with_tracked_inactivity(exporting)
        .with_filter(LevelFilter::INFO);
    let db = DbQueries::new(default_service)
        .with_filter(Targets::new().with_target(SQLX_TARGET, LevelFilter::TRACE));
    // A second init in the same process finds a subscriber already set; that is fine.
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(otel)
        .with(db)
        .try_init();
    // Records of crates that log through `log` (tungstenite writes one per WebSocket frame)
    // reach only the JSON logs, so they stop at `RUST_LOG`'s level. `try_init` set the
    // subscriber's own hint, `TRACE` because of the statement layer, which made every one
    // of them go through the filters.
    log::set_max_level(as_log(log_cap));
    TracingGuard
}

/// Writes the log lines still buffered (at the end of `main`, before a panic's report).
pub fn flush_logs() {
    if let Some(writer) = LOG_WRITER.get() {
        writer.flush();
    }
}

/// The `log` crate's level filter of `level`.
fn as_log(level: LevelFilter) -> log::LevelFilter {
    match level.into_level() {
        None => log::LevelFilter::Off,
        Some(tracing::Level::ERROR) => log::LevelFilter::Error,
        Some(tracing::Level::WARN) => log::LevelFilter::Warn,
        Some(tracing::Level::INFO) => log::LevelFilter::Info,
        Some(tracing::Level::DEBUG) => log::LevelFilter::Debug,
        Some(tracing::Level::TRACE) => log::LevelFilter::Trace,
    }
}

/// Whether this process records and exports spans: false before `init`, and when no OTLP
/// endpoint is configured (then no span is ever recorded, and one made only to carry a new
/// trace id across NATS is work for nothing).
pub fn exports_traces() -> bool {
    EXPORTING.get().copied().unwrap_or(false)
}

/// Whether an OTLP endpoint is configured, so spans are exported.
fn exports() -> bool {
    std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").is_ok_and(|endpoint| !endpoint.trim().is_empty())
}

fn build_provider(service_name: &str, exporting: bool) -> SdkTracerProvider {
    let resource = Resource::builder()
        .with_service_name(service_name.to_owned())
        .build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    if !exporting {
        // Nothing would export a span: record none (their trace ids still cross NATS and
        // reach the logs). Recording every message's spans costs more CPU than storing it.
        return builder.with_sampler(Sampler::AlwaysOff).build();
    }
    match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(exporter) => builder.with_batch_exporter(exporter).build(),
        Err(err) => {
            eprintln!("OTLP exporter disabled: {err}");
            builder.build()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_rust_log_quiet_targets_log_from_warn() {
        assert_eq!(default_filter(&[]), "info");
        assert_eq!(
            default_filter(&["chatty", "noisy"]),
            "info,chatty=warn,noisy=warn"
        );
    }

    #[test]
    fn log_records_stop_at_the_same_level() {
        assert_eq!(as_log(LevelFilter::OFF), log::LevelFilter::Off);
        assert_eq!(as_log(LevelFilter::WARN), log::LevelFilter::Warn);
        assert_eq!(as_log(LevelFilter::INFO), log::LevelFilter::Info);
        assert_eq!(as_log(LevelFilter::TRACE), log::LevelFilter::Trace);
        let hint = EnvFilter::new("warn,mesh_chat=debug").max_level_hint();
        assert_eq!(hint.map(as_log), Some(log::LevelFilter::Debug));
    }
}
