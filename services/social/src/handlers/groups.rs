//! Groups themselves: create, read, update, dissolve, list the caller's groups, transfer
//! ownership. Writes lock the group's row first.

use std::sync::Arc;

use mesh_contracts::events::SocialEvent;
use mesh_contracts::social::{
    CreateGroupRequest, Group, GroupPage, GroupRef, GroupRole, JoinPolicy, ListPageRequest,
    TransferRequest, UpdateGroupRequest,
};
use mesh_contracts::user::Empty;
use mesh_nats::CallContext;
use mesh_service_kit::Fault;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{State, caller};
use crate::domain::friends::not_self;
use crate::domain::groups as rules;
use crate::domain::paging::Page;
use crate::domain::{fields, invalid, not_found};
use crate::store::groups::{self, GroupChange, GroupRow, MyGroupRow, NewGroup};
use crate::store::members::{self, MemberRow};
use crate::store::outbox;

/// The group, locked until the transaction ends, or 404.
pub(super) async fn lock_group(conn: &mut PgConnection, id: Uuid) -> Result<GroupRow, Fault> {
    Ok(groups::lock(conn, id)
        .await?
        .ok_or_else(|| not_found("group"))?)
}

/// The group's profile from the cache (a read that tolerates a short staleness), or 404.
pub(super) async fn existing_group(state: &State, id: Uuid) -> Result<Arc<GroupRow>, Fault> {
    state
        .caches
        .group(&state.pool, id)
        .await?
        .ok_or_else(|| not_found("group").into())
}

/// `user`'s membership, read inside the transaction.
pub(super) async fn membership(
    conn: &mut PgConnection,
    group: Uuid,
    user: Uuid,
) -> Result<Option<MemberRow>, Fault> {
    members::get(conn, group, user).await.map_err(Fault::from)
}

pub async fn create(
    state: State,
    ctx: CallContext,
    req: CreateGroupRequest,
) -> Result<Group, Fault> {
    let me = caller(&ctx)?;
    let name = fields::group_name(&req.name)?;
    let icon = req.icon.as_deref().map(fields::icon).transpose()?.flatten();
    let announcement = req
        .announcement
        .as_deref()
        .map(fields::announcement)
        .transpose()?
        .flatten();
    let max_members = fields::max_members(req.max_members)?;
    let new = NewGroup {
        id: Uuid::now_v7(),
        name: &name,
        icon: icon.as_deref(),
        announcement: announcement.as_deref(),
        join_policy: req.join_policy.unwrap_or(JoinPolicy::Approval),
        max_members,
        owner_id: me,
    };
    let mut tx = state.pool.begin().await?;
    crate::store::usage::admit_group(&mut tx, me, max_members).await?;
    groups::insert(&mut tx, &new).await?;
    let owner = members::insert(&mut tx, new.id, me, GroupRole::Owner).await?;
    let row = groups::add_members(&mut tx, new.id, 1).await?;
    outbox::append(
        &mut tx,
        row.id,
        &SocialEvent::GroupCreated {
            group: row.wire(None),
        },
    )
    .await?;
    outbox::append(
        &mut tx,
        row.id,
        &SocialEvent::GroupMemberJoined {
            group_id: row.id,
            user_id: me,
            role: owner.role(),
            invited_by: None,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(row.wire(Some(GroupRole::Owner)))
}

/// Any signed-in user may read a group's profile (to decide whether to join); `my_role`
/// says what the caller is in it.
pub async fn get(state: State, ctx: CallContext, req: GroupRef) -> Result<Group, Fault> {
    let me = caller(&ctx)?;
    let row = existing_group(&state, req.group_id).await?;
    let role = state.caches.role_in(&state.pool, row.id, me).await?;
    Ok(row.wire(role))
}

pub async fn update(
    state: State,
    ctx: CallContext,
    req: UpdateGroupRequest,
) -> Result<Group, Fault> {
    let me = caller(&ctx)?;
    let name = req.name.as_deref().map(fields::group_name).transpose()?;
    let icon = req.icon.as_deref().map(fields::icon).transpose()?;
    let announcement = req
        .announcement
        .as_deref()
        .map(fields::announcement)
        .transpose()?;
    if name.is_none() && icon.is_none() && announcement.is_none() {
        return Err(invalid("body", "give at least one of name, icon or announcement").into());
    }
    let change = GroupChange {
        name: name.as_deref(),
        icon: icon.as_ref().map(Option::as_deref),
        announcement: announcement.as_ref().map(Option::as_deref),
    };
    let mut tx = state.pool.begin().await?;
    lock_group(&mut tx, req.group_id).await?;
    let my_role = membership(&mut tx, req.group_id, me)
        .await?
        .map(|m| m.role());
    let my_role = rules::manager(my_role)?;
    let row = groups::update(&mut tx, req.group_id, &change).await?;
    outbox::append(
        &mut tx,
        row.id,
        &SocialEvent::GroupUpdated {
            group: row.wire(None),
            by: me,
        },
    )
    .await?;
    tx.commit().await?;
    state.caches.invalidate_group(row.id).await;
    Ok(row.wire(Some(my_role)))
}

pub async fn dissolve(state: State, ctx: CallContext, req: GroupRef) -> Result<Empty, Fault> {
    let me = caller(&ctx)?;
    let mut tx = state.pool.begin().await?;
    let row = lock_group(&mut tx, req.group_id).await?;
    let my_role = membership(&mut tx, row.id, me).await?.map(|m| m.role());
    rules::owner(my_role)?;
    dissolve_locked(&mut tx, row.id, me).await?;
    tx.commit().await?;
    state.caches.invalidate_group(row.id).await;
    Ok(Empty {})
}

/// Deletes a group whose row `tx` holds locked and writes the event that tells its members;
/// `by` dissolved it (its owner, or a moderator).
pub(super) async fn dissolve_locked(
    tx: &mut sqlx::PgConnection,
    group_id: Uuid,
    by: Uuid,
) -> Result<(), Fault> {
    let member_ids: Vec<Uuid> = members::all(&mut *tx, group_id)
        .await?
        .iter()
        .map(|m| m.user_id)
        .collect();
    groups::delete(tx, group_id).await?;
    outbox::append(
        tx,
        group_id,
        &SocialEvent::GroupDissolved {
            group_id,
            member_ids,
            by,
        },
    )
    .await
    .map_err(Fault::from)
}

pub async fn mine(
    state: State,
    ctx: CallContext,
    req: ListPageRequest,
) -> Result<GroupPage, Fault> {
    let me = caller(&ctx)?;
    let page = Page::parse(req.limit, req.cursor.as_deref())?;
    let rows = groups::of_member(&state.pool, me, page).await?;
    let (rows, next_cursor) = page.finish(rows, |row| row.group.id);
    Ok(GroupPage {
        items: rows.iter().map(MyGroupRow::wire).collect(),
        next_cursor,
    })
}

/// The owner hands the group to another member and stays on as an admin.
pub async fn transfer(
    state: State,
    ctx: CallContext,
    req: TransferRequest,
) -> Result<Group, Fault> {
    let me = caller(&ctx)?;
    let target = req.user_id;
    not_self(me, target, "transfer ownership to")?;
    let mut tx = state.pool.begin().await?;
    let group = lock_group(&mut tx, req.group_id).await?;
    let my_role = membership(&mut tx, group.id, me).await?.map(|m| m.role());
    rules::owner(my_role)?;
    if membership(&mut tx, group.id, target).await?.is_none() {
        return Err(not_found("member").into());
    }
    // Demote first: a group has at most one owner row at any moment.
    members::set_role(&mut tx, group.id, me, GroupRole::Admin).await?;
    members::set_role(&mut tx, group.id, target, GroupRole::Owner).await?;
    let row = groups::set_owner(&mut tx, group.id, target).await?;
    outbox::append(
        &mut tx,
        row.id,
        &SocialEvent::GroupOwnershipTransferred {
            group_id: row.id,
            from: me,
            to: target,
        },
    )
    .await?;
    tx.commit().await?;
    state.caches.invalidate_group(row.id).await;
    Ok(row.wire(Some(GroupRole::Admin)))
}
