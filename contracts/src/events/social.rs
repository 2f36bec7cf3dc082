//! The social service's events: friend requests, friendships, blocks, groups and membership.
//! Chat projects them and turns some into notifications; social's own instances follow them to
//! invalidate their caches.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::DomainEvent;
use crate::rpc::Service;
use crate::social::{FriendRequest, Group, GroupJoinRequest, GroupRole};

/// Why a friendship ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FriendshipEnd {
    /// One of the two removed the other.
    Removed,
    /// One of the two blocked the other.
    Blocked,
}

/// An event of the social service; `type` is its name (`friend_request_created`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SocialEvent {
    /// A user asked another to be friends.
    FriendRequestCreated {
        request: FriendRequest,
    },
    /// A pending friend request was accepted, rejected or cancelled by `by`.
    FriendRequestHandled {
        request: FriendRequest,
        by: Uuid,
    },
    /// Two users became friends through request `request_id`.
    FriendshipCreated {
        user_ids: [Uuid; 2],
        request_id: Uuid,
    },
    /// `by`, one of `user_ids`, ended the friendship.
    FriendshipRemoved {
        user_ids: [Uuid; 2],
        by: Uuid,
        reason: FriendshipEnd,
    },
    /// `user_id` set (or cleared) their remark on `friend_id`.
    FriendRemarkSet {
        user_id: Uuid,
        friend_id: Uuid,
        remark: Option<String>,
    },
    UserBlocked {
        blocker_id: Uuid,
        blocked_id: Uuid,
    },
    UserUnblocked {
        blocker_id: Uuid,
        blocked_id: Uuid,
    },
    /// A group was created (its owner joins with `group_member_joined`).
    GroupCreated {
        group: Group,
    },
    /// `by` changed a group's name, icon or announcement.
    GroupUpdated {
        group: Group,
        by: Uuid,
    },
    /// `by` dissolved a group; `member_ids` were its members then.
    GroupDissolved {
        group_id: Uuid,
        member_ids: Vec<Uuid>,
        by: Uuid,
    },
    /// A pending join request: the user's own (`inviter_id` empty) or a member's invitation.
    GroupJoinRequested {
        request: GroupJoinRequest,
    },
    /// A join request was approved or rejected (`handled_by`).
    GroupJoinRequestHandled {
        request: GroupJoinRequest,
    },
    /// `user_id` joined with `role`, on their own or invited by `invited_by`.
    GroupMemberJoined {
        group_id: Uuid,
        user_id: Uuid,
        role: GroupRole,
        #[serde(default)]
        invited_by: Option<Uuid>,
    },
    GroupMemberLeft {
        group_id: Uuid,
        user_id: Uuid,
    },
    /// `by` removed `user_id`.
    GroupMemberKicked {
        group_id: Uuid,
        user_id: Uuid,
        by: Uuid,
    },
    /// The owner `by` made `user_id` a `role` (from `previous`).
    GroupMemberRoleChanged {
        group_id: Uuid,
        user_id: Uuid,
        role: GroupRole,
        previous: GroupRole,
        by: Uuid,
    },
    /// `by` muted `user_id` until `muted_until`.
    GroupMemberMuted {
        group_id: Uuid,
        user_id: Uuid,
        #[serde(with = "time::serde::rfc3339")]
        muted_until: OffsetDateTime,
        by: Uuid,
    },
    /// `by` lifted `user_id`'s mute.
    GroupMemberUnmuted {
        group_id: Uuid,
        user_id: Uuid,
        by: Uuid,
    },
    /// The owner `from` handed the group to `to` (and became an admin).
    GroupOwnershipTransferred {
        group_id: Uuid,
        from: Uuid,
        to: Uuid,
    },
    /// An event type this build does not know (written by a newer version): read, never
    /// written; consumers skip it.
    #[serde(other, skip_serializing)]
    Unknown,
}

impl DomainEvent for SocialEvent {
    const SERVICE: Service = Service::Social;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::round_trip;
    use crate::social::{FriendRequestStatus, JoinPolicy, JoinRequestStatus};

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(secs).unwrap()
    }

    fn samples() -> Vec<SocialEvent> {
        let (a, b, g) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(9));
        let request = FriendRequest {
            id: Uuid::from_u128(5),
            from_user_id: a,
            to_user_id: b,
            message: Some("hi".into()),
            status: FriendRequestStatus::Accepted,
            created_at: at(1_700_000_000),
            handled_at: Some(at(1_700_000_100)),
        };
        let group = Group {
            id: g,
            name: "g".into(),
            icon: None,
            announcement: Some("news".into()),
            join_policy: JoinPolicy::Approval,
            max_members: 10,
            member_count: 1,
            owner_id: a,
            my_role: None,
            created_at: at(1_700_000_000),
            updated_at: at(1_700_000_000),
        };
        let join = GroupJoinRequest {
            id: Uuid::from_u128(6),
            group_id: g,
            user_id: b,
            inviter_id: Some(a),
            message: None,
            status: JoinRequestStatus::Pending,
            created_at: at(1_700_000_000),
            handled_at: None,
            handled_by: None,
        };
        use SocialEvent as E;
        vec![
            E::FriendRequestCreated {
                request: request.clone(),
            },
            E::FriendRequestHandled { request, by: b },
            E::FriendshipCreated {
                user_ids: [a, b],
                request_id: Uuid::from_u128(5),
            },
            E::FriendshipRemoved {
                user_ids: [a, b],
                by: a,
                reason: FriendshipEnd::Blocked,
            },
            E::FriendRemarkSet {
                user_id: a,
                friend_id: b,
                remark: None,
            },
            E::UserBlocked {
                blocker_id: a,
                blocked_id: b,
            },
            E::UserUnblocked {
                blocker_id: a,
                blocked_id: b,
            },
            E::GroupCreated {
                group: group.clone(),
            },
            E::GroupUpdated { group, by: a },
            E::GroupDissolved {
                group_id: g,
                member_ids: vec![a, b],
                by: a,
            },
            E::GroupJoinRequested {
                request: join.clone(),
            },
            E::GroupJoinRequestHandled { request: join },
            E::GroupMemberJoined {
                group_id: g,
                user_id: b,
                role: GroupRole::Member,
                invited_by: Some(a),
            },
            E::GroupMemberLeft {
                group_id: g,
                user_id: b,
            },
            E::GroupMemberKicked {
                group_id: g,
                user_id: b,
                by: a,
            },
            E::GroupMemberRoleChanged {
                group_id: g,
                user_id: b,
                role: GroupRole::Admin,
                previous: GroupRole::Member,
                by: a,
            },
            E::GroupMemberMuted {
                group_id: g,
                user_id: b,
                muted_until: at(1_800_000_000),
                by: a,
            },
            E::GroupMemberUnmuted {
                group_id: g,
                user_id: b,
                by: a,
            },
            E::GroupOwnershipTransferred {
                group_id: g,
                from: a,
                to: b,
            },
        ]
    }

    /// A number per variant; a new variant fails to compile here until it has a sample.
    fn ordinal(event: &SocialEvent) -> usize {
        use SocialEvent as E;
        match event {
            E::FriendRequestCreated { .. } => 0,
            E::FriendRequestHandled { .. } => 1,
            E::FriendshipCreated { .. } => 2,
            E::FriendshipRemoved { .. } => 3,
            E::FriendRemarkSet { .. } => 4,
            E::UserBlocked { .. } => 5,
            E::UserUnblocked { .. } => 6,
            E::GroupCreated { .. } => 7,
            E::GroupUpdated { .. } => 8,
            E::GroupDissolved { .. } => 9,
            E::GroupJoinRequested { .. } => 10,
            E::GroupJoinRequestHandled { .. } => 11,
            E::GroupMemberJoined { .. } => 12,
            E::GroupMemberLeft { .. } => 13,
            E::GroupMemberKicked { .. } => 14,
            E::GroupMemberRoleChanged { .. } => 15,
            E::GroupMemberMuted { .. } => 16,
            E::GroupMemberUnmuted { .. } => 17,
            E::GroupOwnershipTransferred { .. } => 18,
            E::Unknown => usize::MAX,
        }
    }

    #[test]
    fn every_event_round_trips_under_a_unique_name() {
        let samples = samples();
        let ordinals: Vec<usize> = samples.iter().map(ordinal).collect();
        assert_eq!(
            ordinals,
            (0..=18).collect::<Vec<_>>(),
            "one sample per event"
        );
        let mut names = std::collections::HashSet::new();
        for event in &samples {
            let name = round_trip::check(event);
            assert!(names.insert(name.clone()), "duplicate {name}");
        }
    }

    #[test]
    fn names_and_payloads_are_the_ones_consumers_subscribe_to() {
        let g = Uuid::from_u128(9);
        let (name, payload) = crate::events::encode(&SocialEvent::GroupMemberMuted {
            group_id: g,
            user_id: g,
            muted_until: at(1_800_000_000),
            by: g,
        })
        .unwrap();
        assert_eq!(name, "group_member_muted");
        assert_eq!(payload["muted_until"], "2027-01-15T08:00:00Z");
        let (name, _) = crate::events::encode(&SocialEvent::GroupOwnershipTransferred {
            group_id: g,
            from: g,
            to: g,
        })
        .unwrap();
        assert_eq!(name, "group_ownership_transferred");
    }
}
