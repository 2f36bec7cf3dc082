//! The `/metrics` endpoint, mounted by the edge and served on its own port by other roles.

use std::future::Future;
use std::net::SocketAddr;

use poem::listener::TcpListener;
use poem::{Endpoint, IntoResponse, Route, Server, handler};

use crate::metrics;

#[handler]
fn render_metrics() -> impl IntoResponse {
    metrics::render().with_content_type("text/plain; version=0.0.4; charset=utf-8")
}

/// A poem endpoint answering with the Prometheus text format.
pub fn metrics_endpoint() -> impl Endpoint {
    render_metrics
}

/// Serves `/metrics` on `addr` until `shutdown` resolves.
pub async fn serve_metrics(
    addr: SocketAddr,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    metrics::touch_all();
    let app = Route::new().at("/metrics", metrics_endpoint());
    Server::new(TcpListener::bind(addr))
        .run_with_graceful_shutdown(app, shutdown, None)
        .await?;
    Ok(())
}
