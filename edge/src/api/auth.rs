//! `/v1/auth/*`: register, login, refresh, logout.

use mesh_contracts::user::{
    Empty, Login, LoginRequest, Logout, LogoutAll, LogoutReply, Refresh, RefreshRequest, Register,
    RegisterRequest, Registered, TokenPair,
};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};

use super::Tag;
use crate::caller::{BearerAuth, Call};
use crate::problem::{ApiError, ApiResult};

pub struct AuthApi;

#[derive(ApiResponse)]
pub enum Created {
    /// The account was created.
    #[oai(status = 201)]
    Created(Json<Registered>),
}

#[OpenApi(prefix_path = "/v1/auth", tag = "Tag::Auth")]
impl AuthApi {
    /// Create an account and sign in: answers the new profile's fields and a session's token
    /// pair (`access_token`, `refresh_token`, ... as `login` answers), so the client needs no
    /// separate login. `device_name` names that session.
    ///
    /// Fails with `phone_taken` (409) when the phone is registered and `validation_failed`
    /// (400) when a field is out of bounds.
    #[oai(path = "/register", method = "post", operation_id = "register")]
    async fn register(&self, call: Call, body: Json<RegisterRequest>) -> Result<Created, ApiError> {
        Ok(Created::Created(Json(
            call.send::<Register>(&body.0).await?,
        )))
    }

    /// Sign in with phone and password; opens a new session (device).
    ///
    /// Fails with `invalid_credentials` (401) or `account_disabled` (403).
    #[oai(path = "/login", method = "post", operation_id = "login")]
    async fn login(&self, call: Call, body: Json<LoginRequest>) -> ApiResult<TokenPair> {
        Ok(Json(call.send::<Login>(&body.0).await?))
    }

    /// Exchange a refresh token for a new pair. The presented token stops working.
    ///
    /// Presenting an already-used token revokes the whole session (`refresh_token_reused`);
    /// losing a race against a concurrent refresh with the same token gives `refresh_conflict`.
    #[oai(path = "/refresh", method = "post", operation_id = "refresh")]
    async fn refresh(&self, call: Call, body: Json<RefreshRequest>) -> ApiResult<TokenPair> {
        Ok(Json(call.send::<Refresh>(&body.0).await?))
    }

    /// End this session. Its tokens are refused on every edge at once.
    #[oai(path = "/logout", method = "post", operation_id = "logout")]
    async fn logout(&self, call: Call, auth: BearerAuth) -> ApiResult<LogoutReply> {
        Ok(Json(
            call.on_behalf_of(&auth).send::<Logout>(&Empty {}).await?,
        ))
    }

    /// End every session of the caller, on every device.
    #[oai(path = "/logout-all", method = "post", operation_id = "logout_all")]
    async fn logout_all(&self, call: Call, auth: BearerAuth) -> ApiResult<LogoutReply> {
        Ok(Json(
            call.on_behalf_of(&auth)
                .send::<LogoutAll>(&Empty {})
                .await?,
        ))
    }
}
