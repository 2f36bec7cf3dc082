//! `/v1/sessions`: the caller's signed-in devices.

use mesh_contracts::user::{
    Empty, ListSessions, LogoutReply, RevokeSession, RevokeSessionRequest, SessionList,
};
use poem_openapi::OpenApi;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use uuid::Uuid;

use super::Tag;
use crate::caller::{BearerAuth, Call};
use crate::problem::ApiResult;

pub struct SessionsApi;

#[OpenApi(prefix_path = "/v1/sessions", tag = "Tag::Sessions")]
impl SessionsApi {
    /// List the caller's active sessions, newest first (an account keeps at most 100: a
    /// sign-in past them ends the least recently used); `current` marks this one.
    #[oai(path = "/", method = "get", operation_id = "list_sessions")]
    async fn list(&self, call: Call, auth: BearerAuth) -> ApiResult<SessionList> {
        Ok(Json(
            call.on_behalf_of(&auth)
                .send::<ListSessions>(&Empty {})
                .await?,
        ))
    }

    /// Sign out one of the caller's devices.
    #[oai(
        path = "/:session_id",
        method = "delete",
        operation_id = "revoke_session"
    )]
    async fn revoke(
        &self,
        call: Call,
        auth: BearerAuth,
        session_id: Path<Uuid>,
    ) -> ApiResult<LogoutReply> {
        let request = RevokeSessionRequest {
            session_id: session_id.0,
        };
        Ok(Json(
            call.on_behalf_of(&auth)
                .send::<RevokeSession>(&request)
                .await?,
        ))
    }
}
