//! Configuration: flags and environment variables parsed once into a typed `Settings`.
//! Every problem is reported at once, not one per attempt.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use mesh_contracts::Prefix;
use mesh_contracts::nats_permissions::NatsRole;
use mesh_nats::{NatsCredentials, Secret};

#[derive(Debug, Parser)]
#[command(
    name = "mesh",
    version,
    about = "nats-mesh: a chat and social backend as a mesh of NATS workers"
)]
pub struct Cli {
    #[command(subcommand)]
    pub role: Option<RoleArg>,
    #[command(flatten)]
    pub raw: RawSettings,
}

#[derive(Debug, Clone, Subcommand)]
pub enum RoleArg {
    /// Every role in one process (the default).
    All,
    /// The HTTP edge only.
    Edge,
    /// The user worker only.
    User,
    /// The social worker only.
    Social,
    /// The chat worker only.
    Chat,
    /// The outbox relay and audit log only.
    Outbox,
    /// Apply database migrations and exit.
    Migrate,
    /// Write the NATS server authorization (users and permissions of every role, generated
    /// from the contracts) and the role-credentials file, then exit.
    NatsConfig {
        /// Directory for `auth.conf` (include it from nats-server's config) and
        /// `role-credentials` (for MESH_NATS_ROLE_CREDENTIALS). Passwords already there are kept.
        #[arg(long, default_value = ".local/nats-auth")]
        out: PathBuf,
        /// Permit any MESH_PREFIX (a shared test server) instead of exactly this one; stream and
        /// bucket names are then matched by whole-token wildcards.
        #[arg(long)]
        any_prefix: bool,
    },
    /// Write a new Ed25519 JWT key pair and exit.
    Keygen {
        /// Directory for `jwt_ed25519.pem` (private) and `jwt_ed25519.pub.pem` (public).
        #[arg(long, default_value = ".local/keys")]
        out: PathBuf,
        /// Replace existing key files.
        #[arg(long)]
        force: bool,
    },
}

/// Which long-running roles a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Edge,
    User,
    Social,
    Chat,
    Outbox,
}

impl Role {
    pub const ALL: &'static [Role] = &[
        Role::Edge,
        Role::User,
        Role::Social,
        Role::Chat,
        Role::Outbox,
    ];
}

/// Raw values as given; parsed into `Settings` by `Settings::parse`.
#[derive(Debug, Clone, Default, Args)]
pub struct RawSettings {
    /// NATS server URL, or several separated by commas (the nodes of a cluster).
    #[arg(long, env = "MESH_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// NATS user name (with `--nats-password`).
    #[arg(long, env = "MESH_NATS_USER")]
    pub nats_user: Option<String>,
    /// NATS password of `--nats-user`.
    #[arg(long, env = "MESH_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<Secret>,
    /// NATS authentication token.
    #[arg(long, env = "MESH_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<Secret>,
    /// NATS NKey user seed (`SU...`).
    #[arg(long, env = "MESH_NATS_NKEY_SEED", hide_env_values = true)]
    pub nats_nkey_seed: Option<Secret>,
    /// Path of a NATS `.creds` file (user JWT and seed).
    #[arg(long, env = "MESH_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// CA certificate (PEM) that signed the NATS server's certificate; turns TLS on.
    #[arg(long, env = "MESH_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS with NATS.
    #[arg(long, env = "MESH_NATS_TLS_CERT")]
    pub nats_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of `--nats-tls-cert`.
    #[arg(long, env = "MESH_NATS_TLS_KEY")]
    pub nats_tls_key: Option<PathBuf>,
    /// A file of `<role> <password>` lines (written by `mesh nats-config`): each role of this
    /// process connects as the NATS user named after it. Overrides the single identity above.
    #[arg(long, env = "MESH_NATS_ROLE_CREDENTIALS")]
    pub nats_role_credentials: Option<PathBuf>,
    /// Replicas of every stream and bucket `mesh migrate` creates (1 on one server, 3 in a
    /// cluster of three or more).
    #[arg(long, env = "MESH_NATS_REPLICAS", default_value = "1")]
    pub nats_replicas: String,
    /// Namespace of every subject, stream and bucket.
    #[arg(long, env = "MESH_PREFIX", default_value = "mesh")]
    pub prefix: String,
    /// Postgres URL shared by the services unless overridden per service.
    #[arg(long, env = "MESH_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Postgres URL of the user service.
    #[arg(long, env = "MESH_USER_DATABASE_URL")]
    pub user_database_url: Option<String>,
    /// Postgres URL of the social service.
    #[arg(long, env = "MESH_SOCIAL_DATABASE_URL")]
    pub social_database_url: Option<String>,
    /// Postgres URL of the chat service.
    #[arg(long, env = "MESH_CHAT_DATABASE_URL")]
    pub chat_database_url: Option<String>,
    /// Connections per service pool.
    #[arg(long, env = "MESH_DB_MAX_CONNECTIONS", default_value = "10")]
    pub db_max_connections: String,
    /// Where the edge listens.
    #[arg(long, env = "MESH_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: String,
    /// Where roles without HTTP serve `/metrics`.
    #[arg(long, env = "MESH_METRICS_ADDR", default_value = "127.0.0.1:9100")]
    pub metrics_addr: String,
    /// The URL clients use to reach the edge (for the OpenAPI document); default from the address.
    #[arg(long, env = "MESH_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Path of the Ed25519 private key (PKCS#8 PEM) that signs access tokens.
    #[arg(long, env = "MESH_JWT_PRIVATE_KEY")]
    pub jwt_private_key: Option<PathBuf>,
    /// Path of the matching public key (SPKI PEM) that edges verify with.
    #[arg(long, env = "MESH_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,
    #[arg(long, env = "MESH_JWT_ISSUER", default_value = "nats-mesh")]
    pub jwt_issuer: String,
    #[arg(long, env = "MESH_JWT_AUDIENCE", default_value = "nats-mesh")]
    pub jwt_audience: String,
    /// Access-token lifetime, e.g. `15m`.
    #[arg(long, env = "MESH_ACCESS_TTL", default_value = "15m")]
    pub access_ttl: String,
    /// Idle lifetime of a session, e.g. `30d`.
    #[arg(long, env = "MESH_REFRESH_TTL", default_value = "30d")]
    pub refresh_ttl: String,
    /// Window in which a rotated refresh token counts as a concurrent race, not a replay.
    #[arg(long, env = "MESH_REFRESH_REUSE_GRACE", default_value = "2s")]
    pub refresh_reuse_grace: String,
    /// Deadline of RPC calls, e.g. `5s`.
    #[arg(long, env = "MESH_RPC_TIMEOUT", default_value = "5s")]
    pub rpc_timeout: String,
    /// Largest accepted request body in bytes.
    #[arg(long, env = "MESH_MAX_BODY_BYTES", default_value = "65536")]
    pub max_body_bytes: String,
    /// Chat ingest partitions; every edge and chat worker of a deployment must agree.
    #[arg(long, env = "MESH_CHAT_PARTITIONS", default_value = "16")]
    pub chat_partitions: String,
    /// Let any two users message privately, not only friends.
    #[arg(long, env = "MESH_CHAT_OPEN_PRIVATE", default_value = "false")]
    pub chat_open_private: String,
    /// How long after sending a message its sender may recall it.
    #[arg(long, env = "MESH_CHAT_RECALL_WINDOW", default_value = "2m")]
    pub chat_recall_window: String,
    /// How long JetStream drops resent chat messages by id (the store catches later resends).
    #[arg(long, env = "MESH_CHAT_DEDUP_WINDOW", default_value = "2m")]
    pub chat_dedup_window: String,
    /// Comma-separated origins allowed to open WebSockets (`*` for any). Requests without an
    /// `Origin` header (non-browser clients) are always allowed.
    #[arg(long, env = "MESH_WS_ALLOWED_ORIGINS", default_value = "")]
    pub ws_allowed_origins: String,
    /// Interval of server pings on WebSockets and keep-alives on SSE.
    #[arg(long, env = "MESH_WS_HEARTBEAT", default_value = "20s")]
    pub ws_heartbeat: String,
    /// A socket that sends nothing (not even a pong) for this long is closed.
    #[arg(long, env = "MESH_WS_IDLE_TIMEOUT", default_value = "60s")]
    pub ws_idle_timeout: String,
    /// Frames queued for one slow connection before it is disconnected.
    #[arg(long, env = "MESH_WS_SEND_QUEUE", default_value = "256")]
    pub ws_send_queue: String,
    /// Largest frame a client may send, in bytes.
    #[arg(long, env = "MESH_WS_MAX_FRAME_BYTES", default_value = "32768")]
    pub ws_max_frame_bytes: String,
    /// Comma-separated phones that become admins when they register.
    #[arg(long, env = "MESH_BOOTSTRAP_ADMINS", default_value = "")]
    pub bootstrap_admins: String,
    #[command(flatten)]
    pub guard: crate::guard_flags::GuardFlags,
    #[command(flatten)]
    pub console: crate::console_flags::ConsoleFlags,
}

/// Validated configuration of a mesh process. Tests build it directly.
#[derive(Clone)]
pub struct Settings {
    /// One URL or several, comma-separated; may hold credentials, so never log it (use
    /// `mesh_nats::redact_urls`).
    pub nats_url: String,
    /// The identity of every role of this process, unless `nats_role_credentials` names one.
    pub nats_credentials: NatsCredentials,
    /// Per-role identities (tests connect every role with its own).
    pub nats_role_credentials: Vec<(NatsRole, NatsCredentials)>,
    /// Replicas of streams and buckets (`mesh migrate`).
    pub nats_replicas: usize,
    pub prefix: Prefix,
    pub user_database_url: Option<String>,
    pub social_database_url: Option<String>,
    pub chat_database_url: Option<String>,
    /// Where the audit log lives (`MESH_DATABASE_URL`).
    pub audit_database_url: Option<String>,
    pub db_max_connections: u32,
    pub http_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub public_url: String,
    pub jwt_private_key_pem: Option<String>,
    pub jwt_public_key_pem: Option<String>,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub refresh_reuse_grace: Duration,
    pub rpc_timeout: Duration,
    pub max_body_bytes: usize,
    pub bootstrap_admin_phones: Vec<String>,
    pub chat: ChatSettings,
    pub ws: WsSettings,
    /// The edge's defences: idempotency, client addresses, limits, CORS.
    pub guard: mesh_edge::GuardConfig,
    /// Where the edge serves the web console, if anywhere.
    pub console: Option<mesh_edge::ConsoleConfig>,
    /// Delays and locks after failed sign-ins (user service).
    pub login_throttle: mesh_user::LoginThrottle,
}

/// How chat messages are partitioned and authorized.
#[derive(Clone, Debug)]
pub struct ChatSettings {
    pub partitions: u32,
    pub open_private: bool,
    pub recall_window: Duration,
    pub dedup_window: Duration,
}

/// Limits and timers of WebSocket and SSE connections.
#[derive(Clone, Debug)]
pub struct WsSettings {
    pub allowed_origins: Vec<String>,
    pub heartbeat: Duration,
    pub idle_timeout: Duration,
    pub send_queue: usize,
    pub max_frame_bytes: usize,
}

impl Settings {
    /// The credentials role `role` connects with, its own inbox prefix included.
    pub fn nats_credentials_for(&self, role: NatsRole) -> NatsCredentials {
        self.nats_role_credentials
            .iter()
            .find(|(r, _)| *r == role)
            .map_or(&self.nats_credentials, |(_, c)| c)
            .clone()
            .with_inbox_prefix(role.inbox_prefix(&self.prefix))
    }
}

/// Collects problems instead of stopping at the first.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn take<T, E: std::fmt::Display>(&mut self, name: &str, result: Result<T, E>) -> Option<T> {
        result
            .map_err(|err| self.0.push(format!("{name}: {err}")))
            .ok()
    }

    fn duration(&mut self, name: &str, raw: &str) -> Option<Duration> {
        let parsed = self.take(name, humantime::parse_duration(raw))?;
        if parsed.is_zero() && name != "MESH_REFRESH_REUSE_GRACE" {
            self.0.push(format!("{name}: must be greater than zero"));
            return None;
        }
        Some(parsed)
    }

    fn read_key(&mut self, name: &str, path: Option<&PathBuf>, needed: bool) -> Option<String> {
        match path {
            Some(path) => self.take(
                name,
                std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display())),
            ),
            None if needed => {
                self.0.push(format!(
                    "{name}: required (run `mesh keygen` to create a key pair)"
                ));
                None
            }
            None => None,
        }
    }
}

impl Settings {
    /// Parses raw values for a process running `roles` (and migrations when `migrate`).
    pub fn parse(raw: &RawSettings, roles: &[Role], migrate: bool) -> Result<Self, Vec<String>> {
        let mut p = Problems::default();
        let needs_user = roles.contains(&Role::User);
        let needs_edge = roles.contains(&Role::Edge);
        let needs_social = roles.contains(&Role::Social);
        let prefix = p.take("MESH_PREFIX", Prefix::parse(&raw.prefix));
        if raw
            .nats_url
            .split(',')
            .map(str::trim)
            .any(|url| !url.starts_with("nats://") && !url.starts_with("tls://"))
        {
            p.0.push("MESH_NATS_URL: every URL must start with nats:// or tls://".into());
        }
        let nats_credentials = NatsCredentials {
            user: raw.nats_user.clone(),
            password: raw.nats_password.clone(),
            token: raw.nats_token.clone(),
            nkey_seed: raw.nats_nkey_seed.clone(),
            creds_file: raw.nats_creds.clone(),
            tls_ca: raw.nats_tls_ca.clone(),
            tls_cert: raw.nats_tls_cert.clone(),
            tls_key: raw.nats_tls_key.clone(),
            inbox_prefix: None,
        };
        p.0.extend(nats_credentials.problems());
        let nats_role_credentials = match &raw.nats_role_credentials {
            Some(path) => p
                .take(
                    "MESH_NATS_ROLE_CREDENTIALS",
                    std::fs::read_to_string(path)
                        .map_err(|e| format!("cannot read {}: {e}", path.display()))
                        .and_then(|text| mesh_nats::parse_role_passwords(&text)),
                )
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let nats_replicas = p.take("MESH_NATS_REPLICAS", raw.nats_replicas.parse::<usize>());
        if nats_replicas.is_some_and(|n| !(1..=5).contains(&n)) {
            p.0.push("MESH_NATS_REPLICAS: must be 1-5".into());
        }
        let user_database_url = raw
            .user_database_url
            .clone()
            .or_else(|| raw.database_url.clone());
        if (needs_user || migrate) && user_database_url.is_none() {
            p.0.push("MESH_DATABASE_URL: required for the user role and migrations".into());
        }
        if let Some(url) = &user_database_url
            && !url.starts_with("postgres://")
            && !url.starts_with("postgresql://")
        {
            p.0.push("MESH_DATABASE_URL: must be a postgres:// URL".into());
        }
        let social_database_url = raw
            .social_database_url
            .clone()
            .or_else(|| raw.database_url.clone());
        if (needs_social || migrate) && social_database_url.is_none() {
            p.0.push("MESH_SOCIAL_DATABASE_URL: required for the social role and migrations (or set MESH_DATABASE_URL)".into());
        }
        if let Some(url) = &social_database_url
            && !url.starts_with("postgres://")
            && !url.starts_with("postgresql://")
        {
            p.0.push("MESH_SOCIAL_DATABASE_URL: must be a postgres:// URL".into());
        }
        let chat_database_url = raw
            .chat_database_url
            .clone()
            .or_else(|| raw.database_url.clone());
        if roles.contains(&Role::Outbox)
            && (raw.database_url.is_none()
                || user_database_url.is_none()
                || social_database_url.is_none()
                || chat_database_url.is_none())
        {
            p.0.push("MESH_DATABASE_URL: required for the outbox role (it relays every service's outbox and keeps the audit log)".into());
        }
        if (roles.contains(&Role::Chat) || migrate) && chat_database_url.is_none() {
            p.0.push("MESH_CHAT_DATABASE_URL: required for the chat role and migrations (or set MESH_DATABASE_URL)".into());
        }
        let chat = p.chat(raw);
        let ws = p.ws(raw);
        let guard = raw.guard.parse().map_err(|all| p.0.extend(all)).ok();
        let console = raw.console.parse().map_err(|err| p.0.push(err)).ok();
        let login_throttle = raw
            .guard
            .login_throttle()
            .map_err(|all| p.0.extend(all))
            .ok();
        let db_max_connections = p.take(
            "MESH_DB_MAX_CONNECTIONS",
            raw.db_max_connections.parse::<u32>(),
        );
        let http_addr = p.take("MESH_HTTP_ADDR", raw.http_addr.parse::<SocketAddr>());
        let metrics_addr = p.take("MESH_METRICS_ADDR", raw.metrics_addr.parse::<SocketAddr>());
        let jwt_private_key_pem = p.read_key(
            "MESH_JWT_PRIVATE_KEY",
            raw.jwt_private_key.as_ref(),
            needs_user,
        );
        let jwt_public_key_pem = p.read_key(
            "MESH_JWT_PUBLIC_KEY",
            raw.jwt_public_key.as_ref(),
            needs_user || needs_edge,
        );
        let access_ttl = p.duration("MESH_ACCESS_TTL", &raw.access_ttl);
        let refresh_ttl = p.duration("MESH_REFRESH_TTL", &raw.refresh_ttl);
        let refresh_reuse_grace = p.duration("MESH_REFRESH_REUSE_GRACE", &raw.refresh_reuse_grace);
        let rpc_timeout = p.duration("MESH_RPC_TIMEOUT", &raw.rpc_timeout);
        let max_body_bytes = p.take("MESH_MAX_BODY_BYTES", raw.max_body_bytes.parse::<usize>());
        if max_body_bytes.is_some_and(|n| n < 1024) {
            p.0.push("MESH_MAX_BODY_BYTES: must be at least 1024".into());
        }
        if raw.jwt_issuer.trim().is_empty() || raw.jwt_audience.trim().is_empty() {
            p.0.push("MESH_JWT_ISSUER and MESH_JWT_AUDIENCE: must not be empty".into());
        }
        let bootstrap_admin_phones = raw
            .bootstrap_admins
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(normalize_phone)
            .collect();
        if !p.0.is_empty() {
            return Err(p.0);
        }
        let http_addr = http_addr.expect("checked");
        Ok(Self {
            nats_url: raw.nats_url.clone(),
            nats_credentials,
            nats_role_credentials,
            nats_replicas: nats_replicas.expect("checked"),
            prefix: prefix.expect("checked"),
            user_database_url,
            social_database_url,
            chat_database_url,
            audit_database_url: raw.database_url.clone(),
            db_max_connections: db_max_connections.expect("checked").max(1),
            http_addr,
            metrics_addr: metrics_addr.expect("checked"),
            public_url: raw
                .public_url
                .clone()
                .unwrap_or_else(|| format!("http://{http_addr}")),
            jwt_private_key_pem,
            jwt_public_key_pem,
            jwt_issuer: raw.jwt_issuer.clone(),
            jwt_audience: raw.jwt_audience.clone(),
            access_ttl: access_ttl.expect("checked"),
            refresh_ttl: refresh_ttl.expect("checked"),
            refresh_reuse_grace: refresh_reuse_grace.expect("checked"),
            rpc_timeout: rpc_timeout.expect("checked"),
            max_body_bytes: max_body_bytes.expect("checked"),
            bootstrap_admin_phones,
            chat: chat.expect("checked"),
            ws: ws.expect("checked"),
            guard: guard.expect("checked"),
            login_throttle: login_throttle.expect("checked"),
            console: console.expect("checked"),
        })
    }
}

impl Problems {
    fn chat(&mut self, raw: &RawSettings) -> Option<ChatSettings> {
        let partitions = self.take("MESH_CHAT_PARTITIONS", raw.chat_partitions.parse::<u32>());
        if partitions.is_some_and(|n| !(1..=1024).contains(&n)) {
            self.0.push("MESH_CHAT_PARTITIONS: must be 1-1024".into());
        }
        let open_private = self.take(
            "MESH_CHAT_OPEN_PRIVATE",
            raw.chat_open_private.parse::<bool>(),
        );
        let recall_window = self.duration("MESH_CHAT_RECALL_WINDOW", &raw.chat_recall_window);
        let dedup_window = self.duration("MESH_CHAT_DEDUP_WINDOW", &raw.chat_dedup_window);
        Some(ChatSettings {
            partitions: partitions.filter(|n| (1..=1024).contains(n))?,
            open_private: open_private?,
            recall_window: recall_window?,
            dedup_window: dedup_window?,
        })
    }

    fn ws(&mut self, raw: &RawSettings) -> Option<WsSettings> {
        let heartbeat = self.duration("MESH_WS_HEARTBEAT", &raw.ws_heartbeat);
        let idle_timeout = self.duration("MESH_WS_IDLE_TIMEOUT", &raw.ws_idle_timeout);
        if let (Some(beat), Some(idle)) = (heartbeat, idle_timeout)
            && idle <= beat
        {
            self.0
                .push("MESH_WS_IDLE_TIMEOUT: must be longer than MESH_WS_HEARTBEAT".into());
        }
        let send_queue = self.take("MESH_WS_SEND_QUEUE", raw.ws_send_queue.parse::<usize>());
        if send_queue.is_some_and(|n| n < 8) {
            self.0.push("MESH_WS_SEND_QUEUE: must be at least 8".into());
        }
        let max_frame_bytes = self.take(
            "MESH_WS_MAX_FRAME_BYTES",
            raw.ws_max_frame_bytes.parse::<usize>(),
        );
        if max_frame_bytes.is_some_and(|n| n < 1024) {
            self.0
                .push("MESH_WS_MAX_FRAME_BYTES: must be at least 1024".into());
        }
        let allowed_origins = raw
            .ws_allowed_origins
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_owned())
            .filter(|o| !o.is_empty())
            .collect();
        Some(WsSettings {
            allowed_origins,
            heartbeat: heartbeat?,
            idle_timeout: idle_timeout.filter(|idle| heartbeat.is_some_and(|b| *idle > b))?,
            send_queue: send_queue.filter(|n| *n >= 8)?,
            max_frame_bytes: max_frame_bytes.filter(|n| *n >= 1024)?,
        })
    }
}

/// Bootstrap phones are compared in the user service's normal form (`+digits`).
fn normalize_phone(raw: &str) -> String {
    format!("+{}", raw.trim_start_matches('+'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawSettings {
        let cli = Cli::try_parse_from(["mesh"]).unwrap();
        cli.raw
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut r = raw();
        r.prefix = "Bad Prefix".into();
        r.http_addr = "nowhere".into();
        r.access_ttl = "soon".into();
        r.database_url = None;
        let problems = Settings::parse(&r, Role::ALL, true).err().unwrap();
        let text = problems.join("\n");
        for name in [
            "MESH_PREFIX",
            "MESH_HTTP_ADDR",
            "MESH_ACCESS_TTL",
            "MESH_DATABASE_URL",
            "MESH_JWT_PRIVATE_KEY",
            "MESH_JWT_PUBLIC_KEY",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }

    #[test]
    fn defaults_are_valid_for_a_role_without_keys_or_database() {
        let settings = Settings::parse(&raw(), &[], false).unwrap();
        assert_eq!(settings.prefix.as_str(), "mesh");
        assert_eq!(settings.access_ttl, Duration::from_secs(900));
        assert_eq!(settings.public_url, "http://127.0.0.1:8080");
    }

    #[test]
    fn social_database_defaults_to_the_shared_one() {
        let mut r = raw();
        r.database_url = Some("postgres://shared/db".into());
        let settings = Settings::parse(&r, &[Role::Social], false).unwrap();
        assert_eq!(
            settings.social_database_url.as_deref(),
            Some("postgres://shared/db")
        );
        r.social_database_url = Some("postgres://own/db".into());
        let settings = Settings::parse(&r, &[Role::Social], false).unwrap();
        assert_eq!(
            settings.social_database_url.as_deref(),
            Some("postgres://own/db")
        );
        r.database_url = None;
        r.social_database_url = None;
        let problems = Settings::parse(&r, &[Role::Social], false).err().unwrap();
        assert!(problems.join("\n").contains("MESH_SOCIAL_DATABASE_URL"));
    }

    #[test]
    fn nats_logins_are_checked_and_each_role_gets_its_own_inbox() {
        let mut r = raw();
        r.nats_url = "nats://a:4222,http://b:4222".into();
        r.nats_user = Some("edge".into());
        r.nats_token = Some(Secret::new("t"));
        r.nats_replicas = "7".into();
        r.nats_role_credentials = Some("/nonexistent/role-credentials".into());
        let text = Settings::parse(&r, &[], false).err().unwrap().join("\n");
        for name in [
            "MESH_NATS_URL",
            "MESH_NATS_PASSWORD",
            "one of",
            "MESH_NATS_REPLICAS",
            "MESH_NATS_ROLE_CREDENTIALS",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        let mut r = raw();
        r.nats_url = "nats://a:4222, nats://b:4222".into();
        r.nats_user = Some("edge".into());
        r.nats_password = Some(Secret::new("pw"));
        let settings = Settings::parse(&r, &[], false).unwrap();
        let edge = settings.nats_credentials_for(NatsRole::Edge);
        assert_eq!(edge.user.as_deref(), Some("edge"));
        assert_eq!(edge.inbox_prefix.as_deref(), Some("_INBOX.mesh.edge"));
        let chat = settings.nats_credentials_for(NatsRole::Chat);
        assert_eq!(chat.inbox_prefix.as_deref(), Some("_INBOX.mesh.chat"));
    }

    #[test]
    fn bootstrap_phones_are_normalised() {
        let mut r = raw();
        r.bootstrap_admins = "123456, +7654321,".into();
        let settings = Settings::parse(&r, &[], false).unwrap();
        assert_eq!(settings.bootstrap_admin_phones, vec!["+123456", "+7654321"]);
    }
}
