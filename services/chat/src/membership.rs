//! Who may post and who receives. Both are asked of the social service, which owns friendships,
//! blocks and rosters: a just-accepted friend or new member can post at once, and a block,
//! unfriend, kick or mute bites for every message accepted after social answered it. Chat's own
//! projection of social's events (`store::projection`) stands in only for who *receives* when
//! social does not answer, so a stored message is still pushed.
//!
//! A request asks once: `parties` fetches what decides it (a group's roster), and whether the
//! caller may read, may post and who receives are all derived from that one answer
//! (`domain::authorize::Parties`), so a typing frame in a large group costs one roster, not
//! three. An ingest batch asks once per group.

use std::collections::HashMap;
use std::sync::Arc;

use mesh_contracts::chat::ConversationId;
use mesh_contracts::social::{
    CheckFriendship, CheckFriendshipRequest, CheckFriendships, CheckFriendshipsRequest, FriendIds,
    GroupRef, GroupRole, GroupRoster, MAX_FRIENDSHIP_CHECKS, Roster, UserIdRequest,
};
use mesh_contracts::{ErrorCode, ServiceError};
use mesh_nats::{CallContext, RpcClient};
use mesh_service_kit::Fault;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::authorize::{self, GroupFacts, PairFacts, Parties};
use crate::store::projection;

/// What the authorization of an ingest batch decided, and what it learnt on the way.
pub struct BatchVerdicts {
    /// Per (conversation, sender): may post, or the reason not.
    pub verdicts: HashMap<(ConversationId, Uuid), Result<(), ErrorCode>>,
    /// Who receives each group's messages, from the roster its senders were decided by.
    pub audiences: HashMap<ConversationId, Arc<[Uuid]>>,
}

#[derive(Clone)]
pub struct Membership {
    rpc: RpcClient,
    pool: PgPool,
}

fn internal_ctx() -> CallContext {
    CallContext::new(Uuid::now_v7().to_string())
}

impl Membership {
    pub fn new(rpc: RpcClient, pool: PgPool) -> Self {
        Self { rpc, pool }
    }

    /// Friendship and blocks between two users, as social says now (never the projection, which
    /// may lag: a block or unfriend must bite as soon as social answered it).
    pub async fn pair(&self, a: Uuid, b: Uuid) -> Result<PairFacts, ServiceError> {
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
        Ok(PairFacts {
            friends: check.friends,
            blocked: check.blocked,
        })
    }

    /// What decides a request about `conversation`, asked of social once: nothing to ask for a
    /// private conversation, the group's roster for a group (social invalidates its cached
    /// roster when it commits a kick, leave or mute, so a restriction bites as soon as social
    /// answered it). The request then derives every decision from this one answer
    /// (`Parties::may_read`, `may_post`, `Parties::audience`).
    pub async fn parties(&self, conversation: ConversationId) -> Result<Parties, ServiceError> {
        match conversation {
            ConversationId::Private(a, b) => Ok(Parties::Private(a, b)),
            ConversationId::Group(group) => Ok(Parties::Group(self.roster(group).await?)),
        }
    }

    /// The roster of `group` as social says now.
    async fn roster(&self, group: Uuid) -> Result<Roster, ServiceError> {
        self.rpc
            .call::<GroupRoster>(&internal_ctx(), &GroupRef { group_id: group })
            .await
            .map_err(|err| err.into_service_error("social"))
    }

    /// The owner and admins of `group` as social says now; none for an unknown group.
    pub async fn managers(&self, group: Uuid) -> Result<Vec<Uuid>, ServiceError> {
        let roster = self.roster(group).await?;
        Ok(roster
            .members
            .iter()
            .filter(|m| matches!(m.role, GroupRole::Owner | GroupRole::Admin))
            .map(|m| m.user_id)
            .collect())
    }

    /// May `sender` post where `parties` (asked of social for this request) take part, at
    /// `now`? The same right governs every frame that reaches another user (messages, typing,
    /// read receipts). A group is decided from its roster in `parties` without asking again; a
    /// private conversation asks social about the pair. `Err` means social could not answer;
    /// `Ok(Err(code))` is a refusal with its reason.
    pub async fn may_post(
        &self,
        parties: &Parties,
        sender: Uuid,
        open_private: bool,
        now: OffsetDateTime,
    ) -> Result<Result<(), ErrorCode>, ServiceError> {
        if let Some(facts) = parties.group_facts(sender) {
            return Ok(authorize::group(facts, now));
        }
        Ok(match parties.peer_of(sender) {
            Some(peer) => authorize::private(self.pair(sender, peer).await?, open_private),
            None => Err(ErrorCode::NotMember),
        })
    }

    /// Decides who may post for a whole ingest batch: each (conversation, sender) once; the
    /// private ones in one `check_friendships` call (per `MAX_FRIENDSHIP_CHECKS` pairs), each
    /// group's senders from one roster (each group asked of social once, all at once). The
    /// rosters asked also say who receives each group's messages, so the batch's inbox rows
    /// and pushes need no roster of their own. `Err` means social could not answer: the
    /// caller retries the batch, never refuses it for that.
    pub async fn authorize_batch(
        &self,
        posters: Vec<(ConversationId, Uuid)>,
        open_private: bool,
        now: OffsetDateTime,
    ) -> Result<BatchVerdicts, ServiceError> {
        let mut private: Vec<(ConversationId, Uuid)> = Vec::new();
        let mut pairs: Vec<CheckFriendshipRequest> = Vec::new();
        let mut others: Vec<(ConversationId, Uuid)> = Vec::new();
        for (conversation, sender) in posters {
            match (conversation, conversation.peer_of(sender)) {
                (ConversationId::Private(..), Some(other_id)) => {
                    private.push((conversation, sender));
                    pairs.push(CheckFriendshipRequest {
                        user_id: sender,
                        other_id,
                    });
                }
                _ => others.push((conversation, sender)),
            }
        }
        let checks = futures::future::try_join_all(
            pairs
                .chunks(MAX_FRIENDSHIP_CHECKS)
                .map(|chunk| self.pairs(chunk.to_vec())),
        );
        let mut groups: Vec<Uuid> = others
            .iter()
            .filter_map(|(conversation, _)| match conversation {
                ConversationId::Group(group) => Some(*group),
                ConversationId::Private(..) => None,
            })
            .collect();
        groups.sort_unstable();
        groups.dedup();
        let rosters = futures::future::try_join_all(groups.iter().map(|g| self.roster(*g)));
        let (checks, rosters) = futures::future::try_join(checks, rosters).await?;
        let rosters: HashMap<Uuid, Parties> = groups
            .into_iter()
            .zip(rosters.into_iter().map(Parties::Group))
            .collect();
        let private_verdicts = checks
            .into_iter()
            .flatten()
            .map(|facts| authorize::private(facts, open_private));
        // The rest: group senders, and senders who are no party of a private conversation.
        let group_verdicts: Vec<Result<(), ErrorCode>> = others
            .iter()
            .map(|(conversation, sender)| match conversation {
                ConversationId::Group(group) => authorize::group(
                    rosters
                        .get(group)
                        .and_then(|parties| parties.group_facts(*sender))
                        .unwrap_or(GroupFacts::Unknown),
                    now,
                ),
                ConversationId::Private(..) => Err(ErrorCode::NotMember),
            })
            .collect();
        let verdicts = private
            .into_iter()
            .zip(private_verdicts)
            .chain(others.into_iter().zip(group_verdicts))
            .collect();
        let audiences = rosters
            .into_iter()
            .map(|(group, parties)| (ConversationId::Group(group), parties.audience()))
            .collect();
        Ok(BatchVerdicts {
            verdicts,
            audiences,
        })
    }

    /// `pair` for many pairs in one call, in order.
    async fn pairs(
        &self,
        pairs: Vec<CheckFriendshipRequest>,
    ) -> Result<Vec<PairFacts>, ServiceError> {
        let asked = pairs.len();
        let reply = self
            .rpc
            .call::<CheckFriendships>(&internal_ctx(), &CheckFriendshipsRequest { pairs })
            .await
            .map_err(|err| err.into_service_error("social"))?;
        if reply.checks.len() != asked {
            return Err(ServiceError::new(
                ErrorCode::ServiceUnavailable,
                format!(
                    "social answered {} of {asked} friendship checks",
                    reply.checks.len()
                ),
            ));
        }
        Ok(reply
            .checks
            .into_iter()
            .map(|check| PairFacts {
                friends: check.friends,
                blocked: check.blocked,
            })
            .collect())
    }

    /// Everyone who receives what is posted to `conversation`, for a caller that has not asked
    /// social about it yet (one that has derives it from its `Parties`). A group's roster comes
    /// from social, which owns it (served from its cache), so a member who joined a moment ago is
    /// not missed while the projection catches up; the projection stands in when social does
    /// not answer, so a stored message is still pushed.
    pub async fn audience(&self, conversation: ConversationId) -> Result<Arc<[Uuid]>, Fault> {
        let group = match conversation {
            ConversationId::Private(a, b) => return Ok(Arc::from([a, b])),
            ConversationId::Group(group) => group,
        };
        match self.roster(group).await {
            Ok(roster) => Ok(Parties::Group(roster).audience()),
            Err(err) => {
                tracing::warn!(error = %err, "group roster unavailable; using the projection");
                let members = projection::members(&self.pool, group).await?;
                Ok(members.into_iter().map(|(id, _)| id).collect())
            }
        }
    }

    /// Every friend of `user` (who is told about their presence): social's list, or the
    /// projection's when social does not answer.
    pub async fn friends_of(&self, user: Uuid) -> Result<Vec<Uuid>, Fault> {
        match self
            .rpc
            .call::<FriendIds>(&internal_ctx(), &UserIdRequest { user_id: user })
            .await
        {
            Ok(reply) => Ok(reply.ids),
            Err(err) => {
                tracing::warn!(error = %err, "friend list unavailable; using the projection");
                projection::friends_of(&self.pool, user)
                    .await
                    .map_err(Fault::from)
            }
        }
    }
}
