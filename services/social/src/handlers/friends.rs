//! Friends: list with remarks, set a remark, remove (both directions), and the friendship
//! check other services make.

use mesh_contracts::events::{FriendshipEnd, SocialEvent};
use mesh_contracts::social as wire;
use mesh_contracts::social::{
    CheckFriendshipRequest, CheckFriendshipsRequest, Friend, FriendPage, FriendshipCheck,
    FriendshipChecks, ListPageRequest, MAX_FRIENDSHIP_CHECKS, SetRemarkRequest, UserRef,
};
use mesh_contracts::user::Empty;
use mesh_contracts::{ErrorCode, ServiceError};
use mesh_nats::CallContext;
use mesh_service_kit::Fault;
use uuid::Uuid;

use super::{State, caller, internal_or_self};
use crate::domain::fields;
use crate::domain::friends::{not_self, pair_key};
use crate::domain::not_found;
use crate::domain::paging::Page;
use crate::store::friends::{self, FriendRow};
use crate::store::{self, outbox};

pub async fn list(
    state: State,
    ctx: CallContext,
    req: ListPageRequest,
) -> Result<FriendPage, Fault> {
    let me = caller(&ctx)?;
    let page = Page::parse(req.limit, req.cursor.as_deref())?;
    let rows = friends::list_friends(&state.pool, me, page).await?;
    let (rows, next_cursor) = page.finish(rows, |row| row.id);
    Ok(FriendPage {
        items: rows.iter().map(FriendRow::wire).collect(),
        next_cursor,
    })
}

pub async fn set_remark(
    state: State,
    ctx: CallContext,
    req: SetRemarkRequest,
) -> Result<Friend, Fault> {
    let me = caller(&ctx)?;
    let remark = fields::remark(req.remark.as_deref())?;
    let mut tx = state.pool.begin().await?;
    let row = friends::set_remark(&mut tx, me, req.user_id, remark.as_deref())
        .await?
        .ok_or_else(|| not_found("friend"))?;
    outbox::append(
        &mut tx,
        me,
        &SocialEvent::FriendRemarkSet {
            user_id: row.user_id,
            friend_id: row.friend_id,
            remark: row.remark.clone(),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(row.wire())
}

pub async fn remove(state: State, ctx: CallContext, req: UserRef) -> Result<Empty, Fault> {
    let me = caller(&ctx)?;
    let other = req.user_id;
    not_self(me, other, "unfriend")?;
    let mut tx = state.pool.begin().await?;
    store::lock_pair(&mut tx, pair_key(me, other)).await?;
    if !friends::remove_friendship(&mut tx, me, other).await? {
        return Err(not_found("friend").into());
    }
    outbox::append(
        &mut tx,
        me,
        &SocialEvent::FriendshipRemoved {
            user_ids: [me, other],
            by: me,
            reason: FriendshipEnd::Removed,
        },
    )
    .await?;
    tx.commit().await?;
    state.caches.invalidate_friends(&[me, other]).await;
    Ok(Empty {})
}

pub async fn check(
    state: State,
    ctx: CallContext,
    req: CheckFriendshipRequest,
) -> Result<FriendshipCheck, Fault> {
    internal_or_self(&ctx, req.user_id)?;
    // Read from the table, not the cache: chat asks this to authorize every message, and an
    // unfriend answered by any instance must bite at once.
    let (friends, blocked) =
        store::friends::relation(&state.pool, req.user_id, req.other_id).await?;
    Ok(FriendshipCheck { friends, blocked })
}

/// `check` for many pairs in one read (chat authorizing an ingest batch); every pair must be
/// about the caller unless the call is internal.
pub async fn check_many(
    state: State,
    ctx: CallContext,
    req: CheckFriendshipsRequest,
) -> Result<FriendshipChecks, Fault> {
    if req.pairs.len() > MAX_FRIENDSHIP_CHECKS {
        return Err(ServiceError::new(
            ErrorCode::ValidationFailed,
            format!("pairs: at most {MAX_FRIENDSHIP_CHECKS}"),
        )
        .into());
    }
    for pair in &req.pairs {
        internal_or_self(&ctx, pair.user_id)?;
    }
    let pairs: Vec<(Uuid, Uuid)> = req.pairs.iter().map(|p| (p.user_id, p.other_id)).collect();
    let checks = store::friends::relations(&state.pool, &pairs)
        .await?
        .into_iter()
        .map(|(friends, blocked)| FriendshipCheck { friends, blocked })
        .collect();
    Ok(FriendshipChecks { checks })
}

/// Every friend of a user, for other services (presence fan-out).
pub async fn ids(
    state: State,
    ctx: CallContext,
    req: wire::UserIdRequest,
) -> Result<wire::UserIds, ServiceError> {
    internal_or_self(&ctx, req.user_id)?;
    let friends = state.caches.friends_of(&state.pool, req.user_id).await?;
    let mut ids: Vec<Uuid> = friends.iter().copied().collect();
    ids.sort_unstable();
    Ok(wire::UserIds { ids })
}
