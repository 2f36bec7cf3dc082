//! `/v1/admin/roles` and a user's grants: roles CRUD, granting and revoking roles and direct
//! permissions, and a user's effective permissions. Each route needs the permission the route
//! table names; the user service re-checks it and that the caller holds what it grants.

use mesh_contracts::rbac::{
    AdminCreateRole, AdminDeleteRole, AdminGrantPermission, AdminGrantRole, AdminListRoles,
    AdminUpdateRole, AdminUpdateRoleRequest, AdminUserPermissions, CreateRoleRequest,
    EffectivePermissions, GrantRequest, RoleInfo, RoleList, RoleNameRequest, UpdateRoleRequest,
    UserIdRequest,
};
use mesh_contracts::user::Empty;
use poem_openapi::OpenApi;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use uuid::Uuid;

use super::Tag;
use crate::caller::{BearerAuth, Call};
use crate::problem::ApiResult;

pub struct RolesApi;

#[OpenApi(prefix_path = "/v1/admin", tag = "Tag::Admin")]
impl RolesApi {
    /// Every role (built-in first) with its permissions.
    #[oai(path = "/roles", method = "get", operation_id = "admin_list_roles")]
    async fn list(&self, call: Call, auth: BearerAuth) -> ApiResult<RoleList> {
        let call = call.permitted(&auth, "admin_list_roles").await?;
        Ok(Json(call.send::<AdminListRoles>(&Empty {}).await?))
    }

    /// Create a role. Permissions must be known (`users:read`, or a wildcard such as
    /// `users:*`), and the caller must hold each one (`forbidden`, 403). A taken name is
    /// `conflict` (409); an unknown or malformed permission `validation_failed` (400).
    #[oai(path = "/roles", method = "post", operation_id = "admin_create_role")]
    async fn create(
        &self,
        call: Call,
        auth: BearerAuth,
        body: Json<CreateRoleRequest>,
    ) -> ApiResult<RoleInfo> {
        let call = call.permitted(&auth, "admin_create_role").await?;
        Ok(Json(call.send::<AdminCreateRole>(&body.0).await?))
    }

    /// Change a role's description or permissions. The caller must hold the permissions the
    /// role had and will have (403); `super_admin`'s permissions cannot change (409). Every
    /// edge applies the change within about a second.
    #[oai(
        path = "/roles/:name",
        method = "patch",
        operation_id = "admin_update_role"
    )]
    async fn update(
        &self,
        call: Call,
        auth: BearerAuth,
        #[oai(validator(max_length = 32))] name: Path<String>,
        body: Json<UpdateRoleRequest>,
    ) -> ApiResult<RoleInfo> {
        let request = AdminUpdateRoleRequest {
            name: name.0,
            update: body.0,
        };
        let call = call.permitted(&auth, "admin_update_role").await?;
        Ok(Json(call.send::<AdminUpdateRole>(&request).await?))
    }

    /// Delete a role that is not built in (409 for a built-in one); its holders lose it.
    #[oai(
        path = "/roles/:name",
        method = "delete",
        operation_id = "admin_delete_role"
    )]
    async fn delete(
        &self,
        call: Call,
        auth: BearerAuth,
        #[oai(validator(max_length = 32))] name: Path<String>,
    ) -> ApiResult<Empty> {
        let request = RoleNameRequest { name: name.0 };
        let call = call.permitted(&auth, "admin_delete_role").await?;
        Ok(Json(call.send::<AdminDeleteRole>(&request).await?))
    }

    /// A user's roles, direct permissions and the effective permissions they add up to.
    #[oai(
        path = "/users/:user_id/permissions",
        method = "get",
        operation_id = "admin_user_permissions"
    )]
    async fn user_permissions(
        &self,
        call: Call,
        auth: BearerAuth,
        user_id: Path<Uuid>,
    ) -> ApiResult<EffectivePermissions> {
        let request = UserIdRequest { user_id: user_id.0 };
        let call = call.permitted(&auth, "admin_user_permissions").await?;
        Ok(Json(call.send::<AdminUserPermissions>(&request).await?))
    }

    /// Grant a role (it must exist; the caller must hold all its permissions).
    #[oai(
        path = "/users/:user_id/roles/:role",
        method = "put",
        operation_id = "admin_grant_role"
    )]
    async fn grant_role(
        &self,
        call: Call,
        auth: BearerAuth,
        user_id: Path<Uuid>,
        #[oai(validator(max_length = 32))] role: Path<String>,
    ) -> ApiResult<EffectivePermissions> {
        let call = call.permitted(&auth, "admin_grant_role").await?;
        let request = grant(user_id.0, role.0, true);
        Ok(Json(call.send::<AdminGrantRole>(&request).await?))
    }

    /// Revoke a role (the caller must hold all its permissions; the last enabled
    /// `super_admin` keeps it, 409).
    #[oai(
        path = "/users/:user_id/roles/:role",
        method = "delete",
        operation_id = "admin_revoke_role"
    )]
    async fn revoke_role(
        &self,
        call: Call,
        auth: BearerAuth,
        user_id: Path<Uuid>,
        #[oai(validator(max_length = 32))] role: Path<String>,
    ) -> ApiResult<EffectivePermissions> {
        let call = call.permitted(&auth, "admin_revoke_role").await?;
        let request = grant(user_id.0, role.0, false);
        Ok(Json(call.send::<AdminGrantRole>(&request).await?))
    }

    /// Grant one permission directly, outside any role (the caller must hold it).
    #[oai(
        path = "/users/:user_id/permissions/:permission",
        method = "put",
        operation_id = "admin_grant_permission"
    )]
    async fn grant_permission(
        &self,
        call: Call,
        auth: BearerAuth,
        user_id: Path<Uuid>,
        #[oai(validator(max_length = 65))] permission: Path<String>,
    ) -> ApiResult<EffectivePermissions> {
        let call = call.permitted(&auth, "admin_grant_permission").await?;
        let request = grant(user_id.0, permission.0, true);
        Ok(Json(call.send::<AdminGrantPermission>(&request).await?))
    }

    /// Revoke a direct permission (the caller must hold it).
    #[oai(
        path = "/users/:user_id/permissions/:permission",
        method = "delete",
        operation_id = "admin_revoke_permission"
    )]
    async fn revoke_permission(
        &self,
        call: Call,
        auth: BearerAuth,
        user_id: Path<Uuid>,
        #[oai(validator(max_length = 65))] permission: Path<String>,
    ) -> ApiResult<EffectivePermissions> {
        let call = call.permitted(&auth, "admin_revoke_permission").await?;
        let request = grant(user_id.0, permission.0, false);
        Ok(Json(call.send::<AdminGrantPermission>(&request).await?))
    }
}

fn grant(user_id: Uuid, grant: String, granted: bool) -> GrantRequest {
    GrantRequest {
        user_id,
        grant,
        granted,
    }
}
