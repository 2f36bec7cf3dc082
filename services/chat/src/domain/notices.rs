//! Which `notification` frames a social event causes, and for whom. Pure: a group's managers
//! are named by the group and resolved (asked of social) when the event is pushed.

use mesh_contracts::chat::{GroupInvitation, Notification};
use mesh_contracts::events::SocialEvent;
use mesh_contracts::social::{FriendRequestStatus, JoinRequestStatus};
use uuid::Uuid;

/// Who receives a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    Users(Vec<Uuid>),
    /// The group's owner and admins when the event is handled, but not `except` (a manager
    /// who caused the event already knows).
    Managers {
        group_id: Uuid,
        except: Option<Uuid>,
    },
}

/// One notification and who receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub to: Audience,
    pub notification: Notification,
}

fn to(users: Vec<Uuid>, notification: Notification) -> Notice {
    Notice {
        to: Audience::Users(users),
        notification,
    }
}

/// The notifications `event` causes; none for most events.
pub fn notices(event: SocialEvent) -> Vec<Notice> {
    use Notification as N;
    match event {
        SocialEvent::FriendRequestCreated { request } => {
            vec![to(
                vec![request.to_user_id],
                N::FriendRequestReceived { request },
            )]
        }
        SocialEvent::FriendRequestHandled { request, .. } => {
            let sender = vec![request.from_user_id];
            match request.status {
                FriendRequestStatus::Accepted => {
                    vec![to(sender, N::FriendRequestAccepted { request })]
                }
                FriendRequestStatus::Rejected => {
                    vec![to(sender, N::FriendRequestRejected { request })]
                }
                FriendRequestStatus::Pending | FriendRequestStatus::Cancelled => vec![],
            }
        }
        SocialEvent::FriendshipRemoved { user_ids, by, .. } => {
            let others = user_ids.into_iter().filter(|u| *u != by).collect();
            vec![to(others, N::Unfriended { user_id: by })]
        }
        SocialEvent::GroupJoinRequested { request } => {
            let mut notices = Vec::with_capacity(2);
            if request.inviter_id.is_some() {
                notices.push(to(
                    vec![request.user_id],
                    N::GroupInvitation(GroupInvitation::Pending {
                        request: request.clone(),
                    }),
                ));
            }
            notices.push(Notice {
                to: Audience::Managers {
                    group_id: request.group_id,
                    except: request.inviter_id,
                },
                notification: N::JoinRequestReceived { request },
            });
            notices
        }
        SocialEvent::GroupMemberJoined {
            group_id,
            user_id,
            invited_by: Some(invited_by),
            ..
        } => vec![to(
            vec![user_id],
            N::GroupInvitation(GroupInvitation::Joined {
                group_id,
                invited_by,
                joined: true,
            }),
        )],
        SocialEvent::GroupJoinRequestHandled { request } if request.inviter_id.is_none() => {
            let user = vec![request.user_id];
            match request.status {
                JoinRequestStatus::Approved => vec![to(user, N::JoinRequestApproved { request })],
                JoinRequestStatus::Rejected => vec![to(user, N::JoinRequestRejected { request })],
                JoinRequestStatus::Pending => vec![],
            }
        }
        SocialEvent::GroupMemberKicked {
            group_id, user_id, ..
        } => vec![to(vec![user_id], N::Kicked { group_id })],
        SocialEvent::GroupDissolved {
            group_id,
            member_ids,
            ..
        } => vec![to(member_ids, N::GroupDissolved { group_id })],
        SocialEvent::GroupMemberRoleChanged {
            group_id,
            user_id,
            role,
            ..
        } => vec![to(vec![user_id], N::RoleChanged { group_id, role })],
        SocialEvent::GroupMemberMuted {
            group_id,
            user_id,
            muted_until,
            ..
        } => vec![to(
            vec![user_id],
            N::Muted {
                group_id,
                muted_until,
            },
        )],
        SocialEvent::GroupMemberUnmuted {
            group_id, user_id, ..
        } => vec![to(vec![user_id], N::Unmuted { group_id })],
        SocialEvent::GroupOwnershipTransferred {
            group_id,
            from,
            to: new,
        } => {
            vec![to(
                vec![new, from],
                N::OwnershipTransferred {
                    group_id,
                    from,
                    to: new,
                },
            )]
        }
        SocialEvent::GroupMemberJoined { .. }
        | SocialEvent::GroupJoinRequestHandled { .. }
        | SocialEvent::FriendshipCreated { .. }
        | SocialEvent::FriendRemarkSet { .. }
        | SocialEvent::UserBlocked { .. }
        | SocialEvent::UserUnblocked { .. }
        | SocialEvent::GroupCreated { .. }
        | SocialEvent::GroupUpdated { .. }
        | SocialEvent::GroupMemberLeft { .. }
        | SocialEvent::Unknown => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_contracts::events::FriendshipEnd;
    use mesh_contracts::social::{FriendRequest, GroupJoinRequest, GroupRole};
    use time::OffsetDateTime;

    const A: Uuid = Uuid::from_u128(1);
    const B: Uuid = Uuid::from_u128(2);
    const G: Uuid = Uuid::from_u128(9);

    fn friend_request(status: FriendRequestStatus) -> FriendRequest {
        FriendRequest {
            id: Uuid::now_v7(),
            from_user_id: A,
            to_user_id: B,
            message: None,
            status,
            created_at: OffsetDateTime::now_utc(),
            handled_at: None,
        }
    }

    fn join_request(inviter: Option<Uuid>, status: JoinRequestStatus) -> GroupJoinRequest {
        GroupJoinRequest {
            id: Uuid::now_v7(),
            group_id: G,
            user_id: B,
            inviter_id: inviter,
            message: None,
            status,
            created_at: OffsetDateTime::now_utc(),
            handled_at: None,
            handled_by: None,
        }
    }

    /// (audience, kind) of each notice.
    fn summary(event: SocialEvent) -> Vec<(Audience, String)> {
        notices(event)
            .into_iter()
            .map(|n| {
                let json = serde_json::to_value(&n.notification).unwrap();
                (n.to, json["kind"].as_str().unwrap().to_owned())
            })
            .collect()
    }

    fn users(ids: &[Uuid], kind: &str) -> (Audience, String) {
        (Audience::Users(ids.to_vec()), kind.to_owned())
    }

    #[test]
    fn friend_requests_notify_the_other_side() {
        let handled = |status| SocialEvent::FriendRequestHandled {
            request: friend_request(status),
            by: B,
        };
        assert_eq!(
            summary(SocialEvent::FriendRequestCreated {
                request: friend_request(FriendRequestStatus::Pending),
            }),
            [users(&[B], "friend_request_received")]
        );
        assert_eq!(
            summary(handled(FriendRequestStatus::Accepted)),
            [users(&[A], "friend_request_accepted")]
        );
        assert_eq!(
            summary(handled(FriendRequestStatus::Rejected)),
            [users(&[A], "friend_request_rejected")]
        );
        assert!(summary(handled(FriendRequestStatus::Cancelled)).is_empty());
    }

    #[test]
    fn an_unfriended_user_learns_who_removed_them() {
        for (user_ids, reason) in [
            ([A, B], FriendshipEnd::Removed),
            ([B, A], FriendshipEnd::Blocked),
        ] {
            let notices = notices(SocialEvent::FriendshipRemoved {
                user_ids,
                by: A,
                reason,
            });
            assert_eq!(
                notices,
                [Notice {
                    to: Audience::Users(vec![B]),
                    notification: Notification::Unfriended { user_id: A },
                }]
            );
        }
    }

    #[test]
    fn join_requests_reach_the_managers_and_invitations_the_invitee() {
        let managers = |except| Audience::Managers {
            group_id: G,
            except,
        };
        assert_eq!(
            summary(SocialEvent::GroupJoinRequested {
                request: join_request(None, JoinRequestStatus::Pending),
            }),
            [(managers(None), "join_request_received".to_owned())]
        );
        assert_eq!(
            summary(SocialEvent::GroupJoinRequested {
                request: join_request(Some(A), JoinRequestStatus::Pending),
            }),
            [
                users(&[B], "group_invitation"),
                (managers(Some(A)), "join_request_received".to_owned())
            ]
        );
        let handled = |inviter, status| SocialEvent::GroupJoinRequestHandled {
            request: join_request(inviter, status),
        };
        assert_eq!(
            summary(handled(None, JoinRequestStatus::Rejected)),
            [users(&[B], "join_request_rejected")]
        );
        assert!(summary(handled(Some(A), JoinRequestStatus::Approved)).is_empty());
    }

    #[test]
    fn member_changes_notify_the_member() {
        let g = G;
        assert_eq!(
            summary(SocialEvent::GroupMemberRoleChanged {
                group_id: g,
                user_id: B,
                role: GroupRole::Admin,
                previous: GroupRole::Member,
                by: A,
            }),
            [users(&[B], "role_changed")]
        );
        assert_eq!(
            summary(SocialEvent::GroupMemberMuted {
                group_id: g,
                user_id: B,
                muted_until: OffsetDateTime::now_utc(),
                by: A,
            }),
            [users(&[B], "muted")]
        );
        assert_eq!(
            summary(SocialEvent::GroupMemberUnmuted {
                group_id: g,
                user_id: B,
                by: A,
            }),
            [users(&[B], "unmuted")]
        );
        assert_eq!(
            summary(SocialEvent::GroupOwnershipTransferred {
                group_id: g,
                from: A,
                to: B,
            }),
            [users(&[B, A], "ownership_transferred")]
        );
        assert_eq!(
            summary(SocialEvent::GroupMemberKicked {
                group_id: g,
                user_id: B,
                by: A,
            }),
            [users(&[B], "kicked")]
        );
        assert_eq!(
            summary(SocialEvent::GroupDissolved {
                group_id: g,
                member_ids: vec![A, B],
                by: A,
            }),
            [users(&[A, B], "group_dissolved")]
        );
        assert!(
            summary(SocialEvent::GroupMemberLeft {
                group_id: g,
                user_id: B
            })
            .is_empty()
        );
        assert!(summary(SocialEvent::Unknown).is_empty());
    }
}
