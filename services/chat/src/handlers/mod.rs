//! RPC handlers of the chat service, and the state they share with the partition owners.

mod conversations;
mod messages;
mod moderation;
mod presence;
mod usage;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use mesh_contracts::chat::{self as wire, ConversationId};
use mesh_contracts::user::Empty;
use mesh_contracts::{Bucket, ErrorCode, ServiceError};
use mesh_nats::{Bus, CallContext, KvBucket, ServiceHost};
use mesh_service_kit::Fault;
use moka::future::Cache;
use sqlx::PgPool;
use uuid::Uuid;

use crate::ChatDeps;
use crate::config::ChatConfig;
use crate::membership::Membership;
use crate::push::Pusher;
use crate::store::conversations::left_at_seq;
use crate::store::messages::NewMessage;

/// Everything a handler or partition owner may use; cheap to clone.
#[derive(Clone)]
pub struct State(Arc<Inner>);

pub struct Inner {
    pool: PgPool,
    bus: Bus,
    config: ChatConfig,
    membership: Membership,
    pusher: Pusher,
    presence: KvBucket,
    worker_id: Uuid,
    /// Per group, a fingerprint of the roster whose inbox rows this worker last wrote.
    synced_rosters: Cache<Uuid, u64>,
}

impl std::ops::Deref for State {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl State {
    pub async fn new(deps: ChatDeps, config: ChatConfig) -> anyhow::Result<Self> {
        let presence = deps.bus.bucket(Bucket::Presence).await?;
        Ok(Self(Arc::new(Inner {
            membership: Membership::new(deps.bus.rpc_client(config.rpc_timeout), deps.pool.clone()),
            pusher: Pusher::new(deps.bus.clone()),
            presence,
            worker_id: Uuid::new_v4(),
            synced_rosters: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(std::time::Duration::from_secs(600))
                .build(),
            pool: deps.pool,
            bus: deps.bus,
            config,
        })))
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn config(&self) -> &ChatConfig {
        &self.config
    }

    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    pub fn pusher(&self) -> &Pusher {
        &self.pusher
    }

    pub fn worker_id(&self) -> Uuid {
        self.worker_id
    }

    /// The members of each group in `batch` whose inbox rows this worker has not written for
    /// the group's current roster.
    pub async fn rosters_to_sync(
        &self,
        batch: &[NewMessage],
    ) -> HashMap<ConversationId, Vec<Uuid>> {
        let mut out = HashMap::new();
        for message in batch {
            let ConversationId::Group(group) = message.conversation else {
                continue;
            };
            if out.contains_key(&message.conversation) {
                continue;
            }
            let Ok(ids) = self.membership.audience(message.conversation).await else {
                continue;
            };
            if self.synced_rosters.get(&group).await != Some(fingerprint(&ids)) {
                out.insert(message.conversation, ids.to_vec());
            }
        }
        out
    }

    /// Remembers that the inbox rows of these rosters exist now.
    pub async fn rosters_synced(&self, members: &HashMap<ConversationId, Vec<Uuid>>) {
        for (conversation, ids) in members {
            if let ConversationId::Group(group) = conversation {
                self.synced_rosters.insert(*group, fingerprint(ids)).await;
            }
        }
    }
}

fn fingerprint(ids: &[Uuid]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    ids.hash(&mut hasher);
    hasher.finish()
}

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

/// Parses a conversation id the caller may read (a current party or member, or a former member
/// of a group), or says why not.
async fn readable(state: &State, user: Uuid, raw: &str) -> Result<Readable, Fault> {
    let conversation = parse_conversation(raw)?;
    if state.membership.may_read(conversation, user).await? {
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

/// Parses a conversation id the caller takes part in now (former members excluded).
async fn current(state: &State, user: Uuid, raw: &str) -> Result<ConversationId, ServiceError> {
    let conversation = parse_conversation(raw)?;
    if state.membership.may_read(conversation, user).await? {
        Ok(conversation)
    } else {
        Err(not_member())
    }
}
