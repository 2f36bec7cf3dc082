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
            Err(RpcError::Service(err))
                if matches!(err.code, ErrorCode::ServiceUnavailable | ErrorCode::Timeout) =>
            {
                Err(err)
            }
            Err(RpcError::Unavailable(why) | RpcError::Transport(why)) => {
                tracing::warn!(reason = %why, "user service unavailable");
                Err(ServiceError::new(
                    ErrorCode::ServiceUnavailable,
                    "the user service is unavailable; try again",
                ))
            }
            Err(RpcError::Timeout(after)) => {
                tracing::warn!(after = ?after, "user service timed out");
                Err(ServiceError::new(
                    ErrorCode::Timeout,
                    "the user service did not answer in time",
                ))
            }
            Err(err) => Err(internal(err)),
        }
    }
}

/// Wires every operation of the service to its handler.
pub fn register(host: ServiceHost, state: State) -> ServiceHost {
    host.handle::<wire::SendFriend, _, _, _>(state.clone(), friend_requests::send)
        .handle::<wire::ListFriendRequests, _, _, _>(state.clone(), friend_requests::list)
        .handle::<wire::AcceptFriendRequest, _, _, _>(state.clone(), friend_requests::accept)
        .handle::<wire::RejectFriendRequest, _, _, _>(state.clone(), friend_requests::reject)
        .handle::<wire::CancelFriendRequest, _, _, _>(state.clone(), friend_requests::cancel)
        .handle::<wire::ListFriends, _, _, _>(state.clone(), friends::list)
        .handle::<wire::SetRemark, _, _, _>(state.clone(), friends::set_remark)
        .handle::<wire::RemoveFriend, _, _, _>(state.clone(), friends::remove)
        .handle::<wire::CheckFriendship, _, _, _>(state.clone(), friends::check)
        .handle::<wire::BlockUser, _, _, _>(state.clone(), blocks::block)
        .handle::<wire::UnblockUser, _, _, _>(state.clone(), blocks::unblock)
        .handle::<wire::ListBlocks, _, _, _>(state.clone(), blocks::list)
        .handle::<wire::CreateGroup, _, _, _>(state.clone(), groups::create)
        .handle::<wire::GetGroup, _, _, _>(state.clone(), groups::get)
        .handle::<wire::UpdateGroup, _, _, _>(state.clone(), groups::update)
        .handle::<wire::DissolveGroup, _, _, _>(state.clone(), groups::dissolve)
        .handle::<wire::MyGroups, _, _, _>(state.clone(), groups::mine)
        .handle::<wire::TransferOwnership, _, _, _>(state.clone(), groups::transfer)
        .handle::<wire::ListMembers, _, _, _>(state.clone(), membership::list_members)
        .handle::<wire::JoinGroup, _, _, _>(state.clone(), membership::join)
        .handle::<wire::InviteMember, _, _, _>(state.clone(), membership::invite)
        .handle::<wire::ListJoinRequests, _, _, _>(state.clone(), membership::list_requests)
        .handle::<wire::ApproveJoinRequest, _, _, _>(state.clone(), membership::approve)
        .handle::<wire::RejectJoinRequest, _, _, _>(state.clone(), membership::reject)
        .handle::<wire::LeaveGroup, _, _, _>(state.clone(), membership::leave)
        .handle::<wire::KickMember, _, _, _>(state.clone(), membership::kick)
        .handle::<wire::SetMemberRole, _, _, _>(state.clone(), membership::set_role)
        .handle::<wire::MuteMember, _, _, _>(state.clone(), membership::mute)
        .handle::<wire::GetMembership, _, _, _>(state.clone(), membership::get_membership)
        .handle::<wire::FriendIds, _, _, _>(state.clone(), friends::ids)
        .handle::<wire::GroupRoster, _, _, _>(state.clone(), membership::roster)
        .handle::<mesh_contracts::usage::SocialSetQuota, _, _, _>(state.clone(), usage::set_quota)
        .handle::<mesh_contracts::usage::SocialUsage, _, _, _>(state.clone(), usage::usage)
        .handle::<mesh_contracts::moderation::ModerateListGroups, _, _, _>(
            state.clone(),
            moderation::list_groups,
        )
        .handle::<mesh_contracts::moderation::ModerateGetGroup, _, _, _>(
            state.clone(),
            moderation::get_group,
        )
        .handle::<mesh_contracts::moderation::ModerateRemoveMember, _, _, _>(
            state.clone(),
            moderation::remove_member,
        )
        .handle::<mesh_contracts::moderation::ModerateDissolveGroup, _, _, _>(
            state.clone(),
            moderation::dissolve,
        )
        .handle::<wire::Health, _, _, _>(state, health)
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

/// Storage and internal failures, mapped the same way in every service.
pub(crate) use mesh_service_kit::{db_error as db, internal_error as internal};
