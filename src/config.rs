//! Configuration: flags and environment variables parsed once into a typed `Settings`, with one
//! struct per role holding what only that role needs, already present. Every problem is
//! reported at once, not one per attempt.

mod problems;

use std::net::SocketAddr;
use std::time::Duration;

use mesh_contracts::Prefix;
use mesh_contracts::nats_permissions::NatsRole;
use mesh_nats::NatsCredentials;

use crate::flags::RawSettings;
use problems::Problems;

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
    /// The most bytes each of the AUDIT stream and the IDEMPOTENCY bucket holds.
    pub nats_kept_max_bytes: i64,
    pub prefix: Prefix,
    pub db_max_connections: u32,
    pub http_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub public_url: String,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub refresh_reuse_grace: Duration,
    pub rpc_timeout: Duration,
    /// How long the outbox role keeps audit records.
    pub audit_retention: Duration,
    pub max_body_bytes: usize,
    pub bootstrap_admin_phones: Vec<String>,
    /// Shared by the edges (which partition they publish to) and the chat workers.
    pub chat: ChatSettings,
    pub ws: WsSettings,
    /// The edge's defences: idempotency, client addresses, limits, CORS.
    pub guard: mesh_edge::GuardConfig,
    /// Where the edge serves the web console, if anywhere.
    pub console: Option<mesh_edge::ConsoleConfig>,
    /// Delays and locks after failed sign-ins (user service).
    pub login_throttle: mesh_user::LoginThrottle,
    /// Password-hashing threads of the user service; each keeps a 19 MiB buffer.
    pub user_hash_threads: usize,
    /// What each role of this process needs; a role runs when its part is here.
    pub roles: RoleSettings,
    /// The databases `mesh migrate` brings up to date, when this process migrates.
    pub migrate: Option<Databases>,
}

/// The part of the settings only one role needs, per role; `None` for a role this process
/// does not run.
#[derive(Clone, Default)]
pub struct RoleSettings {
    pub edge: Option<EdgeRole>,
    pub user: Option<UserRole>,
    pub social: Option<DatabaseRole>,
    pub chat: Option<DatabaseRole>,
    /// The outbox relays every service's outbox and keeps the audit log.
    pub outbox: Option<Databases>,
}

/// What only the edge needs.
#[derive(Clone)]
pub struct EdgeRole {
    /// The public key access tokens are verified with (SPKI PEM).
    pub jwt_public_key_pem: String,
}

/// What only the user service needs.
#[derive(Clone)]
pub struct UserRole {
    pub database_url: String,
    /// The key access tokens are signed with (PKCS#8 PEM).
    pub jwt_private_key_pem: String,
    pub jwt_public_key_pem: String,
}

/// A service whose only own setting is its database.
#[derive(Clone)]
pub struct DatabaseRole {
    pub database_url: String,
}

/// Every service's database and the audit log's.
#[derive(Clone)]
pub struct Databases {
    pub user: String,
    pub social: String,
    pub chat: String,
    pub audit: String,
}

/// How chat messages are partitioned and authorized.
#[derive(Clone, Debug)]
pub struct ChatSettings {
    pub partitions: u32,
    /// Per partition; 0 for no bound.
    pub max_unstored: u64,
    /// Least time between the starts of two publishes of one partition by an edge.
    pub ingest_spacing: Duration,
    /// Most messages a partition's owner reads into one batch.
    pub batch_size: usize,
    /// Store rounds a worker runs at once.
    pub store_rounds: usize,
    /// Independent chains those rounds are shared among.
    pub store_chains: usize,
    /// How long a batch may wait for others before a free store round takes it.
    pub store_linger: Duration,
    /// How often the ingest stream is purged of what every partition stored.
    pub compact_every: Duration,
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

    /// The same settings running only `roles` (a node of a deployment that runs some roles).
    pub fn only(&self, roles: &[Role]) -> Self {
        let keep = |role| roles.contains(&role);
        let all = &self.roles;
        Self {
            roles: RoleSettings {
                edge: all.edge.clone().filter(|_| keep(Role::Edge)),
                user: all.user.clone().filter(|_| keep(Role::User)),
                social: all.social.clone().filter(|_| keep(Role::Social)),
                chat: all.chat.clone().filter(|_| keep(Role::Chat)),
                outbox: all.outbox.clone().filter(|_| keep(Role::Outbox)),
            },
            migrate: None,
            ..self.clone()
        }
    }

    /// Parses raw values for a process running `roles` (and migrations when `migrate`).
    pub fn parse(raw: &RawSettings, roles: &[Role], migrate: bool) -> Result<Self, Vec<String>> {
        let mut p = Problems::default();
        let prefix = p.take("MESH_PREFIX", Prefix::parse(&raw.prefix));
        let nats = p.nats(raw);
        let urls = p.database_urls(raw);
        let role_settings = p.roles(raw, roles, &urls);
        let databases = migrate.then(|| p.databases(&urls, "migrations"));
        let shared = p.shared(raw);
        let chat = p.chat(raw);
        let ws = p.ws(raw);
        if let (Some(chat), Some(ws)) = (&chat, &ws)
            && roles.contains(&Role::Edge)
        {
            p.round_fits_send_queue(chat.batch_size, ws.send_queue);
        }
        let guard = raw.guard.parse().map_err(|all| p.extend(all)).ok();
        let console = raw.console.parse().map_err(|err| p.push(err)).ok();
        let login_throttle = raw.guard.login_throttle().map_err(|all| p.extend(all)).ok();
        let available = std::thread::available_parallelism().ok().map(|n| n.get());
        let user_hash_threads = p.take(
            "MESH_USER_HASH_THREADS",
            hash_threads(raw.user_hash_threads.as_deref(), available),
        );
        p.finish()?;
        let (nats_credentials, nats_role_credentials, nats_replicas) = nats.expect("checked");
        let shared = shared.expect("checked");
        Ok(Self {
            nats_url: raw.nats_url.clone(),
            nats_credentials,
            nats_role_credentials,
            nats_replicas,
            nats_kept_max_bytes: shared.nats_kept_max_bytes,
            prefix: prefix.expect("checked"),
            db_max_connections: shared.db_max_connections,
            http_addr: shared.http_addr,
            metrics_addr: shared.metrics_addr,
            public_url: raw
                .public_url
                .clone()
                .unwrap_or_else(|| default_public_url(shared.http_addr)),
            jwt_issuer: raw.jwt_issuer.clone(),
            jwt_audience: raw.jwt_audience.clone(),
            access_ttl: shared.access_ttl,
            refresh_ttl: shared.refresh_ttl,
            refresh_reuse_grace: shared.refresh_reuse_grace,
            rpc_timeout: shared.rpc_timeout,
            audit_retention: shared.audit_retention,
            max_body_bytes: shared.max_body_bytes,
            bootstrap_admin_phones: bootstrap_phones(&raw.bootstrap_admins),
            chat: chat.expect("checked"),
            ws: ws.expect("checked"),
            guard: guard.expect("checked"),
            console: console.expect("checked"),
            login_throttle: login_throttle.expect("checked"),
            user_hash_threads: user_hash_threads.expect("checked"),
            roles: role_settings.expect("checked"),
            migrate: databases.map(|d| d.expect("checked")),
        })
    }
}

/// Most password-hashing threads by default. Each keeps a 19 MiB buffer, and the CPUs
/// `available_parallelism` reports are the node's when the container has no CPU limit: 64
/// threads would keep 1.2 GiB, over a pod's memory limit.
const DEFAULT_MOST_HASH_THREADS: usize = 8;
/// Most password-hashing threads at all (4.75 GiB of buffers): more is a typo.
const MOST_HASH_THREADS: usize = 256;

/// The user service's password-hashing threads: as set, or the `available` CPUs (2 when
/// unknown) up to `DEFAULT_MOST_HASH_THREADS`.
fn hash_threads(raw: Option<&str>, available: Option<usize>) -> Result<usize, String> {
    let Some(raw) = raw.map(str::trim).filter(|raw| !raw.is_empty()) else {
        return Ok(available.unwrap_or(2).clamp(1, DEFAULT_MOST_HASH_THREADS));
    };
    match raw.parse::<usize>() {
        Ok(n) if (1..=MOST_HASH_THREADS).contains(&n) => Ok(n),
        _ => Err(format!(
            "must be 1-{MOST_HASH_THREADS} (each thread keeps 19 MiB), not {raw:?}"
        )),
    }
}

/// Bootstrap phones are compared in the user service's normal form (`+digits`).
fn bootstrap_phones(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|phone| format!("+{}", phone.trim_start_matches('+')))
        .collect()
}

/// The URL the OpenAPI document advertises when `MESH_PUBLIC_URL` is unset: the listening
/// address, unless it listens on every address (`0.0.0.0`, `::`, as in a container), which no
/// client can reach; then `/`, which a client resolves against where it fetched the document.
fn default_public_url(http_addr: std::net::SocketAddr) -> String {
    if http_addr.ip().is_unspecified() {
        "/".to_owned()
    } else {
        format!("http://{http_addr}")
    }
}

#[cfg(test)]
mod tests;
