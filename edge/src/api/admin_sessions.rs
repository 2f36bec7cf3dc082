//! `/v1/admin/users/{user_id}/sessions`: another account's signed-in devices, for operators.
//! Listing needs `sessions:read`, signing out needs `sessions:revoke` (route table); the user
//! service checks both again from the database. A revoked session's token is refused on every
//! edge at once and its open connections are closed, as after the user's own logout.

use mesh_contracts::user::{
    AdminListSessions, AdminListSessionsRequest, AdminRevokeSessions, AdminRevokeSessionsRequest,
    LogoutReply, SessionList,
};
use poem_openapi::OpenApi;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use uuid::Uuid;

use super::Tag;
use crate::caller::{BearerAuth, Call};
use crate::problem::ApiResult;

pub struct AdminSessionsApi;

#[OpenApi(prefix_path = "/v1/admin/users", tag = "Tag::Admin")]
impl AdminSessionsApi {
    /// List an account's active sessions (at most 100), newest first: device name, user agent, client ip,
    /// when each was opened and last refreshed (`current` marks the caller's own session).
    /// `not_found` (404) for an unknown account, `validation_failed` (400) for a malformed id.
    #[oai(
        path = "/:user_id/sessions",
        method = "get",
        operation_id = "admin_list_user_sessions"
    )]
    async fn list(
        &self,
        call: Call,
        auth: BearerAuth,
        user_id: Path<Uuid>,
    ) -> ApiResult<SessionList> {
        let request = AdminListSessionsRequest { user_id: user_id.0 };
        Ok(Json(
            call.permitted(&auth, "admin_list_user_sessions")
                .await?
                .send::<AdminListSessions>(&request)
                .await?,
        ))
    }

    /// Sign an account out everywhere: every session is revoked, its tokens are refused at once
    /// and its refresh tokens stop working. Answers how many sessions were ended (0 when none
    /// was active). `forbidden` (403) when the account holds a permission the caller does not,
    /// `not_found` (404) for an unknown account.
    #[oai(
        path = "/:user_id/sessions",
        method = "delete",
        operation_id = "admin_revoke_user_sessions"
    )]
    async fn revoke_all(
        &self,
        call: Call,
        auth: BearerAuth,
        user_id: Path<Uuid>,
    ) -> ApiResult<LogoutReply> {
        let request = AdminRevokeSessionsRequest {
            user_id: user_id.0,
            session_id: None,
        };
        Ok(Json(
            call.permitted(&auth, "admin_revoke_user_sessions")
                .await?
                .send::<AdminRevokeSessions>(&request)
                .await?,
        ))
    }

    /// Sign one of an account's devices out: the session is revoked and its token is refused at
    /// once. `not_found` (404) for an unknown account or a session that is not its active one,
    /// `forbidden` (403) when the account holds a permission the caller does not.
    #[oai(
        path = "/:user_id/sessions/:session_id",
        method = "delete",
        operation_id = "admin_revoke_user_session"
    )]
    async fn revoke(
        &self,
        call: Call,
        auth: BearerAuth,
        user_id: Path<Uuid>,
        session_id: Path<Uuid>,
    ) -> ApiResult<LogoutReply> {
        let request = AdminRevokeSessionsRequest {
            user_id: user_id.0,
            session_id: Some(session_id.0),
        };
        Ok(Json(
            call.permitted(&auth, "admin_revoke_user_session")
                .await?
                .send::<AdminRevokeSessions>(&request)
                .await?,
        ))
    }
}
