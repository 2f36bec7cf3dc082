//! Logout, logout everywhere, and the device (session) list.

use mesh_contracts::ServiceError;
use mesh_contracts::user::{Empty, LogoutReply, RevokeSessionRequest, SessionInfo, SessionList};
use mesh_nats::CallContext;
use mesh_service_kit::Fault;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{State, caller, not_found};
use crate::domain::sessions::{MAX_SESSIONS_PER_USER, revocable_after};
use crate::store::sessions;

/// Sessions that expired before this need no revocation (none of their tokens lives on).
pub(super) fn live_after(state: &State) -> OffsetDateTime {
    revocable_after(OffsetDateTime::now_utc(), state.config.access_ttl)
}

/// Revokes `user_id`'s sessions: only `only`, or all of them whose tokens may still be in use
/// (about `MAX_SESSIONS_PER_USER`, and those expired within an access token's lifetime);
/// answers how many were revoked.
pub(super) async fn end_sessions(
    state: &State,
    user_id: Uuid,
    only: Option<Uuid>,
) -> Result<u32, Fault> {
    let mut tx = state.pool.begin().await?;
    let ids = sessions::active_ids(&mut tx, user_id, only, live_after(state)).await?;
    state.publish_revocations(user_id, &ids).await?;
    let ended = sessions::revoke(&mut tx, &ids).await?;
    tx.commit().await?;
    Ok(u32::try_from(ended).unwrap_or(u32::MAX))
}

/// Ends `user_id`'s least recently used sessions beyond `MAX_SESSIONS_PER_USER` (after a
/// sign-in opened one), revoked like a logout; answers how many.
pub(super) async fn end_sessions_beyond_cap(state: &State, user_id: Uuid) -> Result<u64, Fault> {
    let ids = {
        let mut conn = state.pool.acquire().await?;
        sessions::beyond(&mut conn, user_id, MAX_SESSIONS_PER_USER).await?
    };
    if ids.is_empty() {
        return Ok(0);
    }
    // No connection held while the revocations are published.
    state.publish_revocations(user_id, &ids).await?;
    let mut conn = state.pool.acquire().await?;
    Ok(sessions::revoke(&mut conn, &ids).await?)
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

/// `user_id`'s active sessions, newest first (`MAX_SESSIONS_PER_USER` at most: a sign-in ends
/// the ones beyond, but sessions opened at the same time may pass it for a moment); `current`
/// marks the one making the request.
pub(super) async fn session_list(
    state: &State,
    user_id: Uuid,
    current: Uuid,
) -> Result<SessionList, Fault> {
    let rows = sessions::active(&state.pool, user_id, MAX_SESSIONS_PER_USER).await?;
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
