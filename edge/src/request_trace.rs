//! The trace and the access-log line of every HTTP request: a SERVER span named after the
//! route template that continues an incoming W3C `traceparent`, the `traceresponse` header,
//! error status on 5xx, and one log line per request (method, route, status, latency, request
//! id, trace id; never a body, a header value or the query string, where tokens may ride).
//!
//! `/metrics` scrapes and health probes are not traced (their spans are unsampled, down to the
//! services they ask) and are logged at `debug` only.

use std::time::Duration;

use mesh_observability::spans;
use poem::PathPattern;
use poem::http::{HeaderValue, Method, StatusCode};
use poem::{Request, Response};

/// Paths polled by machines: neither traced nor logged at `info`.
fn is_probe(path: &str) -> bool {
    matches!(path, "/metrics" | "/healthz" | "/readyz")
}

/// The span of one request, and what the access log needs to know about it.
pub struct RequestTrace {
    pub span: tracing::Span,
    request_id: String,
    /// The request's path (never its query string).
    path: String,
    trace_id: String,
    probe: bool,
}

impl RequestTrace {
    /// Opens the span of `req`, continuing its caller's trace unless it is a probe.
    pub fn open(req: &Request, request_id: &str) -> Self {
        let method = req.method().as_str();
        let probe = is_probe(req.uri().path());
        let parent = if probe {
            None
        } else {
            spans::http_parent(req.headers())
        };
        let span = if !probe && spans::server_span_may_record(parent.as_ref()) {
            tracing::info_span!(
                "http.request",
                otel.name = method,
                otel.kind = "server",
                http.request.method = method,
                url.path = req.uri().path(),
                http.route = tracing::field::Empty,
                http.response.status_code = tracing::field::Empty,
                mesh.service = "edge",
                request_id,
                trace_id = tracing::field::Empty,
            )
        } else {
            // Never exported: only what a log line under it needs. The access-log line says
            // the method, path, route and status itself.
            tracing::info_span!(
                "http.request",
                mesh.service = "edge",
                request_id,
                trace_id = tracing::field::Empty,
            )
        };
        if probe {
            spans::untraced(&span);
        } else {
            spans::continue_trace(&span, parent);
        }
        let trace_id = spans::trace_id(&span).unwrap_or_default();
        if !trace_id.is_empty() {
            span.record("trace_id", trace_id.as_str());
        }
        Self {
            span,
            request_id: request_id.to_owned(),
            path: req.uri().path().to_owned(),
            trace_id,
            probe,
        }
    }

    /// Names a recorded span after the route that answered and sets its status; adds
    /// `traceresponse` to `response`, and writes the access-log line.
    pub fn close(&self, method: &Method, response: &mut Response, client_ip: &str, took: Duration) {
        let route = route_template(response);
        let status = response.status();
        let span = &self.span;
        // The span's last fields, name and status matter only to an exporter; the access-log
        // line below says the same for the logs.
        if spans::is_recorded(span) {
            span.record("http.response.status_code", status.as_u16());
            if let Some(route) = &route {
                span.record("http.route", route.as_str());
                spans::rename(span, format!("{method} {route}"));
            }
            if status.is_server_error() {
                spans::fail(span, status.as_str().to_owned());
            }
        }
        if !self.probe
            && let Some(value) = spans::traceresponse(span)
            && let Ok(value) = HeaderValue::from_str(&value)
        {
            response.headers_mut().insert(spans::TRACERESPONSE, value);
        }
        self.log(
            method,
            route.as_deref().unwrap_or(""),
            status,
            client_ip,
            took,
        );
    }

    /// The line stands alone (no span): it already says everything its span does, and the
    /// span's fields would double its size and its cost.
    fn log(&self, method: &Method, route: &str, status: StatusCode, ip: &str, took: Duration) {
        let latency_ms = took.as_secs_f64() * 1000.0;
        let status = status.as_u16();
        let (request_id, trace_id) = (self.request_id.as_str(), self.trace_id.as_str());
        let path = self.path.as_str();
        if self.probe {
            tracing::debug!(target: "mesh::access", parent: None, method = %method, path, route, status, latency_ms, client_ip = ip, request_id, trace_id, "request");
        } else {
            tracing::info!(target: "mesh::access", parent: None, method = %method, path, route, status, latency_ms, client_ip = ip, request_id, trace_id, "request");
        }
    }
}

/// The template of the route that answered (`/v1/conversations/{id}/messages`), from the
/// pattern poem's router leaves on the response; `None` when no route matched.
fn route_template(response: &Response) -> Option<String> {
    let pattern = response.data::<PathPattern>()?;
    Some(normalize(&pattern.0))
}

/// poem writes parameters as `:id` and may join nested patterns with `//`; OpenTelemetry
/// and the OpenAPI document write `{id}`.
fn normalize(pattern: &str) -> String {
    let segments: Vec<String> = pattern
        .split('/')
        .filter(|s| !s.is_empty())
        .map(
            |s| match s.strip_prefix(':').or_else(|| s.strip_prefix('*')) {
                Some(name) => format!("{{{name}}}"),
                None => s.to_owned(),
            },
        )
        .collect();
    format!("/{}", segments.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_templates_use_braces_and_single_slashes() {
        assert_eq!(normalize("//v1/users/:id"), "/v1/users/{id}");
        assert_eq!(
            normalize("/v1/conversations/:id/messages"),
            "/v1/conversations/{id}/messages"
        );
        assert_eq!(normalize("/healthz"), "/healthz");
        assert_eq!(normalize("/"), "/");
    }

    #[test]
    fn only_machine_paths_are_probes() {
        assert!(is_probe("/metrics"));
        assert!(is_probe("/readyz"));
        assert!(!is_probe("/v1/messages"));
    }
}
