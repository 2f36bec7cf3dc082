//! Permissions as `resource:action`, the built-in roles, and the one matching rule that the
//! edge (deciding a route) and the user service (deciding what a grantor may grant) share.
//!
//! A held permission grants a wanted one when its resource is the same or `*`, and its action
//! is the same, `*`, or implies it: `admin` implies `read`, `write` and `delete`; `write`
//! implies `read`. A wanted permission may itself be a wildcard (a role being granted holds
//! `users:*`): then only an equal or wider wildcard grants it. Nothing else grants anything:
//! the default is deny.

use std::fmt;

/// Longest permission string, in bytes.
pub const MAX_PERMISSION_LEN: usize = 65;
/// Longest role name, in bytes.
pub const MAX_ROLE_NAME_LEN: usize = 32;
/// Most permissions in one role or one user's direct grants.
pub const MAX_PERMISSIONS: usize = 64;

/// The wildcard of either half of a permission.
const ANY: &str = "*";

/// A well-formed permission: `resource:action`, each half `*` or 1-32 of `a-z`, `0-9`, `_`
/// starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Permission {
    resource: String,
    action: String,
}

/// Why a permission string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PermissionError {
    #[error(
        "a permission is `resource:action`, each part `*` or lower-case letters, digits and `_` (at most 32)"
    )]
    Malformed,
    #[error("unknown permission `{0}`")]
    Unknown(String),
}

impl Permission {
    /// Parses any well-formed permission, known or not.
    pub fn parse(raw: &str) -> Result<Self, PermissionError> {
        let (resource, action) = raw.split_once(':').ok_or(PermissionError::Malformed)?;
        if raw.len() > MAX_PERMISSION_LEN || !is_part(resource) || !is_part(action) {
            return Err(PermissionError::Malformed);
        }
        Ok(Self {
            resource: resource.to_owned(),
            action: action.to_owned(),
        })
    }

    /// Parses a permission that may be granted: well-formed, and either in `CATALOG` or a
    /// wildcard over a known resource (`users:*`) or everything (`*:*`).
    pub fn parse_known(raw: &str) -> Result<Self, PermissionError> {
        let parsed = Self::parse(raw)?;
        let known = CATALOG.contains(&raw)
            || (parsed.action == ANY
                && (parsed.resource == ANY
                    || CATALOG
                        .iter()
                        .any(|p| p.split(':').next() == Some(&parsed.resource))));
        if known {
            Ok(parsed)
        } else {
            Err(PermissionError::Unknown(raw.to_owned()))
        }
    }

    pub fn resource(&self) -> &str {
        &self.resource
    }

    pub fn action(&self) -> &str {
        &self.action
    }

    /// Whether holding `self` grants `wanted`.
    pub fn grants(&self, wanted: &Permission) -> bool {
        let resource = self.resource == ANY || self.resource == wanted.resource;
        let action = self.action == ANY
            || self.action == wanted.action
            || (wanted.action != ANY && implies(&self.action, &wanted.action));
        resource && action
    }
}

/// Actions that imply others on the same resource.
fn implies(held: &str, wanted: &str) -> bool {
    match held {
        "admin" => matches!(wanted, "read" | "write" | "delete"),
        "write" => wanted == "read",
        _ => false,
    }
}

fn is_part(part: &str) -> bool {
    part == ANY
        || (!part.is_empty()
            && part.len() <= 32
            && part.starts_with(|c: char| c.is_ascii_lowercase())
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.resource, self.action)
    }
}

/// Whether any permission in `held` grants `wanted` (default deny).
pub fn allows(held: &[Permission], wanted: &Permission) -> bool {
    held.iter().any(|h| h.grants(wanted))
}

/// Whether `held` grants every one of `wanted`: what a grantor must hold to grant them.
pub fn covers(held: &[Permission], wanted: &[Permission]) -> bool {
    wanted.iter().all(|w| allows(held, w))
}

/// Every permission a route or rule asks for. A grant must name one of these, a wildcard over
/// one of their resources, or `*:*`.
pub const CATALOG: &[&str] = &[
    USERS_READ,
    USERS_DISABLE,
    ROLES_READ,
    ROLES_WRITE,
    ROLES_DELETE,
    ROLES_GRANT,
    AUDIT_READ,
    MESSAGES_MODERATE,
    GROUPS_MODERATE,
    QUOTAS_READ,
    QUOTAS_WRITE,
    MESH_READ,
    SESSIONS_READ,
    SESSIONS_REVOKE,
];

/// List accounts (with phones) and see anyone's roles and permissions.
pub const USERS_READ: &str = "users:read";
/// Disable and enable accounts.
pub const USERS_DISABLE: &str = "users:disable";
/// List roles.
pub const ROLES_READ: &str = "roles:read";
/// Create roles and change their permissions.
pub const ROLES_WRITE: &str = "roles:write";
/// Delete roles.
pub const ROLES_DELETE: &str = "roles:delete";
/// Grant and revoke roles and direct permissions (only what the grantor holds).
pub const ROLES_GRANT: &str = "roles:grant";
/// Read the audit log.
pub const AUDIT_READ: &str = "audit:read";
/// Recall any message; read a conversation's history for a report.
pub const MESSAGES_MODERATE: &str = "messages:moderate";
/// List and inspect groups, remove members, dissolve groups.
pub const GROUPS_MODERATE: &str = "groups:moderate";
/// See anyone's usage and limits.
pub const QUOTAS_READ: &str = "quotas:read";
/// Set a user's plan and limit overrides.
pub const QUOTAS_WRITE: &str = "quotas:write";
/// See the mesh's health: services, outbox backlog, partition owners.
pub const MESH_READ: &str = "mesh:read";
/// List another account's sessions (devices, when created and last used, ip).
pub const SESSIONS_READ: &str = "sessions:read";
/// Sign another account out of one or every session (only an account holding nothing beyond
/// the caller's permissions).
pub const SESSIONS_REVOKE: &str = "sessions:revoke";

/// The built-in roles, which always exist and cannot be deleted.
pub const BUILTIN_ROLES: &[&str] = &[ROLE_USER, ROLE_MODERATOR, ROLE_ADMIN, ROLE_SUPER_ADMIN];
/// Every account holds it; grants nothing beyond the account's own resources.
pub const ROLE_USER: &str = "user";
pub const ROLE_MODERATOR: &str = "moderator";
pub const ROLE_ADMIN: &str = "admin";
/// Holds `*:*`; the last enabled one cannot be removed.
pub const ROLE_SUPER_ADMIN: &str = "super_admin";

/// The permissions a built-in role starts with (the migration seeds them; `super_admin`'s
/// cannot be changed).
pub fn builtin_permissions(role: &str) -> &'static [&'static str] {
    match role {
        ROLE_MODERATOR => &[
            USERS_READ,
            USERS_DISABLE,
            MESSAGES_MODERATE,
            GROUPS_MODERATE,
            SESSIONS_READ,
            SESSIONS_REVOKE,
        ],
        ROLE_ADMIN => &[
            "users:*",
            "roles:*",
            AUDIT_READ,
            MESSAGES_MODERATE,
            GROUPS_MODERATE,
            "quotas:*",
            MESH_READ,
            "sessions:*",
        ],
        ROLE_SUPER_ADMIN => &["*:*"],
        _ => &[],
    }
}

/// A role name: 1-32 of `a-z`, `0-9`, `_`, starting with a letter.
pub fn is_role_name(name: &str) -> bool {
    name != ANY && is_part(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(raw: &str) -> Permission {
        Permission::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"))
    }

    fn held(raws: &[&str]) -> Vec<Permission> {
        raws.iter().map(|r| p(r)).collect()
    }

    #[test]
    fn malformed_strings_are_refused() {
        for bad in [
            "",
            ":",
            "users",
            "users:",
            ":read",
            "users:read:extra",
            "Users:read",
            "users:Read",
            "users :read",
            "users:re ad",
            "1users:read",
            "users:-",
            "us*:read",
            "users:**",
            "users:\u{0}",
            "ü:read",
            &format!("{}:read", "a".repeat(33)),
        ] {
            assert_eq!(
                Permission::parse(bad),
                Err(PermissionError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(p("users:read").to_string(), "users:read");
        assert_eq!(p("*:*").resource(), "*");
        assert_eq!(p("users_2:x9").action(), "x9");
    }

    #[test]
    fn only_catalog_permissions_and_wildcards_over_known_resources_are_grantable() {
        for known in CATALOG
            .iter()
            .copied()
            .chain(["users:*", "quotas:*", "*:*"])
        {
            assert!(Permission::parse_known(known).is_ok(), "{known}");
        }
        for unknown in [
            "users:fly",
            "widgets:read",
            "widgets:*",
            "*:read",
            "users:admin",
        ] {
            assert_eq!(
                Permission::parse_known(unknown),
                Err(PermissionError::Unknown(unknown.into())),
                "{unknown}"
            );
        }
        assert_eq!(
            Permission::parse_known("users"),
            Err(PermissionError::Malformed)
        );
    }

    #[test]
    fn exact_permissions_grant_only_themselves() {
        let h = held(&["users:read"]);
        assert!(allows(&h, &p("users:read")));
        for other in [
            "users:write",
            "users:disable",
            "roles:read",
            "users:*",
            "*:*",
        ] {
            assert!(!allows(&h, &p(other)), "{other}");
        }
    }

    #[test]
    fn wildcards_grant_their_resource_or_everything() {
        let h = held(&["users:*"]);
        for yes in ["users:read", "users:disable", "users:anything", "users:*"] {
            assert!(allows(&h, &p(yes)), "{yes}");
        }
        for no in ["roles:read", "*:*", "*:read"] {
            assert!(!allows(&h, &p(no)), "{no}");
        }
        let all = held(&["*:*"]);
        for yes in [
            "users:read",
            "roles:grant",
            "x:y",
            "users:*",
            "*:*",
            "*:read",
        ] {
            assert!(allows(&all, &p(yes)), "{yes}");
        }
        let any_read = held(&["*:read"]);
        assert!(allows(&any_read, &p("audit:read")));
        assert!(!allows(&any_read, &p("audit:write")));
    }

    #[test]
    fn admin_implies_read_write_delete_and_write_implies_read() {
        let admin = held(&["groups:admin"]);
        for yes in [
            "groups:read",
            "groups:write",
            "groups:delete",
            "groups:admin",
        ] {
            assert!(allows(&admin, &p(yes)), "{yes}");
        }
        for no in ["groups:moderate", "groups:*", "users:read"] {
            assert!(!allows(&admin, &p(no)), "{no}");
        }
        let write = held(&["groups:write"]);
        assert!(allows(&write, &p("groups:read")));
        for no in ["groups:delete", "groups:admin", "users:read"] {
            assert!(!allows(&write, &p(no)), "{no}");
        }
        // Implication is one way, and `read` implies nothing.
        assert!(!allows(&held(&["groups:read"]), &p("groups:write")));
        assert!(!allows(&held(&["groups:delete"]), &p("groups:read")));
    }

    #[test]
    fn nothing_held_grants_nothing() {
        assert!(!allows(&[], &p("users:read")));
        assert!(covers(&[], &[]));
        assert!(!covers(&[], &[p("users:read")]));
    }

    #[test]
    fn covering_needs_every_wanted_permission() {
        let h = held(&["users:*", "audit:read"]);
        assert!(covers(&h, &held(&["users:read", "users:*", "audit:read"])));
        assert!(!covers(&h, &held(&["users:read", "roles:grant"])));
    }

    #[test]
    fn builtin_roles_are_ordered_by_power() {
        let perms =
            |role| -> Vec<Permission> { builtin_permissions(role).iter().map(|r| p(r)).collect() };
        let (user, moderator, admin, root) = (
            perms(ROLE_USER),
            perms(ROLE_MODERATOR),
            perms(ROLE_ADMIN),
            perms(ROLE_SUPER_ADMIN),
        );
        assert!(user.is_empty());
        assert!(covers(&admin, &moderator));
        assert!(covers(&root, &admin));
        assert!(!covers(&moderator, &admin));
        assert!(!covers(&admin, &root));
        for raw in BUILTIN_ROLES.iter().flat_map(|r| builtin_permissions(r)) {
            assert!(Permission::parse_known(raw).is_ok(), "{raw}");
        }
        assert!(allows(&moderator, &p(MESSAGES_MODERATE)));
        assert!(!allows(&moderator, &p(ROLES_GRANT)));
    }

    #[test]
    fn role_names() {
        for good in ["user", "support_2", "a"] {
            assert!(is_role_name(good), "{good}");
        }
        for bad in ["", "*", "Admin", "2x", "a-b", &"a".repeat(33)] {
            assert!(!is_role_name(bad), "{bad}");
        }
    }
}
