//! RPC handlers of the user service: decode, apply the domain rules, touch the store, reply.

mod access;
mod admin;
mod admin_sessions;
mod auth;
mod profile;
mod roles;
mod sessions;

use std::sync::Arc;

use mesh_contracts::rbac;
use mesh_contracts::user as wire;
use mesh_contracts::{ErrorCode, ServiceError};
use mesh_nats::{Bus, CallContext, Revocation, Revocations, ServiceHost};
use mesh_service_kit::Fault;
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::UserConfig;
use crate::domain::not_found;
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

    pub fn login_failures(&self) -> &LoginFailures {
        &self.failures
    }

    /// Publishes revocations before the database marks them, so that a failure in between
    /// leaves the session refused everywhere rather than still usable. Up to
    /// `REVOCATIONS_AT_ONCE` are in flight at a time.
    async fn publish_revocations(
        &self,
        user_id: Uuid,
        sessions: &[Uuid],
    ) -> Result<(), ServiceError> {
        for batch in sessions.chunks(REVOCATIONS_AT_ONCE) {
            let mut puts = tokio::task::JoinSet::new();
            for &session_id in batch {
                let revocations = self.revocations.clone();
                puts.spawn(async move {
                    let revocation = Revocation {
                        session_id,
                        user_id,
                    };
                    revocations.revoke(revocation).await
                });
            }
            while let Some(put) = puts.join_next().await {
                let failed = match put {
                    Ok(Ok(())) => continue,
                    Ok(Err(err)) => err,
                    Err(err) => err.to_string(),
                };
                tracing::error!(error = %failed, "cannot publish revocation");
                return Err(ServiceError::new(
                    ErrorCode::ServiceUnavailable,
                    "cannot revoke sessions right now; try again",
                ));
            }
        }
        Ok(())
    }
}

/// Revocations published at once (each a KV write acknowledged by JetStream).
const REVOCATIONS_AT_ONCE: usize = 16;

/// Wires every operation of the service to its handler.
pub fn register(host: ServiceHost, state: State) -> ServiceHost {
    mesh_nats::operations!(host, state;
        wire::Register => auth::register,
        wire::Login => auth::login,
        wire::Refresh => auth::refresh,
        wire::Logout => sessions::logout,
        wire::LogoutAll => sessions::logout_all,
        wire::ListSessions => sessions::list,
        wire::RevokeSession => sessions::revoke,
        wire::GetMe => profile::get_me,
        wire::UpdateProfile => profile::update,
        wire::GetUser => profile::get_user,
        wire::FindUsers => profile::find,
        wire::AdminListUsers => admin::list_users,
        wire::AdminSetDisabled => admin::set_disabled,
        wire::AdminSetRoles => roles::set_roles,
        wire::AdminListSessions => admin_sessions::list,
        wire::AdminRevokeSessions => admin_sessions::revoke,
        rbac::AdminListRoles => roles::list,
        rbac::AdminCreateRole => roles::create,
        rbac::AdminUpdateRole => roles::update,
        rbac::AdminDeleteRole => roles::delete,
        rbac::AdminGrantRole => roles::grant_role,
        rbac::AdminGrantPermission => roles::grant_permission,
        rbac::AdminUserPermissions => roles::user_permissions,
        rbac::GetAccess => access::get_access,
        wire::Health => health,
    )
}

async fn health(state: State, _ctx: CallContext, _req: wire::Empty) -> Result<wire::Empty, Fault> {
    sqlx::query("SELECT 1").execute(&state.pool).await?;
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

/// Loads an account that exists; a vanished account is a 401 for its own sessions.
async fn own_account(state: &State, user_id: Uuid) -> Result<store::accounts::AccountRow, Fault> {
    Ok(store::accounts::by_id(&state.pool, user_id)
        .await?
        .ok_or_else(|| {
            ServiceError::new(ErrorCode::Unauthorized, "the account no longer exists")
        })?)
}

/// Internal failures (a cause that is not a database error), mapped in the kit.
pub(crate) use mesh_service_kit::internal_error as internal;
