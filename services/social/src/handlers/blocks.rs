//! Blocks: block (ending the friendship and any pending request), unblock, list.

use mesh_contracts::events::{FriendshipEnd, SocialEvent};
use mesh_contracts::social::{Block, BlockPage, FriendRequestStatus, ListPageRequest, UserRef};
use mesh_contracts::user::Empty;
use mesh_nats::CallContext;
use mesh_service_kit::Fault;

use super::friend_requests::apply;
use super::{State, caller};
use crate::domain::friends::{not_self, pair_key};
use crate::domain::not_found;
use crate::domain::paging::Page;
use crate::store::blocks::{self, BlockRow};
use crate::store::{self, friends, outbox};

/// Blocking twice is harmless: the existing block is returned and nothing is recorded.
pub async fn block(state: State, ctx: CallContext, req: UserRef) -> Result<Block, Fault> {
    let me = caller(&ctx)?;
    let other = req.user_id;
    not_self(me, other, "block")?;
    state.ensure_user_exists(&ctx, other).await?;
    let mut tx = state.pool.begin().await?;
    store::lock_pair(&mut tx, pair_key(me, other)).await?;
    let Some(row) = blocks::insert(&mut tx, me, other).await? else {
        let existing = blocks::get(&mut *tx, me, other)
            .await?
            .ok_or_else(|| not_found("block"))?;
        return Ok(existing.wire());
    };
    outbox::append(
        &mut tx,
        me,
        &SocialEvent::UserBlocked {
            blocker_id: row.blocker_id,
            blocked_id: row.blocked_id,
        },
    )
    .await?;
    let unfriended = friends::remove_friendship(&mut tx, me, other).await?;
    if unfriended {
        outbox::append(
            &mut tx,
            me,
            &SocialEvent::FriendshipRemoved {
                user_ids: [me, other],
                by: me,
                reason: FriendshipEnd::Blocked,
            },
        )
        .await?;
    }
    // A pending request between the two ends: the blocker's own is cancelled, the other's
    // is rejected.
    if let Some(pending) = friends::pending_between(&mut tx, me, other).await? {
        let next = if pending.from_user == me {
            FriendRequestStatus::Cancelled
        } else {
            FriendRequestStatus::Rejected
        };
        apply(&mut tx, pending.id, next, me).await?;
    }
    tx.commit().await?;
    if unfriended {
        state.caches.invalidate_friends(&[me, other]).await;
    }
    Ok(row.wire())
}

pub async fn unblock(state: State, ctx: CallContext, req: UserRef) -> Result<Empty, Fault> {
    let me = caller(&ctx)?;
    let other = req.user_id;
    let mut tx = state.pool.begin().await?;
    store::lock_pair(&mut tx, pair_key(me, other)).await?;
    if !blocks::delete(&mut tx, me, other).await? {
        return Err(not_found("block").into());
    }
    outbox::append(
        &mut tx,
        me,
        &SocialEvent::UserUnblocked {
            blocker_id: me,
            blocked_id: other,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Empty {})
}

pub async fn list(
    state: State,
    ctx: CallContext,
    req: ListPageRequest,
) -> Result<BlockPage, Fault> {
    let me = caller(&ctx)?;
    let page = Page::parse(req.limit, req.cursor.as_deref())?;
    let rows = blocks::list(&state.pool, me, page).await?;
    let (rows, next_cursor) = page.finish(rows, |row| row.id);
    Ok(BlockPage {
        items: rows.iter().map(BlockRow::wire).collect(),
        next_cursor,
    })
}
