//! Who may read, who may post to a conversation and who receives, decided from what social
//! says.

use std::sync::Arc;

use mesh_contracts::ErrorCode;
use mesh_contracts::social::Roster;
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

/// Who takes part in a conversation, as social answered once for one request. Every decision
/// the request makes (may the caller read, may they post to a group, who receives its frame) is
/// derived from this one answer, so a request asks social for a group's roster at most once (a
/// 5,000-member roster is some 430 KB of JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parties {
    /// The two users of a private conversation (nothing to ask social).
    Private(Uuid, Uuid),
    /// A group's roster as social answered it (`exists` false for an unknown or dissolved
    /// group).
    Group(Roster),
}

impl Parties {
    /// What the roster says of `user` in a group; `None` for a private conversation.
    pub fn group_facts(&self, user: Uuid) -> Option<GroupFacts> {
        let Parties::Group(roster) = self else {
            return None;
        };
        if !roster.exists {
            return Some(GroupFacts::Unknown);
        }
        Some(match roster.members.iter().find(|m| m.user_id == user) {
            Some(member) => GroupFacts::Member {
                muted_until: member.muted_until,
            },
            None => GroupFacts::NotMember,
        })
    }

    /// May `user` read the conversation (history, read state, settings, typing) as a current
    /// party? A party of a private conversation always may; a group needs membership (a muted
    /// member still reads).
    pub fn may_read(&self, user: Uuid) -> bool {
        match self {
            Parties::Private(a, b) => *a == user || *b == user,
            Parties::Group(_) => matches!(self.group_facts(user), Some(GroupFacts::Member { .. })),
        }
    }

    /// The other user of a private conversation, seen from `user`; `None` in a group or for a
    /// user who is not a party.
    pub fn peer_of(&self, user: Uuid) -> Option<Uuid> {
        match *self {
            Parties::Private(a, b) if a == user => Some(b),
            Parties::Private(a, b) if b == user => Some(a),
            _ => None,
        }
    }

    /// Everyone who receives what is posted: both users of a private conversation, every
    /// member of a group's roster.
    pub fn audience(&self) -> Arc<[Uuid]> {
        match self {
            Parties::Private(a, b) => Arc::from([*a, *b]),
            Parties::Group(roster) => roster.members.iter().map(|m| m.user_id).collect(),
        }
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
    fn a_groups_rights_and_audience_come_from_its_one_roster() {
        use mesh_contracts::social::{GroupRole, RosterEntry};
        let now = OffsetDateTime::now_utc();
        let (owner, muted, outsider) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let entry = |user_id, muted_until| RosterEntry {
            user_id,
            role: GroupRole::Member,
            muted_until,
        };
        let parties = Parties::Group(Roster {
            exists: true,
            members: vec![
                entry(owner, None),
                entry(muted, Some(now + Duration::from_secs(60))),
            ],
        });
        // Members read, a muted one too; someone kicked (no longer on the roster) does not.
        assert!(parties.may_read(owner));
        assert!(parties.may_read(muted));
        assert!(!parties.may_read(outsider));
        // Posting: the muted member and the outsider are refused, each with their reason.
        let verdict = |user| group(parties.group_facts(user).unwrap(), now);
        assert_eq!(verdict(owner), Ok(()));
        assert_eq!(verdict(muted), Err(ErrorCode::Muted));
        assert_eq!(verdict(outsider), Err(ErrorCode::NotMember));
        assert_eq!(&*parties.audience(), &[owner, muted]);
        assert_eq!(parties.peer_of(owner), None);

        // A dissolved group: nobody reads or posts, nobody receives.
        let gone = Parties::Group(Roster {
            exists: false,
            members: Vec::new(),
        });
        assert!(!gone.may_read(owner));
        assert_eq!(gone.group_facts(owner), Some(GroupFacts::Unknown));
        assert!(gone.audience().is_empty());
    }

    #[test]
    fn a_private_conversations_parties_are_its_two_users() {
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let parties = Parties::Private(a, b);
        assert!(parties.may_read(a) && parties.may_read(b));
        assert!(!parties.may_read(c));
        assert_eq!((parties.peer_of(a), parties.peer_of(b)), (Some(b), Some(a)));
        assert_eq!(parties.peer_of(c), None);
        assert_eq!(parties.group_facts(a), None);
        assert_eq!(&*parties.audience(), &[a, b]);
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
