//! Roles and grants: create, change and delete roles; grant and revoke roles and direct
//! permissions; a user's effective permissions. A grantor hands out (or takes away) only
//! permissions it holds, and the last enabled `super_admin` keeps the role.

use mesh_contracts::events::UserEvent;
use mesh_contracts::permissions::{
    Permission, ROLE_SUPER_ADMIN, ROLES_DELETE, ROLES_GRANT, ROLES_READ, ROLES_WRITE, USERS_READ,
};
use mesh_contracts::rbac::{
    AdminUpdateRoleRequest, CreateRoleRequest, EffectivePermissions, GrantRequest, RoleInfo,
    RoleList, RoleNameRequest, UserIdRequest,
};
use mesh_contracts::user::{AdminSetRolesRequest, Empty, UserProfile};
use mesh_contracts::{ErrorCode, ServiceError};
use mesh_nats::CallContext;
use mesh_service_kit::Fault;
use sqlx::PgConnection;
use uuid::Uuid;

use super::access::{self, Actor, require};
use super::admin::last_super_admin;
use super::{State, not_found};
use crate::domain::{invalid, roles};
use crate::store::accounts::{self, AccountRow};
use crate::store::{outbox, roles as role_store};

/// Longest role description, in characters.
const MAX_DESCRIPTION_CHARS: usize = 200;

pub async fn list(state: State, ctx: CallContext, _req: Empty) -> Result<RoleList, Fault> {
    require(&state, &ctx, ROLES_READ).await?;
    let rows = role_store::list(&state.pool).await?;
    Ok(RoleList {
        items: rows.iter().map(|r| r.info()).collect(),
    })
}

pub async fn create(
    state: State,
    ctx: CallContext,
    req: CreateRoleRequest,
) -> Result<RoleInfo, Fault> {
    let actor = require(&state, &ctx, ROLES_WRITE).await?;
    let name = roles::parse_name(&req.name)?;
    let description = description(req.description.as_deref())?;
    let permissions = roles::parse_grantable(&req.permissions)?;
    roles::require_covers(&actor.held, &permissions)?;
    let permissions = roles::to_strings(&permissions);
    let mut tx = state.pool.begin().await?;
    let row = role_store::insert(&mut tx, name, description, &permissions)
        .await?
        .ok_or_else(|| ServiceError::new(ErrorCode::Conflict, "a role of that name exists"))?;
    defined(&mut tx, &actor, &row.info()).await?;
    tx.commit().await?;
    Ok(row.info())
}

pub async fn update(
    state: State,
    ctx: CallContext,
    req: AdminUpdateRoleRequest,
) -> Result<RoleInfo, Fault> {
    let actor = require(&state, &ctx, ROLES_WRITE).await?;
    let name = roles::parse_name(&req.name)?;
    let new_permissions = req
        .update
        .permissions
        .as_deref()
        .map(roles::parse_grantable)
        .transpose()?;
    let new_description = req
        .update
        .description
        .as_deref()
        .map(|d| description(Some(d)))
        .transpose()?;
    let mut tx = state.pool.begin().await?;
    let row = role_store::lock(&mut tx, name)
        .await?
        .ok_or_else(|| not_found("role"))?;
    let mut permissions = roles::read_stored(&row.permissions);
    if let Some(new) = new_permissions {
        if row.name == ROLE_SUPER_ADMIN {
            return Err(ServiceError::new(
                ErrorCode::Conflict,
                "super_admin's permissions cannot be changed",
            )
            .into());
        }
        roles::require_covers(&actor.held, &roles::union([permissions.as_slice(), &new]))?;
        permissions = new;
    }
    let description = new_description.unwrap_or(&row.description);
    let row =
        role_store::update(&mut tx, name, description, &roles::to_strings(&permissions)).await?;
    defined(&mut tx, &actor, &row.info()).await?;
    tx.commit().await?;
    Ok(row.info())
}

pub async fn delete(state: State, ctx: CallContext, req: RoleNameRequest) -> Result<Empty, Fault> {
    let actor = require(&state, &ctx, ROLES_DELETE).await?;
    let name = roles::parse_name(&req.name)?;
    let mut tx = state.pool.begin().await?;
    let row = role_store::lock(&mut tx, name)
        .await?
        .ok_or_else(|| not_found("role"))?;
    if row.builtin {
        return Err(
            ServiceError::new(ErrorCode::Conflict, "built-in roles cannot be deleted").into(),
        );
    }
    roles::require_covers(&actor.held, &roles::read_stored(&row.permissions))?;
    let holders = accounts::drop_role(&mut tx, name).await?;
    role_store::delete(&mut tx, name).await?;
    let event = UserEvent::RoleDeleted {
        name: name.to_owned(),
        by: actor.id,
    };
    outbox::append(&mut tx, actor.id, &event).await?;
    tx.commit().await?;
    tracing::info!(admin = %actor.id, role = name, holders = holders.len(), "role deleted");
    Ok(Empty {})
}

/// Writes the event that makes every edge forget its cached copy of the role.
async fn defined(tx: &mut PgConnection, actor: &Actor, role: &RoleInfo) -> Result<(), Fault> {
    let event = UserEvent::RoleDefined {
        name: role.name.clone(),
        permissions: role.permissions.clone(),
        by: actor.id,
    };
    outbox::append(tx, actor.id, &event)
        .await
        .map_err(Fault::from)
}

fn description(raw: Option<&str>) -> Result<&str, ServiceError> {
    let text = raw.unwrap_or("").trim();
    if text.chars().count() > MAX_DESCRIPTION_CHARS || text.chars().any(char::is_control) {
        return Err(invalid(
            "description",
            "at most 200 characters, no control characters",
        ));
    }
    Ok(text)
}

/// Replaces a user's roles (`PUT /v1/admin/users/{id}/roles`).
pub async fn set_roles(
    state: State,
    ctx: CallContext,
    req: AdminSetRolesRequest,
) -> Result<UserProfile, ServiceError> {
    let actor = require(&state, &ctx, ROLES_GRANT).await?;
    let wanted = roles::parse_names(&req.roles)?;
    let row = change_roles(&state, &actor, req.user_id, |_| wanted).await?;
    Ok(row.profile())
}

/// Grants or revokes one role.
pub async fn grant_role(
    state: State,
    ctx: CallContext,
    req: GrantRequest,
) -> Result<EffectivePermissions, ServiceError> {
    let actor = require(&state, &ctx, ROLES_GRANT).await?;
    let role = roles::parse_name(&req.grant)?.to_owned();
    let row = change_roles(&state, &actor, req.user_id, |current| {
        let mut next: Vec<String> = current.iter().filter(|r| **r != role).cloned().collect();
        if req.granted {
            next.push(role.clone());
        }
        roles::normalize(&next)
    })
    .await?;
    access::effective_view(&state.pool, &row).await
}

/// Sets a user's roles to `next(current)`: every named role must exist, the actor must hold
/// every permission of the roles added or removed, and the last `super_admin` keeps it.
async fn change_roles(
    state: &State,
    actor: &Actor,
    user_id: Uuid,
    next: impl FnOnce(&[String]) -> Vec<String>,
) -> Result<AccountRow, Fault> {
    let mut tx = state.pool.begin().await?;
    let target = accounts::lock(&mut tx, user_id)
        .await?
        .ok_or_else(|| not_found("user"))?;
    let current = target.roles();
    let wanted = next(&current);
    let known = role_store::named(&mut *tx, &wanted).await?;
    if let Some(missing) = wanted.iter().find(|w| !known.iter().any(|k| &k.name == *w)) {
        return Err(invalid("roles", &format!("no such role {missing}")).into());
    }
    let changed: Vec<String> = current
        .iter()
        .filter(|r| !wanted.contains(r))
        .chain(wanted.iter().filter(|r| !current.contains(r)))
        .cloned()
        .collect();
    if changed.is_empty() {
        return Ok(target);
    }
    let touched = role_store::named(&mut *tx, &changed).await?;
    let sets: Vec<Vec<Permission>> = touched
        .iter()
        .map(|r| roles::read_stored(&r.permissions))
        .collect();
    roles::require_covers(&actor.held, &roles::union(sets.iter().map(Vec::as_slice)))?;
    let losing_root = changed.iter().any(|r| r == ROLE_SUPER_ADMIN)
        && current.iter().any(|r| r == ROLE_SUPER_ADMIN);
    if losing_root
        && !target.disabled
        && accounts::other_enabled_holders(&mut tx, ROLE_SUPER_ADMIN, user_id).await? == 0
    {
        return Err(last_super_admin().into());
    }
    let row = accounts::set_roles(&mut tx, user_id, &wanted)
        .await?
        .ok_or_else(|| not_found("user"))?;
    let event = UserEvent::RolesChanged {
        user_id,
        roles: wanted,
        by: actor.id,
    };
    outbox::append(&mut tx, user_id, &event).await?;
    tx.commit().await?;
    Ok(row)
}

/// Grants or revokes one direct permission.
pub async fn grant_permission(
    state: State,
    ctx: CallContext,
    req: GrantRequest,
) -> Result<EffectivePermissions, Fault> {
    let actor = require(&state, &ctx, ROLES_GRANT).await?;
    let permission = roles::parse_grantable(std::slice::from_ref(&req.grant))?;
    roles::require_covers(&actor.held, &permission)?;
    let permission = permission[0].to_string();
    let mut tx = state.pool.begin().await?;
    let target = accounts::lock(&mut tx, req.user_id)
        .await?
        .ok_or_else(|| not_found("user"))?;
    let mut direct: Vec<String> = target
        .permissions
        .iter()
        .filter(|p| **p != permission)
        .cloned()
        .collect();
    if req.granted {
        direct.push(permission);
    }
    direct.sort();
    if direct.len() > mesh_contracts::permissions::MAX_PERMISSIONS {
        return Err(invalid("permissions", "at most 64 direct grants").into());
    }
    let row = accounts::set_permissions(&mut tx, req.user_id, &direct)
        .await?
        .ok_or_else(|| not_found("user"))?;
    let event = UserEvent::PermissionsChanged {
        user_id: req.user_id,
        permissions: direct,
        by: actor.id,
    };
    outbox::append(&mut tx, req.user_id, &event).await?;
    tx.commit().await?;
    Ok(access::effective_view(&state.pool, &row).await?)
}

pub async fn user_permissions(
    state: State,
    ctx: CallContext,
    req: UserIdRequest,
) -> Result<EffectivePermissions, Fault> {
    require(&state, &ctx, USERS_READ).await?;
    let row = accounts::by_id(&state.pool, req.user_id)
        .await?
        .ok_or_else(|| not_found("user"))?;
    Ok(access::effective_view(&state.pool, &row).await?)
}
