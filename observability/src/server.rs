//! The `/metrics` endpoint, mounted by the edge and served on its own port by other roles,
//! together with their liveness (`/healthz`) and readiness (`/readyz`) probes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use poem::endpoint::make_sync;
use poem::http::StatusCode;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::{Endpoint, IntoResponse, Response, Route, Server, get, handler};

use crate::metrics;

/// Tells whether the process can do its work (for roles without HTTP: NATS is connected).
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

#[handler]
fn render_metrics() -> impl IntoResponse {
    metrics::render().with_content_type("text/plain; version=0.0.4; charset=utf-8")
}

fn json_status(status: StatusCode, body: &'static str) -> Response {
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(body)
}

fn readyz(ready: &Readiness) -> Response {
    if ready() {
        json_status(StatusCode::OK, r#"{"status":"ready"}"#)
    } else {
        json_status(StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"not_ready"}"#)
    }
}

/// A poem endpoint answering with the Prometheus text format.
pub fn metrics_endpoint() -> impl Endpoint {
    render_metrics
}

/// Serves `/metrics`, `/healthz` (the process answers) and `/readyz` (`ready` says yes) on
/// `addr` until `shutdown` resolves.
pub async fn serve_metrics(
    addr: SocketAddr,
    ready: Readiness,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    metrics::touch_all();
    let app = Route::new()
        .at("/metrics", get(metrics_endpoint()))
        .at(
            "/healthz",
            get(make_sync(|_| {
                json_status(StatusCode::OK, r#"{"status":"ok"}"#)
            })),
        )
        .at("/readyz", get(make_sync(move |_| readyz(&ready))));
    let acceptor = TcpListener::bind(addr).into_acceptor().await?;
    if let Some(bound) = acceptor
        .local_addr()
        .first()
        .and_then(|a| a.as_socket_addr())
    {
        tracing::info!(addr = %bound, "metrics listening");
    }
    Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(app, shutdown, None)
        .await?;
    Ok(())
}
