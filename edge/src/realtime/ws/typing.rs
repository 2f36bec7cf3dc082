//! Typing indicators of one user on this edge, whichever of their sockets sends them: at most
//! one per conversation every two seconds; extras are dropped without an answer. The limiter
//! lives in the user's slot in the hub (`hub.rs`), so more sockets do not mean more
//! indicators, and it is keyed by the conversation itself, not by how the client spelled it
//! (a group id has several spellings: upper case, without hyphens, braced, `urn:uuid:`).

use std::time::Duration;

use mesh_contracts::chat::ConversationId;
use tokio::time::Instant;

/// Shortest gap between two indicators for one conversation.
const INTERVAL: Duration = Duration::from_secs(2);
/// Conversations tracked at once; a user typing in more is refused until one ages out.
const TRACKED: usize = 16;

#[derive(Debug, Default)]
pub struct TypingLimiter {
    recent: Vec<(ConversationId, Instant)>,
}

impl TypingLimiter {
    /// True when an indicator for `conversation` may go out at `now` (and records it).
    pub fn allow(&mut self, conversation: ConversationId, now: Instant) -> bool {
        self.recent
            .retain(|(_, at)| now.saturating_duration_since(*at) < INTERVAL);
        if self.recent.len() >= TRACKED || self.recent.iter().any(|(c, _)| *c == conversation) {
            return false;
        }
        self.recent.push((conversation, now));
        true
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn group(n: u128) -> ConversationId {
        ConversationId::Group(Uuid::from_u128(n))
    }

    #[test]
    fn one_indicator_per_conversation_every_two_seconds() {
        let start = Instant::now();
        let mut limiter = TypingLimiter::default();
        assert!(limiter.allow(group(1), start));
        assert!(!limiter.allow(group(1), start + Duration::from_millis(1999)));
        assert!(limiter.allow(group(2), start + Duration::from_millis(10)));
        assert!(limiter.allow(group(1), start + INTERVAL));
    }

    /// Every spelling the contracts accept for one group is that one group.
    #[test]
    fn spellings_of_one_conversation_share_its_allowance() {
        let id = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let start = Instant::now();
        let mut limiter = TypingLimiter::default();
        let spellings = [
            format!("g:{id}"),
            format!("g:{}", id.to_string().to_uppercase()),
            format!("g:{}", id.simple()),
            format!("g:{}", id.braced()),
            format!("g:{}", id.urn()),
        ];
        let mut allowed = 0;
        for spelling in &spellings {
            let conversation = ConversationId::parse(spelling).expect("a group id");
            allowed += usize::from(limiter.allow(conversation, start));
        }
        assert_eq!(allowed, 1);
    }

    #[test]
    fn the_number_of_tracked_conversations_is_bounded() {
        let start = Instant::now();
        let mut limiter = TypingLimiter::default();
        for i in 0..TRACKED {
            assert!(limiter.allow(group(i as u128), start));
        }
        assert!(!limiter.allow(group(1000), start));
        assert!(limiter.allow(group(1000), start + INTERVAL));
    }
}
