//! Who may use the outbox role's operations: holders of the permission each needs
//! (`audit:read`, `mesh:read`), as the user service knows them now (never as a token claims).

use mesh_contracts::permissions::{self, Permission};
use mesh_contracts::rbac::{Access, AccessRequest, GetAccess};
use mesh_contracts::{ErrorCode, ServiceError};
use mesh_nats::{CallContext, RpcClient};

/// Asks the user service what the caller may do now; `forbidden` unless they hold
/// `permission` (and are enabled).
pub async fn caller_must_hold(
    rpc: &RpcClient,
    ctx: &CallContext,
    permission: &str,
) -> Result<(), ServiceError> {
    let request = AccessRequest {
        user_id: ctx.require_user()?,
        roles: Vec::new(),
    };
    let caller = rpc
        .call::<GetAccess>(ctx, &request)
        .await
        .map_err(|err| err.into_service_error("user"))?;
    require_permission(&caller, permission)
}

/// `forbidden` unless `caller`'s effective permissions (empty when disabled) grant
/// `permission`.
pub fn require_permission(caller: &Access, permission: &str) -> Result<(), ServiceError> {
    let held: Vec<Permission> = caller
        .effective
        .iter()
        .filter_map(|p| Permission::parse(p).ok())
        .collect();
    let wanted = Permission::parse(permission).expect("a well-formed permission");
    if caller.disabled || !permissions::allows(&held, &wanted) {
        return Err(ServiceError::new(
            ErrorCode::Forbidden,
            format!("this needs the permission {permission}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_contracts::permissions::AUDIT_READ;

    fn access(effective: &[&str], disabled: bool) -> Access {
        Access {
            roles: vec!["user".into()],
            direct: vec![],
            disabled,
            effective: effective.iter().map(|p| p.to_string()).collect(),
            role_permissions: vec![],
        }
    }

    #[test]
    fn only_enabled_holders_of_audit_read_pass() {
        for held in [
            &["audit:read"][..],
            &["audit:*"],
            &["*:*"],
            &["audit:admin"],
        ] {
            assert!(
                require_permission(&access(held, false), AUDIT_READ).is_ok(),
                "{held:?}"
            );
        }
        for (held, disabled) in [
            (&[][..], false),
            (&["users:*"], false),
            (&["audit:delete"], false),
            (&["audit:read"], true),
        ] {
            let refused = require_permission(&access(held, disabled), AUDIT_READ).unwrap_err();
            assert_eq!(refused.code, ErrorCode::Forbidden);
        }
    }
}
