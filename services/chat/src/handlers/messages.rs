//! History, recall and delete-for-me.

use mesh_contracts::chat::{
    ConversationId, DEFAULT_HISTORY_LIMIT, FindMessageRequest, FoundMessage, HistoryRequest,
    MAX_HISTORY_LIMIT, MessagePage, MessageRef, ServerFrame,
};
use mesh_contracts::user::Empty;
use mesh_contracts::{ErrorCode, ServiceError};
use mesh_nats::CallContext;
use time::OffsetDateTime;

use super::{State, caller, db, readable};
use crate::domain::{authorize, invalid, not_found};
use crate::store::conversations;
use crate::store::messages::{self, Direction};

pub async fn history(
    state: State,
    ctx: CallContext,
    req: HistoryRequest,
) -> Result<MessagePage, ServiceError> {
    let user = caller(&ctx)?;
    let limit = req.limit.unwrap_or(DEFAULT_HISTORY_LIMIT);
    if limit == 0 || limit > MAX_HISTORY_LIMIT {
        return Err(invalid(format!("limit: must be 1 to {MAX_HISTORY_LIMIT}")));
    }
    let direction = match (req.after_seq, req.before_seq) {
        (Some(_), Some(_)) => return Err(invalid("give after_seq or before_seq, not both")),
        (Some(after), None) if after >= 0 => Direction::After(after),
        (None, Some(before)) if before >= 1 => Direction::Before(before),
        (None, None) => Direction::Before(i64::MAX),
        _ => return Err(invalid("after_seq must be >= 0 and before_seq >= 1")),
    };
    let conversation = readable(&state, user, &req.conversation_id).await?;
    let text = conversation.to_string();
    let (items, has_more) = messages::history(&state.pool, &text, user, direction, limit)
        .await
        .map_err(db)?;
    let last_seq = conversations::last_seq(&state.pool, &text)
        .await
        .map_err(db)?;
    Ok(MessagePage {
        items,
        has_more,
        last_seq,
    })
}

pub async fn find(
    state: State,
    ctx: CallContext,
    req: FindMessageRequest,
) -> Result<FoundMessage, ServiceError> {
    let user = caller(&ctx)?;
    let conversation = ConversationId::parse(&req.conversation_id)
        .ok_or_else(|| ServiceError::new(ErrorCode::UnknownConversation, "no such conversation"))?;
    let message =
        messages::by_client_id(&state.pool, &conversation.to_string(), user, &req.client_id)
            .await
            .map_err(db)?;
    Ok(FoundMessage { message })
}

pub async fn recall(
    state: State,
    ctx: CallContext,
    req: MessageRef,
) -> Result<Empty, ServiceError> {
    let user = caller(&ctx)?;
    let conversation = readable(&state, user, &req.conversation_id).await?;
    let text = conversation.to_string();
    let message = messages::get(&state.pool, &text, req.message_id)
        .await
        .map_err(db)?
        .ok_or_else(|| not_found("message"))?;
    authorize::recall(
        user,
        message.sender_id,
        message.sent_at,
        OffsetDateTime::now_utc(),
        state.config().recall_window,
    )
    .map_err(|code| match code {
        ErrorCode::RecallWindowPassed => {
            ServiceError::new(code, "the message is too old to recall")
        }
        _ => ServiceError::new(code, "only the sender may recall a message"),
    })?;
    if messages::recall(&state.pool, message.id)
        .await
        .map_err(db)?
    {
        let audience = state.membership().audience(conversation).await?;
        let frame = ServerFrame::Recall {
            conversation_id: text,
            message_id: message.id,
            seq: message.seq,
        };
        state.pusher().send(&audience, None, &frame).await;
    }
    Ok(Empty {})
}

pub async fn delete_for_me(
    state: State,
    ctx: CallContext,
    req: MessageRef,
) -> Result<Empty, ServiceError> {
    let user = caller(&ctx)?;
    let conversation = readable(&state, user, &req.conversation_id).await?;
    let message = messages::get(&state.pool, &conversation.to_string(), req.message_id)
        .await
        .map_err(db)?
        .ok_or_else(|| not_found("message"))?;
    messages::delete_for(&state.pool, user, message.id)
        .await
        .map_err(db)?;
    Ok(Empty {})
}
