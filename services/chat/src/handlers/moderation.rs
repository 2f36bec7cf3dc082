//! Moderation of messages (`messages:moderate`, checked by the edge): recall any message,
//! shown to the members as recalled by moderation and told to its sender, and read any
//! conversation's history for a report.

use mesh_contracts::ServiceError;
use mesh_contracts::chat::{HistoryRequest, MessagePage, MessageRef, Notification, ServerFrame};
use mesh_contracts::user::Empty;
use mesh_nats::CallContext;
use mesh_service_kit::Fault;

use super::messages::{page, recall_and_tell, window};
use super::{Readable, State, caller, parse_conversation};
use crate::domain::not_found;
use crate::store::messages;

pub async fn recall(state: State, ctx: CallContext, req: MessageRef) -> Result<Empty, Fault> {
    let moderator = caller(&ctx)?;
    let conversation = parse_conversation(&req.conversation_id)?;
    let message = messages::get(&state.pool, &conversation.to_string(), req.message_id)
        .await?
        .ok_or_else(|| not_found("message"))?;
    if recall_and_tell(&state, conversation, None, &message, true).await? {
        let notice = Notification::MessageModerated {
            conversation_id: conversation.to_string(),
            message_id: message.id,
        };
        state
            .pusher()
            .send_one(message.sender_id, &ServerFrame::Notification(notice))
            .await;
        tracing::info!(%moderator, message_id = %message.id, "message recalled by moderation");
    }
    Ok(Empty {})
}

pub async fn history(
    state: State,
    ctx: CallContext,
    req: HistoryRequest,
) -> Result<MessagePage, ServiceError> {
    let moderator = caller(&ctx)?;
    let (direction, limit) = window(&req)?;
    let readable = Readable {
        conversation: parse_conversation(&req.conversation_id)?,
        seen_upto: None,
    };
    Ok(page(&state, moderator, readable, direction, limit).await?)
}
