//! `/v1/admin/*`: account administration and the audit log. Each route needs the permission
//! the route table (`route_permissions`) names, checked here from the token's roles; the
//! service answering checks it again from the database (the user service, the outbox role for
//! the audit log).

use mesh_contracts::audit::{AuditPage, ListAudit, ListAuditRequest};
use mesh_contracts::user::{
    AdminListUsers, AdminListUsersRequest, AdminSetDisabled, AdminSetDisabledRequest,
    AdminSetRoles, AdminSetRolesRequest, SetRolesRequest, UserProfile, UserProfilePage,
};
use poem_openapi::OpenApi;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::Tag;
use crate::caller::{BearerAuth, Call};
use crate::problem::ApiResult;

pub struct AdminApi;

#[OpenApi(prefix_path = "/v1/admin", tag = "Tag::Admin")]
impl AdminApi {
    /// List accounts, ordered by id, optionally only disabled (or only enabled) ones. `q`
    /// searches: it matches a phone starting with it (digits, `+` optional), a nickname
    /// containing it (any case) or an exact account id; `%` and `_` match themselves; blank
    /// means every account; at most 64 characters (`validation_failed`, 400). Paged like
    /// `/v1/users` (`limit` 1-100, `next_cursor`).
    #[oai(path = "/users", method = "get", operation_id = "admin_list_users")]
    async fn list_users(
        &self,
        call: Call,
        auth: BearerAuth,
        disabled: Query<Option<bool>>,
        #[oai(validator(max_length = 64))] q: Query<Option<String>>,
        limit: Query<Option<u32>>,
        #[oai(validator(max_length = 64))] cursor: Query<Option<String>>,
    ) -> ApiResult<UserProfilePage> {
        let request = AdminListUsersRequest {
            disabled: disabled.0,
            q: q.0,
            limit: limit.0,
            cursor: cursor.0,
        };
        Ok(Json(
            call.permitted(&auth, "admin_list_users")
                .await?
                .send::<AdminListUsers>(&request)
                .await?,
        ))
    }

    /// Disable an account: it cannot sign in, and every session is revoked at once.
    ///
    /// 403 `forbidden` when the account is granted a permission the caller does not hold; 409
    /// `conflict` for the caller's own account or the last enabled `super_admin`.
    #[oai(
        path = "/users/:user_id/disable",
        method = "post",
        operation_id = "admin_disable_user"
    )]
    async fn disable(
        &self,
        call: Call,
        auth: BearerAuth,
        user_id: Path<Uuid>,
    ) -> ApiResult<UserProfile> {
        let request = AdminSetDisabledRequest {
            user_id: user_id.0,
            disabled: true,
        };
        Ok(Json(
            call.permitted(&auth, "admin_disable_user")
                .await?
                .send::<AdminSetDisabled>(&request)
                .await?,
        ))
    }

    /// Enable a disabled account again.
    ///
    /// 403 `forbidden` when the account is granted a permission the caller does not hold:
    /// enabling it would hand that permission back.
    #[oai(
        path = "/users/:user_id/enable",
        method = "post",
        operation_id = "admin_enable_user"
    )]
    async fn enable(
        &self,
        call: Call,
        auth: BearerAuth,
        user_id: Path<Uuid>,
    ) -> ApiResult<UserProfile> {
        let request = AdminSetDisabledRequest {
            user_id: user_id.0,
            disabled: false,
        };
        Ok(Json(
            call.permitted(&auth, "admin_enable_user")
                .await?
                .send::<AdminSetDisabled>(&request)
                .await?,
        ))
    }

    /// Replace an account's roles (`user` is always kept). Each role must exist; the caller
    /// must hold every permission of the roles added or removed (403 `forbidden`); the last
    /// enabled `super_admin` keeps the role (409 `conflict`). A removed role stops counting at
    /// once; an added one counts in tokens issued after (sign in or refresh).
    #[oai(
        path = "/users/:user_id/roles",
        method = "put",
        operation_id = "admin_set_roles"
    )]
    async fn set_roles(
        &self,
        call: Call,
        auth: BearerAuth,
        user_id: Path<Uuid>,
        body: Json<SetRolesRequest>,
    ) -> ApiResult<UserProfile> {
        let request = AdminSetRolesRequest {
            user_id: user_id.0,
            roles: body.0.roles,
        };
        Ok(Json(
            call.permitted(&auth, "admin_set_roles")
                .await?
                .send::<AdminSetRoles>(&request)
                .await?,
        ))
    }

    /// The audit log: one record per mutating request (who, action, target, status and
    /// result code, client ip, request id), newest first. Filters: `user_id` (the actor),
    /// `action` (an operation id such as `send_friend_request`), `from` (inclusive) and `to`
    /// (exclusive) as RFC 3339 times. Paged with `limit` 1-100 (default 20) and the previous
    /// page's `next_cursor`. Records arrive asynchronously, within about a second.
    ///
    /// Refused with `unauthorized` (401) without a valid token, `forbidden` (403) without
    /// `audit:read`, and `validation_failed` (400) for a bad filter, limit or cursor.
    #[oai(path = "/audit", method = "get", operation_id = "admin_list_audit")]
    #[allow(clippy::too_many_arguments)]
    async fn list_audit(
        &self,
        call: Call,
        auth: BearerAuth,
        user_id: Query<Option<Uuid>>,
        #[oai(validator(max_length = 64))] action: Query<Option<String>>,
        from: Query<Option<OffsetDateTime>>,
        to: Query<Option<OffsetDateTime>>,
        limit: Query<Option<u32>>,
        #[oai(validator(max_length = 64))] cursor: Query<Option<String>>,
    ) -> ApiResult<AuditPage> {
        let request = ListAuditRequest {
            user_id: user_id.0,
            action: action.0,
            from: from.0,
            to: to.0,
            limit: limit.0,
            cursor: cursor.0,
        };
        Ok(Json(
            call.permitted(&auth, "admin_list_audit")
                .await?
                .send::<ListAudit>(&request)
                .await?,
        ))
    }
}
