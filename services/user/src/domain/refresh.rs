//! What presenting a refresh token means, given what is known about it (RFC 9700 rotation
//! with reuse detection).

use std::time::Duration;

use time::OffsetDateTime;

/// What the store knows about a presented refresh token and its session.
#[derive(Debug, Clone, Copy)]
pub struct TokenState {
    /// When the token was rotated (replaced), or `None` while it is the current one.
    pub rotated_at: Option<OffsetDateTime>,
    pub session_revoked: bool,
    pub session_expires_at: OffsetDateTime,
    pub account_disabled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshDecision {
    /// Issue a new pair and retire this token.
    Rotate,
    /// The session is over (revoked or expired): refuse.
    SessionEnded,
    /// The account is disabled: refuse.
    Disabled,
    /// The token was rotated a moment ago by a concurrent request: refuse, keep the session.
    LostRace,
    /// A rotated token came back: it leaked. Revoke the whole session.
    Reuse,
}

pub fn decide(state: TokenState, now: OffsetDateTime, grace: Duration) -> RefreshDecision {
    if state.session_revoked || state.session_expires_at <= now {
        return RefreshDecision::SessionEnded;
    }
    if state.account_disabled {
        return RefreshDecision::Disabled;
    }
    match state.rotated_at {
        None => RefreshDecision::Rotate,
        Some(rotated) if now - rotated < grace => RefreshDecision::LostRace,
        Some(_) => RefreshDecision::Reuse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(rotated_ago: Option<i64>) -> (TokenState, OffsetDateTime) {
        let now = OffsetDateTime::now_utc();
        let state = TokenState {
            rotated_at: rotated_ago.map(|s| now - time::Duration::seconds(s)),
            session_revoked: false,
            session_expires_at: now + time::Duration::days(1),
            account_disabled: false,
        };
        (state, now)
    }

    #[test]
    fn current_token_rotates() {
        let (s, now) = state(None);
        assert_eq!(
            decide(s, now, Duration::from_secs(2)),
            RefreshDecision::Rotate
        );
    }

    #[test]
    fn rotated_token_is_a_race_within_grace_and_reuse_after() {
        let (s, now) = state(Some(1));
        assert_eq!(
            decide(s, now, Duration::from_secs(2)),
            RefreshDecision::LostRace
        );
        let (s, now) = state(Some(3));
        assert_eq!(
            decide(s, now, Duration::from_secs(2)),
            RefreshDecision::Reuse
        );
        let (s, now) = state(Some(0));
        assert_eq!(decide(s, now, Duration::ZERO), RefreshDecision::Reuse);
    }

    #[test]
    fn ended_sessions_and_disabled_accounts_refuse() {
        let (mut s, now) = state(None);
        s.session_revoked = true;
        assert_eq!(
            decide(s, now, Duration::ZERO),
            RefreshDecision::SessionEnded
        );
        let (mut s, now) = state(None);
        s.session_expires_at = now;
        assert_eq!(
            decide(s, now, Duration::ZERO),
            RefreshDecision::SessionEnded
        );
        let (mut s, now) = state(None);
        s.account_disabled = true;
        assert_eq!(decide(s, now, Duration::ZERO), RefreshDecision::Disabled);
    }
}
