//! Roles and permissions on the wire: the admin API's roles, grants and effective permissions,
//! and the lookup an edge makes to fill its permission cache (all answered by the user service).

use poem_openapi::Object;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::rpc;
use crate::rpc::Service;

/// A role: a named set of permissions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Object)]
pub struct RoleInfo {
    pub name: String,
    pub description: String,
    /// `resource:action` strings; `*` wildcards either half.
    pub permissions: Vec<String>,
    /// Built-in roles (`user`, `moderator`, `admin`, `super_admin`) cannot be deleted, and
    /// `super_admin`'s permissions cannot be changed.
    pub builtin: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct RoleList {
    pub items: Vec<RoleInfo>,
}

/// Creates a role. The caller must hold every permission it lists.
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct CreateRoleRequest {
    /// 1-32 of `a-z`, `0-9`, `_`, starting with a letter.
    #[oai(validator(min_length = 1, max_length = 32, pattern = r"^[a-z][a-z0-9_]*$"))]
    pub name: String,
    #[oai(validator(max_length = 200))]
    #[serde(default)]
    pub description: Option<String>,
    #[oai(validator(max_items = 64))]
    pub permissions: Vec<String>,
}

/// Changes a role; absent fields stay as they are. The caller must hold every permission the
/// role would hold.
#[derive(Debug, Clone, Default, Serialize, Deserialize, Object)]
pub struct UpdateRoleRequest {
    #[oai(validator(max_length = 200))]
    #[serde(default)]
    pub description: Option<String>,
    #[oai(validator(max_items = 64))]
    #[serde(default)]
    pub permissions: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminUpdateRoleRequest {
    pub name: String,
    pub update: UpdateRoleRequest,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoleNameRequest {
    pub name: String,
}

/// Grants or revokes one role or one direct permission of a user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrantRequest {
    pub user_id: Uuid,
    /// A role name or a permission string, depending on the operation.
    pub grant: String,
    /// True to grant, false to revoke.
    pub granted: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserIdRequest {
    pub user_id: Uuid,
}

/// What a user holds: roles, direct grants, and every permission those add up to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Object)]
pub struct EffectivePermissions {
    pub user_id: Uuid,
    pub disabled: bool,
    pub roles: Vec<String>,
    /// Permissions granted to the user directly, outside any role.
    pub direct: Vec<String>,
    /// The union of the roles' permissions and the direct ones, sorted.
    pub effective: Vec<String>,
}

/// An edge's cache fill: a user's current roles and direct grants, and the permissions of
/// each role the user's token names.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessRequest {
    pub user_id: Uuid,
    /// The roles named in the token (at most 16 are looked up).
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Access {
    /// The roles the account holds now (a role revoked since the token was issued is absent).
    pub roles: Vec<String>,
    pub direct: Vec<String>,
    pub disabled: bool,
    /// What the account's current roles and direct grants add up to.
    pub effective: Vec<String>,
    /// The requested roles that exist, with their permissions.
    pub role_permissions: Vec<RoleInfo>,
}

rpc!(
    /// Admin: lists roles.
    AdminListRoles, Service::User, "admin_list_roles", crate::user::Empty => RoleList
);
rpc!(
    /// Admin: creates a role.
    AdminCreateRole, Service::User, "admin_create_role", CreateRoleRequest => RoleInfo
);
rpc!(
    /// Admin: changes a role.
    AdminUpdateRole, Service::User, "admin_update_role", AdminUpdateRoleRequest => RoleInfo
);
rpc!(
    /// Admin: deletes a role that is not built in (holders lose it).
    AdminDeleteRole, Service::User, "admin_delete_role", RoleNameRequest => crate::user::Empty
);
rpc!(
    /// Admin: grants or revokes a role.
    AdminGrantRole, Service::User, "admin_grant_role", GrantRequest => EffectivePermissions
);
rpc!(
    /// Admin: grants or revokes a direct permission.
    AdminGrantPermission, Service::User, "admin_grant_permission", GrantRequest => EffectivePermissions
);
rpc!(
    /// Admin: a user's roles, direct grants and effective permissions.
    AdminUserPermissions, Service::User, "admin_user_permissions", UserIdRequest => EffectivePermissions
);
rpc!(
    /// Edge: what a user may do, for the edge's permission cache.
    GetAccess, Service::User, "get_access", AccessRequest => Access
);
