//! Span plumbing shared by every role: continuing a W3C trace from HTTP headers (and whether
//! a server span can ever be exported), leaving a
//! request untraced, reading a span's trace id, and marking a span as failed.
//!
//! Span kinds, names and attributes follow the OpenTelemetry semantic conventions; the
//! `otel.kind`, `otel.name` and `otel.status_code` fields of a `tracing` span set them.

use opentelemetry::Context;
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::{SpanContext, TraceContextExt, TraceFlags, TraceState};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use poem::http::HeaderMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The field naming which mesh service a span works for (`edge`, `user`, `social`, `chat`,
/// `outbox`); database queries below it are counted under that service.
pub const SERVICE_FIELD: &str = "mesh.service";

/// The W3C request header carrying the caller's trace context.
const TRACEPARENT: &str = "traceparent";

/// The W3C response header carrying the trace of the answered request.
pub const TRACERESPONSE: &str = "traceresponse";

struct HttpHeaders<'a>(&'a HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The W3C trace an incoming request's `traceparent` carries, if it carries a valid one.
pub fn http_parent(headers: &HeaderMap) -> Option<Context> {
    if !headers.contains_key(TRACEPARENT) {
        // Nothing to continue: most requests carry no trace context, and extracting none
        // still cost a look through every header.
        return None;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HttpHeaders(headers))
    });
    parent.span().span_context().is_valid().then_some(parent)
}

/// Makes `span` continue `parent`'s trace when there is one; otherwise `span` starts a new
/// trace. Call before the span is first entered.
pub fn continue_trace(span: &tracing::Span, parent: Option<Context>) {
    if let Some(parent) = parent {
        let _ = span.set_parent(parent);
    }
}

/// Whether a SERVER span continuing `parent` (the caller's trace, if any) could ever be
/// exported: this process exports traces, and the caller's trace is sampled or there is none
/// (the span begins a trace of its own). Any other server span is never recorded, and only
/// carries its ids to the log lines under it: it may leave out the attributes an exporter
/// reads, which cost a cached read a few per cent of its CPU.
pub fn server_span_may_record(parent: Option<&Context>) -> bool {
    may_record(crate::exports_traces(), parent)
}

fn may_record(exporting: bool, parent: Option<&Context>) -> bool {
    exporting && parent.is_none_or(|parent| parent.span().span_context().is_sampled())
}

/// Leaves `span` and everything below it, across the mesh, unsampled: nothing is exported,
/// but logs still get a trace id. For scrapes and probes.
pub fn untraced(span: &tracing::Span) {
    let ids = RandomIdGenerator::default();
    let remote = SpanContext::new(
        ids.new_trace_id(),
        ids.new_span_id(),
        TraceFlags::default(),
        true,
        TraceState::default(),
    );
    let _ = span.set_parent(Context::new().with_remote_span_context(remote));
}

/// The trace id of `span` (32 hex digits), or `None` when tracing is not installed.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// Fills the `trace_id` field every mesh span declares, so each log line under it has it.
pub fn record_trace_id(span: &tracing::Span) {
    if let Some(id) = trace_id(span) {
        span.record("trace_id", id.as_str());
    }
}

/// An unsampled span for a background loop of `service` (polling, relaying, renewing): its
/// Postgres statements count under `service`, but nothing of it is exported unless a step
/// opens a trace of its own (`tracing::info_span!(parent: None, ...)`).
pub fn background(service: &'static str) -> tracing::Span {
    let span = tracing::info_span!("background", mesh.service = service);
    untraced(&span);
    span
}

/// `span`'s W3C `traceresponse` value: `00-<trace id>-<span id>-<flags>`.
pub fn traceresponse(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    })
}

/// Whether `span` is recorded (sampled), so that what is set on it later reaches an exporter.
/// Without an exporter the sampler records nothing, and naming or marking a span is work for
/// nothing.
pub fn is_recorded(span: &tracing::Span) -> bool {
    span.context().span().span_context().is_sampled()
}

/// Renames `span` once what it did is known (an HTTP span gets its route template).
pub fn rename(span: &tracing::Span, name: String) {
    span.context().span().update_name(name);
}

/// Marks `span` as failed (OTel status `ERROR`) with a short, client-safe description.
pub fn fail(span: &tracing::Span, description: impl Into<std::borrow::Cow<'static, str>>) {
    span.set_status(opentelemetry::trace::Status::error(description));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_tracing_layer_there_is_no_trace_id() {
        let span = tracing::info_span!("nothing installed");
        assert_eq!(trace_id(&span), None);
        assert_eq!(traceresponse(&span), None);
    }

    fn caller(sampled: bool) -> Context {
        let ids = RandomIdGenerator::default();
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let remote = SpanContext::new(
            ids.new_trace_id(),
            ids.new_span_id(),
            flags,
            true,
            TraceState::default(),
        );
        Context::new().with_remote_span_context(remote)
    }

    #[test]
    fn a_server_span_may_be_recorded_only_when_exported_and_its_caller_sampled() {
        // Exporting: a new trace, or a sampled caller's, may be recorded.
        assert!(may_record(true, None));
        assert!(may_record(true, Some(&caller(true))));
        // A caller that left its trace unsampled keeps it unsampled.
        assert!(!may_record(true, Some(&caller(false))));
        // Nothing exported: no server span is ever recorded.
        assert!(!may_record(false, None));
        assert!(!may_record(false, Some(&caller(true))));
        // This test process exports nothing.
        assert!(!server_span_may_record(None));
    }

    #[test]
    fn a_request_continues_only_a_valid_traceparent() {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let mut headers = HeaderMap::new();
        assert!(http_parent(&headers).is_none(), "no header");
        headers.insert(TRACEPARENT, "00-zz-not-a-trace".parse().unwrap());
        assert!(http_parent(&headers).is_none(), "an unreadable header");
        for (flags, sampled) in [("01", true), ("00", false)] {
            let value = format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flags}");
            headers.insert(TRACEPARENT, value.parse().unwrap());
            let parent = http_parent(&headers).expect("a valid header is continued");
            let caller = parent.span().span_context().clone();
            assert_eq!(
                caller.trace_id().to_string(),
                "4bf92f3577b34da6a3ce929d0e0e4736"
            );
            assert_eq!(caller.is_sampled(), sampled, "flags {flags}");
            assert_eq!(may_record(true, Some(&parent)), sampled, "flags {flags}");
        }
    }
}
