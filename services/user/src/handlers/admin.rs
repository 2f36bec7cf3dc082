//! Account administration: list and search accounts, disable/enable them. The acting
//! administrator's permissions are read from the database on every call, not from the token,
//! so a demoted administrator loses them at once.

use mesh_contracts::events::UserEvent;
use mesh_contracts::permissions::{ROLE_SUPER_ADMIN, USERS_DISABLE, USERS_READ};
use mesh_contracts::user::{
    AdminListUsersRequest, AdminSetDisabledRequest, UserProfile, UserProfilePage,
};
use mesh_contracts::{ErrorCode, ServiceError};
use mesh_nats::CallContext;
use mesh_service_kit::Fault;

use super::access::{self, require};
use super::{State, not_found};
use crate::domain::fields::AccountQuery;
use crate::domain::paging::Page;
use crate::domain::roles;
use crate::store::accounts::{self, Filter};
use crate::store::{outbox, sessions};

pub async fn list_users(
    state: State,
    ctx: CallContext,
    req: AdminListUsersRequest,
) -> Result<UserProfilePage, Fault> {
    require(&state, &ctx, USERS_READ).await?;
    let page = Page::parse(req.limit, req.cursor.as_deref())?;
    let query = AccountQuery::parse(req.q.as_deref())?;
    let filter = Filter::Admin {
        disabled: req.disabled,
        query: query.as_ref(),
    };
    let rows = accounts::list(&state.pool, filter, true, page).await?;
    let (rows, next_cursor) = page.finish(rows, |row| row.id);
    Ok(UserProfilePage {
        items: rows.iter().map(|r| r.profile()).collect(),
        next_cursor,
    })
}

/// Disables or enables an account. Nobody disables or enables an account granted permissions
/// they do not hold (enabling a disabled administrator would hand its permissions back), nor
/// disables their own account or the last enabled `super_admin`.
pub async fn set_disabled(
    state: State,
    ctx: CallContext,
    req: AdminSetDisabledRequest,
) -> Result<UserProfile, Fault> {
    let actor = require(&state, &ctx, USERS_DISABLE).await?;
    if actor.id == req.user_id && req.disabled {
        return Err(ServiceError::new(
            ErrorCode::Conflict,
            "an administrator cannot disable their own account",
        )
        .into());
    }
    let mut tx = state.pool.begin().await?;
    let target = accounts::lock(&mut tx, req.user_id)
        .await?
        .ok_or_else(|| not_found("user"))?;
    let target_holds = access::granted(&mut *tx, &target).await?;
    roles::require_covers(&actor.held, &target_holds)?;
    if req.disabled
        && target.roles().iter().any(|r| r == ROLE_SUPER_ADMIN)
        && accounts::other_enabled_holders(&mut tx, ROLE_SUPER_ADMIN, target.id).await? == 0
    {
        return Err(last_super_admin().into());
    }
    let row = accounts::set_disabled(&mut tx, req.user_id, req.disabled)
        .await?
        .ok_or_else(|| not_found("user"))?;
    let mut revoked = 0;
    if req.disabled {
        let live_after = super::sessions::live_after(&state);
        let ids = sessions::active_ids(&mut tx, req.user_id, None, live_after).await?;
        state.publish_revocations(req.user_id, &ids).await?;
        revoked = sessions::revoke(&mut tx, &ids).await?;
    }
    let (user_id, by) = (req.user_id, actor.id);
    let event = if req.disabled {
        UserEvent::UserDisabled { user_id, by }
    } else {
        UserEvent::UserEnabled { user_id, by }
    };
    outbox::append(&mut tx, req.user_id, &event).await?;
    tx.commit().await?;
    tracing::info!(admin = %actor.id, user_id = %req.user_id, disabled = req.disabled, revoked, "account state changed");
    Ok(row.profile())
}

pub fn last_super_admin() -> ServiceError {
    ServiceError::new(
        ErrorCode::Conflict,
        "the last enabled super_admin cannot be removed",
    )
}
