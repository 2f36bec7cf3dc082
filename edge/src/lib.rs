//! The edge: the mesh's only public door. It speaks HTTP (REST under `/v1`, OpenAPI at
//! `/openapi.json`, Swagger UI at `/docs`), authenticates callers, and turns each request into
//! an RPC over NATS. It holds no business rules.

mod api;
mod caller;
mod config;
mod health;
mod middleware;
mod problem;
mod revoked;
mod token;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use mesh_nats::{Bus, RpcClient};
use poem::listener::TcpAcceptor;
use poem::{EndpointExt, Route, Server, get};
use poem_openapi::OpenApiService;

pub use config::EdgeConfig;

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
}

pub(crate) type SharedState = Arc<EdgeState>;

/// Serves the edge on `listener` until `shutdown` resolves; in-flight requests get a grace period.
pub async fn run(
    deps: EdgeDeps,
    config: EdgeConfig,
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    mesh_observability::metrics::touch_all();
    let verifier = TokenVerifier::new(&config)?;
    let revocations = deps.bus.revocations().await?;
    let revoked = RevokedSessions::new(config.access_ttl);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(revoked.clone().follow(revocations, stop_rx));
    let state = Arc::new(EdgeState {
        rpc: deps.bus.rpc_client(config.rpc_timeout),
        bus: deps.bus,
        verifier,
        revoked,
        max_body_bytes: config.max_body_bytes,
    });
    let app = app(state, &config.public_url);
    listener.set_nonblocking(true)?;
    let acceptor = TcpAcceptor::from_std(listener)?;
    let result = Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(app, shutdown, Some(Duration::from_secs(10)))
        .await;
    let _ = stop_tx.send(true);
    let _ = watcher.await;
    result.map_err(Into::into)
}

/// The OpenAPI service describing every `/v1` route.
fn openapi(public_url: &str) -> OpenApiService<api::Api, ()> {
    let public_url = public_url.to_owned();
    OpenApiService::new(api::apis(), "nats-mesh", env!("CARGO_PKG_VERSION"))
        .description(
            "Chat and social backend. Errors are RFC 9457 problem+json documents with a stable `code`. \
             Every response carries `x-request-id`.",
        )
        .server(public_url)
}

fn app(state: SharedState, public_url: &str) -> impl poem::Endpoint + 'static {
    let service = openapi(public_url);
    let spec = service.spec_endpoint();
    let docs = service.swagger_ui();
    let max_body = state.max_body_bytes;
    Route::new()
        .nest("/", service)
        .at("/openapi.json", get(spec))
        .nest("/docs", docs)
        .at("/healthz", get(health::healthz))
        .at("/readyz", get(health::readyz))
        .at("/metrics", get(mesh_observability::metrics_endpoint()))
        .data(state)
        .around(move |ep, req| middleware::observe(ep, req, max_body))
}

/// The OpenAPI document as JSON, for tooling that wants it without a running edge.
pub fn openapi_json() -> String {
    openapi("http://localhost:8080").spec()
}
