//! Presence: the edge reports users coming and going; friends are told, and anyone may ask
//! about their friends.

use std::collections::HashSet;

use futures::future::join_all;
use mesh_contracts::chat::{
    MAX_PRESENCE_USERS, Presence, PresenceChange, PresenceList, PresenceRequest, ServerFrame,
};
use mesh_contracts::user::Empty;
use mesh_contracts::{ErrorCode, ServiceError};
use mesh_nats::CallContext;
use mesh_service_kit::Fault;
use time::OffsetDateTime;

use super::{State, caller};
use crate::domain::invalid;
use crate::store::presence;

pub async fn changed(state: State, ctx: CallContext, req: PresenceChange) -> Result<Empty, Fault> {
    let user = caller(&ctx)?;
    let now = OffsetDateTime::now_utc();
    state.last_seen.touch(user, now).await?;
    // One edge losing the user's last connection does not make them offline while another
    // edge still holds their presence key.
    if !req.online && matches!(state.presence.get(&user.to_string()).await, Ok(Some(_))) {
        return Ok(Empty {});
    }
    let friends = state.membership().friends_of(user).await?;
    let frame = ServerFrame::Presence(Presence {
        user_id: user,
        online: req.online,
        last_seen: Some(now),
    });
    state.pusher().send(&friends, None, &frame).await;
    Ok(Empty {})
}

/// Presence of the caller's friends (and the caller). Asking about anyone else is refused
/// (`hidden`, 403) rather than answered with an "offline, never seen" that would look like a
/// fact, so presence neither leaks to strangers nor misleads them.
pub async fn get(
    state: State,
    ctx: CallContext,
    req: PresenceRequest,
) -> Result<PresenceList, Fault> {
    let user = caller(&ctx)?;
    if req.user_ids.is_empty() || req.user_ids.len() > MAX_PRESENCE_USERS {
        return Err(invalid("user_ids", &format!("give 1 to {MAX_PRESENCE_USERS} ids")).into());
    }
    let mut visible: HashSet<_> = state
        .membership()
        .friends_of(user)
        .await?
        .into_iter()
        .collect();
    visible.insert(user);
    if req.user_ids.iter().any(|id| !visible.contains(id)) {
        return Err(ServiceError::new(
            ErrorCode::Hidden,
            "presence is shared only between friends",
        )
        .into());
    }
    let asked = &req.user_ids;
    let seen = presence::last_seen(&state.pool, asked).await?;
    let online = join_all(asked.iter().map(|id| {
        let kv = state.presence.clone();
        let key = id.to_string();
        async move { matches!(kv.get(&key).await, Ok(Some(_))) }
    }))
    .await;
    let online: HashSet<_> = asked
        .iter()
        .zip(online)
        .filter_map(|(id, on)| on.then_some(*id))
        .collect();
    let items = asked
        .iter()
        .map(|id| Presence {
            user_id: *id,
            online: online.contains(id),
            last_seen: seen.iter().find(|(u, _)| u == id).map(|(_, at)| *at),
        })
        .collect();
    Ok(PresenceList { items })
}
