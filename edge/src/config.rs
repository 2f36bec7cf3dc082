//! Settings of the edge, built by `main` from flags and env or directly by tests.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct EdgeConfig {
    /// Ed25519 public key (SPKI PEM) that verifies access tokens.
    pub jwt_public_key_pem: String,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    /// Access-token lifetime: how long a revoked session must be remembered.
    pub access_ttl: Duration,
    /// Deadline of every RPC the edge makes.
    pub rpc_timeout: Duration,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// The URL clients use to reach this edge, advertised in the OpenAPI document.
    pub public_url: String,
}
