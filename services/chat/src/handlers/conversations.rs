//! The conversation list, read positions, personal settings and typing indicators.

use mesh_contracts::chat::MAX_HISTORY_LIMIT;
use mesh_contracts::chat::{
    Conversation, ConversationId, ConversationPage, ConversationRef, ConversationSettings,
    ListConversationsRequest, MarkReadRequest, ReadState, ServerFrame, UpdateSettingsRequest,
};
use mesh_contracts::page::DEFAULT_PAGE_LIMIT;
use mesh_contracts::user::Empty;
use mesh_contracts::{ErrorCode, ServiceError};
use mesh_nats::CallContext;
use mesh_service_kit::Fault;

use super::{Current, State, caller, current, readable};
use crate::domain::cursor::ListCursor;
use crate::domain::invalid;
use crate::domain::page::fit;
use crate::store::conversations;
use time::OffsetDateTime;

/// A page of the caller's conversations: at most `limit`, and no more than fit in one reply
/// (`domain::page`), with the cursor of the next page when more follow.
pub async fn list(
    state: State,
    ctx: CallContext,
    req: ListConversationsRequest,
) -> Result<ConversationPage, Fault> {
    let user = caller(&ctx)?;
    let limit = req.limit.unwrap_or(DEFAULT_PAGE_LIMIT);
    if limit == 0 || limit > MAX_HISTORY_LIMIT {
        return Err(invalid("limit", &format!("must be 1 to {MAX_HISTORY_LIMIT}")).into());
    }
    let after = match req.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(raw) => Some(ListCursor::decode(raw)?),
        None => None,
    };
    let mut rows = conversations::list(&state.pool, user, limit, after.as_ref(), req.since).await?;
    let mut more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let mut items: Vec<Conversation> = rows
        .iter()
        .map(|row| {
            let id = ConversationId::parse(&row.id);
            Conversation {
                id: row.id.clone(),
                peer_id: id.and_then(|id| id.peer_of(user)),
                group_id: match id {
                    Some(ConversationId::Group(group)) => Some(group),
                    _ => None,
                },
                last_seq: row.last_seq,
                read_seq: row.read_seq,
                unread: (row.last_seq - row.read_seq).max(0),
                last_message: row.last_message(),
                muted: row.muted,
                pinned: row.pinned,
                updated_at: row.changed_at,
            }
        })
        .collect();
    // No more than fit in one reply: each row carries its last message whole (up to 16 KiB of
    // body, twice that escaped), so a page may stop short of `limit`; its cursor then leads on.
    more |= fit(&mut items, state.page_bytes());
    rows.truncate(items.len());
    let next_cursor = if more {
        rows.last().map(next_cursor).transpose()?
    } else {
        None
    };
    Ok(ConversationPage { items, next_cursor })
}

/// The cursor of the page after `last`. A stored id that is no conversation id is our fault:
/// a 500, not a list that silently ends.
fn next_cursor(last: &conversations::ListRow) -> Result<String, Fault> {
    let cursor = last.cursor().ok_or_else(|| {
        Fault::internal(format!(
            "stored conversation id {:?} does not parse",
            last.id
        ))
    })?;
    Ok(cursor.encode())
}

pub async fn mark_read(
    state: State,
    ctx: CallContext,
    req: MarkReadRequest,
) -> Result<ReadState, Fault> {
    let user = caller(&ctx)?;
    if req.seq < 0 {
        return Err(invalid("seq", "must not be negative").into());
    }
    let readable = readable(&state, user, &req.conversation_id).await?;
    let conversation = readable.conversation;
    let text = conversation.to_string();
    let seq = readable.seen_upto.map_or(req.seq, |upto| req.seq.min(upto));
    let (read, moved) = conversations::mark_read(&state.pool, user, &text, seq).await?;
    if moved {
        let frame = ServerFrame::Read {
            conversation_id: text,
            user_id: user,
            read_seq: read.read_seq,
        };
        // The reader's other devices, and the other side of a private conversation when the
        // reader may reach them (a stranger's or a blocked user's receipt is not delivered).
        let mut to = vec![user];
        if let Some(peer) = conversation.peer_of(user) {
            let open = state.config().open_private;
            let now = OffsetDateTime::now_utc();
            // A private conversation: its parties need no call to social.
            let parties = state.membership().parties(conversation).await?;
            if state
                .membership()
                .may_post(&parties, user, open, now)
                .await?
                == Ok(())
            {
                to.push(peer);
            }
        }
        state.pusher().send(&to, None, &frame).await;
    }
    Ok(read)
}

pub async fn update_settings(
    state: State,
    ctx: CallContext,
    req: UpdateSettingsRequest,
) -> Result<ConversationSettings, Fault> {
    let user = caller(&ctx)?;
    let conversation = readable(&state, user, &req.conversation_id)
        .await?
        .conversation;
    let s = req.settings;
    Ok(conversations::update_settings(
        &state.pool,
        user,
        &conversation.to_string(),
        s.muted,
        s.pinned,
        s.hidden,
    )
    .await?
    .ok_or_else(|| {
        ServiceError::new(
            ErrorCode::UnknownConversation,
            "the conversation has no messages yet",
        )
    })?)
}

pub async fn typing(
    state: State,
    ctx: CallContext,
    req: ConversationRef,
) -> Result<Empty, ServiceError> {
    let user = caller(&ctx)?;
    // One answer from social (a group's roster) decides the right to read, the right to post
    // and who receives the frame.
    let Current {
        conversation,
        parties,
    } = current(&state, user, &req.conversation_id).await?;
    // Typing reaches others only where the caller may post.
    let open = state.config().open_private;
    let now = OffsetDateTime::now_utc();
    if let Err(code) = state
        .membership()
        .may_post(&parties, user, open, now)
        .await?
    {
        return Err(ServiceError::new(
            code,
            "the caller may not post to this conversation",
        ));
    }
    let audience = parties.audience();
    let frame = ServerFrame::Typing {
        conversation_id: conversation.to_string(),
        user_id: user,
    };
    state
        .pusher()
        .send_in(conversation, &audience, Some(user), &frame)
        .await;
    Ok(Empty {})
}
