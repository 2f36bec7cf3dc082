//! Typed RPC calls with a deadline, where every way of failing is its own error.

use std::time::{Duration, Instant};

use async_nats::{HeaderMap, RequestErrorKind};
use mesh_contracts::{ErrorCode, Rpc, ServiceError};
use mesh_observability::metrics::{RPC_CLIENT_CALLS, RPC_CLIENT_DURATION};
use tracing::Instrument;

use crate::bus::Bus;
use crate::context::CallContext;
use crate::headers;
use crate::trace::Orphan;

/// Why an RPC call did not produce a reply.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// No instance of the service is subscribed, or we are not connected to NATS.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// The service did not answer before the deadline.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The request or the reply could not be (de)serialized.
    #[error("cannot decode: {0}")]
    Decode(String),
    /// The service answered with an error.
    #[error(transparent)]
    Service(ServiceError),
    /// The request could not be sent.
    #[error("transport: {0}")]
    Transport(String),
}

impl RpcError {
    fn outcome(&self) -> &'static str {
        match self {
            RpcError::Unavailable(_) => "unavailable",
            RpcError::Timeout(_) => "timeout",
            RpcError::Decode(_) => "decode",
            RpcError::Service(err) if err.is_client_error() => "client_error",
            RpcError::Service(_) => "server_error",
            RpcError::Transport(_) => "transport",
        }
    }
}

/// Makes RPC calls to the mesh's services.
#[derive(Clone, Debug)]
pub struct RpcClient {
    bus: Bus,
    timeout: Duration,
}

impl Bus {
    /// An RPC client whose calls give up after `timeout`.
    pub fn rpc_client(&self, timeout: Duration) -> RpcClient {
        RpcClient {
            bus: self.clone(),
            timeout,
        }
    }
}

impl RpcClient {
    /// Calls operation `R` with `request` on behalf of `ctx`.
    pub async fn call<R: Rpc>(
        &self,
        ctx: &CallContext,
        request: &R::Request,
    ) -> Result<R::Reply, RpcError> {
        let subject = self.bus.prefix.rpc(R::SERVICE, R::OP);
        let span = client_span::<R>();
        let started = Instant::now();
        let result = self
            .call_raw::<R>(&subject, ctx, request, &span)
            .instrument(span.clone())
            .await;
        RPC_CLIENT_DURATION
            .with_label_values(&[&subject])
            .observe(started.elapsed().as_secs_f64());
        let outcome = match &result {
            Ok(_) => "ok",
            Err(err) => err.outcome(),
        };
        if !matches!(outcome, "ok" | "client_error") {
            span.record("rpc.response.status_code", outcome);
            mesh_observability::spans::fail(&span, outcome);
        }
        RPC_CLIENT_CALLS
            .with_label_values(&[&subject, outcome])
            .inc();
        result
    }

    async fn call_raw<R: Rpc>(
        &self,
        subject: &str,
        ctx: &CallContext,
        request: &R::Request,
        span: &tracing::Span,
    ) -> Result<R::Reply, RpcError> {
        if !self.bus.is_connected() {
            // Fail at once instead of queueing the request until the deadline.
            return Err(RpcError::Unavailable("not connected to NATS".into()));
        }
        let payload =
            serde_json::to_vec(request).map_err(|err| RpcError::Decode(err.to_string()))?;
        let mut map = HeaderMap::new();
        ctx.write_headers(&mut map);
        crate::deadline::put_deadline(&mut map, self.timeout);
        crate::trace::inject(span, &mut map);
        let request = async_nats::Request::new()
            .payload(payload.into())
            .headers(map)
            .timeout(Some(self.timeout));
        let reply = self
            .bus
            .client
            .send_request(subject.to_owned(), request)
            .await
            .map_err(|err| match err.kind() {
                RequestErrorKind::TimedOut => RpcError::Timeout(self.timeout),
                RequestErrorKind::NoResponders => {
                    RpcError::Unavailable(format!("no responders on {subject}"))
                }
                _ => RpcError::Transport(err.to_string()),
            })?;
        if let Some(error) = reply
            .headers
            .as_ref()
            .and_then(|map| map.get(headers::SERVICE_ERROR))
        {
            return Err(RpcError::Service(parse_service_error(error.as_str())));
        }
        serde_json::from_slice(&reply.payload).map_err(|err| RpcError::Decode(err.to_string()))
    }
}

/// The CLIENT span of a call of `R`, or none when it could never be recorded (an unsampled
/// trace, or no trace while nothing exports): a cached read is a handful of microseconds of
/// work, and building, formatting and dropping such a span cost more. The request still
/// carries the caller's trace id, so the service's span and log lines continue its trace.
fn client_span<R: Rpc>() -> tracing::Span {
    if !crate::trace::worth_a_span(Orphan::Traced) {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "rpc.client",
        otel.name = format!("{}/{}", R::SERVICE.as_str(), R::OP),
        otel.kind = "client",
        rpc.system = "nats",
        rpc.service = R::SERVICE.as_str(),
        rpc.method = R::OP,
        rpc.response.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    mesh_observability::spans::record_trace_id(&span);
    span
}

/// The service host writes `<code> <message>` into `Nats-Service-Error`.
pub(crate) fn format_service_error(err: &ServiceError) -> String {
    headers::sanitize(&format!("{} {}", err.code.as_str(), err.message), 1024)
}

fn parse_service_error(raw: &str) -> ServiceError {
    let (code, message) = raw.split_once(' ').unwrap_or((raw, ""));
    match ErrorCode::parse(code) {
        Some(code) => ServiceError::new(code, message),
        // A foreign service error: keep its text out of client responses.
        None => ServiceError::internal(),
    }
}

impl RpcError {
    /// The error a service answers its own caller with when a call it made failed: the
    /// callee's own error, or unavailable/timeout for transport trouble.
    pub fn into_service_error(self, callee: &str) -> ServiceError {
        match self {
            RpcError::Service(err) => err,
            RpcError::Unavailable(why) | RpcError::Transport(why) => {
                tracing::warn!(callee, reason = %why, "service unavailable");
                ServiceError::new(
                    ErrorCode::ServiceUnavailable,
                    format!("the {callee} service is unavailable; try again"),
                )
            }
            RpcError::Timeout(after) => {
                tracing::warn!(callee, after = ?after, "service timed out");
                ServiceError::new(
                    ErrorCode::Timeout,
                    format!("the {callee} service did not answer in time"),
                )
            }
            RpcError::Decode(why) => {
                tracing::error!(callee, reason = %why, "cannot decode a reply");
                ServiceError::internal()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_errors_round_trip_through_the_header() {
        let err = ServiceError::new(ErrorCode::PhoneTaken, "phone already registered");
        assert_eq!(parse_service_error(&format_service_error(&err)), err);
        let bare = ServiceError::new(ErrorCode::NotFound, "");
        assert_eq!(parse_service_error(&format_service_error(&bare)), bare);
        assert_eq!(parse_service_error("weird stuff").code, ErrorCode::Internal);
    }
}
