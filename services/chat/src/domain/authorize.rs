//! Who may post to a conversation, decided from what social says.

use mesh_contracts::ErrorCode;
use time::OffsetDateTime;
use uuid::Uuid;

/// What social knows about a sender and a private conversation's other user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairFacts {
    pub friends: bool,
    pub blocked: bool,
}

/// May the sender post to a private conversation?
pub fn private(facts: PairFacts, open_private: bool) -> Result<(), ErrorCode> {
    if facts.blocked {
        Err(ErrorCode::Blocked)
    } else if facts.friends || open_private {
        Ok(())
    } else {
        Err(ErrorCode::NotFriends)
    }
}

/// What social knows about a sender in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupFacts {
    /// No such group (or it was dissolved).
    Unknown,
    NotMember,
    Member {
        muted_until: Option<OffsetDateTime>,
    },
}

/// May the sender post to a group conversation at `now`?
pub fn group(facts: GroupFacts, now: OffsetDateTime) -> Result<(), ErrorCode> {
    match facts {
        GroupFacts::Unknown => Err(ErrorCode::UnknownConversation),
        GroupFacts::NotMember => Err(ErrorCode::NotMember),
        GroupFacts::Member {
            muted_until: Some(until),
        } if until > now => Err(ErrorCode::Muted),
        GroupFacts::Member { .. } => Ok(()),
    }
}

/// May `user` recall a message sent by `sender` at `sent_at`, at `now`?
pub fn recall(
    user: Uuid,
    sender: Uuid,
    sent_at: OffsetDateTime,
    now: OffsetDateTime,
    window: std::time::Duration,
) -> Result<(), ErrorCode> {
    if user != sender {
        Err(ErrorCode::Forbidden)
    } else if now - sent_at > window {
        Err(ErrorCode::RecallWindowPassed)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn private_rules() {
        let facts = |friends, blocked| PairFacts { friends, blocked };
        assert_eq!(private(facts(true, false), false), Ok(()));
        assert_eq!(
            private(facts(false, false), false),
            Err(ErrorCode::NotFriends)
        );
        assert_eq!(private(facts(false, false), true), Ok(()));
        assert_eq!(private(facts(false, true), true), Err(ErrorCode::Blocked));
        assert_eq!(private(facts(true, true), false), Err(ErrorCode::Blocked));
    }

    #[test]
    fn group_rules() {
        let now = OffsetDateTime::now_utc();
        let later = now + Duration::from_secs(60);
        let earlier = now - Duration::from_secs(60);
        assert_eq!(
            group(GroupFacts::Unknown, now),
            Err(ErrorCode::UnknownConversation)
        );
        assert_eq!(group(GroupFacts::NotMember, now), Err(ErrorCode::NotMember));
        let member = |muted_until| GroupFacts::Member { muted_until };
        assert_eq!(group(member(None), now), Ok(()));
        assert_eq!(group(member(Some(later)), now), Err(ErrorCode::Muted));
        assert_eq!(group(member(Some(earlier)), now), Ok(()));
    }

    #[test]
    fn recall_rules() {
        let (me, other) = (Uuid::now_v7(), Uuid::now_v7());
        let now = OffsetDateTime::now_utc();
        let window = Duration::from_secs(120);
        assert_eq!(
            recall(me, me, now - Duration::from_secs(60), now, window),
            Ok(())
        );
        assert_eq!(
            recall(me, me, now - Duration::from_secs(180), now, window),
            Err(ErrorCode::RecallWindowPassed)
        );
        assert_eq!(
            recall(other, me, now, now, window),
            Err(ErrorCode::Forbidden)
        );
    }
}
