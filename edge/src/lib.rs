//! The edge: the mesh's only public door. It speaks HTTP (REST under `/v1`, OpenAPI at
//! `/openapi.json`, Swagger UI at `/docs`) and realtime (WebSocket `/v1/ws`, SSE
//! `/v1/events`), authenticates callers, turns each request into an RPC over NATS or a publish
//! to the chat ingest stream, and forwards what chat pushes to connected users. It holds no
//! business rules.

mod acceptor;
mod admission;
mod api;
mod audit;
mod caller;
mod client_ip;
mod clock;
mod config;
mod console;
mod cors;
mod handshake;
mod health;
mod idempotency;
mod ingest_publisher;
mod limits;
mod middleware;
mod openapi_doc;
mod operations;
mod permissions;
mod problem;
mod rate_limit;
mod realtime;
mod rejection;
mod request_id;
mod request_trace;
mod revoked;
mod route_permissions;
mod security_headers;
mod send;
mod send_order;
mod strict_json;
mod token;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use mesh_contracts::Bucket;
use mesh_nats::{Bus, RpcClient};
use poem::{EndpointExt, Route, Server, get};
use poem_openapi::OpenApiService;

pub use config::{
    Cidr, ConsoleConfig, EdgeConfig, ForwardedHeader, GuardConfig, IdempotencySettings, Quota,
    RateLimitConfig, WsConfig,
};
pub use token::revocation_ttl;

use crate::realtime::{Hub, HubSettings, PresenceDeps};
use crate::revoked::RevokedSessions;
use crate::token::TokenVerifier;

/// What the edge needs from the outside world.
#[derive(Clone)]
pub struct EdgeDeps {
    pub bus: Bus,
}

/// Shared by every request.
pub(crate) struct EdgeState {
    pub rpc: RpcClient,
    pub bus: Bus,
    pub verifier: TokenVerifier,
    pub revoked: RevokedSessions,
    pub max_body_bytes: usize,
    /// Ingest partitions, to route each conversation's messages.
    pub chat_partitions: u32,
    /// Publishes accepted messages to their partitions, together while one waits.
    pub ingest: ingest_publisher::IngestPublisher,
    /// Whether each partition takes new messages (its backlog).
    pub admission: admission::Admission,
    /// Realtime limits and timers.
    pub ws: WsConfig,
    /// This edge's realtime connections.
    pub hub: Hub,
    /// Request, chat-send, frame and connection limits.
    pub limits: rate_limit::RateLimits,
    /// Roles' permissions and users' grants, for the routes that need a permission.
    pub permissions: permissions::PermissionCache,
    /// `/readyz`: the services' shared answer, and whether shutdown began.
    pub readiness: health::Readiness,
}

pub(crate) type SharedState = Arc<EdgeState>;

/// How long shutdown waits for users' presence to be released after their sockets closed.
const REALTIME_DRAIN: Duration = Duration::from_secs(5);

/// Serves the edge on `listener` until `shutdown` resolves; in-flight requests get a grace period.
pub async fn run(
    deps: EdgeDeps,
    config: EdgeConfig,
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    mesh_observability::metrics::touch_all();
    let verifier = TokenVerifier::new(&config)?;
    let revocations = deps.bus.bucket_follower(Bucket::Revoked).await?;
    let rpc = deps.bus.rpc_client(config.rpc_timeout);
    let presence = PresenceDeps {
        bucket: deps.bus.bucket(Bucket::Presence).await?,
        rpc: rpc.clone(),
        edge_id: uuid::Uuid::now_v7(),
    };
    let hub = Hub::new(
        deps.bus.clone(),
        presence,
        HubSettings {
            send_queue: config.ws.send_queue,
            heartbeat: config.ws.heartbeat,
        },
    );
    let revoked = RevokedSessions::new(config.access_ttl, {
        let hub = hub.clone();
        Arc::new(move |revocation| hub.session_revoked(revocation))
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(revoked.clone().follow(revocations, stop_rx.clone()));
    let permissions = permissions::PermissionCache::default();
    let permission_feed = tokio::spawn(
        permissions
            .clone()
            .follow(deps.bus.clone(), stop_rx.clone()),
    );
    // Written to the server before the first connection says `ready`, like each user's own
    // subscription. (async-nats' flush empties the client's buffer; it is not a round trip.
    // NATS applies a connection's operations in order, so the subscription is in force
    // before anything this edge sends after it, though not proven before another client's
    // publish.)
    let many = deps
        .bus
        .subscribe_push_many()
        .await
        .map_err(anyhow::Error::msg)?;
    deps.bus.flush().await;
    let many_feed = tokio::spawn(realtime::many::follow(hub.clone(), many, stop_rx.clone()));
    let admission = admission::Admission::new(config.chat_partitions, config.chat_max_unstored);
    let backlogs = tokio::spawn(admission.clone().follow(deps.bus.clone(), stop_rx));
    let ingest =
        ingest_publisher::IngestPublisher::new(config.chat_partitions, config.chat_ingest_spacing);
    let state = Arc::new(EdgeState {
        rpc,
        bus: deps.bus,
        verifier,
        revoked,
        max_body_bytes: config.max_body_bytes,
        chat_partitions: config.chat_partitions,
        ingest,
        admission,
        ws: config.ws.clone(),
        hub: hub.clone(),
        limits: rate_limit::RateLimits::new(config.guard.limits.clone()),
        permissions,
        readiness: health::Readiness::default(),
    });
    let idempotency = idempotency::Idempotency::new(
        state.bus.bucket(Bucket::Idempotency).await?,
        config.guard.idempotency,
    );
    let app = app(state.clone(), &config, idempotency);
    let acceptor = acceptor::NoDelayAcceptor::from_std(listener)?;
    // Realtime connections are closed (1001) as soon as shutdown begins: SSE streams are
    // responses the server's grace period waits for, WebSockets are not. Readiness fails from
    // then on, for clients still on a kept-alive connection.
    let shutdown = {
        let hub = hub.clone();
        let state = state.clone();
        async move {
            shutdown.await;
            state.readiness.stop();
            hub.shutdown();
        }
    };
    let result = Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(app, shutdown, Some(Duration::from_secs(10)))
        .await;
    hub.shutdown();
    hub.wait_idle(REALTIME_DRAIN).await;
    let _ = stop_tx.send(true);
    let _ = watcher.await;
    let _ = permission_feed.await;
    let _ = many_feed.await;
    let _ = backlogs.await;
    result.map_err(Into::into)
}

/// The OpenAPI service describing every `/v1` route.
fn openapi(public_url: &str) -> OpenApiService<api::Api, ()> {
    let public_url = public_url.to_owned();
    OpenApiService::new(api::apis(), "nats-mesh", env!("CARGO_PKG_VERSION"))
        .description(
            "Chat and social backend. Errors are RFC 9457 problem+json documents with a stable `code`. \
             Every response carries `x-request-id`.\n\n\
             Realtime (not listed below; described exactly by the AsyncAPI 3 document at \
             `/asyncapi.json`): `GET /v1/ws` is a WebSocket speaking JSON frames with a \
             `type`. Authenticate with `Authorization: Bearer`, with the subprotocols \
             `bearer, <token>`, or with a first frame `{\"type\":\"auth\",\"token\":...}` within \
             10 s (any other frame first closes the socket 4401). Client frames: `auth` (also to refresh the token before it expires), `send`, \
             `read`, `sync`, `typing`, `ping`. Server frames: `ready`, `ack`, `message`, `read`, \
             `typing`, `presence`, `recall`, `sync`, `notification`, `error`, `pong`, \
             `session_revoked`. Close codes: 1000 closed by the client, 1001 server shutdown, \
             1009 frame too large, 1011 server error, 4000 idle timeout, 4001 session revoked, \
             4002 token expired, 4008 slow consumer, 4029 frame flood (after `rate_limited` \
             error frames), 4030 too many connections, 4401 unauthenticated, 4403 token of \
             another user. Browsers must send an allowed `Origin` (WebSocket and SSE). \
             `GET /v1/events` is the receive-only Server-Sent Events alternative (token in \
             `Authorization: Bearer` or `?access_token=`): one unnamed event per server frame \
             (every one reaches `EventSource.onmessage`; its `type` says what it is), starting \
             with `ready`.",
        )
        .server(public_url)
}

fn app(
    state: SharedState,
    config: &EdgeConfig,
    idempotency: idempotency::Idempotency,
) -> impl poem::Endpoint + 'static {
    let service = openapi(&config.public_url);
    let spec = openapi_doc::refine(&service.spec());
    let docs = service.swagger_ui();
    let doc: serde_json::Value = serde_json::from_str(&spec).unwrap_or_default();
    let operations = operations::Operations::new(&doc);
    let layers = Arc::new(middleware::Layers {
        max_body: state.max_body_bytes,
        audit: Arc::new(audit::AuditTrail::new(
            state.bus.clone(),
            operations.clone(),
        )),
        idempotency,
        proxies: client_ip::TrustedProxies::new(
            config.guard.trusted_proxies.clone(),
            config.guard.forwarded_header,
        ),
        cors: cors::Cors::new(config.guard.cors_allowed_origins.clone()),
        body_schemas: strict_json::BodySchemas::new(&doc),
        operations,
        max_header_bytes: config.guard.max_header_bytes,
        token_refresh_hint: config.guard.token_refresh_hint,
        state: state.clone(),
    });
    let mut routes = Route::new();
    if let Some(console) = &config.console {
        routes = routes.nest(&console.path, console::Console::new(console));
    }
    routes
        .nest("/", service)
        .at(
            "/openapi.json",
            get(poem::endpoint::make_sync(move |_| {
                poem::IntoResponse::with_content_type(spec.clone(), "application/json")
            })),
        )
        .nest("/docs", docs)
        .at("/healthz", get(health::healthz))
        .at("/readyz", get(health::readyz))
        .at("/metrics", get(mesh_observability::metrics_endpoint()))
        .at("/v1/ws", get(realtime::websocket))
        .at("/v1/events", get(realtime::events))
        .at("/asyncapi.json", get(realtime::asyncapi))
        .data(state)
        .around(move |ep, req| middleware::observe(ep, req, layers.clone()))
}

/// The OpenAPI document as JSON, for tooling that wants it without a running edge.
pub fn openapi_json() -> String {
    openapi_doc::refine(&openapi("http://localhost:8080").spec())
}
