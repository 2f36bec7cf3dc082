//! Who may read the audit log: enabled administrators, as the user service knows them now
//! (never as a token claims).

use mesh_contracts::user::{Empty, GetMe, Role, UserProfile};
use mesh_contracts::{ErrorCode, ServiceError};
use mesh_nats::{CallContext, RpcClient};

/// Asks the user service who the caller is now; `forbidden` unless an enabled administrator.
pub async fn caller_must_be_admin(rpc: &RpcClient, ctx: &CallContext) -> Result<(), ServiceError> {
    let caller = rpc
        .call::<GetMe>(ctx, &Empty {})
        .await
        .map_err(|err| err.into_service_error("user"))?;
    require_admin(&caller)
}

/// `forbidden` unless `caller` is an enabled administrator.
pub fn require_admin(caller: &UserProfile) -> Result<(), ServiceError> {
    if caller.disabled || !caller.roles.contains(&Role::Admin) {
        return Err(ServiceError::new(
            ErrorCode::Forbidden,
            "administrators only",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_contracts::user::Sex;
    use time::OffsetDateTime;
    use uuid::Uuid;

    fn profile(roles: &[Role], disabled: bool) -> UserProfile {
        UserProfile {
            id: Uuid::now_v7(),
            phone: "+10000000001".into(),
            nickname: "root".into(),
            avatar: None,
            sex: Sex::Unspecified,
            roles: roles.to_vec(),
            disabled,
            created_at: OffsetDateTime::now_utc(),
            updated_at: OffsetDateTime::now_utc(),
        }
    }

    #[test]
    fn only_enabled_admins_pass() {
        assert!(require_admin(&profile(&[Role::User, Role::Admin], false)).is_ok());
        for (roles, disabled) in [
            (&[Role::User][..], false),
            (&[Role::User, Role::Admin], true),
        ] {
            let refused = require_admin(&profile(roles, disabled)).unwrap_err();
            assert_eq!(refused.code, ErrorCode::Forbidden);
        }
    }
}
