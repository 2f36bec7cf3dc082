//! Realtime delivery: WebSocket (`/v1/ws`) and SSE (`/v1/events`) connections, and the hub
//! that holds them and forwards what chat pushes to each connected user.
//!
//! Per user on this edge there is one NATS push subscription and one forwarder task, however
//! many devices the user has connected; per connection there is one task (WebSocket) or one
//! response stream (SSE) and a bounded queue. Pushes to many users at once (a group's
//! messages) arrive on the edge's one `push.many` subscription (`many.rs`).

mod close;
mod forwarder;
mod frames;
mod hub;
mod kick;
pub mod many;
mod presence;
mod push_queue;
mod sse;
mod ws;

pub use hub::{Hub, HubSettings};

/// `GET /asyncapi.json`: the realtime protocol, generated from the frame types in `contracts`.
#[poem::handler]
pub fn asyncapi() -> poem::web::Json<&'static serde_json::Value> {
    static DOCUMENT: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    poem::web::Json(DOCUMENT.get_or_init(|| {
        mesh_contracts::asyncapi::document(
            env!("CARGO_PKG_VERSION"),
            &close::CloseReason::documented(),
        )
    }))
}
pub use presence::PresenceDeps;
pub use sse::events;
pub use ws::websocket;

/// How a connection reaches the client (the `transport` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    Sse,
}

impl Transport {
    pub fn label(self) -> &'static str {
        match self {
            Transport::WebSocket => "ws",
            Transport::Sse => "sse",
        }
    }
}
