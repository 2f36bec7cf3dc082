//! Administration: list accounts, disable/enable them, set roles. Admin rights are read from
//! the database on every call, not from the token, so a demoted admin loses them at once.

use mesh_contracts::events::UserEvent;
use mesh_contracts::user::{
    AdminListUsersRequest, AdminSetDisabledRequest, AdminSetRolesRequest, UserProfile,
    UserProfilePage,
};
use mesh_contracts::{ErrorCode, ServiceError};
use mesh_nats::CallContext;
use uuid::Uuid;

use super::{State, caller, db, not_found, own_account};
use crate::domain::paging::Page;
use crate::domain::roles;
use crate::store::accounts::{self, Filter};
use crate::store::{outbox, sessions};

/// The caller, if it is an enabled admin.
async fn require_admin(state: &State, ctx: &CallContext) -> Result<Uuid, ServiceError> {
    let (user, _) = caller(ctx)?;
    let account = own_account(state, user).await?;
    if account.disabled || !roles::is_admin(&account.roles()) {
        return Err(ServiceError::new(
            ErrorCode::Forbidden,
            "administrators only",
        ));
    }
    Ok(user)
}

pub async fn list_users(
    state: State,
    ctx: CallContext,
    req: AdminListUsersRequest,
) -> Result<UserProfilePage, ServiceError> {
    require_admin(&state, &ctx).await?;
    let page = Page::parse(req.limit, req.cursor.as_deref())?;
    let rows = accounts::list(&state.pool, Filter::Disabled(req.disabled), true, page)
        .await
        .map_err(db)?;
    let (rows, next_cursor) = page.finish(rows, |row| row.id);
    Ok(UserProfilePage {
        items: rows.iter().map(|r| r.profile()).collect(),
        next_cursor,
    })
}

pub async fn set_disabled(
    state: State,
    ctx: CallContext,
    req: AdminSetDisabledRequest,
) -> Result<UserProfile, ServiceError> {
    let admin = require_admin(&state, &ctx).await?;
    if admin == req.user_id && req.disabled {
        return Err(ServiceError::new(
            ErrorCode::Conflict,
            "an administrator cannot disable their own account",
        ));
    }
    let mut tx = state.pool.begin().await.map_err(db)?;
    let row = accounts::set_disabled(&mut tx, req.user_id, req.disabled)
        .await
        .map_err(db)?
        .ok_or_else(|| not_found("user"))?;
    let mut revoked = 0;
    if req.disabled {
        let ids = sessions::active_ids(&mut tx, req.user_id, None)
            .await
            .map_err(db)?;
        state.publish_revocations(req.user_id, &ids).await?;
        revoked = sessions::revoke(&mut tx, &ids).await.map_err(db)?;
    }
    let (user_id, by) = (req.user_id, admin);
    let event = if req.disabled {
        UserEvent::UserDisabled { user_id, by }
    } else {
        UserEvent::UserEnabled { user_id, by }
    };
    outbox::append(&mut tx, req.user_id, &event)
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    tracing::info!(admin = %admin, user_id = %req.user_id, disabled = req.disabled, revoked, "account state changed");
    Ok(row.profile())
}

pub async fn set_roles(
    state: State,
    ctx: CallContext,
    req: AdminSetRolesRequest,
) -> Result<UserProfile, ServiceError> {
    let admin = require_admin(&state, &ctx).await?;
    let granted = roles::normalize(&req.roles);
    if admin == req.user_id && !roles::is_admin(&granted) {
        return Err(ServiceError::new(
            ErrorCode::Conflict,
            "an administrator cannot remove their own admin role",
        ));
    }
    let names = roles::to_names(&granted);
    let mut tx = state.pool.begin().await.map_err(db)?;
    let row = accounts::set_roles(&mut tx, req.user_id, &names)
        .await
        .map_err(db)?
        .ok_or_else(|| not_found("user"))?;
    outbox::append(
        &mut tx,
        req.user_id,
        &UserEvent::RolesChanged {
            user_id: req.user_id,
            roles: granted.clone(),
            by: admin,
        },
    )
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(row.profile())
}
