//! Register, login and refresh.

use mesh_contracts::events::UserEvent;
use mesh_contracts::permissions::ROLE_SUPER_ADMIN;
use mesh_contracts::user::{
    LoginRequest, RefreshRequest, RegisterRequest, Registered, Sex, TokenPair,
};
use mesh_contracts::{ErrorCode, ServiceError};
use mesh_nats::CallContext;
use mesh_service_kit::Fault;
use time::OffsetDateTime;
use uuid::Uuid;

use super::sessions::end_sessions_beyond_cap;
use super::{State, internal};
use crate::domain::fields::{Avatar, Nickname, Password, Phone, device_name};
use crate::domain::login_throttle::Attempt;
use crate::domain::refresh::{RefreshDecision, TokenState, decide};
use crate::domain::roles;
use crate::login_failures::Subjects;
use crate::store::{self, accounts, outbox, sessions};
use crate::tokens::{hash_refresh_token, new_refresh_token};

pub async fn register(
    state: State,
    ctx: CallContext,
    req: RegisterRequest,
) -> Result<Registered, Fault> {
    let phone = Phone::parse(&req.phone)?;
    let device = device_name(req.device_name.as_deref())?;
    let nickname = Nickname::parse(&req.nickname)?;
    let avatar = Avatar::parse(req.avatar.as_deref().unwrap_or(""))?.into_inner();
    let password = Password::parse(req.password)?;
    let hash = state
        .hasher
        .hash(password.into_inner(), ctx.client_ip.as_deref())
        .await
        .map_err(internal)?;
    let granted = if state
        .config
        .bootstrap_admin_phones
        .iter()
        .any(|p| p == phone.as_str())
    {
        vec![ROLE_SUPER_ADMIN.to_owned()]
    } else {
        vec![]
    };
    let new = accounts::NewAccount {
        id: Uuid::now_v7(),
        phone: phone.as_str(),
        password_hash: &hash,
        nickname: nickname.as_str(),
        avatar: avatar.as_deref(),
        sex: req.sex.unwrap_or(Sex::Unspecified),
        roles: roles::normalize(&granted),
    };
    let mut tx = state.pool.begin().await?;
    let row = match accounts::insert(&mut tx, &new).await {
        Ok(row) => row,
        Err(err) if store::is_unique_violation(&err) => {
            return Err(ServiceError::new(
                ErrorCode::PhoneTaken,
                "this phone number is already registered",
            )
            .into());
        }
        Err(err) => return Err(err.into()),
    };
    let profile = row.profile();
    outbox::append(
        &mut tx,
        row.id,
        &UserEvent::UserRegistered { user: row.public() },
    )
    .await?;
    let session = open_session(&state, &mut tx, &ctx, row.id, device.as_deref()).await?;
    tx.commit().await?;
    tracing::info!(user_id = %row.id, session_id = %session.id, "account registered");
    let session = session.tokens(&state, &granted)?;
    Ok(Registered { profile, session })
}

/// A session opened in `tx`, whose tokens are issued once `tx` committed.
struct OpenedSession {
    id: Uuid,
    user_id: Uuid,
    refresh_token: String,
}

impl OpenedSession {
    /// The token pair, and a device token that lets this device sign in through a lock on the
    /// account later (see `login`).
    fn tokens(self, state: &State, roles_held: &[String]) -> Result<TokenPair, ServiceError> {
        let mut pair = state
            .issuer
            .pair(self.user_id, self.id, roles_held, self.refresh_token)
            .map_err(internal)?;
        pair.device_token = Some(state.issuer.device_token(self.user_id).map_err(internal)?);
        Ok(pair)
    }
}

/// Opens a session (a device) for `user_id` in `tx`: login and registration both sign in.
async fn open_session(
    state: &State,
    conn: &mut sqlx::PgConnection,
    ctx: &CallContext,
    user_id: Uuid,
    device: Option<&str>,
) -> Result<OpenedSession, Fault> {
    let id = Uuid::now_v7();
    let (refresh_token, refresh_hash) = new_refresh_token();
    let new = sessions::NewSession {
        id,
        user_id,
        device_name: device,
        user_agent: ctx.user_agent.as_deref(),
        ip: ctx.client_ip.as_deref(),
        expires_at: OffsetDateTime::now_utc() + state.config.refresh_ttl,
        refresh_hash: &refresh_hash,
    };
    sessions::insert(conn, &new).await?;
    Ok(OpenedSession {
        id,
        user_id,
        refresh_token,
    })
}

pub async fn login(state: State, ctx: CallContext, req: LoginRequest) -> Result<TokenPair, Fault> {
    let refused = || ServiceError::new(ErrorCode::InvalidCredentials, "phone or password is wrong");
    // Malformed credentials are simply wrong credentials: no hint about which part.
    let Ok(phone) = Phone::parse(&req.phone) else {
        state
            .failures
            .record(&Subjects::new(req.phone.trim(), ctx.client_ip.as_deref()))
            .await;
        return Err(refused().into());
    };
    let subjects = Subjects::new(phone.as_str(), ctx.client_ip.as_deref());
    let device = device_name(req.device_name.as_deref())?;
    let account = accounts::by_phone(&state.pool, phone.as_str()).await?;
    let known_device = req
        .device_token
        .as_deref()
        .and_then(|token| state.issuer.device_of(token))
        .is_some_and(|owner| account.as_ref().is_some_and(|a| a.id == owner));
    let counted = state.failures.count(&subjects).await;
    let failures = counted.failures;
    match state.config.login_throttle.judge(failures, known_device) {
        // The same answer whether the phone exists or not.
        Attempt::Locked => {
            return Err(ServiceError::new(
                ErrorCode::LoginLocked,
                "too many failed sign-ins; try again later or sign in from a known device",
            )
            .into());
        }
        Attempt::Proceed(delay) if !delay.is_zero() => tokio::time::sleep(delay).await,
        Attempt::Proceed(_) => {}
    }
    let hash = account.as_ref().map(|a| a.password_hash.clone());
    // Verify even for unknown phones, so response time does not reveal which phones exist.
    let matches = state
        .hasher
        .verify(req.password, hash, ctx.client_ip.as_deref())
        .await
        .map_err(internal)?;
    let Some(account) = account.filter(|_| matches) else {
        state.failures.record(&subjects).await;
        return Err(refused().into());
    };
    // The owner passing a lock on a known device leaves the lock standing for everyone else.
    // With no failures counted there is nothing to forget (a delete is a JetStream write).
    if failures.account > 0 && failures.account < state.config.login_throttle.lock_after {
        state.failures.clear(&subjects, &counted).await;
    }
    if account.disabled {
        return Err(
            ServiceError::new(ErrorCode::AccountDisabled, "this account is disabled").into(),
        );
    }
    // One statement: no transaction of its own needed.
    let mut conn = state.pool.acquire().await?;
    let session = open_session(&state, &mut conn, &ctx, account.id, device.as_deref()).await?;
    drop(conn);
    tracing::info!(user_id = %account.id, session_id = %session.id, "session opened");
    // The sign-in stands even when this fails: the next one ends the sessions past the cap.
    match end_sessions_beyond_cap(&state, account.id).await {
        Ok(0) => {}
        Ok(ended) => {
            tracing::info!(user_id = %account.id, ended, "least recently used sessions ended")
        }
        Err(err) => {
            tracing::warn!(user_id = %account.id, error = %err, "cannot end the sessions past the cap")
        }
    }
    Ok(session.tokens(&state, &account.roles())?)
}

pub async fn refresh(
    state: State,
    _ctx: CallContext,
    req: RefreshRequest,
) -> Result<TokenPair, Fault> {
    let invalid = || {
        ServiceError::new(
            ErrorCode::InvalidRefreshToken,
            "the refresh token is invalid or expired",
        )
    };
    let presented = hash_refresh_token(req.refresh_token.trim());
    let mut tx = state.pool.begin().await?;
    let Some(token) = sessions::lock_token(&mut tx, &presented).await? else {
        return Err(invalid().into());
    };
    let now = OffsetDateTime::now_utc();
    let token_state = TokenState {
        rotated_at: token.rotated_at,
        session_revoked: token.revoked_at.is_some(),
        session_expires_at: token.expires_at,
        account_disabled: token.disabled,
    };
    match decide(token_state, now, state.config.refresh_reuse_grace) {
        RefreshDecision::Rotate => {
            let (refresh_token, new_hash) = new_refresh_token();
            let expires = now + state.config.refresh_ttl;
            sessions::rotate(&mut tx, token.session_id, &presented, &new_hash, expires).await?;
            tx.commit().await?;
            let held = roles::normalize(&token.roles);
            Ok(state
                .issuer
                .pair(token.user_id, token.session_id, &held, refresh_token)
                .map_err(internal)?)
        }
        RefreshDecision::SessionEnded => Err(invalid().into()),
        RefreshDecision::Disabled => {
            Err(ServiceError::new(ErrorCode::AccountDisabled, "this account is disabled").into())
        }
        RefreshDecision::LostRace => Err(ServiceError::new(
            ErrorCode::RefreshConflict,
            "this refresh token was just rotated by a concurrent request",
        )
        .into()),
        RefreshDecision::Reuse => {
            tracing::warn!(user_id = %token.user_id, session_id = %token.session_id, "refresh token reuse: revoking session");
            state
                .publish_revocations(token.user_id, &[token.session_id])
                .await?;
            sessions::revoke(&mut tx, &[token.session_id]).await?;
            tx.commit().await?;
            Err(ServiceError::new(
                ErrorCode::RefreshTokenReused,
                "this refresh token was already used; the session is revoked",
            )
            .into())
        }
    }
}
