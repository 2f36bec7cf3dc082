//! RPC handlers of the chat service: one function per operation, wired in one table.

mod conversations;
mod messages;
mod moderation;
mod presence;
mod usage;

use mesh_contracts::chat::{self as wire, ConversationId};
use mesh_contracts::user::Empty;
use mesh_contracts::{ErrorCode, ServiceError};
use mesh_nats::{CallContext, ServiceHost};
use mesh_service_kit::Fault;
use uuid::Uuid;

use crate::domain::authorize::Parties;
use crate::state::State;
use crate::store::conversations::left_at_seq;

/// Wires every operation of the service to its handler.
pub fn register(host: ServiceHost, state: State) -> ServiceHost {
    mesh_nats::operations!(host, state;
        wire::ListConversations => conversations::list,
        wire::MarkRead => conversations::mark_read,
        wire::UpdateSettings => conversations::update_settings,
        wire::Typing => conversations::typing,
        wire::History => messages::history,
        wire::FindMessage => messages::find,
        wire::Recall => messages::recall,
        wire::DeleteForMe => messages::delete_for_me,
        wire::PresenceChanged => presence::changed,
        wire::GetPresence => presence::get,
        mesh_contracts::usage::ChatSetQuota => usage::set_quota,
        mesh_contracts::usage::ChatUsage => usage::usage,
        mesh_contracts::moderation::ModerateRecall => moderation::recall,
        mesh_contracts::moderation::ModerateHistory => moderation::history,
        wire::Health => health,
    )
}

async fn health(state: State, _ctx: CallContext, _req: Empty) -> Result<Empty, ServiceError> {
    mesh_service_kit::postgres::ping(&state.pool).await?;
    Ok(Empty {})
}

/// The authenticated caller, or 401 when the call carries no user.
fn caller(ctx: &CallContext) -> Result<Uuid, ServiceError> {
    ctx.require_user()
}

/// A conversation the caller may read. A former member of a group reads it as it was when they
/// left: `seen_upto` is the last seq they may see (`None` for a current party or member).
pub(crate) struct Readable {
    pub conversation: ConversationId,
    pub seen_upto: Option<i64>,
}

fn parse_conversation(raw: &str) -> Result<ConversationId, ServiceError> {
    ConversationId::parse(raw)
        .ok_or_else(|| ServiceError::new(ErrorCode::UnknownConversation, "no such conversation"))
}

fn not_member() -> ServiceError {
    ServiceError::new(
        ErrorCode::NotMember,
        "the caller does not take part in this conversation",
    )
}

/// A conversation the caller takes part in now, with what social said of its parties: the
/// request derives every later decision (may post, who receives) from it without asking again.
pub(crate) struct Current {
    pub conversation: ConversationId,
    pub parties: Parties,
}

/// Parses a conversation id the caller may read (a current party or member, or a former member
/// of a group), or says why not. Asks social about a group once.
async fn readable(state: &State, user: Uuid, raw: &str) -> Result<Readable, Fault> {
    let conversation = parse_conversation(raw)?;
    let parties = state.membership.parties(conversation).await?;
    if parties.may_read(user) {
        return Ok(Readable {
            conversation,
            seen_upto: None,
        });
    }
    if let ConversationId::Group(_) = conversation
        && let Some(seq) = left_at_seq(&state.pool, user, &conversation.to_string()).await?
    {
        return Ok(Readable {
            conversation,
            seen_upto: Some(seq),
        });
    }
    Err(not_member().into())
}

/// Parses a conversation id the caller takes part in now (former members excluded). Asks
/// social about a group once; the answer comes along in `Current::parties`.
async fn current(state: &State, user: Uuid, raw: &str) -> Result<Current, ServiceError> {
    let conversation = parse_conversation(raw)?;
    let parties = state.membership.parties(conversation).await?;
    if parties.may_read(user) {
        Ok(Current {
            conversation,
            parties,
        })
    } else {
        Err(not_member())
    }
}
