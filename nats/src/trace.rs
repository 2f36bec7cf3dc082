//! W3C trace context across NATS: injected from a span into message headers, extracted into
//! the span that handles the message. Also the spans of the mesh's NATS traffic, with
//! OpenTelemetry kinds: CLIENT/SERVER for RPC, PRODUCER for publishes (ingest, push),
//! CONSUMER for an ingest batch.

use async_nats::HeaderMap;
use mesh_observability::spans;
use opentelemetry::Context;
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use rand::Rng;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::feed::Delivery;
use crate::headers;

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
    write_context(context_of(span).span().span_context(), map);
}

/// Like `inject`, for a publish that is an operation of its own (`Orphan::Traced`): when it
/// got no span and runs outside any trace (traces are not exported), it still starts a trace
/// of its own, a new trace id made without a span.
pub(crate) fn inject_operation(span: &tracing::Span, map: &mut HeaderMap) {
    let context = context_of(span);
    let span = context.span();
    if span.span_context().is_valid() {
        write_context(span.span_context(), map);
    } else {
        write_context(&new_root(), map);
    }
}

/// `span`'s OpenTelemetry context, or the current span's when `span` is none.
fn context_of(span: &tracing::Span) -> Context {
    if span.is_none() {
        tracing::Span::current().context()
    } else {
        span.context()
    }
}

/// Writes `context` as W3C trace context headers, as OpenTelemetry's TraceContext propagator
/// (the only one the mesh installs) does, without its global lock and string copies: every
/// publish carries one. `traceparent` is made of hex digits only; `tracestate` (none when
/// empty) is cleaned of control characters and bounded like any header value.
fn write_context(context: &SpanContext, map: &mut HeaderMap) {
    if !context.is_valid() {
        return;
    }
    let flags = context.trace_flags() & TraceFlags::SAMPLED;
    let mut parent = String::with_capacity(55);
    parent.push_str("00-");
    push_hex(&mut parent, &context.trace_id().to_bytes());
    parent.push('-');
    push_hex(&mut parent, &context.span_id().to_bytes());
    parent.push('-');
    push_hex(&mut parent, &[flags.to_u8()]);
    map.insert(headers::TRACEPARENT, parent);
    let state = context.trace_state().header();
    if !state.is_empty() {
        map.insert(headers::TRACESTATE, headers::sanitize(&state, 512));
    }
}

/// Appends `bytes` as lower-case hex digits (what `format!("{:x}")` does, without its
/// machinery: this runs for every publish).
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
}

/// A new, unsampled trace context: random non-zero trace and span ids.
fn new_root() -> SpanContext {
    let mut rng = rand::thread_rng();
    let trace = loop {
        let id: u128 = rng.r#gen();
        if id != 0 {
            break TraceId::from_bytes(id.to_be_bytes());
        }
    };
    let span = loop {
        let id: u64 = rng.r#gen();
        if id != 0 {
            break SpanId::from_bytes(id.to_be_bytes());
        }
    };
    SpanContext::new(
        trace,
        span,
        TraceFlags::default(),
        false,
        TraceState::default(),
    )
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

/// Adds to `map` (an ingest message's headers) the `traceparent` of each of `others` (the
/// headers of the chat messages published with the first) whose trace is sampled, so the
/// batch that stores them links to each; an unsampled one would never be recorded.
pub(crate) fn carry_line_contexts<'a>(
    map: &mut HeaderMap,
    others: impl Iterator<Item = &'a HeaderMap>,
) {
    for other in others {
        if carries_sampled(Some(other))
            && let Some(parent) = other.get(headers::TRACEPARENT)
        {
            map.append(headers::LINE_TRACEPARENT, parent.as_str());
        }
    }
}

/// A `traceparent` value alone, as an extractor.
struct OneParent<'a>(&'a str);

impl Extractor for OneParent<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == headers::TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![headers::TRACEPARENT]
    }
}

/// The sampled trace contexts `map` carries: its own when sampled, then those of the other
/// chat messages published with it (`LINE_TRACEPARENT`), each valid sampled one. Nothing is
/// parsed for a message whose own context is unsampled and that carries no others.
fn sampled_contexts(map: Option<&HeaderMap>) -> impl Iterator<Item = Context> + '_ {
    let own = carries_sampled(map).then(|| extract(map)).flatten();
    let lines = map
        .into_iter()
        .flat_map(|map| map.get_all(headers::LINE_TRACEPARENT))
        .filter_map(|value| {
            let context = opentelemetry::global::get_text_map_propagator(|propagator| {
                propagator.extract(&OneParent(value.as_str()))
            });
            let sampled = {
                let span = context.span();
                let carried = span.span_context();
                carried.is_valid() && carried.is_sampled()
            };
            sampled.then_some(context)
        });
    own.into_iter().chain(lines)
}

/// The most links a batch span gets: what the OpenTelemetry SDK keeps of a span's links by
/// default (`OTEL_SPAN_LINK_COUNT_LIMIT`); a batch holding more sampled messages links the
/// first of them only.
const MOST_LINKS: usize = 128;

/// The trace context carried by `map`, if it carries a valid one.
pub(crate) fn extract(map: Option<&HeaderMap>) -> Option<Context> {
    let map = map?;
    map.get(headers::TRACEPARENT)?;
    let context = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&Extract(map))
    });
    context.span().span_context().is_valid().then_some(context)
}

/// Makes `span` a child of `parent` (the trace context a request carried), if any, and records
/// its trace id.
pub(crate) fn adopt_parent(span: &tracing::Span, parent: Option<Context>) {
    spans::continue_trace(span, parent);
    spans::record_trace_id(span);
}

/// Whether a publish or an RPC call outside any trace starts one of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Orphan {
    /// It does (a chat message sent over a WebSocket, or a call, is an operation of its own).
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

/// Whether a span opened now, below the current span, could ever be recorded: inside a
/// sampled trace, or outside any trace for an operation of its own while traces are exported.
/// Any other span would only be built, formatted and dropped (the sampler is off, or the trace
/// is unsampled), and its trace id travels without it: `inject` writes the current span's.
pub(crate) fn worth_a_span(orphan: Orphan) -> bool {
    let current = tracing::Span::current().context();
    let current = current.span();
    let parent = current.span_context();
    if parent.is_valid() {
        parent.is_sampled()
    } else {
        orphan == Orphan::Traced && mesh_observability::exports_traces()
    }
}

/// A PRODUCER span for publishing to `subject` (`send <subject>`), a child of the current span.
/// A publish that would not be exported (inside an unsampled trace, or outside any trace when
/// `Untraced` or while traces are not exported) gets no span at all: a push of every message
/// to every member is the hottest path of the mesh, and its trace id still travels (`inject`,
/// or `inject_operation` for a `Traced` one, which starts a trace without a span).
pub(crate) fn producer_span(subject: &str, orphan: Orphan) -> tracing::Span {
    if !worth_a_span(orphan) {
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
/// sampled message's trace (of the first message's when none is sampled), linked to the traces
/// of the other sampled ones (at most `MOST_LINKS`), so the edge's request, the worker's batch
/// and its Postgres statements and pushes are one trace for a lone message, and a sampled
/// message, published alone or with others in one ingest message, reaches the batch that
/// stored it.
pub fn ingest_batch_span(deliveries: &[Delivery]) -> tracing::Span {
    let subject = deliveries.first().map_or("", |d| d.subject());
    let span = messaging_span("consumer", "process", subject, Some("chat"));
    span.record("messaging.batch.message_count", deliveries.len());
    let mut sampled = deliveries
        .iter()
        .flat_map(|d| sampled_contexts(d.headers()));
    match sampled.next() {
        // The batch is sampled as its parent is (parent-based sampling).
        Some(parent) => {
            let _ = span.set_parent(parent);
            for other in sampled.take(MOST_LINKS) {
                span.add_link(other.span().span_context().clone());
            }
        }
        // Nothing sampled (traces not exported): the first message's trace id is all there is
        // to carry on; the batch is not recorded, so links would go nowhere.
        None => {
            if let Some(first) = deliveries.iter().find_map(|d| extract(d.headers())) {
                let _ = span.set_parent(first);
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

    /// The headers OpenTelemetry's TraceContext propagator writes for `context`.
    fn propagated(context: &SpanContext) -> std::collections::HashMap<String, String> {
        use opentelemetry::propagation::TextMapPropagator;
        let mut out = std::collections::HashMap::new();
        let context = Context::new().with_remote_span_context(context.clone());
        opentelemetry_sdk::propagation::TraceContextPropagator::new()
            .inject_context(&context, &mut out);
        out.retain(|_, value| !value.is_empty());
        out
    }

    fn written(context: &SpanContext) -> std::collections::HashMap<String, String> {
        let mut map = HeaderMap::new();
        write_context(context, &mut map);
        [headers::TRACEPARENT, headers::TRACESTATE]
            .into_iter()
            .filter_map(|key| Some((key.to_owned(), map.get(key)?.as_str().to_owned())))
            .collect()
    }

    #[test]
    fn trace_context_headers_are_the_propagators() {
        let trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let span = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        let state = TraceState::from_key_value([("vendor", "opaque")]).unwrap();
        for (flags, state) in [
            (TraceFlags::SAMPLED, TraceState::default()),
            (TraceFlags::default(), TraceState::default()),
            (TraceFlags::new(0xff), state.clone()),
        ] {
            let context = SpanContext::new(trace, span, flags, true, state);
            let ours = written(&context);
            assert_eq!(ours, propagated(&context));
            assert!(ours.contains_key(headers::TRACEPARENT));
        }
        let sampled = written(&SpanContext::new(
            trace,
            span,
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ));
        assert_eq!(
            sampled[headers::TRACEPARENT],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert!(
            !sampled.contains_key(headers::TRACESTATE),
            "no empty tracestate"
        );
        assert!(written(&SpanContext::empty_context()).is_empty());
    }

    #[test]
    fn no_span_is_made_only_to_carry_a_new_trace_id() {
        // A subscriber that records every span, so a span made is a span seen; this test
        // process never ran `init`, so traces are not exported.
        assert!(!mesh_observability::exports_traces());
        let subscriber = tracing_subscriber::registry();
        tracing::subscriber::with_default(subscriber, || {
            assert!(producer_span("mesh.chat.in.1", Orphan::Traced).is_none());
            assert!(producer_span("mesh.push.many", Orphan::Untraced).is_none());
            // The same subscriber makes other spans: the none above is the skip, not it.
            let outer = tracing::info_span!("outer");
            assert!(!outer.is_none(), "the subscriber records spans");
        });
    }

    #[test]
    fn an_operation_outside_any_trace_starts_a_trace_of_its_own() {
        // As `mesh_observability::init` installs it, for `extract`.
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let mut first = HeaderMap::new();
        inject_operation(&tracing::Span::none(), &mut first);
        let mut second = HeaderMap::new();
        inject_operation(&tracing::Span::none(), &mut second);
        let parent = |map: &HeaderMap| map.get(headers::TRACEPARENT).unwrap().to_string();
        let extracted = extract(Some(&first)).expect("a valid trace context");
        assert!(!extracted.span().span_context().is_sampled());
        assert!(!carries_sampled(Some(&first)));
        assert_ne!(
            parent(&first),
            parent(&second),
            "each operation its own trace"
        );
        // Nothing outside any trace for a publish that is not an operation of its own.
        let mut none = HeaderMap::new();
        inject(&tracing::Span::none(), &mut none);
        assert!(none.get(headers::TRACEPARENT).is_none());
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

    #[test]
    fn an_ingest_message_carries_the_sampled_contexts_of_the_messages_after_its_first() {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let first = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let sampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let unsampled = "00-0af7651916cd43dd8448eb211c80319d-b7ad6b7169203332-00";
        let also_sampled = "00-0af7651916cd43dd8448eb211c80319e-b7ad6b7169203333-01";
        let mut map = with_traceparent(first);
        let others = [
            with_traceparent(sampled),
            with_traceparent(unsampled),
            HeaderMap::new(),
            with_traceparent(also_sampled),
        ];
        carry_line_contexts(&mut map, others.iter());
        let carried: Vec<&str> = map
            .get_all(headers::LINE_TRACEPARENT)
            .map(|v| v.as_str())
            .collect();
        assert_eq!(carried, [sampled, also_sampled]);
        // Read back: the sampled ones (the ingest message's own is not), in order.
        let ids = |map: &HeaderMap| -> Vec<String> {
            sampled_contexts(Some(map))
                .map(|c| c.span().span_context().span_id().to_string())
                .collect()
        };
        assert_eq!(ids(&map), ["b7ad6b7169203331", "b7ad6b7169203333"]);
        // A malformed or unsampled value is skipped, not taken for a context.
        map.append(headers::LINE_TRACEPARENT, "00-garbage");
        map.append(headers::LINE_TRACEPARENT, unsampled);
        assert_eq!(ids(&map).len(), 2);
        // A sampled own context comes first.
        let mut own_sampled = with_traceparent(also_sampled);
        carry_line_contexts(&mut own_sampled, others[..1].iter());
        assert_eq!(ids(&own_sampled), ["b7ad6b7169203333", "b7ad6b7169203331"]);
    }
}
