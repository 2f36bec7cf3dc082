//! Settings of the user service, built by `main` from flags and env or directly by tests.

use std::time::Duration;

pub use crate::domain::login_throttle::LoginThrottle;

/// How the user service issues tokens and treats sessions.
#[derive(Clone)]
pub struct UserConfig {
    /// Ed25519 private key (PKCS#8 PEM) that signs access tokens.
    pub jwt_private_key_pem: String,
    /// The matching public key (SPKI PEM); its hash is the token's `kid`.
    pub jwt_public_key_pem: String,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    /// Access-token lifetime.
    pub access_ttl: Duration,
    /// Idle lifetime of a session: each refresh extends it by this much.
    pub refresh_ttl: Duration,
    /// A rotated refresh token presented again within this window is a lost race between
    /// two concurrent refreshes (answered 409), not a replay (which revokes the session).
    pub refresh_reuse_grace: Duration,
    /// Phones that get the `super_admin` role when they register (bootstrapping the first
    /// administrator).
    pub bootstrap_admin_phones: Vec<String>,
    /// How many password hashes may run at once (each takes ~19 MiB and a core).
    pub hash_concurrency: usize,
    /// Delays and locks after failed sign-ins.
    pub login_throttle: LoginThrottle,
}

impl std::fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("UserConfig")
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("access_ttl", &self.access_ttl)
            .field("refresh_ttl", &self.refresh_ttl)
            .finish_non_exhaustive()
    }
}
