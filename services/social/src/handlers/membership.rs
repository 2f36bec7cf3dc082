//! Membership: list members, join, invite, join requests (list, approve, reject), leave,
//! kick, set role, mute, and the membership check other services make. Writes lock the
//! group's row first and decide on membership read inside that transaction.

use mesh_contracts::events::SocialEvent;
use mesh_contracts::social as wire;
use mesh_contracts::social::{
    GroupJoinRequest, GroupMember, GroupRef, GroupRole, InviteRequest, JoinGroupRequest,
    JoinOutcome, JoinReply, JoinRequestPage, JoinRequestRef, JoinRequestStatus,
    ListJoinRequestsRequest, ListMembersRequest, MemberPage, MemberRef, Membership,
    MembershipRequest, MuteRequest, SetRoleRequest,
};
use mesh_contracts::user::Empty;
use mesh_contracts::{ErrorCode, ServiceError};
use mesh_nats::CallContext;
use mesh_service_kit::Fault;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::groups::{existing_group, lock_group, membership};
use super::{State, caller, internal_or_self};
use crate::domain::fields;
use crate::domain::friends::not_self;
use crate::domain::groups::{self as rules, Admission};
use crate::domain::not_found;
use crate::domain::paging::Page;
use crate::store::groups::{self, GroupRow};
use crate::store::join_requests::{self, JoinRequestRow};
use crate::store::members::{self, MemberRow};
use crate::store::outbox;

pub async fn list_members(
    state: State,
    ctx: CallContext,
    req: ListMembersRequest,
) -> Result<MemberPage, Fault> {
    let me = caller(&ctx)?;
    let page = Page::parse(req.limit, req.cursor.as_deref())?;
    existing_group(&state, req.group_id).await?;
    rules::member(state.caches.role_in(&state.pool, req.group_id, me).await?)?;
    let rows = members::list(&state.pool, req.group_id, page).await?;
    let (rows, next_cursor) = page.finish(rows, |row| row.id);
    let now = OffsetDateTime::now_utc();
    Ok(MemberPage {
        items: rows.iter().map(|row| row.wire(now)).collect(),
        next_cursor,
    })
}

/// Adds `user` to the locked `group` if it has room, and records it.
async fn add_member(
    conn: &mut PgConnection,
    group: &GroupRow,
    user: Uuid,
    invited_by: Option<Uuid>,
) -> Result<MemberRow, Fault> {
    rules::has_room(group.member_count(), group.max_members())?;
    let member = members::insert(conn, group.id, user, GroupRole::Member).await?;
    groups::add_members(conn, group.id, 1).await?;
    outbox::append(
        conn,
        group.id,
        &SocialEvent::GroupMemberJoined {
            group_id: group.id,
            user_id: user,
            role: member.role(),
            invited_by,
        },
    )
    .await?;
    Ok(member)
}

/// Records a join request's new status.
async fn record_handled(conn: &mut PgConnection, row: &JoinRequestRow) -> Result<(), Fault> {
    outbox::append(
        conn,
        row.group_id,
        &SocialEvent::GroupJoinRequestHandled {
            request: row.wire(),
        },
    )
    .await
    .map_err(Fault::from)
}

/// Stores a pending join request and records it.
async fn request_join(
    conn: &mut PgConnection,
    group: Uuid,
    user: Uuid,
    inviter: Option<Uuid>,
    message: Option<&str>,
) -> Result<JoinRequestRow, Fault> {
    let row = join_requests::insert(conn, group, user, inviter, message).await?;
    outbox::append(
        conn,
        group,
        &SocialEvent::GroupJoinRequested {
            request: row.wire(),
        },
    )
    .await?;
    Ok(row)
}

fn joined(member: &MemberRow) -> JoinReply {
    JoinReply {
        outcome: JoinOutcome::Joined,
        member: Some(member.wire(OffsetDateTime::now_utc())),
        request: None,
    }
}

fn pending(request: &JoinRequestRow) -> JoinReply {
    JoinReply {
        outcome: JoinOutcome::Pending,
        member: None,
        request: Some(request.wire()),
    }
}

pub async fn join(
    state: State,
    ctx: CallContext,
    req: JoinGroupRequest,
) -> Result<JoinReply, Fault> {
    let me = caller(&ctx)?;
    let message = fields::request_message(req.message.as_deref())?;
    let mut tx = state.pool.begin().await?;
    let group = lock_group(&mut tx, req.group_id).await?;
    let already = membership(&mut tx, group.id, me).await?.is_some();
    let waiting = join_requests::has_pending(&mut *tx, group.id, me).await?;
    let reply = match rules::decide_join(group.policy(), already, waiting)? {
        Admission::Join => joined(&add_member(&mut tx, &group, me, None).await?),
        Admission::Request => {
            pending(&request_join(&mut tx, group.id, me, None, message.as_deref()).await?)
        }
    };
    tx.commit().await?;
    if reply.outcome == JoinOutcome::Joined {
        state.caches.invalidate_group(group.id).await;
    }
    Ok(reply)
}

pub async fn invite(
    state: State,
    ctx: CallContext,
    req: InviteRequest,
) -> Result<JoinReply, Fault> {
    let me = caller(&ctx)?;
    let target = req.user_id;
    not_self(me, target, "invite")?;
    // Cheap refusals before asking the user service; the transaction decides for real.
    existing_group(&state, req.group_id).await?;
    rules::member(state.caches.role_in(&state.pool, req.group_id, me).await?)?;
    state.ensure_user_exists(&ctx, target).await?;

    let mut tx = state.pool.begin().await?;
    let group = lock_group(&mut tx, req.group_id).await?;
    let inviter = membership(&mut tx, group.id, me).await?.map(|m| m.role());
    let invitee_member = membership(&mut tx, group.id, target).await?.is_some();
    let waiting = join_requests::has_pending(&mut *tx, group.id, target).await?;
    let reply = match rules::decide_invite(inviter, group.policy(), invitee_member, waiting)? {
        Admission::Join => {
            let member = add_member(&mut tx, &group, target, Some(me)).await?;
            // A request they had waiting is settled by their joining.
            if let Some(settled) =
                join_requests::approve_pending_of(&mut tx, group.id, target, me).await?
            {
                record_handled(&mut tx, &settled).await?;
            }
            joined(&member)
        }
        Admission::Request => {
            pending(&request_join(&mut tx, group.id, target, Some(me), None).await?)
        }
    };
    tx.commit().await?;
    if reply.outcome == JoinOutcome::Joined {
        state.caches.invalidate_group(group.id).await;
    }
    Ok(reply)
}

/// Owners and admins read a group's join requests; nobody else learns of them.
pub async fn list_requests(
    state: State,
    ctx: CallContext,
    req: ListJoinRequestsRequest,
) -> Result<JoinRequestPage, Fault> {
    let me = caller(&ctx)?;
    let page = Page::parse(req.limit, req.cursor.as_deref())?;
    existing_group(&state, req.group_id).await?;
    rules::manager(state.caches.role_in(&state.pool, req.group_id, me).await?)?;
    let rows = join_requests::list(&state.pool, req.group_id, req.status, page).await?;
    let (rows, next_cursor) = page.finish(rows, |row| row.id);
    Ok(JoinRequestPage {
        items: rows.iter().map(JoinRequestRow::wire).collect(),
        next_cursor,
    })
}

pub async fn approve(
    state: State,
    ctx: CallContext,
    req: JoinRequestRef,
) -> Result<GroupJoinRequest, ServiceError> {
    Ok(decide_request(state, ctx, req, JoinRequestStatus::Approved).await?)
}

pub async fn reject(
    state: State,
    ctx: CallContext,
    req: JoinRequestRef,
) -> Result<GroupJoinRequest, ServiceError> {
    Ok(decide_request(state, ctx, req, JoinRequestStatus::Rejected).await?)
}

async fn decide_request(
    state: State,
    ctx: CallContext,
    req: JoinRequestRef,
    decision: JoinRequestStatus,
) -> Result<GroupJoinRequest, Fault> {
    let me = caller(&ctx)?;
    let mut tx = state.pool.begin().await?;
    let group = lock_group(&mut tx, req.group_id).await?;
    rules::manager(membership(&mut tx, group.id, me).await?.map(|m| m.role()))?;
    let request = join_requests::lock(&mut tx, group.id, req.request_id)
        .await?
        .ok_or_else(|| not_found("join request"))?;
    rules::still_pending(request.status())?;
    let mut added = false;
    if decision == JoinRequestStatus::Approved
        && membership(&mut tx, group.id, request.user_id)
            .await?
            .is_none()
    {
        add_member(&mut tx, &group, request.user_id, request.inviter_id).await?;
        added = true;
    }
    let row = join_requests::set_status(&mut tx, request.id, decision, me).await?;
    record_handled(&mut tx, &row).await?;
    tx.commit().await?;
    if added {
        state.caches.invalidate_group(group.id).await;
    }
    Ok(row.wire())
}

pub async fn leave(state: State, ctx: CallContext, req: GroupRef) -> Result<Empty, Fault> {
    let me = caller(&ctx)?;
    let mut tx = state.pool.begin().await?;
    let group = lock_group(&mut tx, req.group_id).await?;
    let role = rules::member(membership(&mut tx, group.id, me).await?.map(|m| m.role()))?;
    rules::decide_leave(role)?;
    remove_member(&mut tx, group.id, me).await?;
    outbox::append(
        &mut tx,
        group.id,
        &SocialEvent::GroupMemberLeft {
            group_id: group.id,
            user_id: me,
        },
    )
    .await?;
    tx.commit().await?;
    state.caches.invalidate_group(group.id).await;
    Ok(Empty {})
}

async fn remove_member(conn: &mut PgConnection, group: Uuid, user: Uuid) -> Result<(), Fault> {
    if members::delete(conn, group, user).await? {
        groups::add_members(conn, group, -1).await?;
    }
    Ok(())
}

/// The acting user's role, if `allowed` admits it, and the target member's row, for kick,
/// mute and role changes. The caller's own rights are checked before anything about the
/// target is revealed.
async fn actor_and_target(
    conn: &mut PgConnection,
    group: Uuid,
    actor: Uuid,
    target: Uuid,
    allowed: impl FnOnce(Option<GroupRole>) -> Result<GroupRole, ServiceError>,
) -> Result<(GroupRole, MemberRow), ServiceError> {
    let actor_role = allowed(membership(conn, group, actor).await?.map(|m| m.role()))?;
    let target_row = membership(conn, group, target)
        .await?
        .ok_or_else(|| not_found("member"))?;
    Ok((actor_role, target_row))
}

pub async fn kick(state: State, ctx: CallContext, req: MemberRef) -> Result<Empty, Fault> {
    let me = caller(&ctx)?;
    not_self(me, req.user_id, "kick")?;
    let mut tx = state.pool.begin().await?;
    let group = lock_group(&mut tx, req.group_id).await?;
    let (actor, target) =
        actor_and_target(&mut tx, group.id, me, req.user_id, rules::manager).await?;
    rules::decide_discipline(actor, target.role(), "kick")?;
    kick_locked(&mut tx, group.id, target.user_id, me).await?;
    tx.commit().await?;
    state.caches.invalidate_group(group.id).await;
    Ok(Empty {})
}

/// Removes `user` from a group whose row `tx` holds locked and writes the event that tells
/// them; `by` removed them (a manager of the group, or a moderator).
pub(super) async fn kick_locked(
    tx: &mut PgConnection,
    group_id: Uuid,
    user_id: Uuid,
    by: Uuid,
) -> Result<(), Fault> {
    remove_member(tx, group_id, user_id).await?;
    outbox::append(
        tx,
        group_id,
        &SocialEvent::GroupMemberKicked {
            group_id,
            user_id,
            by,
        },
    )
    .await
    .map_err(Fault::from)
}

pub async fn set_role(
    state: State,
    ctx: CallContext,
    req: SetRoleRequest,
) -> Result<GroupMember, Fault> {
    let me = caller(&ctx)?;
    not_self(me, req.user_id, "change the role of")?;
    let mut tx = state.pool.begin().await?;
    let group = lock_group(&mut tx, req.group_id).await?;
    let (_, target) = actor_and_target(&mut tx, group.id, me, req.user_id, |role| {
        rules::decide_set_role(role, req.role).map(|()| GroupRole::Owner)
    })
    .await?;
    let now = OffsetDateTime::now_utc();
    if target.role() == req.role {
        return Ok(target.wire(now));
    }
    let row = members::set_role(&mut tx, group.id, target.user_id, req.role).await?;
    outbox::append(
        &mut tx,
        group.id,
        &SocialEvent::GroupMemberRoleChanged {
            group_id: group.id,
            user_id: row.user_id,
            role: row.role(),
            previous: target.role(),
            by: me,
        },
    )
    .await?;
    tx.commit().await?;
    state.caches.invalidate_group(group.id).await;
    Ok(row.wire(now))
}

pub async fn mute(state: State, ctx: CallContext, req: MuteRequest) -> Result<GroupMember, Fault> {
    let me = caller(&ctx)?;
    not_self(me, req.user_id, "mute")?;
    let now = OffsetDateTime::now_utc();
    let until = fields::mute_until(req.muted, req.duration_secs, now)?;
    let mut tx = state.pool.begin().await?;
    let group = lock_group(&mut tx, req.group_id).await?;
    let (actor, target) =
        actor_and_target(&mut tx, group.id, me, req.user_id, rules::manager).await?;
    rules::decide_discipline(actor, target.role(), "mute")?;
    let row = members::set_muted_until(&mut tx, group.id, target.user_id, until).await?;
    let (group_id, user_id, by) = (group.id, row.user_id, me);
    // The stored time, so the event, the reply and chat's projection agree to the microsecond.
    let event = match row.muted_until {
        Some(muted_until) => SocialEvent::GroupMemberMuted {
            group_id,
            user_id,
            muted_until,
            by,
        },
        None => SocialEvent::GroupMemberUnmuted {
            group_id,
            user_id,
            by,
        },
    };
    outbox::append(&mut tx, group.id, &event).await?;
    tx.commit().await?;
    state.caches.invalidate_group(group.id).await;
    Ok(row.wire(now))
}

pub async fn get_membership(
    state: State,
    ctx: CallContext,
    req: MembershipRequest,
) -> Result<Membership, ServiceError> {
    internal_or_self(&ctx, req.user_id)?;
    let members = state.caches.members_of(&state.pool, req.group_id).await?;
    let now = OffsetDateTime::now_utc();
    Ok(match members.get(&req.user_id) {
        Some(member) => Membership {
            role: Some(member.role),
            muted_until: member.muted_until.filter(|until| *until > now),
        },
        None => Membership {
            role: None,
            muted_until: None,
        },
    })
}

/// Every member of a group, for the chat service (internal calls only: it lists everyone).
pub async fn roster(
    state: State,
    ctx: CallContext,
    req: wire::GroupRef,
) -> Result<wire::Roster, ServiceError> {
    if ctx.user_id.is_some() {
        return Err(ServiceError::new(
            ErrorCode::Forbidden,
            "the roster is for other services only",
        ));
    }
    let members = state.caches.members_of(&state.pool, req.group_id).await?;
    let mut entries: Vec<wire::RosterEntry> = members
        .iter()
        .map(|(user_id, member)| wire::RosterEntry {
            user_id: *user_id,
            role: member.role,
            muted_until: member.muted_until,
        })
        .collect();
    entries.sort_unstable_by_key(|e| e.user_id);
    // Every group has its owner as a member, so no members means no group.
    Ok(wire::Roster {
        exists: !entries.is_empty(),
        members: entries,
    })
}
