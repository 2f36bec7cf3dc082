//! Turns social's events into `notification` frames for the users they concern: a friend
//! request received or accepted, a group invitation, a join request approved or rejected, a
//! kick, a dissolved group. Each event notifies once: it is recorded as processed in the same
//! transaction, committed after the push (a crash in between may push it twice, never lose it).

use mesh_contracts::chat::ServerFrame;
use mesh_contracts::events::{EventEnvelope, SocialEvent};
use mesh_contracts::social::{FriendRequestStatus, JoinRequestStatus};
use mesh_service_kit::events::{HandlerError, first_time};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::handlers::State;
use crate::store::SCHEMA;

pub const CONSUMER: &str = "chat-notifications";

/// Who is told what about an event: recipients, kind and data.
pub fn notice(event: SocialEvent) -> Option<(Vec<Uuid>, &'static str, Value)> {
    Some(match event {
        SocialEvent::FriendRequestCreated { request } => (
            vec![request.to_user_id],
            "friend_request_received",
            json!({ "request": request }),
        ),
        SocialEvent::FriendRequestHandled { request }
            if request.status == FriendRequestStatus::Accepted =>
        {
            (
                vec![request.from_user_id],
                "friend_request_accepted",
                json!({ "request": request }),
            )
        }
        SocialEvent::JoinRequested { request } if request.inviter_id.is_some() => (
            vec![request.user_id],
            "group_invitation",
            json!({ "request": request }),
        ),
        SocialEvent::MemberJoined {
            group_id,
            user_id,
            invited_by: Some(by),
            ..
        } => (
            vec![user_id],
            "group_invitation",
            json!({ "group_id": group_id, "invited_by": by, "joined": true }),
        ),
        SocialEvent::JoinRequestHandled { request } if request.inviter_id.is_none() => {
            let kind = match request.status {
                JoinRequestStatus::Approved => "join_request_approved",
                JoinRequestStatus::Rejected => "join_request_rejected",
                JoinRequestStatus::Pending => return None,
            };
            (vec![request.user_id], kind, json!({ "request": request }))
        }
        SocialEvent::MemberKicked { group_id, user_id } => {
            (vec![user_id], "kicked", json!({ "group_id": group_id }))
        }
        SocialEvent::GroupDissolved {
            group_id,
            member_ids,
        } => (
            member_ids,
            "group_dissolved",
            json!({ "group_id": group_id }),
        ),
        _ => return None,
    })
}

pub async fn push(state: State, envelope: EventEnvelope) -> Result<(), HandlerError> {
    let Some((to, kind, data)) = notice(SocialEvent::parse(&envelope)?) else {
        return Ok(());
    };
    let mut tx = state.pool().begin().await?;
    if !first_time(&mut tx, SCHEMA, CONSUMER, envelope.id).await? {
        return Ok(());
    }
    let frame = ServerFrame::Notification {
        kind: kind.to_owned(),
        data,
    };
    state.pusher().send(&to, None, &frame).await;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_contracts::social::FriendRequest;
    use time::OffsetDateTime;

    fn request(status: FriendRequestStatus) -> FriendRequest {
        FriendRequest {
            id: Uuid::now_v7(),
            from_user_id: Uuid::from_u128(1),
            to_user_id: Uuid::from_u128(2),
            message: None,
            status,
            created_at: OffsetDateTime::now_utc(),
            handled_at: None,
        }
    }

    #[test]
    fn friend_requests_notify_the_other_side() {
        let created = notice(SocialEvent::FriendRequestCreated {
            request: request(FriendRequestStatus::Pending),
        })
        .unwrap();
        assert_eq!(
            (created.0, created.1),
            (vec![Uuid::from_u128(2)], "friend_request_received")
        );
        let accepted = notice(SocialEvent::FriendRequestHandled {
            request: request(FriendRequestStatus::Accepted),
        })
        .unwrap();
        assert_eq!(
            (accepted.0, accepted.1),
            (vec![Uuid::from_u128(1)], "friend_request_accepted")
        );
        assert!(
            notice(SocialEvent::FriendRequestHandled {
                request: request(FriendRequestStatus::Cancelled),
            })
            .is_none()
        );
    }

    #[test]
    fn group_events_notify_their_members() {
        let members = vec![Uuid::from_u128(3), Uuid::from_u128(4)];
        let dissolved = notice(SocialEvent::GroupDissolved {
            group_id: Uuid::from_u128(9),
            member_ids: members.clone(),
        })
        .unwrap();
        assert_eq!((dissolved.0, dissolved.1), (members, "group_dissolved"));
        let kicked = notice(SocialEvent::MemberKicked {
            group_id: Uuid::from_u128(9),
            user_id: Uuid::from_u128(3),
        })
        .unwrap();
        assert_eq!(kicked.1, "kicked");
        assert!(notice(SocialEvent::Other).is_none());
    }
}
