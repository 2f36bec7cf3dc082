//! Typing indicators of one connection: at most one per conversation every two seconds;
//! extras are dropped without an answer.

use std::time::Duration;

use tokio::time::Instant;

/// Shortest gap between two indicators for one conversation.
const INTERVAL: Duration = Duration::from_secs(2);
/// Conversations tracked at once; a client typing in more is refused until one ages out.
const TRACKED: usize = 16;

#[derive(Debug, Default)]
pub struct TypingLimiter {
    recent: Vec<(String, Instant)>,
}

impl TypingLimiter {
    /// True when an indicator for `conversation` may go out at `now` (and records it).
    pub fn allow(&mut self, conversation: &str, now: Instant) -> bool {
        self.recent
            .retain(|(_, at)| now.saturating_duration_since(*at) < INTERVAL);
        if self.recent.len() >= TRACKED || self.recent.iter().any(|(c, _)| c == conversation) {
            return false;
        }
        self.recent.push((conversation.to_owned(), now));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_indicator_per_conversation_every_two_seconds() {
        let start = Instant::now();
        let mut limiter = TypingLimiter::default();
        assert!(limiter.allow("g:1", start));
        assert!(!limiter.allow("g:1", start + Duration::from_millis(1999)));
        assert!(limiter.allow("g:2", start + Duration::from_millis(10)));
        assert!(limiter.allow("g:1", start + INTERVAL));
    }

    #[test]
    fn the_number_of_tracked_conversations_is_bounded() {
        let start = Instant::now();
        let mut limiter = TypingLimiter::default();
        for i in 0..TRACKED {
            assert!(limiter.allow(&format!("g:{i}"), start));
        }
        assert!(!limiter.allow("g:extra", start));
        assert!(limiter.allow("g:extra", start + INTERVAL));
    }
}
