//! Domain events as they travel on `<prefix>.evt.<service>.<event>`: one envelope, versioned,
//! around the event's own payload, and the typed payloads consumers read.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::social::{FriendRequest, GroupJoinRequest as JoinRequest, GroupRole};

/// The version of the envelope and payload shapes below.
pub const EVENT_VERSION: u32 = 1;

/// What the outbox relay publishes for each outbox row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// The outbox row id; also the `Nats-Msg-Id`, and what consumers remember.
    pub id: Uuid,
    pub service: String,
    pub event_type: String,
    pub version: u32,
    /// The entity the event is about (a user, a group, a request).
    pub aggregate: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    pub payload: serde_json::Value,
}

/// The social events chat and the caches act on. Others (`friend_remark_set`, `group_created`,
/// `group_updated`) are read as `Other`.
#[derive(Debug, Clone)]
pub enum SocialEvent {
    FriendRequestCreated {
        request: FriendRequest,
    },
    FriendRequestHandled {
        request: FriendRequest,
    },
    FriendshipCreated {
        user_id: Uuid,
        friend_id: Uuid,
    },
    FriendshipRemoved {
        user_ids: [Uuid; 2],
    },
    UserBlocked {
        blocker_id: Uuid,
        blocked_id: Uuid,
    },
    UserUnblocked {
        blocker_id: Uuid,
        blocked_id: Uuid,
    },
    GroupDissolved {
        group_id: Uuid,
        member_ids: Vec<Uuid>,
    },
    JoinRequested {
        request: JoinRequest,
    },
    JoinRequestHandled {
        request: JoinRequest,
    },
    MemberJoined {
        group_id: Uuid,
        user_id: Uuid,
        role: GroupRole,
        invited_by: Option<Uuid>,
    },
    MemberLeft {
        group_id: Uuid,
        user_id: Uuid,
    },
    MemberKicked {
        group_id: Uuid,
        user_id: Uuid,
    },
    MemberRoleChanged {
        group_id: Uuid,
        user_id: Uuid,
        role: GroupRole,
    },
    MemberMuted {
        group_id: Uuid,
        user_id: Uuid,
        muted_until: Option<OffsetDateTime>,
    },
    OwnershipTransferred {
        group_id: Uuid,
        from: Uuid,
        to: Uuid,
    },
    Other,
}

#[derive(Deserialize)]
struct Request<T> {
    request: T,
}
#[derive(Deserialize)]
struct Pair {
    user_ids: [Uuid; 2],
}
#[derive(Deserialize)]
struct BlockPair {
    blocker_id: Uuid,
    blocked_id: Uuid,
}
#[derive(Deserialize)]
struct Dissolved {
    group_id: Uuid,
    member_ids: Vec<Uuid>,
}
#[derive(Deserialize)]
struct Joined {
    group_id: Uuid,
    user_id: Uuid,
    role: GroupRole,
    #[serde(default)]
    invited_by: Option<Uuid>,
}
#[derive(Deserialize)]
struct Member {
    group_id: Uuid,
    user_id: Uuid,
}
#[derive(Deserialize)]
struct RoleChanged {
    group_id: Uuid,
    user_id: Uuid,
    role: GroupRole,
}
#[derive(Deserialize)]
struct Muted {
    group_id: Uuid,
    user_id: Uuid,
    #[serde(default, with = "time::serde::rfc3339::option")]
    muted_until: Option<OffsetDateTime>,
}
#[derive(Deserialize)]
struct Transferred {
    group_id: Uuid,
    from: Uuid,
    to: Uuid,
}

impl SocialEvent {
    /// Reads a social event; `Err` for a known type whose payload does not fit (a poison event).
    pub fn parse(envelope: &EventEnvelope) -> Result<Self, serde_json::Error> {
        use crate::social::events as e;
        let p = envelope.payload.clone();
        Ok(match envelope.event_type.as_str() {
            e::FRIEND_REQUEST_CREATED => Self::FriendRequestCreated {
                request: serde_json::from_value::<Request<FriendRequest>>(p)?.request,
            },
            e::FRIEND_REQUEST_HANDLED => Self::FriendRequestHandled {
                request: serde_json::from_value::<Request<FriendRequest>>(p)?.request,
            },
            e::FRIENDSHIP_CREATED => {
                let [user_id, friend_id] = serde_json::from_value::<Pair>(p)?.user_ids;
                Self::FriendshipCreated { user_id, friend_id }
            }
            e::FRIENDSHIP_REMOVED => Self::FriendshipRemoved {
                user_ids: serde_json::from_value::<Pair>(p)?.user_ids,
            },
            e::USER_BLOCKED | e::USER_UNBLOCKED => {
                let b: BlockPair = serde_json::from_value(p)?;
                if envelope.event_type == e::USER_BLOCKED {
                    Self::UserBlocked {
                        blocker_id: b.blocker_id,
                        blocked_id: b.blocked_id,
                    }
                } else {
                    Self::UserUnblocked {
                        blocker_id: b.blocker_id,
                        blocked_id: b.blocked_id,
                    }
                }
            }
            e::GROUP_DISSOLVED => {
                let d: Dissolved = serde_json::from_value(p)?;
                Self::GroupDissolved {
                    group_id: d.group_id,
                    member_ids: d.member_ids,
                }
            }
            e::GROUP_JOIN_REQUESTED => Self::JoinRequested {
                request: serde_json::from_value::<Request<JoinRequest>>(p)?.request,
            },
            e::GROUP_JOIN_REQUEST_HANDLED => Self::JoinRequestHandled {
                request: serde_json::from_value::<Request<JoinRequest>>(p)?.request,
            },
            e::MEMBER_JOINED => {
                let j: Joined = serde_json::from_value(p)?;
                Self::MemberJoined {
                    group_id: j.group_id,
                    user_id: j.user_id,
                    role: j.role,
                    invited_by: j.invited_by,
                }
            }
            e::MEMBER_LEFT | e::MEMBER_KICKED => {
                let m: Member = serde_json::from_value(p)?;
                if envelope.event_type == e::MEMBER_LEFT {
                    Self::MemberLeft {
                        group_id: m.group_id,
                        user_id: m.user_id,
                    }
                } else {
                    Self::MemberKicked {
                        group_id: m.group_id,
                        user_id: m.user_id,
                    }
                }
            }
            e::MEMBER_ROLE_CHANGED => {
                let r: RoleChanged = serde_json::from_value(p)?;
                Self::MemberRoleChanged {
                    group_id: r.group_id,
                    user_id: r.user_id,
                    role: r.role,
                }
            }
            e::MEMBER_MUTED | e::MEMBER_UNMUTED => {
                let m: Muted = serde_json::from_value(p)?;
                Self::MemberMuted {
                    group_id: m.group_id,
                    user_id: m.user_id,
                    muted_until: m.muted_until,
                }
            }
            e::OWNERSHIP_TRANSFERRED => {
                let t: Transferred = serde_json::from_value(p)?;
                Self::OwnershipTransferred {
                    group_id: t.group_id,
                    from: t.from,
                    to: t.to,
                }
            }
            _ => Self::Other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn envelope(event_type: &str, payload: serde_json::Value) -> EventEnvelope {
        EventEnvelope {
            id: Uuid::now_v7(),
            service: "social".into(),
            event_type: event_type.into(),
            version: EVENT_VERSION,
            aggregate: Uuid::now_v7(),
            occurred_at: OffsetDateTime::now_utc(),
            payload,
        }
    }

    #[test]
    fn payloads_as_social_writes_them_parse() {
        let (a, b, g) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let created = envelope(
            "friendship_created",
            json!({ "user_ids": [a, b], "request_id": g }),
        );
        assert!(matches!(
            SocialEvent::parse(&created).unwrap(),
            SocialEvent::FriendshipCreated { user_id, friend_id } if user_id == a && friend_id == b
        ));
        let muted = envelope(
            "group_member_muted",
            json!({ "group_id": g, "user_id": a, "muted_until": "2030-01-01T00:00:00Z", "by": b }),
        );
        assert!(matches!(
            SocialEvent::parse(&muted).unwrap(),
            SocialEvent::MemberMuted {
                muted_until: Some(_),
                ..
            }
        ));
        let unmuted = envelope(
            "group_member_unmuted",
            json!({ "group_id": g, "user_id": a, "muted_until": null, "by": b }),
        );
        assert!(matches!(
            SocialEvent::parse(&unmuted).unwrap(),
            SocialEvent::MemberMuted {
                muted_until: None,
                ..
            }
        ));
        let joined = envelope(
            "group_member_joined",
            json!({ "group_id": g, "user_id": a, "role": "member", "invited_by": null }),
        );
        assert!(matches!(
            SocialEvent::parse(&joined).unwrap(),
            SocialEvent::MemberJoined {
                invited_by: None,
                ..
            }
        ));
        assert!(matches!(
            SocialEvent::parse(&envelope("group_updated", json!({}))).unwrap(),
            SocialEvent::Other
        ));
    }

    #[test]
    fn a_known_event_with_a_foreign_payload_is_an_error() {
        assert!(SocialEvent::parse(&envelope("friendship_created", json!({ "x": 1 }))).is_err());
        assert!(SocialEvent::parse(&envelope("group_member_kicked", json!([]))).is_err());
    }
}
