//! The one table of which permission each administrative and moderation route needs, by
//! operation id. Handlers ask `Call::permitted` with their operation id, the OpenAPI
//! document carries each as `x-permission`, and the README lists the same table. Every route
//! under `/v1/admin` must be here (a test holds the table and the document to each other).

use mesh_contracts::permissions::{
    AUDIT_READ, GROUPS_MODERATE, MESH_READ, MESSAGES_MODERATE, Permission, QUOTAS_READ,
    QUOTAS_WRITE, ROLES_DELETE, ROLES_GRANT, ROLES_READ, ROLES_WRITE, SESSIONS_READ,
    SESSIONS_REVOKE, USERS_DISABLE, USERS_READ,
};

/// `(operation id, permission)`.
pub const ROUTE_PERMISSIONS: &[(&str, &str)] = &[
    ("admin_list_users", USERS_READ),
    ("admin_user_permissions", USERS_READ),
    ("admin_disable_user", USERS_DISABLE),
    ("admin_enable_user", USERS_DISABLE),
    ("admin_list_user_sessions", SESSIONS_READ),
    ("admin_revoke_user_sessions", SESSIONS_REVOKE),
    ("admin_revoke_user_session", SESSIONS_REVOKE),
    ("admin_list_roles", ROLES_READ),
    ("admin_create_role", ROLES_WRITE),
    ("admin_update_role", ROLES_WRITE),
    ("admin_delete_role", ROLES_DELETE),
    ("admin_set_roles", ROLES_GRANT),
    ("admin_grant_role", ROLES_GRANT),
    ("admin_revoke_role", ROLES_GRANT),
    ("admin_grant_permission", ROLES_GRANT),
    ("admin_revoke_permission", ROLES_GRANT),
    ("admin_list_audit", AUDIT_READ),
    ("moderate_recall_message", MESSAGES_MODERATE),
    ("moderate_conversation_report", MESSAGES_MODERATE),
    ("moderate_list_groups", GROUPS_MODERATE),
    ("moderate_get_group", GROUPS_MODERATE),
    ("moderate_remove_member", GROUPS_MODERATE),
    ("moderate_dissolve_group", GROUPS_MODERATE),
    ("admin_get_usage", QUOTAS_READ),
    ("admin_set_quota", QUOTAS_WRITE),
    ("admin_mesh_health", MESH_READ),
];

/// The permission `operation` needs, if it is in the table.
pub fn required(operation: &str) -> Option<Permission> {
    ROUTE_PERMISSIONS
        .iter()
        .find(|(op, _)| *op == operation)
        .map(|(_, p)| Permission::parse(p).expect("the table holds well-formed permissions"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_and_the_admin_routes_match() {
        let doc: serde_json::Value = serde_json::from_str(&crate::openapi_json()).unwrap();
        let mut admin_ops = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for operation in item.as_object().unwrap().values() {
                let id = operation["operationId"].as_str().unwrap();
                if path.starts_with("/v1/admin") {
                    admin_ops.push(id.to_owned());
                    let (_, permission) = ROUTE_PERMISSIONS
                        .iter()
                        .find(|(op, _)| *op == id)
                        .unwrap_or_else(|| panic!("{id} ({path}) is not in the table"));
                    assert_eq!(operation["x-permission"], *permission, "{id}");
                } else {
                    assert!(required(id).is_none(), "{id} is outside /v1/admin");
                }
            }
        }
        for (op, permission) in ROUTE_PERMISSIONS {
            assert!(admin_ops.iter().any(|o| o == op), "{op} is not a route");
            assert!(Permission::parse_known(permission).is_ok(), "{permission}");
        }
    }
}
