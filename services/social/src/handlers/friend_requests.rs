//! Friend requests: send, list, accept, reject, cancel. Every change between two users runs
//! under their pair lock, so crossing requests and concurrent accepts cannot race.

use mesh_contracts::ErrorCode;
use mesh_contracts::ServiceError;
use mesh_contracts::events::SocialEvent;
use mesh_contracts::social::{
    FriendRequest, FriendRequestId, FriendRequestOutcome, FriendRequestPage, FriendRequestStatus,
    ListFriendRequestsRequest, SendFriendRequest,
};
use mesh_nats::CallContext;
use mesh_service_kit::Fault;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{State, caller};
use crate::domain::fields;
use crate::domain::friends::{
    Handling, PairState, RequestFacts, SendDecision, decide_handling, decide_send, not_self,
    pair_key,
};
use crate::domain::not_found;
use crate::domain::paging::Page;
use crate::store::friends::{self, RequestRow};
use crate::store::{self, outbox};

pub async fn send(
    state: State,
    ctx: CallContext,
    req: SendFriendRequest,
) -> Result<FriendRequestOutcome, Fault> {
    let me = caller(&ctx)?;
    let target = req.user_id;
    not_self(me, target, "send a friend request to")?;
    let message = fields::request_message(req.message.as_deref())?;
    state.ensure_user_exists(&ctx, target).await?;

    let mut tx = state.pool.begin().await?;
    store::lock_pair(&mut tx, pair_key(me, target)).await?;
    let pending = friends::pending_between(&mut tx, me, target).await?;
    let (are_friends, blocked) = friends::relation(&mut *tx, me, target).await?;
    let pair = PairState {
        blocked,
        friends: are_friends,
        pending_from_caller: pending.as_ref().is_some_and(|r| r.from_user == me),
        pending_to_caller: pending.filter(|r| r.from_user == target).map(|r| r.id),
    };
    let outcome = match decide_send(pair)? {
        SendDecision::Create => {
            let row = friends::insert_request(&mut tx, me, target, message.as_deref())
                .await
                .map_err(|err| -> Fault {
                    if store::is_unique_violation(&err) {
                        ServiceError::new(
                            ErrorCode::DuplicateRequest,
                            "a pending request between you already exists",
                        )
                        .into()
                    } else {
                        err.into()
                    }
                })?;
            store::usage::charge_friend_request(&mut tx, me).await?;
            outbox::append(
                &mut tx,
                row.id,
                &SocialEvent::FriendRequestCreated {
                    request: row.wire(),
                },
            )
            .await?;
            FriendRequestOutcome {
                request: row.wire(),
                became_friends: false,
            }
        }
        SendDecision::AcceptTheirs(theirs) => {
            let row = apply(&mut tx, theirs, FriendRequestStatus::Accepted, me).await?;
            FriendRequestOutcome {
                request: row.wire(),
                became_friends: true,
            }
        }
    };
    tx.commit().await?;
    if outcome.became_friends {
        state.caches.invalidate_friends(&[me, target]).await;
    }
    Ok(outcome)
}

pub async fn list(
    state: State,
    ctx: CallContext,
    req: ListFriendRequestsRequest,
) -> Result<FriendRequestPage, Fault> {
    let me = caller(&ctx)?;
    let page = Page::parse(req.limit, req.cursor.as_deref())?;
    let rows = friends::list_requests(&state.pool, me, req.direction, req.status, page).await?;
    let (rows, next_cursor) = page.finish(rows, |row| row.id);
    Ok(FriendRequestPage {
        items: rows.iter().map(RequestRow::wire).collect(),
        next_cursor,
    })
}

pub async fn accept(
    state: State,
    ctx: CallContext,
    req: FriendRequestId,
) -> Result<FriendRequest, ServiceError> {
    Ok(handle(state, ctx, req.request_id, Handling::Accept).await?)
}

pub async fn reject(
    state: State,
    ctx: CallContext,
    req: FriendRequestId,
) -> Result<FriendRequest, ServiceError> {
    Ok(handle(state, ctx, req.request_id, Handling::Reject).await?)
}

pub async fn cancel(
    state: State,
    ctx: CallContext,
    req: FriendRequestId,
) -> Result<FriendRequest, ServiceError> {
    Ok(handle(state, ctx, req.request_id, Handling::Cancel).await?)
}

async fn handle(
    state: State,
    ctx: CallContext,
    id: Uuid,
    handling: Handling,
) -> Result<FriendRequest, Fault> {
    let me = caller(&ctx)?;
    let mut tx = state.pool.begin().await?;
    // Read without a row lock to learn the pair, take the pair lock, then read again: every
    // writer of a pair's requests takes the pair lock first, so nothing can deadlock.
    let Some(seen) = friends::get_request(&mut *tx, id).await? else {
        return Err(not_found("friend request").into());
    };
    store::lock_pair(&mut tx, pair_key(seen.from_user, seen.to_user)).await?;
    let row = friends::lock_request(&mut tx, id)
        .await?
        .ok_or_else(|| not_found("friend request"))?;
    let facts = RequestFacts {
        from: row.from_user,
        to: row.to_user,
        status: row.status(),
    };
    let next = decide_handling(facts, me, handling)?;
    let row = apply(&mut tx, id, next, me).await?;
    tx.commit().await?;
    if next == FriendRequestStatus::Accepted {
        state
            .caches
            .invalidate_friends(&[row.from_user, row.to_user])
            .await;
    }
    Ok(row.wire())
}

/// Moves a pending request to `next` and records it; accepting also creates the friendship
/// (both rows). The caller holds the pair lock.
pub(super) async fn apply(
    conn: &mut PgConnection,
    id: Uuid,
    next: FriendRequestStatus,
    by: Uuid,
) -> Result<RequestRow, Fault> {
    let row = friends::set_status(conn, id, next).await?;
    outbox::append(
        conn,
        row.id,
        &SocialEvent::FriendRequestHandled {
            request: row.wire(),
            by,
        },
    )
    .await?;
    if next == FriendRequestStatus::Accepted
        && friends::insert_friendship(conn, row.from_user, row.to_user).await?
    {
        outbox::append(
            conn,
            row.from_user,
            &SocialEvent::FriendshipCreated {
                user_ids: [row.from_user, row.to_user],
                request_id: row.id,
            },
        )
        .await?;
    }
    Ok(row)
}
