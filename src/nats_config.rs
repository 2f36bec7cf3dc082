//! `mesh nats-config`: writes the NATS server's authorization, generated from the permission
//! model in `contracts`, and the matching role-credentials file.

use std::path::{Path, PathBuf};

use mesh_contracts::nats_permissions::{Login, NatsRole, Scope, server_authorization};
use mesh_nats::{Secret, format_role_passwords, parse_role_passwords};

use crate::private_file::write_private;

/// The files `write` produced.
pub struct Written {
    /// `include` it from a nats-server configuration.
    pub authorization: PathBuf,
    /// `MESH_NATS_ROLE_CREDENTIALS` for a process running several roles.
    pub role_credentials: PathBuf,
}

/// Writes `auth.conf` and `role-credentials` into `dir`. Passwords already in
/// `role-credentials` are kept, so a running server and its clients stay in step.
pub fn write(dir: &Path, scope: &Scope) -> anyhow::Result<Written> {
    std::fs::create_dir_all(dir)?;
    let role_credentials = dir.join("role-credentials");
    let kept = std::fs::read_to_string(&role_credentials)
        .ok()
        .and_then(|text| parse_role_passwords(&text).ok())
        .unwrap_or_default();
    let passwords: Vec<(NatsRole, Secret)> = NatsRole::ALL
        .iter()
        .map(|role| {
            let old = kept
                .iter()
                .find(|(r, _)| r == role)
                .and_then(|(_, c)| c.password.clone());
            (*role, old.unwrap_or_else(fresh_password))
        })
        .collect();
    let logins: Vec<Login> = passwords
        .iter()
        .map(|(role, password)| Login {
            role: *role,
            password: password.expose(),
        })
        .collect();
    let authorization = dir.join("auth.conf");
    write_private(&authorization, &server_authorization(scope, &logins))?;
    write_private(&role_credentials, &format_role_passwords(&passwords))?;
    Ok(Written {
        authorization,
        role_credentials,
    })
}

/// 244 random bits from the OS generator, as 64 hex digits.
fn fresh_password() -> Secret {
    Secret::new(format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_survive_a_rewrite_and_the_files_are_private() {
        let dir = std::env::temp_dir().join(format!("nats-config-{}", uuid::Uuid::new_v4()));
        let first = write(&dir, &Scope::AnyPrefix).unwrap();
        let before = std::fs::read_to_string(&first.role_credentials).unwrap();
        let second = write(&dir, &Scope::AnyPrefix).unwrap();
        assert_eq!(
            before,
            std::fs::read_to_string(&second.role_credentials).unwrap()
        );
        let conf = std::fs::read_to_string(&second.authorization).unwrap();
        let edge_password = parse_role_passwords(&before).unwrap()[0].1.clone();
        assert!(conf.contains(edge_password.password.unwrap().expose()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&second.role_credentials)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
