//! Keeps chat's projection (friendships, blocks, group members) in step with social's events,
//! each event applied once, in the transaction that records it as processed.

use mesh_contracts::Consumer;
use mesh_contracts::events::{EventEnvelope, SocialEvent};
use mesh_service_kit::events::{HandlerError, first_time};

use crate::state::State;
use crate::store::{SCHEMA, conversations, projection};
use mesh_contracts::chat::ConversationId;

pub const CONSUMER: Consumer = Consumer::ChatProjection;

pub async fn apply(state: State, envelope: EventEnvelope) -> Result<(), HandlerError> {
    let event: SocialEvent = envelope.event()?;
    let mut tx = state.pool().begin().await?;
    if !first_time(&mut tx, SCHEMA, &CONSUMER.name(), envelope.id).await? {
        return Ok(());
    }
    let conn = &mut *tx;
    match event {
        SocialEvent::FriendshipCreated {
            user_ids: [a, b], ..
        } => {
            projection::add_friendship(conn, a, b).await?;
        }
        SocialEvent::FriendshipRemoved {
            user_ids: [a, b], ..
        } => {
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
        SocialEvent::GroupMemberJoined {
            group_id,
            user_id,
            role,
            ..
        } => {
            projection::upsert_member(conn, group_id, user_id, role).await?;
            let text = ConversationId::Group(group_id).to_string();
            conversations::rejoined(conn, &text, user_id).await?;
        }
        SocialEvent::GroupMemberRoleChanged {
            group_id,
            user_id,
            role,
            ..
        } => projection::upsert_member(conn, group_id, user_id, role).await?,
        SocialEvent::GroupMemberLeft { group_id, user_id }
        | SocialEvent::GroupMemberKicked {
            group_id, user_id, ..
        } => {
            projection::remove_member(conn, group_id, user_id).await?;
            let text = ConversationId::Group(group_id).to_string();
            conversations::mark_left(conn, &text, Some(user_id), envelope.occurred_at).await?;
        }
        SocialEvent::GroupMemberMuted {
            group_id,
            user_id,
            muted_until,
            ..
        } => projection::set_muted(conn, group_id, user_id, Some(muted_until)).await?,
        SocialEvent::GroupMemberUnmuted {
            group_id, user_id, ..
        } => projection::set_muted(conn, group_id, user_id, None).await?,
        SocialEvent::GroupOwnershipTransferred { group_id, to, .. } => {
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
        | SocialEvent::FriendRemarkSet { .. }
        | SocialEvent::GroupCreated { .. }
        | SocialEvent::GroupUpdated { .. }
        | SocialEvent::GroupJoinRequested { .. }
        | SocialEvent::GroupJoinRequestHandled { .. }
        | SocialEvent::Unknown => {}
    }
    tx.commit().await?;
    Ok(())
}
