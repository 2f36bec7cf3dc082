//! Who may do what, read from the database on every call: the acting administrator's
//! permissions, a user's effective permissions, and the edge's cache fill (`get_access`).

use mesh_contracts::ServiceError;
use mesh_contracts::permissions::Permission;
use mesh_contracts::rbac::{Access, AccessRequest, EffectivePermissions};
use mesh_nats::CallContext;
use mesh_service_kit::Fault;
use sqlx::PgExecutor;
use uuid::Uuid;

use super::{State, caller, not_found, own_account};
use crate::domain::roles;
use crate::store::accounts::AccountRow;
use crate::store::{accounts, roles as role_store};

/// Most token roles an edge may ask about at once.
const MAX_ASKED_ROLES: usize = 16;

/// The caller of an administrative operation and what it holds.
pub struct Actor {
    pub id: Uuid,
    pub held: Vec<Permission>,
}

/// The caller, if its account (enabled) holds `permission` now.
pub async fn require(
    state: &State,
    ctx: &CallContext,
    permission: &str,
) -> Result<Actor, ServiceError> {
    let (id, _) = caller(ctx)?;
    let account = own_account(state, id).await?;
    let held = effective(&state.pool, &account).await?;
    roles::require(&held, permission)?;
    Ok(Actor { id, held })
}

/// What `account`'s roles and direct grants add up to; nothing for a disabled account.
pub async fn effective(
    conn: impl PgExecutor<'_>,
    account: &AccountRow,
) -> Result<Vec<Permission>, Fault> {
    if account.disabled {
        return Ok(Vec::new());
    }
    granted(conn, account).await
}

/// What `account`'s roles and direct grants add up to, whether or not it is disabled: what
/// it would act with once enabled, so what an administrator must hold to disable, enable or
/// sign it out.
pub async fn granted(
    conn: impl PgExecutor<'_>,
    account: &AccountRow,
) -> Result<Vec<Permission>, Fault> {
    let rows = role_store::named(conn, &account.roles()).await?;
    let sets: Vec<Vec<Permission>> = rows
        .iter()
        .map(|r| roles::read_stored(&r.permissions))
        .chain([roles::read_stored(&account.permissions)])
        .collect();
    Ok(roles::union(sets.iter().map(Vec::as_slice)))
}

/// The wire view of what `account` holds.
pub async fn effective_view(
    conn: impl PgExecutor<'_>,
    account: &AccountRow,
) -> Result<EffectivePermissions, ServiceError> {
    let held = effective(conn, account).await?;
    Ok(EffectivePermissions {
        user_id: account.id,
        disabled: account.disabled,
        roles: account.roles(),
        direct: account.permissions.clone(),
        effective: roles::to_strings(&held),
    })
}

/// `get_access`: for an edge's permission cache (only edges may call it).
pub async fn get_access(
    state: State,
    _ctx: CallContext,
    req: AccessRequest,
) -> Result<Access, Fault> {
    let account = accounts::by_id(&state.pool, req.user_id)
        .await?
        .ok_or_else(|| not_found("user"))?;
    let asked: Vec<String> = req.roles.into_iter().take(MAX_ASKED_ROLES).collect();
    let rows = role_store::named(&state.pool, &asked).await?;
    let view = effective_view(&state.pool, &account).await?;
    Ok(Access {
        roles: view.roles,
        direct: view.direct,
        disabled: view.disabled,
        effective: view.effective,
        role_permissions: rows.iter().map(|r| r.info()).collect(),
    })
}
