//! W3C trace context across NATS: injected from the current span, extracted into a new one.

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::headers;

struct Inject<'a>(&'a mut HeaderMap);

impl Injector for Inject<'_> {
    fn set(&mut self, key: &str, value: String) {
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

/// Writes the current span's trace context into `map`.
pub(crate) fn inject_current(map: &mut HeaderMap) {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut Inject(map));
    });
}

/// Makes `span` a child of the trace context found in `map`, if any.
pub(crate) fn adopt_parent(span: &tracing::Span, map: Option<&HeaderMap>) {
    let Some(map) = map else { return };
    if map.get(headers::TRACEPARENT).is_none() {
        return;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&Extract(map))
    });
    let _ = span.set_parent(parent);
}
