//! Who may post and who receives. To authorize, chat reads its own projection of social's
//! events first (`store::projection`); only when the projection says no (it may lag a moment
//! behind social) does it ask the social service, so a just-accepted friend or new member can
//! post at once, while a block, kick or mute bites as soon as its event is projected. Who
//! receives (a group's members, a user's friends) is asked of social, which owns those lists.

use std::sync::Arc;

use mesh_contracts::ServiceError;
use mesh_contracts::chat::ConversationId;
use mesh_contracts::social::{
    CheckFriendship, CheckFriendshipRequest, FriendIds, GroupRef, GroupRoster, UserIdRequest,
};
use mesh_nats::{CallContext, RpcClient};
use mesh_service_kit::db_error;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::authorize::{GroupFacts, PairFacts};
use crate::store::projection;

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

    /// Friendship and blocks between two users.
    pub async fn pair(&self, a: Uuid, b: Uuid) -> Result<PairFacts, ServiceError> {
        let (friends, blocked) = projection::pair(&self.pool, a, b).await.map_err(db_error)?;
        if friends && !blocked {
            return Ok(PairFacts { friends, blocked });
        }
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

    /// What is known about `user` in `group`: a member who is not muted now per the projection,
    /// or else social's own answer.
    pub async fn group_facts(&self, group: Uuid, user: Uuid) -> Result<GroupFacts, ServiceError> {
        let now = OffsetDateTime::now_utc();
        if let Some(muted_until) = projection::member(&self.pool, group, user)
            .await
            .map_err(db_error)?
            && muted_until.is_none_or(|until| until <= now)
        {
            return Ok(GroupFacts::Member { muted_until });
        }
        let roster = self
            .rpc
            .call::<GroupRoster>(&internal_ctx(), &GroupRef { group_id: group })
            .await
            .map_err(|err| err.into_service_error("social"))?;
        if !roster.exists {
            return Ok(GroupFacts::Unknown);
        }
        Ok(match roster.members.iter().find(|m| m.user_id == user) {
            Some(member) => GroupFacts::Member {
                muted_until: member.muted_until,
            },
            None => GroupFacts::NotMember,
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

    /// Everyone who receives what is posted to `conversation`. A group's roster comes from
    /// social, which owns it (served from its cache), so a member who joined a moment ago is
    /// not missed while the projection catches up; the projection stands in when social does
    /// not answer, so a stored message is still pushed.
    pub async fn audience(
        &self,
        conversation: ConversationId,
    ) -> Result<Arc<[Uuid]>, ServiceError> {
        let group = match conversation {
            ConversationId::Private(a, b) => return Ok(Arc::from([a, b])),
            ConversationId::Group(group) => group,
        };
        match self
            .rpc
            .call::<GroupRoster>(&internal_ctx(), &GroupRef { group_id: group })
            .await
        {
            Ok(roster) => Ok(roster.members.iter().map(|m| m.user_id).collect()),
            Err(err) => {
                tracing::warn!(error = %err, "group roster unavailable; using the projection");
                let members = projection::members(&self.pool, group)
                    .await
                    .map_err(db_error)?;
                Ok(members.into_iter().map(|(id, _)| id).collect())
            }
        }
    }

    /// Every friend of `user` (who is told about their presence): social's list, or the
    /// projection's when social does not answer.
    pub async fn friends_of(&self, user: Uuid) -> Result<Vec<Uuid>, ServiceError> {
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
                    .map_err(db_error)
            }
        }
    }
}
