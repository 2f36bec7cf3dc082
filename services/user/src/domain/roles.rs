//! Role sets and grants: every account is a `user`; what a grantor may grant; what a user's
//! roles and direct grants add up to. Matching itself is `mesh_contracts::permissions`.

use mesh_contracts::permissions::{self, MAX_PERMISSIONS, Permission, ROLE_USER, is_role_name};
use mesh_contracts::{ErrorCode, ServiceError};

use super::invalid;

/// A de-duplicated role set, `user` first and the rest sorted.
pub fn normalize(roles: &[String]) -> Vec<String> {
    let mut rest: Vec<String> = roles.iter().filter(|r| *r != ROLE_USER).cloned().collect();
    rest.sort();
    rest.dedup();
    std::iter::once(ROLE_USER.to_owned()).chain(rest).collect()
}

/// Parses role names a request names (each well-formed; whether it exists is the store's).
pub fn parse_names(names: &[String]) -> Result<Vec<String>, ServiceError> {
    if names.len() > 16 {
        return Err(invalid("roles", "at most 16"));
    }
    for name in names {
        parse_name(name)?;
    }
    Ok(normalize(names))
}

pub fn parse_name(name: &str) -> Result<&str, ServiceError> {
    if is_role_name(name) {
        Ok(name)
    } else {
        Err(invalid(
            "role",
            "1-32 of a-z, 0-9 and _, starting with a letter",
        ))
    }
}

/// Parses permissions to grant: each well-formed and known, at most `MAX_PERMISSIONS`,
/// returned sorted and de-duplicated.
pub fn parse_grantable(raw: &[String]) -> Result<Vec<Permission>, ServiceError> {
    if raw.len() > MAX_PERMISSIONS {
        return Err(invalid("permissions", "at most 64"));
    }
    let mut parsed = raw
        .iter()
        .map(|p| Permission::parse_known(p).map_err(|e| invalid("permission", &e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    parsed.sort();
    parsed.dedup();
    Ok(parsed)
}

/// Reads stored permission strings, skipping any this version cannot parse.
pub fn read_stored(raw: &[String]) -> Vec<Permission> {
    raw.iter()
        .filter_map(|p| Permission::parse(p).ok())
        .collect()
}

pub fn to_strings(perms: &[Permission]) -> Vec<String> {
    perms.iter().map(ToString::to_string).collect()
}

/// The union of permission sets, sorted and de-duplicated.
pub fn union<'a>(sets: impl IntoIterator<Item = &'a [Permission]>) -> Vec<Permission> {
    let mut all: Vec<Permission> = sets.into_iter().flatten().cloned().collect();
    all.sort();
    all.dedup();
    all
}

/// `forbidden` unless `held` grants `wanted`.
pub fn require(held: &[Permission], wanted: &str) -> Result<(), ServiceError> {
    let wanted = Permission::parse(wanted).expect("route permissions are well-formed");
    if permissions::allows(held, &wanted) {
        Ok(())
    } else {
        Err(ServiceError::new(
            ErrorCode::Forbidden,
            format!("this needs the permission {wanted}"),
        ))
    }
}

/// `forbidden` unless the grantor holds every permission it hands out (or takes away).
pub fn require_covers(held: &[Permission], granted: &[Permission]) -> Result<(), ServiceError> {
    match granted.iter().find(|g| !permissions::allows(held, g)) {
        None => Ok(()),
        Some(missing) => Err(ServiceError::new(
            ErrorCode::Forbidden,
            format!("you cannot grant {missing}, which you do not hold"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perms(raw: &[&str]) -> Vec<Permission> {
        raw.iter().map(|r| Permission::parse(r).unwrap()).collect()
    }

    #[test]
    fn user_is_always_first_and_duplicates_vanish() {
        assert_eq!(normalize(&[]), vec!["user"]);
        assert_eq!(
            normalize(&["super_admin".into(), "admin".into(), "admin".into()]),
            vec!["user", "admin", "super_admin"]
        );
        assert!(parse_names(&["Root".into()]).is_err());
        assert!(parse_names(&vec!["a".to_owned(); 17]).is_err());
    }

    #[test]
    fn grantable_permissions_are_known_and_sorted() {
        let parsed = parse_grantable(&["users:read".into(), "audit:read".into()]).unwrap();
        assert_eq!(to_strings(&parsed), vec!["audit:read", "users:read"]);
        for bad in ["users:fly", "nope", "*:read"] {
            let err = parse_grantable(&[bad.into()]).unwrap_err();
            assert_eq!(err.code, ErrorCode::ValidationFailed, "{bad}");
        }
        assert!(parse_grantable(&vec!["users:read".to_owned(); 65]).is_err());
    }

    #[test]
    fn a_grantor_grants_only_what_it_holds() {
        let admin = perms(&["users:*", "roles:*"]);
        assert!(require_covers(&admin, &perms(&["users:read", "roles:grant"])).is_ok());
        let err = require_covers(&admin, &perms(&["users:read", "audit:read"])).unwrap_err();
        assert_eq!(err.code, ErrorCode::Forbidden);
        assert!(err.message.contains("audit:read"));
        assert!(require_covers(&admin, &perms(&["*:*"])).is_err());
        assert!(require(&admin, "users:disable").is_ok());
        assert_eq!(
            require(&admin, "quotas:write").unwrap_err().code,
            ErrorCode::Forbidden
        );
    }

    #[test]
    fn union_merges_and_sorts() {
        let a = perms(&["users:read", "audit:read"]);
        let b = perms(&["audit:read"]);
        assert_eq!(
            to_strings(&union([a.as_slice(), b.as_slice()])),
            vec!["audit:read", "users:read"]
        );
        assert_eq!(read_stored(&["bad".into(), "x:y".into()]), perms(&["x:y"]));
    }
}
