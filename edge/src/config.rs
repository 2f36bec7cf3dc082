//! Settings of the edge, built by `main` from flags and env or directly by tests.

use std::time::Duration;

pub use crate::client_ip::{Cidr, ForwardedHeader};
pub use crate::console::ConsoleConfig;
pub use crate::idempotency::IdempotencySettings;
pub use crate::rate_limit::{Quota, RateLimitConfig};

#[derive(Clone, Debug)]
pub struct EdgeConfig {
    /// Ed25519 public key (SPKI PEM) that verifies access tokens.
    pub jwt_public_key_pem: String,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    /// Access-token lifetime; revocations are remembered for `revocation_ttl(access_ttl)`.
    pub access_ttl: Duration,
    /// Deadline of every RPC the edge makes.
    pub rpc_timeout: Duration,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// The URL clients use to reach this edge, advertised in the OpenAPI document.
    pub public_url: String,
    /// Chat ingest partitions (must match the chat workers').
    pub chat_partitions: u32,
    /// Most messages of one partition accepted but not stored before new ones are refused
    /// `overloaded` (0: no bound).
    pub chat_max_unstored: u64,
    /// Least time between the starts of two publishes of one ingest partition: what is
    /// accepted meanwhile goes out together.
    pub chat_ingest_spacing: Duration,
    /// WebSocket and SSE limits.
    pub ws: WsConfig,
    /// Idempotency, client addresses, rate limits, CORS.
    pub guard: GuardConfig,
    /// The web console's path and build directory; `None` serves no console.
    pub console: Option<ConsoleConfig>,
}

/// Limits and timers of realtime connections.
#[derive(Clone, Debug)]
pub struct WsConfig {
    /// Origins allowed to open a WebSocket; `*` allows any. No `Origin` header is always allowed.
    pub allowed_origins: Vec<String>,
    /// Server ping (WebSocket) or keep-alive (SSE) interval; presence is refreshed as often.
    pub heartbeat: Duration,
    /// A WebSocket silent for this long is closed.
    pub idle_timeout: Duration,
    /// Frames queued per connection before a slow client is disconnected.
    pub send_queue: usize,
    /// Largest client frame, in bytes.
    pub max_frame_bytes: usize,
}

/// The edge's defences (issue #13): idempotency keys, client addresses, rate limits, CORS and
/// header hygiene.
#[derive(Clone, Debug)]
pub struct GuardConfig {
    /// How idempotent responses are kept.
    pub idempotency: IdempotencySettings,
    /// Peers whose forwarding header is believed.
    pub trusted_proxies: Vec<Cidr>,
    /// The forwarding header those proxies write (the other one is ignored).
    pub forwarded_header: ForwardedHeader,
    /// Request, frame and connection limits.
    pub limits: RateLimitConfig,
    /// Origins whose pages may call the API (CORS); `*` allows any.
    pub cors_allowed_origins: Vec<String>,
    /// Largest total size of a request's headers (431 above it).
    pub max_header_bytes: usize,
    /// Authenticated answers say `X-Token-Refresh-Required: true` when the access token has
    /// less than this left.
    pub token_refresh_hint: Duration,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            idempotency: IdempotencySettings {
                ttl: Duration::from_secs(24 * 3600),
                lease: Duration::from_secs(30),
            },
            trusted_proxies: Vec::new(),
            forwarded_header: ForwardedHeader::default(),
            limits: RateLimitConfig::default(),
            cors_allowed_origins: Vec::new(),
            max_header_bytes: 16 * 1024,
            token_refresh_hint: Duration::from_secs(60),
        }
    }
}
