//! Role sets: every account is a `user`; `admin` may be added.

use mesh_contracts::user::Role;

/// A sorted, de-duplicated role set that always contains `user`.
pub fn normalize(roles: &[Role]) -> Vec<Role> {
    let mut out: Vec<Role> = roles.iter().copied().chain([Role::User]).collect();
    out.sort();
    out.dedup();
    out
}

/// Reads stored role names, ignoring any this version does not know.
pub fn from_names(names: &[String]) -> Vec<Role> {
    normalize(
        &names
            .iter()
            .filter_map(|n| Role::parse(n))
            .collect::<Vec<_>>(),
    )
}

pub fn to_names(roles: &[Role]) -> Vec<String> {
    normalize(roles)
        .iter()
        .map(|r| r.as_str().to_owned())
        .collect()
}

pub fn is_admin(roles: &[Role]) -> bool {
    roles.contains(&Role::Admin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_is_always_present_and_duplicates_vanish() {
        assert_eq!(normalize(&[]), vec![Role::User]);
        assert_eq!(
            normalize(&[Role::Admin, Role::Admin]),
            vec![Role::User, Role::Admin]
        );
        assert_eq!(
            from_names(&["admin".into(), "bogus".into()]),
            vec![Role::User, Role::Admin]
        );
        assert_eq!(
            to_names(&[Role::Admin]),
            vec!["user".to_owned(), "admin".to_owned()]
        );
        assert!(is_admin(&from_names(&["admin".into()])));
        assert!(!is_admin(&normalize(&[])));
    }
}
