//! Settings of the social service, built by `main` from flags and env or directly by tests.

use std::time::Duration;

/// How the social service calls other services and caches hot reads.
#[derive(Debug, Clone)]
pub struct SocialConfig {
    /// Deadline of calls to other services (the user service, to check that a user exists).
    pub rpc_timeout: Duration,
    /// Bound of each cache, in user ids held (a friend set or member list of n users weighs
    /// n + 1), so one huge group cannot crowd out memory.
    pub cache_capacity: u64,
    /// How long a cached entry may be used. Writes invalidate this instance's entries at once;
    /// the lifetime bounds how stale another instance's copy can be.
    pub cache_ttl: Duration,
}

impl SocialConfig {
    /// Defaults for everything but the RPC deadline.
    pub fn new(rpc_timeout: Duration) -> Self {
        Self {
            rpc_timeout,
            cache_capacity: 1_000_000,
            cache_ttl: Duration::from_secs(30),
        }
    }
}
