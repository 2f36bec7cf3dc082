//! RPC handlers of the social service: decode, apply the domain rules, touch the store, reply.

mod blocks;
mod friend_requests;
mod friends;
mod groups;
mod membership;
mod moderation;
mod usage;

use std::sync::Arc;

use mesh_contracts::social as wire;
use mesh_contracts::user::{Empty, GetUser, GetUserRequest};
use mesh_contracts::{ErrorCode, ServiceError};
use mesh_nats::{Bus, CallContext, RpcClient, RpcError, ServiceHost};
use sqlx::PgPool;
use uuid::Uuid;

use crate::SocialDeps;
use crate::cache::Caches;
use crate::config::SocialConfig;
use crate::domain::not_found;

/// Everything a handler may use; cheap to clone.
#[derive(Clone)]
pub struct State(Arc<Inner>);

pub struct Inner {
    pool: PgPool,
    bus: Bus,
    /// Calls to other services (the user service).
    rpc: RpcClient,
    caches: Caches,
}

impl std::ops::Deref for State {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl State {
    pub fn new(deps: SocialDeps, config: SocialConfig) -> Self {
        Self(Arc::new(Inner {
            rpc: deps.bus.rpc_client(config.rpc_timeout),
            caches: Caches::new(&config),
            pool: deps.pool,
            bus: deps.bus,
        }))
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    pub fn caches(&self) -> &Caches {
        &self.caches
    }

    /// Refuses unknown (or disabled) users with 404, asking the user service that owns them.
    async fn ensure_user_exists(
        &self,
        ctx: &CallContext,
        user_id: Uuid,
    ) -> Result<(), ServiceError> {
        match self
            .rpc
            .call::<GetUser>(ctx, &GetUserRequest { user_id })
            .await
        {
            Ok(_) => Ok(()),
            Err(RpcError::Service(err)) if err.code == ErrorCode::NotFound => {
                Err(not_found("user"))
            }
            Err(err) => Err(err.into_service_error("user")),
        }
    }
}

/// Wires every operation of the service to its handler.
pub fn register(host: ServiceHost, state: State) -> ServiceHost {
    mesh_nats::operations!(host, state;
        wire::SendFriend => friend_requests::send,
        wire::ListFriendRequests => friend_requests::list,
        wire::AcceptFriendRequest => friend_requests::accept,
        wire::RejectFriendRequest => friend_requests::reject,
        wire::CancelFriendRequest => friend_requests::cancel,
        wire::ListFriends => friends::list,
        wire::SetRemark => friends::set_remark,
        wire::RemoveFriend => friends::remove,
        wire::CheckFriendship => friends::check,
        wire::CheckFriendships => friends::check_many,
        wire::BlockUser => blocks::block,
        wire::UnblockUser => blocks::unblock,
        wire::ListBlocks => blocks::list,
        wire::CreateGroup => groups::create,
        wire::GetGroup => groups::get,
        wire::UpdateGroup => groups::update,
        wire::DissolveGroup => groups::dissolve,
        wire::MyGroups => groups::mine,
        wire::TransferOwnership => groups::transfer,
        wire::ListMembers => membership::list_members,
        wire::JoinGroup => membership::join,
        wire::InviteMember => membership::invite,
        wire::ListJoinRequests => membership::list_requests,
        wire::ApproveJoinRequest => membership::approve,
        wire::RejectJoinRequest => membership::reject,
        wire::LeaveGroup => membership::leave,
        wire::KickMember => membership::kick,
        wire::SetMemberRole => membership::set_role,
        wire::MuteMember => membership::mute,
        wire::GetMembership => membership::get_membership,
        wire::FriendIds => friends::ids,
        wire::GroupRoster => membership::roster,
        mesh_contracts::usage::SocialSetQuota => usage::set_quota,
        mesh_contracts::usage::SocialUsage => usage::usage,
        mesh_contracts::moderation::ModerateListGroups => moderation::list_groups,
        mesh_contracts::moderation::ModerateGetGroup => moderation::get_group,
        mesh_contracts::moderation::ModerateRemoveMember => moderation::remove_member,
        mesh_contracts::moderation::ModerateDissolveGroup => moderation::dissolve,
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

/// For checks other services make: an internal call (no user) may ask about anyone; a user
/// may only ask about themselves.
fn internal_or_self(ctx: &CallContext, subject: Uuid) -> Result<(), ServiceError> {
    match ctx.user_id {
        None => Ok(()),
        Some(user) if user == subject => Ok(()),
        Some(_) => Err(ServiceError::new(
            ErrorCode::Forbidden,
            "you may only ask about yourself",
        )),
    }
}
