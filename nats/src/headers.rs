//! Header names the mesh puts on NATS messages. Only this crate reads or writes them.

pub const REQUEST_ID: &str = "Mesh-Request-Id";
pub const USER_ID: &str = "Mesh-User-Id";
pub const SESSION_ID: &str = "Mesh-Session-Id";
pub const CLIENT_IP: &str = "Mesh-Client-Ip";
pub const USER_AGENT: &str = "Mesh-User-Agent";
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";
/// On an ingest message carrying several chat messages: the `traceparent` of each one after the
/// first whose trace is sampled, one value per message (the first's is `traceparent`).
pub const LINE_TRACEPARENT: &str = "Mesh-Line-Traceparent";
/// Set by the NATS services API on error replies: the description.
pub const SERVICE_ERROR: &str = "Nats-Service-Error";

/// Header values cannot hold line breaks; anything else passes through, capped in length.
pub fn sanitize(value: &str, max: usize) -> String {
    value
        .chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect()
}
