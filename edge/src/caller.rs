//! Who is calling: bearer-token authentication and the per-request RPC context.

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use mesh_contracts::{ErrorCode, Rpc};
use mesh_nats::CallContext;
use mesh_observability::metrics::AUTH_FAILURES;
use poem::{FromRequest, Request, RequestBody};
use poem_openapi::SecurityScheme;
use poem_openapi::auth::Bearer;
use uuid::Uuid;

use crate::problem::ApiError;
use crate::request_id::RequestId;
use crate::{EdgeState, SharedState};

/// A verified caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: Uuid,
    pub session_id: Uuid,
    /// Role names in the token (what the edge's permission check starts from).
    pub roles: Vec<String>,
}

/// `Authorization: Bearer <access token>`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT", checker = "check_bearer")]
pub struct BearerAuth(pub Caller);

async fn check_bearer(req: &Request, bearer: Bearer) -> poem::Result<Caller> {
    let caller = match req.data::<Identified>() {
        // The middleware verified this very token a moment ago.
        Some(known) if known.token == bearer.token => known.verified.caller.clone(),
        _ => {
            let state = req.data::<SharedState>().expect("edge state is installed");
            authenticate(state, &bearer.token)
                .map(|verified| verified.caller)
                .map_err(|refused| poem::Error::from(ApiError::from(refused)))?
        }
    };
    if let Some(slot) = req.data::<CallerSlot>() {
        slot.fill(&caller);
    }
    Ok(caller)
}

/// Where `BearerAuth` leaves the caller it verified, for whoever installed the slot in the
/// request before routing (the audit record of a mutating request).
#[derive(Debug, Clone, Default)]
pub struct CallerSlot(Arc<OnceLock<Caller>>);

impl CallerSlot {
    fn fill(&self, caller: &Caller) {
        let _ = self.0.set(caller.clone());
    }

    /// The caller the route authenticated, if it did.
    pub fn caller(&self) -> Option<&Caller> {
        self.0.get()
    }
}

/// The caller the middleware identified from the request's `Authorization` header, left in
/// the request so that the route's `BearerAuth` does not verify the same token again (a
/// digest, a cache lookup and a revocation check per request).
#[derive(Clone)]
pub struct Identified {
    pub token: String,
    pub verified: Verified,
}

/// A caller whose token was verified, and until when that token stays valid.
#[derive(Debug, Clone)]
pub struct Verified {
    pub caller: Caller,
    pub valid_until: SystemTime,
}

/// Why a token was refused; shown to the client as a problem (HTTP) or an `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthRefused {
    pub code: ErrorCode,
    pub detail: &'static str,
}

impl From<AuthRefused> for ApiError {
    fn from(refused: AuthRefused) -> Self {
        ApiError::new(refused.code, refused.detail)
    }
}

/// The one authentication rule of every transport (REST, WebSocket, SSE): a valid access
/// token whose session is not revoked. Failures are counted by reason.
pub fn authenticate(state: &EdgeState, token: &str) -> Result<Verified, AuthRefused> {
    identify(state, token).inspect_err(|refused| {
        AUTH_FAILURES
            .with_label_values(&[refused.code.as_str()])
            .inc();
    })
}

/// The rule of `authenticate` without counting failures: the middleware's early look at who
/// is calling (for limits and idempotency scopes), before the route authenticates for real.
pub fn identify(state: &EdgeState, token: &str) -> Result<Verified, AuthRefused> {
    let refuse = |code: ErrorCode, detail: &'static str| AuthRefused { code, detail };
    let claims = state.verifier.verify(token).map_err(|code| match code {
        ErrorCode::TokenExpired => refuse(code, "the access token has expired; refresh it"),
        _ => refuse(ErrorCode::InvalidToken, "the access token is invalid"),
    })?;
    if state.revoked.contains(&claims.sid) {
        return Err(refuse(
            ErrorCode::SessionRevoked,
            "the session has been revoked; sign in again",
        ));
    }
    Ok(Verified {
        valid_until: state.verifier.valid_until(&claims),
        caller: Caller {
            user_id: claims.sub,
            session_id: claims.sid,
            roles: claims.roles.clone(),
        },
    })
}

/// The request's context and the way to make RPC calls on its behalf.
pub struct Call {
    state: SharedState,
    ctx: CallContext,
}

impl<'a> FromRequest<'a> for Call {
    async fn from_request(req: &'a Request, _body: &mut RequestBody) -> poem::Result<Self> {
        let state = req
            .data::<SharedState>()
            .expect("edge state is installed")
            .clone();
        Ok(Self {
            state,
            ctx: request_context(req),
        })
    }
}

/// The context of RPCs made for `req`: its request id, the client's address and user agent.
pub fn request_context(req: &Request) -> CallContext {
    let request_id = req
        .data::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_else(|| Uuid::now_v7().to_string());
    let mut ctx = CallContext::new(request_id);
    ctx.client_ip = client_ip(req);
    ctx.user_agent = req
        .headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    ctx
}

/// The client's address: as resolved by the middleware (through trusted proxies), else the peer.
pub fn client_ip(req: &Request) -> Option<String> {
    if let Some(ip) = req.data::<crate::client_ip::ClientIp>() {
        return Some(ip.0.to_string());
    }
    req.remote_addr()
        .as_socket_addr()
        .map(|addr| addr.ip().to_string())
}

impl Call {
    /// Acts on behalf of the authenticated caller.
    pub fn on_behalf_of(mut self, auth: &BearerAuth) -> Self {
        self.ctx = self.ctx.with_user(auth.0.user_id, auth.0.session_id);
        self
    }

    /// Acts on behalf of the authenticated caller if it holds the permission that
    /// `operation` declares in the route table (`route_permissions`); `forbidden` if not.
    pub async fn permitted(self, auth: &BearerAuth, operation: &str) -> Result<Self, ApiError> {
        let Some(wanted) = crate::route_permissions::required(operation) else {
            // A handler naming an operation the table lacks: refuse (default deny), loudly.
            tracing::error!(operation, "no permission declared for this operation");
            return Err(ApiError::new(ErrorCode::Internal, "internal error"));
        };
        let call = self.on_behalf_of(auth);
        let held = call
            .state
            .permissions
            .held(&call.state.rpc, &call.ctx, &auth.0)
            .await?;
        if mesh_contracts::permissions::allows(&held, &wanted) {
            Ok(call)
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("this needs the permission {wanted}"),
            ))
        }
    }

    /// Makes the RPC `R`; every failure becomes a problem response.
    pub async fn send<R: Rpc>(&self, request: &R::Request) -> Result<R::Reply, ApiError> {
        self.state
            .rpc
            .call::<R>(&self.ctx, request)
            .await
            .map_err(ApiError::from)
    }
}
