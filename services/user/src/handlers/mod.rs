//! RPC handlers of the user service: decode, apply the domain rules, touch the store, reply.

mod access;
mod admin;
mod auth;
mod profile;
mod roles;
mod sessions;

use std::sync::Arc;

use mesh_contracts::rbac;
use mesh_contracts::user as wire;
use mesh_contracts::{ErrorCode, ServiceError};
use mesh_nats::{Bus, CallContext, Revocation, Revocations, ServiceHost};
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::UserConfig;
use crate::hashing::Hasher;
use crate::login_failures::LoginFailures;
use crate::tokens::TokenIssuer;
use crate::{UserDeps, store};

/// Everything a handler may use; cheap to clone.
#[derive(Clone)]
pub struct State(Arc<Inner>);

pub struct Inner {
    pool: PgPool,
    bus: Bus,
    revocations: Revocations,
    issuer: TokenIssuer,
    hasher: Hasher,
    failures: LoginFailures,
    config: UserConfig,
}

impl std::ops::Deref for State {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl State {
    pub async fn new(deps: UserDeps, config: UserConfig) -> anyhow::Result<Self> {
        let revocations = deps.bus.revocations().await?;
        let issuer = TokenIssuer::new(&config)?;
        let hasher = Hasher::new(config.hash_concurrency).await?;
        let failures = LoginFailures::open(&deps.bus).await?;
        Ok(Self(Arc::new(Inner {
            pool: deps.pool,
            bus: deps.bus,
            revocations,
            issuer,
            hasher,
            failures,
            config,
        })))
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Publishes revocations before the database marks them, so that a failure in between
    /// leaves the session refused everywhere rather than still usable.
    async fn publish_revocations(
        &self,
        user_id: Uuid,
        sessions: &[Uuid],
    ) -> Result<(), ServiceError> {
        for &session_id in sessions {
            self.revocations
                .revoke(Revocation {
                    session_id,
                    user_id,
                })
                .await
                .map_err(|err| {
                    tracing::error!(error = %err, "cannot publish revocation");
                    ServiceError::new(
                        ErrorCode::ServiceUnavailable,
                        "cannot revoke sessions right now; try again",
                    )
                })?;
        }
        Ok(())
    }
}

/// Wires every operation of the service to its handler.
pub fn register(host: ServiceHost, state: State) -> ServiceHost {
    host.handle::<wire::Register, _, _, _>(state.clone(), auth::register)
        .handle::<wire::Login, _, _, _>(state.clone(), auth::login)
        .handle::<wire::Refresh, _, _, _>(state.clone(), auth::refresh)
        .handle::<wire::Logout, _, _, _>(state.clone(), sessions::logout)
        .handle::<wire::LogoutAll, _, _, _>(state.clone(), sessions::logout_all)
        .handle::<wire::ListSessions, _, _, _>(state.clone(), sessions::list)
        .handle::<wire::RevokeSession, _, _, _>(state.clone(), sessions::revoke)
        .handle::<wire::GetMe, _, _, _>(state.clone(), profile::get_me)
        .handle::<wire::UpdateProfile, _, _, _>(state.clone(), profile::update)
        .handle::<wire::GetUser, _, _, _>(state.clone(), profile::get_user)
        .handle::<wire::FindUsers, _, _, _>(state.clone(), profile::find)
        .handle::<wire::AdminListUsers, _, _, _>(state.clone(), admin::list_users)
        .handle::<wire::AdminSetDisabled, _, _, _>(state.clone(), admin::set_disabled)
        .handle::<wire::AdminSetRoles, _, _, _>(state.clone(), roles::set_roles)
        .handle::<rbac::AdminListRoles, _, _, _>(state.clone(), roles::list)
        .handle::<rbac::AdminCreateRole, _, _, _>(state.clone(), roles::create)
        .handle::<rbac::AdminUpdateRole, _, _, _>(state.clone(), roles::update)
        .handle::<rbac::AdminDeleteRole, _, _, _>(state.clone(), roles::delete)
        .handle::<rbac::AdminGrantRole, _, _, _>(state.clone(), roles::grant_role)
        .handle::<rbac::AdminGrantPermission, _, _, _>(state.clone(), roles::grant_permission)
        .handle::<rbac::AdminUserPermissions, _, _, _>(state.clone(), roles::user_permissions)
        .handle::<rbac::GetAccess, _, _, _>(state.clone(), access::get_access)
        .handle::<wire::Health, _, _, _>(state, health)
}

async fn health(
    state: State,
    _ctx: CallContext,
    _req: wire::Empty,
) -> Result<wire::Empty, ServiceError> {
    sqlx::query("SELECT 1")
        .execute(&state.pool)
        .await
        .map_err(db)?;
    Ok(wire::Empty {})
}

/// The authenticated caller, or 401 when the call carries no user.
fn caller(ctx: &CallContext) -> Result<(Uuid, Uuid), ServiceError> {
    match (ctx.user_id, ctx.session_id) {
        (Some(user), Some(session)) => Ok((user, session)),
        _ => Err(ServiceError::new(
            ErrorCode::Unauthorized,
            "this operation needs a signed-in user",
        )),
    }
}

fn not_found(what: &str) -> ServiceError {
    ServiceError::new(ErrorCode::NotFound, format!("no such {what}"))
}

/// Loads an account that exists; a vanished account is a 401 for its own sessions.
async fn own_account(
    state: &State,
    user_id: Uuid,
) -> Result<store::accounts::AccountRow, ServiceError> {
    store::accounts::by_id(&state.pool, user_id)
        .await
        .map_err(db)?
        .ok_or_else(|| ServiceError::new(ErrorCode::Unauthorized, "the account no longer exists"))
}

/// Storage and internal failures, mapped the same way in every service.
pub(crate) use mesh_service_kit::{db_error as db, internal_error as internal};
