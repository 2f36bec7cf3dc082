//! Hosts a mesh service on the NATS services API: one endpoint per RPC operation.
//!
//! Requests are handled concurrently up to a bound per operation, so a slow operation (sign-ins
//! waiting out their throttle delay and the password hashing) cannot take the turns of the
//! others; each request gets a span that continues the caller's trace. A request carrying its
//! caller's deadline (`deadline.rs`) is handled until then at most: once it passed, its handler
//! is dropped (so the work it queued is skipped) and it is answered `timeout`; one that waited
//! past it for its turn is answered `timeout` without running. On shutdown the endpoints stop
//! taking requests, the ones already delivered to this instance and those in flight are
//! answered, and the service deregisters from discovery.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use async_nats::service::ServiceExt;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use mesh_contracts::{ErrorCode, Rpc, Service, ServiceError};
use mesh_observability::metrics::{
    RPC_SERVER_DURATION, RPC_SERVER_IN_FLIGHT, RPC_SERVER_REQUESTS, RPC_SERVER_TURNS,
};
use prometheus::IntGauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::bus::Bus;
use crate::context::CallContext;
use crate::rpc_client::format_service_error;

type BoxFuture = Pin<Box<dyn Future<Output = Result<Bytes, ServiceError>> + Send>>;
type Handler = Arc<dyn Fn(CallContext, Bytes) -> BoxFuture + Send + Sync>;

/// Collects a service's handlers, then runs them until shutdown.
pub struct ServiceHost {
    bus: Bus,
    service: Service,
    description: String,
    max_in_flight: usize,
    handlers: Vec<(&'static str, Handler)>,
}

impl ServiceHost {
    pub fn new(bus: Bus, service: Service, description: impl Into<String>) -> Self {
        Self {
            bus,
            service,
            description: description.into(),
            max_in_flight: 256,
            handlers: Vec::new(),
        }
    }

    /// How many requests of each operation this instance handles at once (256 unless set);
    /// more of that operation wait in NATS, while the other operations go on. The instance may
    /// so run this many for every operation at once: what they share (the database pool, the
    /// hashing threads) bounds itself.
    pub fn max_in_flight(mut self, limit: usize) -> Self {
        self.max_in_flight = limit.max(1);
        self
    }

    /// Registers the handler of operation `R`. Its error converts into the `ServiceError`
    /// answered, inside the request's span (so a conversion that logs names the request).
    pub fn handle<R, S, F, Fut, E>(mut self, state: S, handler: F) -> Self
    where
        R: Rpc,
        S: Clone + Send + Sync + 'static,
        F: Fn(S, CallContext, R::Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R::Reply, E>> + Send + 'static,
        E: Into<ServiceError> + Send + 'static,
    {
        assert_eq!(
            R::SERVICE,
            self.service,
            "operation {} belongs to another service",
            R::OP
        );
        let handler = Arc::new(handler);
        let erased: Handler = Arc::new(move |ctx, payload: Bytes| {
            let state = state.clone();
            let handler = handler.clone();
            Box::pin(async move {
                let request: R::Request = serde_json::from_slice(&payload).map_err(|err| {
                    ServiceError::new(
                        ErrorCode::BadRequest,
                        format!("cannot decode request: {err}"),
                    )
                })?;
                let reply = handler(state, ctx, request).await.map_err(Into::into)?;
                serde_json::to_vec(&reply).map(Bytes::from).map_err(|err| {
                    tracing::error!(error = %err, "cannot encode reply");
                    ServiceError::internal()
                })
            })
        });
        self.handlers.push((R::OP, erased));
        self
    }

    /// Serves requests until `shutdown` resolves, then drains in-flight requests.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), String> {
        let prefix = self.bus.prefix.clone();
        let name = prefix.service_name(self.service);
        let metadata = HashMap::from([("prefix".to_owned(), prefix.as_str().to_owned())]);
        let service = self
            .bus
            .client
            .service_builder()
            .description(self.description.clone())
            .metadata(metadata)
            .start(name.clone(), env!("CARGO_PKG_VERSION"))
            .await
            .map_err(|err| format!("cannot start service {name}: {err}"))?;
        let group = service.group(prefix.rpc_group(self.service));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut loops = tokio::task::JoinSet::new();
        for (op, handler) in self.handlers {
            let endpoint = group
                .endpoint_builder()
                .name(op)
                .add(op)
                .await
                .map_err(|err| format!("cannot add endpoint {op}: {err}"))?;
            let subject = prefix.rpc(self.service, op);
            loops.spawn(serve_endpoint(
                endpoint,
                Arc::new(Operation {
                    subject,
                    inboxes: format!("_INBOX.{}.", prefix.as_str()),
                    service: self.service.as_str(),
                    op,
                    span_name: format!("{}/{op}", self.service.as_str()),
                }),
                handler,
                self.max_in_flight,
                stop_rx.clone(),
            ));
        }
        tracing::info!(service = %name, "service started");
        shutdown.await;
        let _ = stop_tx.send(true);
        // Each loop ends once every request it took was answered.
        while loops.join_next().await.is_some() {}
        let _ = service.stop().await;
        tracing::info!(service = %name, "service stopped");
        Ok(())
    }
}

/// Declares a service's operations as one table, `Operation => handler`, each handler taking
/// `(state, ctx, request)`: `operations!(host, state; GetUser => profile::get, ...)`.
#[macro_export]
macro_rules! operations {
    ($host:expr, $state:expr; $($op:ty => $handler:expr),+ $(,)?) => {{
        let host: $crate::ServiceHost = $host;
        let state = $state;
        $(let host = host.handle::<$op, _, _, _, _>(state.clone(), $handler);)+
        host
    }};
}

/// The operation an endpoint serves: its subject, and its service and name for spans.
struct Operation {
    subject: String,
    /// `_INBOX.<prefix>.`: where the mesh's callers take their answers; a request naming any
    /// other reply subject is not answered.
    inboxes: String,
    service: &'static str,
    op: &'static str,
    /// `<service>/<op>`, the name of its spans.
    span_name: String,
}

/// Serves one operation with its own bound of `max_in_flight` requests at once, until `stop`;
/// returns once every request it took was answered.
async fn serve_endpoint(
    endpoint: async_nats::service::endpoint::Endpoint,
    operation: Arc<Operation>,
    handler: Handler,
    max_in_flight: usize,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let limit = Arc::new(Semaphore::new(max_in_flight));
    RPC_SERVER_TURNS
        .with_label_values(&[operation.subject.as_str()])
        .set(i64::try_from(max_in_flight).unwrap_or(i64::MAX));
    take_requests(endpoint, &operation, &handler, &limit, stop).await;
    // Every permit back means every request taken was answered.
    let _ = limit.acquire_many(max_in_flight as u32).await;
}

async fn take_requests(
    mut endpoint: async_nats::service::endpoint::Endpoint,
    operation: &Arc<Operation>,
    handler: &Handler,
    limit: &Arc<Semaphore>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let request = tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => break,
            request = endpoint.next() => match request {
                Some(request) => request,
                None => return,
            },
        };
        if !admit(request, operation, handler, limit).await {
            return;
        }
    }
    // Stopping: NATS routes new requests to the other instances (or answers "no responders"
    // at once); the ones it already handed to this one are still answered, not left to their
    // callers' timeouts. Handed means read off the connection: the client forgets the
    // subscription at once (async-nats has no unsubscribe that waits for the server's
    // confirmation), so one still on the wire then is dropped, and its caller times out.
    let _ = endpoint.stop().await;
    while let Some(request) = endpoint.next().await {
        if !admit(request, operation, handler, limit).await {
            return;
        }
    }
}

/// Waits for a turn of the operation for `request`, then hands it to a task of its own; a
/// request whose caller's deadline passes first is answered `timeout` without a turn. False
/// when the bound is closed (never: it lives as long as its loop).
async fn admit(
    request: async_nats::service::Request,
    operation: &Arc<Operation>,
    handler: &Handler,
    limit: &Arc<Semaphore>,
) -> bool {
    // An answer goes only to a caller's inbox: a reply subject elsewhere (`$JS.API...`, a
    // push subject) would have the service publish there on the caller's behalf. The NATS
    // permissions refuse it too; this keeps the service from even trying.
    let to_inbox = request
        .message
        .reply
        .as_ref()
        .is_some_and(|reply| reply.as_str().starts_with(&operation.inboxes));
    if !to_inbox {
        tracing::debug!(subject = %operation.subject, "request without a caller's inbox to answer: dropped");
        RPC_SERVER_REQUESTS
            .with_label_values(&[operation.subject.as_str(), "foreign_reply"])
            .inc();
        return true;
    }
    let deadline = crate::deadline::read(request.message.headers.as_ref());
    let turn = limit.clone().acquire_owned();
    let permit = match deadline {
        None => Some(turn.await),
        Some(at) => tokio::time::timeout_at(at.into(), turn).await.ok(),
    };
    let turn = match permit {
        Some(Ok(permit)) => Some(Turn::taken(permit, operation)),
        Some(Err(_)) => return false,
        // Late: answered at once, outside the bound.
        None => None,
    };
    let handler = handler.clone();
    let operation = operation.clone();
    tokio::spawn(async move {
        handle_one(request, &operation, handler, deadline).await;
        drop(turn);
    });
    true
}

/// One of an operation's turns, counted in `mesh_rpc_server_in_flight` while held.
struct Turn {
    _permit: OwnedSemaphorePermit,
    in_flight: IntGauge,
}

impl Turn {
    fn taken(permit: OwnedSemaphorePermit, operation: &Operation) -> Self {
        let in_flight = RPC_SERVER_IN_FLIGHT.with_label_values(&[operation.subject.as_str()]);
        in_flight.inc();
        Self {
            _permit: permit,
            in_flight,
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.in_flight.dec();
    }
}

/// Handles `request` and answers it; past `deadline` (the caller no longer waits) the handler
/// is dropped, or never called, and the answer is `timeout`.
async fn handle_one(
    request: async_nats::service::Request,
    operation: &Operation,
    handler: Handler,
    deadline: Option<Instant>,
) {
    let started = Instant::now();
    let subject = operation.subject.as_str();
    let headers = request.message.headers.as_ref();
    let ctx = CallContext::read_headers(headers);
    let parent = crate::trace::extract(headers);
    let span = if mesh_observability::spans::server_span_may_record(parent.as_ref()) {
        tracing::info_span!(
            "rpc.server",
            otel.name = operation.span_name.as_str(),
            otel.kind = "server",
            rpc.system = "nats",
            rpc.service = operation.service,
            rpc.method = operation.op,
            rpc.subject = subject,
            rpc.response.status_code = tracing::field::Empty,
            mesh.service = operation.service,
            request_id = %ctx.request_id,
            trace_id = tracing::field::Empty,
        )
    } else {
        // Never exported: only what a log line under it needs (its operation, request and
        // trace).
        tracing::info_span!(
            "rpc.server",
            rpc.method = operation.op,
            rpc.response.status_code = tracing::field::Empty,
            mesh.service = operation.service,
            request_id = %ctx.request_id,
            trace_id = tracing::field::Empty,
        )
    };
    crate::trace::adopt_parent(&span, parent);
    let payload = request.message.payload.clone();
    let run = AssertUnwindSafe(handler(ctx, payload).instrument(span.clone())).catch_unwind();
    let ran = match deadline {
        None => Some(run.await),
        Some(at) if at <= Instant::now() => None,
        // Dropping the handler's future drops what it waits for: a queued password hash is
        // then skipped, an open transaction rolled back.
        Some(at) => tokio::time::timeout_at(at.into(), run).await.ok(),
    };
    let result = match ran {
        Some(Ok(result)) => result,
        Some(Err(_)) => {
            tracing::error!(parent: &span, "handler panicked");
            Err(ServiceError::internal())
        }
        None => {
            tracing::debug!(parent: &span, "the caller's deadline passed: dropped");
            Err(ServiceError::new(
                ErrorCode::Timeout,
                "the caller's deadline passed before an answer",
            ))
        }
    };
    let outcome = match &result {
        Ok(_) => "ok",
        Err(err) => err.code.as_str(),
    };
    if let Err(err) = &result {
        span.record("rpc.response.status_code", outcome);
        if !err.is_client_error() {
            mesh_observability::spans::fail(&span, outcome);
        }
    }
    RPC_SERVER_REQUESTS
        .with_label_values(&[subject, outcome])
        .inc();
    RPC_SERVER_DURATION
        .with_label_values(&[subject])
        .observe(started.elapsed().as_secs_f64());
    let response = result.map_err(|err| async_nats::service::error::Error {
        status: format_service_error(&err),
        code: usize::from(err.code.http_status()),
    });
    if let Err(err) = request.respond(response).await {
        tracing::warn!(parent: &span, error = %err, "cannot send reply");
    }
}
