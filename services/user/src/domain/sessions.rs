//! How many sessions (signed-in devices) an account keeps, and which ended ones still need a
//! revocation. One account signing in thousands of times would otherwise grow a device list
//! larger than a NATS message can carry, and make "log out everywhere" publish a revocation per
//! session it ever opened.

use std::time::Duration;

use time::OffsetDateTime;

/// Active sessions an account keeps. A sign-in past it ends the least recently used ones
/// (revoked like a logout), and the device list never shows more: 100 sessions are about
/// 60 KB of reply at most, far below NATS's 1 MB message size.
pub const MAX_SESSIONS_PER_USER: usize = 100;

/// Sessions that expired before this instant need no revocation when they are ended: every
/// access token of a session is issued by a sign-in or refresh that also moved the session's
/// expiry past it, so none outlives the session's `expires_at` by more than `access_ttl`.
pub fn revocable_after(now: OffsetDateTime, access_ttl: Duration) -> OffsetDateTime {
    now - access_ttl
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expired_longer_than_a_token_lives_need_no_revocation() {
        let now = OffsetDateTime::now_utc();
        let cutoff = revocable_after(now, Duration::from_secs(900));
        assert_eq!(now - cutoff, time::Duration::seconds(900));
    }
}
