//! Another account's sessions, for administrators: list them (`sessions:read`) and end one or
//! all of them (`sessions:revoke`). Ending goes the way a user's own logout goes: the
//! revocation is published first, so every edge refuses the session's token at once.

use mesh_contracts::permissions::{self, SESSIONS_READ, SESSIONS_REVOKE};
use mesh_contracts::user::{
    AdminListSessionsRequest, AdminRevokeSessionsRequest, LogoutReply, SessionList,
};
use mesh_contracts::{ErrorCode, ServiceError};
use mesh_nats::CallContext;
use mesh_service_kit::Fault;

use super::access::{self, require};
use super::sessions::{end_sessions, session_list};
use super::{State, caller, not_found};
use crate::store::accounts;

pub async fn list(
    state: State,
    ctx: CallContext,
    req: AdminListSessionsRequest,
) -> Result<SessionList, Fault> {
    require(&state, &ctx, SESSIONS_READ).await?;
    let (_, current) = caller(&ctx)?;
    accounts::by_id(&state.pool, req.user_id)
        .await?
        .ok_or_else(|| not_found("user"))?;
    session_list(&state, req.user_id, current).await
}

/// Ends `session_id` of the account, or every session of it. Nobody signs out an account
/// holding permissions they do not hold (a moderator cannot sign out an administrator).
pub async fn revoke(
    state: State,
    ctx: CallContext,
    req: AdminRevokeSessionsRequest,
) -> Result<LogoutReply, Fault> {
    let actor = require(&state, &ctx, SESSIONS_REVOKE).await?;
    let target = accounts::by_id(&state.pool, req.user_id)
        .await?
        .ok_or_else(|| not_found("user"))?;
    let target_holds = access::granted(&state.pool, &target).await?;
    if !permissions::covers(&actor.held, &target_holds) {
        return Err(ServiceError::new(
            ErrorCode::Forbidden,
            "this account holds permissions you do not hold",
        )
        .into());
    }
    let ended = end_sessions(&state, target.id, req.session_id).await?;
    if req.session_id.is_some() && ended == 0 {
        return Err(not_found("active session").into());
    }
    tracing::info!(admin = %actor.id, user_id = %target.id, session_id = ?req.session_id, revoked = ended, "sessions revoked by an administrator");
    Ok(LogoutReply {
        revoked_sessions: ended,
    })
}
