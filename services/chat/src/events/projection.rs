//! Keeps chat's projection (friendships, blocks, group members) in step with social's events,
//! each event applied once, in the transaction that records it as processed.

use mesh_contracts::events::{EventEnvelope, SocialEvent};
use mesh_service_kit::events::{HandlerError, first_time};

use crate::handlers::State;
use crate::store::{SCHEMA, conversations, projection};
use mesh_contracts::chat::ConversationId;

pub const CONSUMER: &str = "chat-projection";

pub async fn apply(state: State, envelope: EventEnvelope) -> Result<(), HandlerError> {
    let event = SocialEvent::parse(&envelope)?;
    let mut tx = state.pool().begin().await?;
    if !first_time(&mut tx, SCHEMA, CONSUMER, envelope.id).await? {
        return Ok(());
    }
    let conn = &mut *tx;
    match event {
        SocialEvent::FriendshipCreated { user_id, friend_id } => {
            projection::add_friendship(conn, user_id, friend_id).await?;
        }
        SocialEvent::FriendshipRemoved { user_ids: [a, b] } => {
            projection::remove_friendship(conn, a, b).await?;
        }
        SocialEvent::UserBlocked {
            blocker_id,
            blocked_id,
        } => projection::set_block(conn, blocker_id, blocked_id, true).await?,
        SocialEvent::UserUnblocked {
            blocker_id,
            blocked_id,
        } => projection::set_block(conn, blocker_id, blocked_id, false).await?,
        SocialEvent::MemberJoined {
            group_id,
            user_id,
            role,
            ..
        } => {
            projection::upsert_member(conn, group_id, user_id, role).await?;
            let text = ConversationId::Group(group_id).to_string();
            conversations::rejoined(conn, &text, user_id).await?;
        }
        SocialEvent::MemberRoleChanged {
            group_id,
            user_id,
            role,
        } => projection::upsert_member(conn, group_id, user_id, role).await?,
        SocialEvent::MemberLeft { group_id, user_id }
        | SocialEvent::MemberKicked { group_id, user_id } => {
            projection::remove_member(conn, group_id, user_id).await?;
            let text = ConversationId::Group(group_id).to_string();
            conversations::mark_left(conn, &text, Some(user_id), envelope.occurred_at).await?;
        }
        SocialEvent::MemberMuted {
            group_id,
            user_id,
            muted_until,
        } => projection::set_muted(conn, group_id, user_id, muted_until).await?,
        SocialEvent::OwnershipTransferred { group_id, to, .. } => {
            projection::upsert_member(conn, group_id, to, mesh_contracts::social::GroupRole::Owner)
                .await?;
        }
        SocialEvent::GroupDissolved { group_id, .. } => {
            projection::remove_group(conn, group_id).await?;
            let text = ConversationId::Group(group_id).to_string();
            conversations::mark_left(conn, &text, None, envelope.occurred_at).await?;
        }
        SocialEvent::FriendRequestCreated { .. }
        | SocialEvent::FriendRequestHandled { .. }
        | SocialEvent::JoinRequested { .. }
        | SocialEvent::JoinRequestHandled { .. }
        | SocialEvent::Other => {}
    }
    tx.commit().await?;
    Ok(())
}
