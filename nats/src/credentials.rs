//! How a role proves who it is to NATS: user/password, token, NKey seed, `.creds` file and
//! TLS (CA, client certificate). Secrets are held in `Secret`, which never prints its value.

use std::fmt;
use std::path::PathBuf;

use mesh_contracts::nats_permissions::NatsRole;

/// A secret string: `Debug` and `Display` show `[redacted]`, never the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for handing to the NATS client only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(value))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Everything a connection may authenticate with. Empty means anonymous.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatsCredentials {
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub token: Option<Secret>,
    /// An NKey user seed (`SU...`).
    pub nkey_seed: Option<Secret>,
    /// A `.creds` file (user JWT and seed) of a decentralized-auth server.
    pub creds_file: Option<PathBuf>,
    /// CA bundle (PEM) to verify the server with; implies TLS.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; needs `tls_key`.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Subject prefix of this connection's reply inboxes (`_INBOX` when unset). Permissions
    /// give each role its own, so no role can read another's replies.
    pub inbox_prefix: Option<String>,
}

impl NatsCredentials {
    /// Anonymous except for the inbox prefix.
    pub fn with_inbox_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.inbox_prefix = Some(prefix.into());
        self
    }

    /// Problems with the combination, e.g. a password without a user.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.user.is_some() != self.password.is_some() {
            problems.push("MESH_NATS_USER and MESH_NATS_PASSWORD: set both or neither".into());
        }
        let methods = [
            self.user.is_some(),
            self.token.is_some(),
            self.nkey_seed.is_some(),
            self.creds_file.is_some(),
        ];
        if methods.iter().filter(|set| **set).count() > 1 {
            problems.push(
                "NATS credentials: use one of user/password, token, NKey seed or creds file".into(),
            );
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            problems.push("MESH_NATS_TLS_CERT and MESH_NATS_TLS_KEY: set both or neither".into());
        }
        if let Some(seed) = &self.nkey_seed
            && !seed.expose().starts_with("SU")
        {
            problems.push("MESH_NATS_NKEY_SEED: not a user seed (it starts with SU)".into());
        }
        problems
    }

    /// True when the connection must use TLS.
    pub fn uses_tls(&self) -> bool {
        self.tls_ca.is_some() || self.tls_cert.is_some()
    }

    pub(crate) async fn apply(
        &self,
        mut options: async_nats::ConnectOptions,
    ) -> std::io::Result<async_nats::ConnectOptions> {
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            options = options.user_and_password(user.clone(), password.expose().to_owned());
        }
        if let Some(token) = &self.token {
            options = options.token(token.expose().to_owned());
        }
        if let Some(seed) = &self.nkey_seed {
            options = options.nkey(seed.expose().to_owned());
        }
        if let Some(path) = &self.creds_file {
            options = options.credentials_file(path).await.map_err(|err| {
                std::io::Error::new(
                    err.kind(),
                    format!("cannot read creds file {}", path.display()),
                )
            })?;
        }
        if let Some(ca) = &self.tls_ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if self.uses_tls() {
            options = options.require_tls(true);
        }
        if let Some(prefix) = &self.inbox_prefix {
            options = options.custom_inbox_prefix(prefix);
        }
        Ok(options)
    }
}

/// The role-credentials file (`MESH_NATS_ROLE_CREDENTIALS`): one `<role> <password>` line per
/// role, the user name being the role's. `mesh nats-config` writes it; a process running
/// several roles (`mesh all`, the tests) connects each role as itself with it.
pub fn parse_role_passwords(text: &str) -> Result<Vec<(NatsRole, NatsCredentials)>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, password) = line
            .split_once(' ')
            .ok_or_else(|| format!("line {}: expected `<role> <password>`", n + 1))?;
        let role = NatsRole::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == name)
            .ok_or_else(|| format!("line {}: unknown role {name:?}", n + 1))?;
        let credentials = NatsCredentials {
            user: Some(role.as_str().to_owned()),
            password: Some(Secret::new(password.trim())),
            ..Default::default()
        };
        out.push((role, credentials));
    }
    Ok(out)
}

/// Writes the role-credentials file's text for `passwords`.
pub fn format_role_passwords(passwords: &[(NatsRole, Secret)]) -> String {
    let mut out = String::from("# role password (user name = role); keep this file private\n");
    for (role, password) in passwords {
        out.push_str(&format!("{} {}\n", role.as_str(), password.expose()));
    }
    out
}

/// A server URL with any `user:password@` or `token@` taken out: the bare URL (safe to log)
/// and the credentials it held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    pub url: String,
    pub user: Option<String>,
    pub secret: Option<Secret>,
}

impl ServerUrl {
    pub fn parse(raw: &str) -> Self {
        let raw = raw.trim();
        let Some((scheme, rest)) = raw.split_once("://") else {
            return Self {
                url: raw.to_owned(),
                user: None,
                secret: None,
            };
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let Some((userinfo, host)) = authority.rsplit_once('@') else {
            return Self {
                url: raw.to_owned(),
                user: None,
                secret: None,
            };
        };
        let url = format!("{scheme}://{host}{path}");
        match userinfo.split_once(':') {
            Some((user, password)) => Self {
                url,
                user: Some(user.to_owned()),
                secret: Some(Secret::new(password)),
            },
            None => Self {
                url,
                user: None,
                secret: Some(Secret::new(userinfo)),
            },
        }
    }

    /// Folds the URL's credentials into `credentials` unless those already name some.
    pub fn merge_into(&self, credentials: &NatsCredentials) -> NatsCredentials {
        let mut merged = credentials.clone();
        let explicit = credentials.user.is_some()
            || credentials.token.is_some()
            || credentials.nkey_seed.is_some()
            || credentials.creds_file.is_some();
        if explicit {
            return merged;
        }
        match (&self.user, &self.secret) {
            (Some(user), Some(password)) => {
                merged.user = Some(user.clone());
                merged.password = Some(password.clone());
            }
            (None, Some(token)) => merged.token = Some(token.clone()),
            _ => {}
        }
        merged
    }
}

/// Every URL of a comma-separated list with its credentials removed, for logs and errors.
pub fn redact_urls(raw: &str) -> String {
    raw.split(',')
        .map(|url| ServerUrl::parse(url).url)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret} {secret:?}"), "[redacted] [redacted]");
        let creds = NatsCredentials {
            user: Some("edge".into()),
            password: Some(secret),
            ..Default::default()
        };
        assert!(!format!("{creds:?}").contains("hunter2"));
    }

    #[test]
    fn url_credentials_are_split_off() {
        let parsed = ServerUrl::parse("nats://edge:s3cret@127.0.0.1:4222");
        assert_eq!(parsed.url, "nats://127.0.0.1:4222");
        assert_eq!(parsed.user.as_deref(), Some("edge"));
        assert_eq!(parsed.secret.as_ref().map(Secret::expose), Some("s3cret"));
        let token = ServerUrl::parse("tls://t0k3n@nats.example:4222");
        assert_eq!(token.url, "tls://nats.example:4222");
        assert_eq!(token.user, None);
        let merged = token.merge_into(&NatsCredentials::default());
        assert_eq!(merged.token.as_ref().map(Secret::expose), Some("t0k3n"));
        assert_eq!(
            redact_urls("nats://a:pw@h1:4222,nats://h2:4222"),
            "nats://h1:4222,nats://h2:4222"
        );
    }

    #[test]
    fn role_passwords_round_trip() {
        let text = format_role_passwords(&[
            (NatsRole::Edge, Secret::new("a1")),
            (NatsRole::Migrate, Secret::new("b2")),
        ]);
        let parsed = parse_role_passwords(&text).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[1].0, NatsRole::Migrate);
        assert_eq!(parsed[1].1.user.as_deref(), Some("migrate"));
        assert_eq!(
            parsed[1].1.password.as_ref().map(Secret::expose),
            Some("b2")
        );
        assert!(parse_role_passwords("nobody pw").is_err());
        assert!(parse_role_passwords("edge").is_err());
    }

    #[test]
    fn conflicting_credentials_are_reported() {
        let creds = NatsCredentials {
            user: Some("edge".into()),
            token: Some(Secret::new("t")),
            tls_cert: Some("c.pem".into()),
            nkey_seed: Some(Secret::new("SAxxx")),
            ..Default::default()
        };
        let text = creds.problems().join("\n");
        for needle in [
            "MESH_NATS_PASSWORD",
            "one of",
            "MESH_NATS_TLS_KEY",
            "user seed",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
    }
}
