//! Plain async-nats connections for the raw limits, logged in as one of the mesh's NATS roles
//! (from the role-credentials file `scripts/services.sh env` names) on a prefix of the load
//! generator's own, so nothing it sends reaches the benchmarked mesh.

use std::path::PathBuf;

use anyhow::Context;

/// The prefix of every subject and stream the raw limits use.
pub const RAW_PREFIX: &str = "lgraw";

/// Where NATS is and how to log in.
#[derive(Debug, Clone)]
pub struct NatsAccess {
    pub url: String,
    /// `MESH_NATS_ROLE_CREDENTIALS`: `<role> <password>` lines; `None` for a server
    /// without authorization.
    pub credentials: Option<PathBuf>,
}

/// The password of `role` in a role-credentials file's text.
fn password_of(text: &str, role: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, password) = l.split_once(' ')?;
            (name == role).then(|| password.trim().to_owned())
        })
}

impl NatsAccess {
    /// A connection as the mesh's `role` (`edge`, `user`, `migrate`...), whose replies arrive
    /// under the inbox prefix that role may subscribe to.
    pub async fn connect(&self, role: &str) -> anyhow::Result<async_nats::Client> {
        let mut options = async_nats::ConnectOptions::new()
            .custom_inbox_prefix(format!("_INBOX.{RAW_PREFIX}.{role}"))
            .name(format!("loadgen-raw-{role}"));
        if let Some(path) = &self.credentials {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let password = password_of(&text, role)
                .with_context(|| format!("no {role} line in {}", path.display()))?;
            options = options.user_and_password(role.to_owned(), password);
        }
        options
            .connect(&self.url)
            .await
            .with_context(|| format!("connecting to NATS at {} as {role}", self.url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_passwords_are_found_by_role() {
        let text = "# role password\nedge abc\nuser  def\n";
        assert_eq!(password_of(text, "edge").as_deref(), Some("abc"));
        assert_eq!(password_of(text, "user").as_deref(), Some("def"));
        assert_eq!(password_of(text, "migrate"), None);
    }
}
