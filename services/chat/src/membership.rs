//! What the chat worker knows about who may post and who receives: asked of the social service
//! over NATS and kept briefly in bounded caches. Only positive answers are cached; a refusal is
//! always asked again, so a just-accepted friend or new member can post at once.

use std::collections::HashMap;
use std::sync::Arc;

use mesh_contracts::ServiceError;
use mesh_contracts::chat::ConversationId;
use mesh_contracts::social::{
    CheckFriendship, CheckFriendshipRequest, FriendIds, GroupRef, GroupRoster, UserIdRequest,
};
use mesh_nats::{CallContext, RpcClient};
use mesh_observability::metrics::CACHE_LOOKUPS;
use moka::future::Cache;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::ChatConfig;
use crate::domain::authorize::{GroupFacts, PairFacts};

/// A group's members as chat needs them: who is in, and until when each is muted.
#[derive(Debug)]
pub struct Roster {
    pub muted_until: HashMap<Uuid, Option<OffsetDateTime>>,
    /// Sorted member ids, the fan-out list.
    pub ids: Vec<Uuid>,
}

#[derive(Clone)]
pub struct Membership {
    rpc: RpcClient,
    /// Pairs (lower id, higher id) known to be friends without a block.
    friends: Cache<(Uuid, Uuid), ()>,
    /// Existing groups' rosters.
    rosters: Cache<Uuid, Arc<Roster>>,
}

fn record(cache: &str, hit: bool) {
    let result = if hit { "hit" } else { "miss" };
    CACHE_LOOKUPS.with_label_values(&[cache, result]).inc();
}

fn internal_ctx() -> CallContext {
    CallContext::new(Uuid::now_v7().to_string())
}

impl Membership {
    pub fn new(rpc: RpcClient, config: &ChatConfig) -> Self {
        Self {
            rpc,
            friends: Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(config.membership_ttl)
                .build(),
            rosters: Cache::builder()
                .max_capacity(200_000)
                .weigher(|_, roster: &Arc<Roster>| {
                    u32::try_from(roster.ids.len())
                        .unwrap_or(u32::MAX)
                        .saturating_add(1)
                })
                .time_to_live(config.membership_ttl)
                .build(),
        }
    }

    /// Friendship and blocks between two users.
    pub async fn pair(&self, a: Uuid, b: Uuid) -> Result<PairFacts, ServiceError> {
        let key = if a <= b { (a, b) } else { (b, a) };
        if self.friends.contains_key(&key) {
            record("chat_friends", true);
            return Ok(PairFacts {
                friends: true,
                blocked: false,
            });
        }
        record("chat_friends", false);
        let check = self
            .rpc
            .call::<CheckFriendship>(
                &internal_ctx(),
                &CheckFriendshipRequest {
                    user_id: a,
                    other_id: b,
                },
            )
            .await
            .map_err(|err| err.into_service_error("social"))?;
        if check.friends && !check.blocked {
            self.friends.insert(key, ()).await;
        }
        Ok(PairFacts {
            friends: check.friends,
            blocked: check.blocked,
        })
    }

    /// A group's roster; `fresh` skips the cache. `None` when the group does not exist.
    pub async fn roster(
        &self,
        group: Uuid,
        fresh: bool,
    ) -> Result<Option<Arc<Roster>>, ServiceError> {
        if !fresh && let Some(roster) = self.rosters.get(&group).await {
            record("chat_rosters", true);
            return Ok(Some(roster));
        }
        record("chat_rosters", false);
        let reply = self
            .rpc
            .call::<GroupRoster>(&internal_ctx(), &GroupRef { group_id: group })
            .await
            .map_err(|err| err.into_service_error("social"))?;
        if !reply.exists {
            self.rosters.invalidate(&group).await;
            return Ok(None);
        }
        let roster = Arc::new(Roster {
            muted_until: reply
                .members
                .iter()
                .map(|m| (m.user_id, m.muted_until))
                .collect(),
            ids: reply.members.iter().map(|m| m.user_id).collect(),
        });
        self.rosters.insert(group, roster.clone()).await;
        Ok(Some(roster))
    }

    /// What social says about `user` in `group`; a cached "not a member" is checked fresh.
    pub async fn group_facts(&self, group: Uuid, user: Uuid) -> Result<GroupFacts, ServiceError> {
        let mut roster = self.roster(group, false).await?;
        if roster
            .as_ref()
            .is_none_or(|r| !r.muted_until.contains_key(&user))
        {
            roster = self.roster(group, true).await?;
        }
        Ok(match roster {
            None => GroupFacts::Unknown,
            Some(roster) => match roster.muted_until.get(&user) {
                None => GroupFacts::NotMember,
                Some(muted_until) => GroupFacts::Member {
                    muted_until: *muted_until,
                },
            },
        })
    }

    /// May `user` read `conversation` (history, read state, settings, typing)? A party of a
    /// private conversation always may; a group needs current membership.
    pub async fn may_read(
        &self,
        conversation: ConversationId,
        user: Uuid,
    ) -> Result<bool, ServiceError> {
        Ok(match conversation {
            ConversationId::Private(..) => conversation.is_party(user),
            ConversationId::Group(group) => matches!(
                self.group_facts(group, user).await?,
                GroupFacts::Member { .. }
            ),
        })
    }

    /// Everyone who receives what is posted to `conversation`.
    pub async fn audience(
        &self,
        conversation: ConversationId,
    ) -> Result<Arc<[Uuid]>, ServiceError> {
        Ok(match conversation {
            ConversationId::Private(a, b) => Arc::from([a, b]),
            ConversationId::Group(group) => match self.roster(group, false).await? {
                Some(roster) => Arc::from(roster.ids.as_slice()),
                None => Arc::from([]),
            },
        })
    }

    /// Every friend of `user`.
    pub async fn friends_of(&self, user: Uuid) -> Result<Vec<Uuid>, ServiceError> {
        let reply = self
            .rpc
            .call::<FriendIds>(&internal_ctx(), &UserIdRequest { user_id: user })
            .await
            .map_err(|err| err.into_service_error("social"))?;
        Ok(reply.ids)
    }
}
