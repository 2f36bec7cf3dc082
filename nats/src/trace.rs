//! W3C trace context across NATS: injected from a span into message headers, extracted into
//! the span that handles the message. Also the spans of the mesh's NATS traffic, with
//! OpenTelemetry kinds: CLIENT/SERVER for RPC, PRODUCER for publishes (ingest, push),
//! CONSUMER for an ingest batch.

use async_nats::HeaderMap;
use mesh_observability::spans;
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::feed::Delivery;
use crate::headers;

struct Inject<'a>(&'a mut HeaderMap);

impl Injector for Inject<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The propagator sets `tracestate` even when it is empty: no header for that.
        if value.is_empty() {
            return;
        }
        if key == headers::TRACEPARENT || key == headers::TRACESTATE {
            self.0.insert(key, headers::sanitize(&value, 512).as_str());
        }
    }
}

struct Extract<'a>(&'a HeaderMap);

impl Extractor for Extract<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        vec![headers::TRACEPARENT, headers::TRACESTATE]
    }
}

/// Writes `span`'s trace context into `map` (the current span's when `span` is none: a publish
/// that got no span of its own still carries its caller's trace id).
pub(crate) fn inject(span: &tracing::Span, map: &mut HeaderMap) {
    let context = if span.is_none() {
        tracing::Span::current().context()
    } else {
        span.context()
    };
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut Inject(map));
    });
}

/// Whether `map` carries a trace context marked sampled (the last field of `traceparent`,
/// `...-01`), read without parsing the rest: nothing unsampled is recorded, so most messages
/// need no context at all when no trace is exported.
fn carries_sampled(map: Option<&HeaderMap>) -> bool {
    map.and_then(|map| map.get(headers::TRACEPARENT))
        .and_then(|value| value.as_str().rsplit_once('-'))
        .and_then(|(_, flags)| u8::from_str_radix(flags, 16).ok())
        .is_some_and(|flags| flags & 1 == 1)
}

/// The trace context carried by `map`, if it carries a valid one.
fn extract(map: Option<&HeaderMap>) -> Option<Context> {
    let map = map?;
    map.get(headers::TRACEPARENT)?;
    let context = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&Extract(map))
    });
    context.span().span_context().is_valid().then_some(context)
}

/// Makes `span` a child of the trace context found in `map`, if any, and records its trace id.
pub(crate) fn adopt_parent(span: &tracing::Span, map: Option<&HeaderMap>) {
    if let Some(parent) = extract(map) {
        let _ = span.set_parent(parent);
    }
    spans::record_trace_id(span);
}

/// Whether a publish outside any trace starts one of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Orphan {
    /// It does (a chat message sent over a WebSocket is an operation of its own).
    Traced,
    /// It does not (a push of a background task is not worth a trace).
    Untraced,
}

/// A span of one messaging operation on `subject` (`<operation> <subject>`, e.g. `send ...`),
/// of OpenTelemetry kind `kind`, done for mesh service `service` when it names one.
fn messaging_span(
    kind: &'static str,
    operation: &'static str,
    subject: &str,
    service: Option<&'static str>,
) -> tracing::Span {
    tracing::info_span!(
        "nats.message",
        otel.name = format!("{operation} {subject}"),
        otel.kind = kind,
        messaging.system = "nats",
        messaging.operation.type = operation,
        messaging.destination.name = subject,
        messaging.batch.message_count = tracing::field::Empty,
        mesh.service = service,
        trace_id = tracing::field::Empty,
    )
}

/// A PRODUCER span for publishing to `subject` (`send <subject>`), a child of the current span.
/// A publish that would not be exported (outside any trace and `Untraced`, or inside an
/// unsampled one) gets no span at all: a push of every message to every member is the
/// hottest path of the mesh, and its trace id still travels (`inject`).
pub(crate) fn producer_span(subject: &str, orphan: Orphan) -> tracing::Span {
    let current = tracing::Span::current().context();
    let parent = current.span().span_context().clone();
    let skip = if parent.is_valid() {
        !parent.is_sampled()
    } else {
        orphan == Orphan::Untraced
    };
    if skip {
        return tracing::Span::none();
    }
    // Named so that the log layer leaves it out: a log line inside a publish carries its
    // caller's span and trace id, and no JSON is formatted per publish.
    tracing::info_span!(
        mesh_observability::PUBLISH_SPAN,
        otel.name = format!("send {subject}"),
        otel.kind = "producer",
        messaging.system = "nats",
        messaging.operation.type = "send",
        messaging.destination.name = subject,
        messaging.batch.message_count = tracing::field::Empty,
    )
}

/// Records that a message on `subject` arrived (a CONSUMER `receive <subject>` span of the edge,
/// ended at once), when its headers carry a sampled trace: the last hop of a push.
pub(crate) fn received(subject: &str, map: Option<&HeaderMap>) {
    if !carries_sampled(map) {
        return;
    }
    let Some(parent) = extract(map) else {
        return;
    };
    let span = messaging_span("consumer", "receive", subject, Some("edge"));
    let _ = span.set_parent(parent);
}

/// The CONSUMER span of one chat ingest batch (`process <subject>`): a child of the first
/// message's trace, linked to the traces of the others, so the edge's request, the worker's
/// batch and its Postgres statements and pushes are one trace for a lone message.
pub fn ingest_batch_span(deliveries: &[Delivery]) -> tracing::Span {
    let subject = deliveries.first().map_or("", |d| d.subject());
    let span = messaging_span("consumer", "process", subject, Some("chat"));
    span.record("messaging.batch.message_count", deliveries.len());
    let mut contexts = deliveries.iter().filter_map(|d| extract(d.headers()));
    if let Some(first) = contexts.next() {
        // The batch is sampled as its parent is (parent-based sampling): links of an unrecorded span go nowhere, so
        // the others' contexts are read only for a sampled one.
        let sampled = first.span().span_context().is_sampled();
        let _ = span.set_parent(first);
        if sampled {
            for other in contexts {
                span.add_link(other.span().span_context().clone());
            }
        }
    }
    spans::record_trace_id(&span);
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_traceparent(value: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(headers::TRACEPARENT, value);
        map
    }

    #[test]
    fn an_empty_tracestate_adds_no_header() {
        let mut map = HeaderMap::new();
        let mut inject = Inject(&mut map);
        inject.set(headers::TRACESTATE, String::new());
        inject.set(headers::TRACEPARENT, "00-ab-cd-01".to_owned());
        assert!(map.get(headers::TRACESTATE).is_none());
        assert_eq!(
            map.get(headers::TRACEPARENT).unwrap().as_str(),
            "00-ab-cd-01"
        );
    }

    #[test]
    fn only_a_sampled_traceparent_counts_as_sampled() {
        let id = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7";
        assert!(carries_sampled(Some(&with_traceparent(&format!(
            "{id}-01"
        )))));
        assert!(carries_sampled(Some(&with_traceparent(&format!(
            "{id}-03"
        )))));
        assert!(!carries_sampled(Some(&with_traceparent(&format!(
            "{id}-00"
        )))));
        assert!(!carries_sampled(Some(&with_traceparent(&format!(
            "{id}-zz"
        )))));
        assert!(!carries_sampled(Some(&with_traceparent("garbage"))));
        assert!(!carries_sampled(Some(&HeaderMap::new())));
        assert!(!carries_sampled(None));
    }
}
