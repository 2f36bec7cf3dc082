//! Moderation of groups (`groups:moderate`, checked by the edge): list and inspect any group,
//! remove a member, dissolve a group. The events written tell the affected users, as when a
//! group's own managers act.

use mesh_contracts::social::{Group, GroupPage, GroupRef, ListPageRequest, MemberRef};
use mesh_contracts::user::Empty;
use mesh_contracts::{ErrorCode, ServiceError};
use mesh_nats::CallContext;
use mesh_service_kit::Fault;

use super::groups::{dissolve_locked, existing_group, lock_group, membership};
use super::membership::kick_locked;
use super::{State, caller};
use crate::domain::not_found;
use crate::domain::paging::Page;
use crate::store::groups;

pub async fn list_groups(
    state: State,
    ctx: CallContext,
    req: ListPageRequest,
) -> Result<GroupPage, Fault> {
    caller(&ctx)?;
    let page = Page::parse(req.limit, req.cursor.as_deref())?;
    let rows = groups::all(&state.pool, page).await?;
    let (rows, next_cursor) = page.finish(rows, |row| row.id);
    Ok(GroupPage {
        items: rows.iter().map(|row| row.wire(None)).collect(),
        next_cursor,
    })
}

pub async fn get_group(state: State, ctx: CallContext, req: GroupRef) -> Result<Group, Fault> {
    caller(&ctx)?;
    Ok(existing_group(&state, req.group_id).await?.wire(None))
}

/// Removes a member; the owner cannot be removed (dissolve the group instead).
pub async fn remove_member(state: State, ctx: CallContext, req: MemberRef) -> Result<Empty, Fault> {
    let moderator = caller(&ctx)?;
    let mut tx = state.pool.begin().await?;
    let group = lock_group(&mut tx, req.group_id).await?;
    let target = membership(&mut tx, group.id, req.user_id)
        .await?
        .ok_or_else(|| not_found("member"))?;
    if target.user_id == group.owner_id {
        return Err(ServiceError::new(
            ErrorCode::OwnerMustTransfer,
            "the owner cannot be removed; dissolve the group instead",
        )
        .into());
    }
    kick_locked(&mut tx, group.id, target.user_id, moderator).await?;
    tx.commit().await?;
    state.caches.invalidate_group(group.id).await;
    Ok(Empty {})
}

pub async fn dissolve(state: State, ctx: CallContext, req: GroupRef) -> Result<Empty, Fault> {
    let moderator = caller(&ctx)?;
    let mut tx = state.pool.begin().await?;
    let group = lock_group(&mut tx, req.group_id).await?;
    dissolve_locked(&mut tx, group.id, moderator).await?;
    tx.commit().await?;
    state.caches.invalidate_group(group.id).await;
    Ok(Empty {})
}
