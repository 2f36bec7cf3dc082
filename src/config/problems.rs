//! Collects every configuration problem instead of stopping at the first, and parses each
//! group of raw values (NATS, databases, keys, role parts, chat, sockets) into its typed form.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mesh_contracts::nats_permissions::NatsRole;
use mesh_nats::NatsCredentials;

use super::{
    ChatSettings, DatabaseRole, Databases, EdgeRole, Role, RoleSettings, UserRole, WsSettings,
};
use crate::flags::RawSettings;

/// How long a user's `PRESENCE` key outlives its last refresh: the bucket's max age, which
/// `mesh migrate` sets.
const PRESENCE_LIFETIME: Duration = mesh_nats::PRESENCE_TTL;
/// Refreshes a presence key's lifetime must hold, so that one late or lost refresh does not
/// show a connected user offline. Edges refresh every `MESH_WS_HEARTBEAT`.
const PRESENCE_REFRESHES: u32 = 2;

/// Duration settings for which zero is meaningful (no grace, no linger).
const ZERO_ALLOWED: [&str; 3] = [
    "MESH_REFRESH_REUSE_GRACE",
    "MESH_CHAT_STORE_LINGER",
    "MESH_CHAT_INGEST_SPACING",
];

/// The longest `MESH_CHAT_INGEST_SPACING`: a message may wait that long before it is published.
const MAX_INGEST_SPACING: Duration = Duration::from_millis(50);

/// Problems found so far, and the database variables missing with who needs them.
#[derive(Default)]
pub struct Problems(Vec<String>, Vec<(&'static str, Vec<String>)>);

/// The URL of every database, each falling back to `MESH_DATABASE_URL`, before any role asked.
pub struct DatabaseUrls {
    user: Option<String>,
    social: Option<String>,
    chat: Option<String>,
    audit: Option<String>,
}

/// Values every role shares, parsed.
pub struct Shared {
    pub db_max_connections: u32,
    pub http_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub refresh_reuse_grace: Duration,
    pub rpc_timeout: Duration,
    pub audit_retention: Duration,
    pub nats_kept_max_bytes: i64,
    pub max_body_bytes: usize,
}

/// The process's NATS identity, per-role identities and stream replicas.
pub type Nats = (NatsCredentials, Vec<(NatsRole, NatsCredentials)>, usize);

impl Problems {
    pub fn push(&mut self, problem: impl Into<String>) {
        self.0.push(problem.into());
    }

    pub fn extend(&mut self, problems: impl IntoIterator<Item = String>) {
        self.0.extend(problems);
    }

    /// Every problem, a missing database once with everything that needs it, or nothing.
    pub fn finish(mut self) -> Result<(), Vec<String>> {
        for (name, needed_by) in std::mem::take(&mut self.1) {
            let or_shared = if name == "MESH_DATABASE_URL" {
                ""
            } else {
                " (or set MESH_DATABASE_URL)"
            };
            let needed_by = needed_by.join(", ");
            self.push(format!("{name}: required for {needed_by}{or_shared}"));
        }
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }

    pub fn take<T, E: std::fmt::Display>(&mut self, name: &str, result: Result<T, E>) -> Option<T> {
        result
            .map_err(|err| self.0.push(format!("{name}: {err}")))
            .ok()
    }

    /// A duration setting; zero only where `ZERO_ALLOWED` says it means something.
    fn duration(&mut self, name: &str, raw: &str) -> Option<Duration> {
        let parsed = self.take(name, humantime::parse_duration(raw))?;
        if parsed.is_zero() && !ZERO_ALLOWED.contains(&name) {
            self.0.push(format!("{name}: must be greater than zero"));
            return None;
        }
        Some(parsed)
    }

    /// The NATS URL's form, the process's identity, the per-role identities and replicas.
    pub fn nats(&mut self, raw: &RawSettings) -> Option<Nats> {
        if raw
            .nats_url
            .split(',')
            .map(str::trim)
            .any(|url| !url.starts_with("nats://") && !url.starts_with("tls://"))
        {
            self.push("MESH_NATS_URL: every URL must start with nats:// or tls://");
        }
        let credentials = NatsCredentials {
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
        self.extend(credentials.problems());
        let per_role = match &raw.nats_role_credentials {
            Some(path) => self.take(
                "MESH_NATS_ROLE_CREDENTIALS",
                std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))
                    .and_then(|text| mesh_nats::parse_role_passwords(&text)),
            ),
            None => Some(Vec::new()),
        };
        let replicas = self.take("MESH_NATS_REPLICAS", raw.nats_replicas.parse::<usize>());
        if replicas.is_some_and(|n| !(1..=5).contains(&n)) {
            self.push("MESH_NATS_REPLICAS: must be 1-5");
        }
        let replicas = replicas.filter(|n| (1..=5).contains(n))?;
        Some((credentials, per_role?, replicas))
    }

    /// Every database URL as given (or shared), each checked to be a Postgres URL.
    pub fn database_urls(&mut self, raw: &RawSettings) -> DatabaseUrls {
        let or_shared = |own: &Option<String>| own.clone().or_else(|| raw.database_url.clone());
        let urls = DatabaseUrls {
            user: or_shared(&raw.user_database_url),
            social: or_shared(&raw.social_database_url),
            chat: or_shared(&raw.chat_database_url),
            audit: raw.database_url.clone(),
        };
        for (name, url) in [
            ("MESH_DATABASE_URL", &urls.user),
            ("MESH_SOCIAL_DATABASE_URL", &urls.social),
            ("MESH_CHAT_DATABASE_URL", &urls.chat),
        ] {
            if let Some(url) = url
                && !url.starts_with("postgres://")
                && !url.starts_with("postgresql://")
            {
                self.push(format!("{name}: must be a postgres:// URL"));
            }
        }
        urls
    }

    /// A database URL `what` needs; when it is missing, `finish` names the variable once.
    fn required(&mut self, name: &'static str, url: &Option<String>, what: &str) -> Option<String> {
        if url.is_none() {
            match self.1.iter_mut().find(|(missing, _)| *missing == name) {
                Some((_, needed_by)) if needed_by.iter().any(|w| w == what) => {}
                Some((_, needed_by)) => needed_by.push(what.to_owned()),
                None => self.1.push((name, vec![what.to_owned()])),
            }
        }
        url.clone()
    }

    /// Every database, for migrations or the outbox (`what`).
    pub fn databases(&mut self, urls: &DatabaseUrls, what: &str) -> Option<Databases> {
        let user = self.required("MESH_DATABASE_URL", &urls.user, what);
        let social = self.required("MESH_SOCIAL_DATABASE_URL", &urls.social, what);
        let chat = self.required("MESH_CHAT_DATABASE_URL", &urls.chat, what);
        let audit = self.required("MESH_DATABASE_URL", &urls.audit, what);
        Some(Databases {
            user: user?,
            social: social?,
            chat: chat?,
            audit: audit?,
        })
    }

    /// The part of each role in `roles`, with its keys and database.
    pub fn roles(
        &mut self,
        raw: &RawSettings,
        roles: &[Role],
        urls: &DatabaseUrls,
    ) -> Option<RoleSettings> {
        let runs = |role| roles.contains(&role);
        let private_key = self.read_key(
            "MESH_JWT_PRIVATE_KEY",
            raw.jwt_private_key.as_ref(),
            runs(Role::User),
        );
        let public_key = self.read_key(
            "MESH_JWT_PUBLIC_KEY",
            raw.jwt_public_key.as_ref(),
            runs(Role::User) || runs(Role::Edge),
        );
        let edge = runs(Role::Edge).then(|| {
            Some(EdgeRole {
                jwt_public_key_pem: public_key.clone()?,
            })
        });
        let user = runs(Role::User).then(|| {
            let database_url = self.required("MESH_DATABASE_URL", &urls.user, "the user role");
            Some(UserRole {
                database_url: database_url?,
                jwt_private_key_pem: private_key.clone()?,
                jwt_public_key_pem: public_key.clone()?,
            })
        });
        let social = runs(Role::Social).then(|| {
            let url = self.required("MESH_SOCIAL_DATABASE_URL", &urls.social, "the social role");
            Some(DatabaseRole { database_url: url? })
        });
        let chat = runs(Role::Chat).then(|| {
            let url = self.required("MESH_CHAT_DATABASE_URL", &urls.chat, "the chat role");
            Some(DatabaseRole { database_url: url? })
        });
        let outbox = runs(Role::Outbox).then(|| {
            self.databases(
                urls,
                "the outbox role (it relays every service's outbox and keeps the audit log)",
            )
        });
        Some(RoleSettings {
            edge: complete(edge)?,
            user: complete(user)?,
            social: complete(social)?,
            chat: complete(chat)?,
            outbox: complete(outbox)?,
        })
    }

    fn read_key(&mut self, name: &str, path: Option<&PathBuf>, needed: bool) -> Option<String> {
        match path {
            Some(path) => self.take(
                name,
                std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display())),
            ),
            None if needed => {
                self.push(format!(
                    "{name}: required (run `mesh keygen` to create a key pair)"
                ));
                None
            }
            None => None,
        }
    }

    /// Addresses, lifetimes and sizes every role shares.
    pub fn shared(&mut self, raw: &RawSettings) -> Option<Shared> {
        let db_max_connections = self.take(
            "MESH_DB_MAX_CONNECTIONS",
            raw.db_max_connections.parse::<u32>(),
        );
        let http_addr = self.take("MESH_HTTP_ADDR", raw.http_addr.parse::<SocketAddr>());
        let metrics_addr = self.take("MESH_METRICS_ADDR", raw.metrics_addr.parse::<SocketAddr>());
        let access_ttl = self.duration("MESH_ACCESS_TTL", &raw.access_ttl);
        let refresh_ttl = self.duration("MESH_REFRESH_TTL", &raw.refresh_ttl);
        let refresh_reuse_grace =
            self.duration("MESH_REFRESH_REUSE_GRACE", &raw.refresh_reuse_grace);
        let rpc_timeout = self.duration("MESH_RPC_TIMEOUT", &raw.rpc_timeout);
        let audit_retention = self.duration("MESH_AUDIT_RETENTION", &raw.audit_retention);
        let kept = self.take(
            "MESH_NATS_KEPT_MAX_BYTES",
            raw.nats_kept_max_bytes.parse::<i64>(),
        );
        let kept_too_small = kept.is_some_and(|bytes| bytes < 1 << 20);
        if kept_too_small {
            self.push("MESH_NATS_KEPT_MAX_BYTES: at least 1048576 (1 MiB)");
        }
        let too_short = audit_retention.is_some_and(|kept| kept < Duration::from_secs(3600));
        if too_short {
            self.push("MESH_AUDIT_RETENTION: at least 1h");
        }
        let max_body_bytes = self.take("MESH_MAX_BODY_BYTES", raw.max_body_bytes.parse::<usize>());
        if max_body_bytes.is_some_and(|n| n < 1024) {
            self.push("MESH_MAX_BODY_BYTES: must be at least 1024");
        }
        if raw.jwt_issuer.trim().is_empty() || raw.jwt_audience.trim().is_empty() {
            self.push("MESH_JWT_ISSUER and MESH_JWT_AUDIENCE: must not be empty");
        }
        Some(Shared {
            db_max_connections: db_max_connections?.max(1),
            http_addr: http_addr?,
            metrics_addr: metrics_addr?,
            access_ttl: access_ttl?,
            refresh_ttl: refresh_ttl?,
            refresh_reuse_grace: refresh_reuse_grace?,
            rpc_timeout: rpc_timeout?,
            audit_retention: audit_retention.filter(|_| !too_short)?,
            nats_kept_max_bytes: kept.filter(|_| !kept_too_small)?,
            max_body_bytes: max_body_bytes.filter(|n| *n >= 1024)?,
        })
    }

    pub fn chat(&mut self, raw: &RawSettings) -> Option<ChatSettings> {
        let partitions = self.take("MESH_CHAT_PARTITIONS", raw.chat_partitions.parse::<u32>());
        if partitions.is_some_and(|n| !(1..=1024).contains(&n)) {
            self.0.push("MESH_CHAT_PARTITIONS: must be 1-1024".into());
        }
        let max_unstored = self.take(
            "MESH_CHAT_MAX_UNSTORED",
            raw.chat_max_unstored.parse::<u64>(),
        );
        let ingest_spacing = self.duration("MESH_CHAT_INGEST_SPACING", &raw.chat_ingest_spacing);
        if ingest_spacing.is_some_and(|spacing| spacing > MAX_INGEST_SPACING) {
            self.0
                .push("MESH_CHAT_INGEST_SPACING: must be at most 50ms".into());
        }
        let batch_size = self.take("MESH_CHAT_BATCH_SIZE", raw.chat_batch_size.parse::<usize>());
        if batch_size.is_some_and(|n| !(1..=1024).contains(&n)) {
            self.0.push("MESH_CHAT_BATCH_SIZE: must be 1-1024".into());
        }
        let store_rounds = self.take(
            "MESH_CHAT_STORE_ROUNDS",
            raw.chat_store_rounds.parse::<usize>(),
        );
        if store_rounds.is_some_and(|n| !(1..=64).contains(&n)) {
            self.0.push("MESH_CHAT_STORE_ROUNDS: must be 1-64".into());
        }
        let store_chains = self.take(
            "MESH_CHAT_STORE_CHAINS",
            raw.chat_store_chains.parse::<usize>(),
        );
        let most_chains = store_rounds.filter(|n| (1..=64).contains(n)).unwrap_or(64);
        if store_chains.is_some_and(|n| !(1..=most_chains).contains(&n)) {
            self.0.push(format!(
                "MESH_CHAT_STORE_CHAINS: must be 1-{most_chains} (at most MESH_CHAT_STORE_ROUNDS: each chain needs a round of its own)"
            ));
        }
        let store_linger = self.duration("MESH_CHAT_STORE_LINGER", &raw.chat_store_linger);
        if store_linger.is_some_and(|linger| linger > Duration::from_millis(100)) {
            self.0
                .push("MESH_CHAT_STORE_LINGER: must be at most 100ms".into());
        }
        let compact_every = self.duration("MESH_CHAT_COMPACT_EVERY", &raw.chat_compact_every);
        let compact_range = Duration::from_millis(100)..=Duration::from_secs(3600);
        if compact_every.is_some_and(|every| !compact_range.contains(&every)) {
            self.0
                .push("MESH_CHAT_COMPACT_EVERY: must be 100ms to 1h".into());
        }
        let open_private = self.take(
            "MESH_CHAT_OPEN_PRIVATE",
            raw.chat_open_private.parse::<bool>(),
        );
        let recall_window = self.duration("MESH_CHAT_RECALL_WINDOW", &raw.chat_recall_window);
        let dedup_window = self.duration("MESH_CHAT_DEDUP_WINDOW", &raw.chat_dedup_window);
        Some(ChatSettings {
            partitions: partitions.filter(|n| (1..=1024).contains(n))?,
            max_unstored: max_unstored?,
            ingest_spacing: ingest_spacing.filter(|spacing| *spacing <= MAX_INGEST_SPACING)?,
            batch_size: batch_size.filter(|n| (1..=1024).contains(n))?,
            store_rounds: store_rounds.filter(|n| (1..=64).contains(n))?,
            store_chains: store_chains.filter(|n| (1..=most_chains).contains(n))?,
            store_linger: store_linger.filter(|linger| *linger <= Duration::from_millis(100))?,
            compact_every: compact_every.filter(|every| compact_range.contains(every))?,
            open_private: open_private?,
            recall_window: recall_window?,
            dedup_window: dedup_window?,
        })
    }

    /// An edge cuts off a connection whose send queue overflows, and one store round of a chat
    /// worker can push `most_frames_per_round` frames to one user at once: an edge's queue must
    /// hold that for the batch size the chat workers use (which should be the edges' own).
    pub fn round_fits_send_queue(&mut self, batch_size: usize, send_queue: usize) {
        let round = mesh_chat::most_frames_per_round(batch_size);
        if send_queue < round {
            self.push(format!(
                "MESH_WS_SEND_QUEUE: {send_queue} frames cannot hold the {round} frames one \
                 store round may push to one user with MESH_CHAT_BATCH_SIZE {batch_size}, so a \
                 client that reads its socket would be cut off as a slow consumer; raise it to \
                 {} (two rounds), and give chat workers and edges the same MESH_CHAT_BATCH_SIZE",
                2 * round
            ));
        }
    }

    pub fn ws(&mut self, raw: &RawSettings) -> Option<WsSettings> {
        let heartbeat = self.duration("MESH_WS_HEARTBEAT", &raw.ws_heartbeat);
        let idle_timeout = self.duration("MESH_WS_IDLE_TIMEOUT", &raw.ws_idle_timeout);
        if let (Some(beat), Some(idle)) = (heartbeat, idle_timeout)
            && idle <= beat
        {
            self.0
                .push("MESH_WS_IDLE_TIMEOUT: must be longer than MESH_WS_HEARTBEAT".into());
        }
        // The heartbeat also paces the presence refreshes, and the presence lifetime is fixed
        // by the bucket: refuse a heartbeat that lets a connected user's key expire.
        let longest_beat = PRESENCE_LIFETIME / PRESENCE_REFRESHES;
        if heartbeat.is_some_and(|beat| beat > longest_beat) {
            self.0.push(format!(
                "MESH_WS_HEARTBEAT: must be at most {}: it is also how often an edge refreshes \
                 a connected user's presence, whose entry lives {} (the PRESENCE bucket's age) \
                 and must outlast {PRESENCE_REFRESHES} refreshes, or the user shows offline \
                 while connected",
                humantime::format_duration(longest_beat),
                humantime::format_duration(PRESENCE_LIFETIME),
            ));
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
            heartbeat: heartbeat.filter(|beat| *beat <= longest_beat)?,
            idle_timeout: idle_timeout.filter(|idle| heartbeat.is_some_and(|b| *idle > b))?,
            send_queue: send_queue.filter(|n| *n >= 8)?,
            max_frame_bytes: max_frame_bytes.filter(|n| *n >= 1024)?,
        })
    }
}

/// A role's part: not asked for (`Some(None)`), complete (`Some(Some(part))`), or missing a
/// value whose problem was recorded (`None`).
fn complete<T>(part: Option<Option<T>>) -> Option<Option<T>> {
    part.map(|part| part.ok_or(())).transpose().ok()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::flags::Cli;

    /// The socket problems of `heartbeat` and `idle` (every other setting at its default).
    fn ws_problems(heartbeat: &str, idle: &str) -> (Option<WsSettings>, Vec<String>) {
        let mut raw = Cli::try_parse_from(["mesh"]).unwrap().raw;
        raw.ws_heartbeat = heartbeat.into();
        raw.ws_idle_timeout = idle.into();
        let mut problems = Problems::default();
        let ws = problems.ws(&raw);
        (ws, problems.0)
    }

    #[test]
    fn a_heartbeat_must_refresh_presence_twice_in_its_lifetime() {
        for beat in ["20s", "30s"] {
            let (ws, problems) = ws_problems(beat, "120s");
            assert!(problems.is_empty(), "{beat}: {problems:?}");
            assert!(ws.is_some(), "{beat}");
        }
        for beat in ["31s", "60s", "90s"] {
            let (ws, problems) = ws_problems(beat, "300s");
            assert!(ws.is_none(), "{beat}");
            let [problem] = &problems[..] else {
                panic!("{beat}: {problems:?}");
            };
            assert!(
                problem.starts_with("MESH_WS_HEARTBEAT: must be at most 30s")
                    && problem.contains("presence")
                    && problem.contains("lives 1m"),
                "{problem}"
            );
        }
    }
}
