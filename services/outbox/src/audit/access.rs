//! Who may read the audit log: holders of `audit:read`, as the user service knows them now
//! (never as a token claims).

use mesh_contracts::permissions::{self, AUDIT_READ, Permission};
use mesh_contracts::rbac::Access;
use mesh_contracts::{ErrorCode, ServiceError};

/// `forbidden` unless `caller`'s effective permissions (empty when disabled) grant `audit:read`.
pub fn require_audit_reader(caller: &Access) -> Result<(), ServiceError> {
    let held: Vec<Permission> = caller
        .effective
        .iter()
        .filter_map(|p| Permission::parse(p).ok())
        .collect();
    let wanted = Permission::parse(AUDIT_READ).expect("a well-formed permission");
    if caller.disabled || !permissions::allows(&held, &wanted) {
        return Err(ServiceError::new(
            ErrorCode::Forbidden,
            "this needs the permission audit:read",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
                require_audit_reader(&access(held, false)).is_ok(),
                "{held:?}"
            );
        }
        for (held, disabled) in [
            (&[][..], false),
            (&["users:*"], false),
            (&["audit:delete"], false),
            (&["audit:read"], true),
        ] {
            let refused = require_audit_reader(&access(held, disabled)).unwrap_err();
            assert_eq!(refused.code, ErrorCode::Forbidden);
        }
    }
}
