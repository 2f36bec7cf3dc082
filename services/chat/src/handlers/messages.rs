//! History, recall and delete-for-me.

use mesh_contracts::chat::{
    ChatMessage, ConversationId, DEFAULT_HISTORY_LIMIT, FindMessageRequest, FoundMessage,
    HistoryRequest, MAX_HISTORY_LIMIT, MessagePage, MessageRef, ServerFrame,
};
use mesh_contracts::user::Empty;
use mesh_contracts::{ErrorCode, ServiceError};
use mesh_nats::CallContext;
use mesh_service_kit::Fault;
use time::OffsetDateTime;

use super::{Current, Readable, State, caller, current, readable};
use crate::domain::authorize::{self, Parties};
use crate::domain::page::fit;
use crate::domain::{invalid, not_found};
use crate::store::conversations;
use crate::store::messages::{self, Direction};

pub async fn history(
    state: State,
    ctx: CallContext,
    req: HistoryRequest,
) -> Result<MessagePage, ServiceError> {
    let user = caller(&ctx)?;
    let (direction, limit) = window(&req)?;
    let readable = readable(&state, user, &req.conversation_id).await?;
    Ok(page(&state, user, readable, direction, limit).await?)
}

/// One page of `readable`'s history as `user` sees it: at most `limit` messages, and no more
/// than fit in one reply (`domain::page`); `has_more` then says more follow, and the last
/// message's seq is where the next page starts.
pub(super) async fn page(
    state: &State,
    user: uuid::Uuid,
    readable: Readable,
    direction: Direction,
    limit: u32,
) -> Result<MessagePage, Fault> {
    let text = readable.conversation.to_string();
    // The last seq first, and no message past it: every message up to it is committed (the
    // seq moves in the transaction that stores them), so the page and its `last_seq` agree
    // and a client that keeps `last_seq` never skips one.
    let newest = conversations::last_seq(&state.pool, &text).await?;
    let last_seq = readable.seen_upto.map_or(newest, |upto| upto.min(newest));
    let (mut items, more) =
        messages::history(&state.pool, &text, user, direction, limit, last_seq).await?;
    let cut = fit(&mut items, state.page_bytes());
    let has_more = more || cut;
    Ok(MessagePage {
        items,
        has_more,
        last_seq,
    })
}

/// The direction and size of a history page a request asks for.
pub(super) fn window(req: &HistoryRequest) -> Result<(Direction, u32), ServiceError> {
    let limit = req.limit.unwrap_or(DEFAULT_HISTORY_LIMIT);
    if limit == 0 || limit > MAX_HISTORY_LIMIT {
        return Err(invalid(
            "limit",
            &format!("must be 1 to {MAX_HISTORY_LIMIT}"),
        ));
    }
    let direction = match (req.after_seq, req.before_seq) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "before_seq",
                "give after_seq or before_seq, not both",
            ));
        }
        (Some(after), None) if after >= 0 => Direction::After(after),
        (None, Some(before)) if before >= 1 => Direction::Before(before),
        (None, None) => Direction::Before(i64::MAX),
        _ => return Err(invalid("after_seq", "must be >= 0 (and before_seq >= 1)")),
    };
    Ok((direction, limit))
}

pub async fn find(
    state: State,
    ctx: CallContext,
    req: FindMessageRequest,
) -> Result<FoundMessage, Fault> {
    let user = caller(&ctx)?;
    let conversation = ConversationId::parse(&req.conversation_id)
        .ok_or_else(|| ServiceError::new(ErrorCode::UnknownConversation, "no such conversation"))?;
    let message =
        messages::by_client_id(&state.pool, &conversation.to_string(), user, &req.client_id)
            .await?;
    Ok(FoundMessage { message })
}

pub async fn recall(state: State, ctx: CallContext, req: MessageRef) -> Result<Empty, Fault> {
    let user = caller(&ctx)?;
    let Current {
        conversation,
        parties,
    } = current(&state, user, &req.conversation_id).await?;
    let text = conversation.to_string();
    let message = messages::get(&state.pool, &text, req.message_id)
        .await?
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
    recall_and_tell(&state, conversation, Some(&parties), &message, false).await?;
    Ok(Empty {})
}

/// Recalls `message` and pushes the `recall` frame to the conversation's members (once: a
/// second recall changes nothing): those of `parties` when the request already asked social,
/// else asked now. True when this call recalled it.
pub(super) async fn recall_and_tell(
    state: &State,
    conversation: ConversationId,
    parties: Option<&Parties>,
    message: &ChatMessage,
    by_moderation: bool,
) -> Result<bool, Fault> {
    let recalled = messages::recall(&state.pool, message.id, by_moderation).await?;
    if recalled {
        let audience = match parties {
            Some(parties) => parties.audience(),
            None => state.membership().audience(conversation).await?,
        };
        let frame = ServerFrame::Recall {
            conversation_id: conversation.to_string(),
            message_id: message.id,
            seq: message.seq,
            by_moderation,
        };
        state
            .pusher()
            .send_in(conversation, &audience, None, &frame)
            .await;
    }
    Ok(recalled)
}

pub async fn delete_for_me(
    state: State,
    ctx: CallContext,
    req: MessageRef,
) -> Result<Empty, Fault> {
    let user = caller(&ctx)?;
    let readable = readable(&state, user, &req.conversation_id).await?;
    let text = readable.conversation.to_string();
    let message = messages::get(&state.pool, &text, req.message_id)
        .await?
        .filter(|m| readable.seen_upto.is_none_or(|upto| m.seq <= upto))
        .ok_or_else(|| not_found("message"))?;
    messages::delete_for(&state.pool, user, &text, message.id).await?;
    Ok(Empty {})
}
