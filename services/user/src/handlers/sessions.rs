//! Logout, logout everywhere, and the device (session) list.

use mesh_contracts::ServiceError;
use mesh_contracts::user::{Empty, LogoutReply, RevokeSessionRequest, SessionInfo, SessionList};
use mesh_nats::CallContext;
use mesh_service_kit::Fault;
use uuid::Uuid;

use super::{State, caller, not_found};
use crate::store::sessions;

/// Revokes `user_id`'s sessions: only `only`, or all of them; answers how many were active.
pub(super) async fn end_sessions(
    state: &State,
    user_id: Uuid,
    only: Option<Uuid>,
) -> Result<u32, Fault> {
    let mut tx = state.pool.begin().await?;
    let ids = sessions::active_ids(&mut tx, user_id, only).await?;
    state.publish_revocations(user_id, &ids).await?;
    let ended = sessions::revoke(&mut tx, &ids).await?;
    tx.commit().await?;
    Ok(u32::try_from(ended).unwrap_or(u32::MAX))
}

pub async fn logout(
    state: State,
    ctx: CallContext,
    _req: Empty,
) -> Result<LogoutReply, ServiceError> {
    let (user, session) = caller(&ctx)?;
    let revoked_sessions = end_sessions(&state, user, Some(session)).await?;
    Ok(LogoutReply { revoked_sessions })
}

pub async fn logout_all(
    state: State,
    ctx: CallContext,
    _req: Empty,
) -> Result<LogoutReply, ServiceError> {
    let (user, _) = caller(&ctx)?;
    let revoked_sessions = end_sessions(&state, user, None).await?;
    tracing::info!(user_id = %user, revoked_sessions, "logged out everywhere");
    Ok(LogoutReply { revoked_sessions })
}

pub async fn list(state: State, ctx: CallContext, _req: Empty) -> Result<SessionList, Fault> {
    let (user, current) = caller(&ctx)?;
    session_list(&state, user, current).await
}

/// `user_id`'s active sessions, newest first; `current` marks the one making the request.
pub(super) async fn session_list(
    state: &State,
    user_id: Uuid,
    current: Uuid,
) -> Result<SessionList, Fault> {
    let rows = sessions::active(&state.pool, user_id).await?;
    let items = rows
        .into_iter()
        .map(|row| SessionInfo {
            current: row.id == current,
            id: row.id,
            device_name: row.device_name,
            user_agent: row.user_agent,
            ip: row.ip,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
        })
        .collect();
    Ok(SessionList { items })
}

pub async fn revoke(
    state: State,
    ctx: CallContext,
    req: RevokeSessionRequest,
) -> Result<LogoutReply, ServiceError> {
    let (user, _) = caller(&ctx)?;
    // Only the caller's own sessions are visible: someone else's id is simply not found.
    let revoked_sessions = end_sessions(&state, user, Some(req.session_id)).await?;
    if revoked_sessions == 0 {
        return Err(not_found("active session"));
    }
    Ok(LogoutReply { revoked_sessions })
}
