//! Flags and environment variables of the `mesh` binary, as given: the subcommand (which
//! roles run) and the raw values `Settings::parse` checks. A value that may hold a secret (a
//! URL with a password, a password, token or key) is never shown: `--help` hides the value its
//! variable has (`hide_env_values`), and `Debug` prints it redacted.

use std::fmt;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use mesh_nats::Secret;

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

/// Raw values as given; parsed into `Settings` by `Settings::parse`.
#[derive(Clone, Default, Args)]
pub struct RawSettings {
    /// NATS server URL, or several separated by commas (the nodes of a cluster).
    #[arg(
        long,
        env = "MESH_NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        hide_env_values = true
    )]
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
    /// The most bytes `mesh migrate` lets each of the AUDIT stream and the IDEMPOTENCY bucket
    /// hold (JetStream reserves it on the server's store).
    #[arg(long, env = "MESH_NATS_KEPT_MAX_BYTES", default_value = "1073741824")]
    pub nats_kept_max_bytes: String,
    /// Namespace of every subject, stream and bucket.
    #[arg(long, env = "MESH_PREFIX", default_value = "mesh")]
    pub prefix: String,
    /// Postgres URL shared by the services unless overridden per service.
    #[arg(long, env = "MESH_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Postgres URL of the user service.
    #[arg(long, env = "MESH_USER_DATABASE_URL", hide_env_values = true)]
    pub user_database_url: Option<String>,
    /// Postgres URL of the social service.
    #[arg(long, env = "MESH_SOCIAL_DATABASE_URL", hide_env_values = true)]
    pub social_database_url: Option<String>,
    /// Postgres URL of the chat service.
    #[arg(long, env = "MESH_CHAT_DATABASE_URL", hide_env_values = true)]
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
    /// How long the outbox role keeps audit records, e.g. `90d` (at least `1h`).
    #[arg(long, env = "MESH_AUDIT_RETENTION", default_value = "90d")]
    pub audit_retention: String,
    /// Largest accepted request body in bytes.
    #[arg(long, env = "MESH_MAX_BODY_BYTES", default_value = "65536")]
    pub max_body_bytes: String,
    /// Chat ingest partitions; every edge and chat worker of a deployment must agree.
    #[arg(long, env = "MESH_CHAT_PARTITIONS", default_value = "16")]
    pub chat_partitions: String,
    /// Most messages of one ingest partition accepted but not yet stored; beyond it edges
    /// refuse new messages to the partition `overloaded` (with `retry_after_ms`); 0 for no bound.
    #[arg(long, env = "MESH_CHAT_MAX_UNSTORED", default_value = "2048")]
    pub chat_max_unstored: String,
    /// Least time between the starts of two publishes of one ingest partition by an edge (0 to
    /// 50 ms): what the edge accepts meanwhile goes out in one publish. A partition quiet for
    /// that long publishes at once.
    #[arg(long, env = "MESH_CHAT_INGEST_SPACING", default_value = "8ms")]
    pub chat_ingest_spacing: String,
    /// Most chat messages a partition's owner reads into one batch (1-1024); a store round
    /// gathers up to four batches' worth from the partitions waiting for it.
    #[arg(long, env = "MESH_CHAT_BATCH_SIZE", default_value = "256")]
    pub chat_batch_size: String,
    /// Store rounds a chat worker runs at once (1-64): each takes the batches of every partition
    /// waiting when it starts through one authorization and one storing transaction.
    #[arg(long, env = "MESH_CHAT_STORE_ROUNDS", default_value = "4")]
    pub chat_store_rounds: String,
    /// Independent chains of store rounds per chat worker (1 to MESH_CHAT_STORE_ROUNDS), each
    /// for its share of the partitions and with its share of the rounds: with one, every
    /// partition waits for the round in flight; with one per CPU the chains store side by side.
    #[arg(long, env = "MESH_CHAT_STORE_CHAINS", default_value = "2")]
    pub chat_store_chains: String,
    /// How long a chat batch may wait for other partitions' batches before a free store round
    /// takes it (0 to 100 ms): fewer, larger transactions while the worker is not busy.
    #[arg(long, env = "MESH_CHAT_STORE_LINGER", default_value = "5ms")]
    pub chat_store_linger: String,
    /// How often a chat worker purges from the ingest stream what every partition has stored
    /// (100 ms to 1 h).
    #[arg(long, env = "MESH_CHAT_COMPACT_EVERY", default_value = "30s")]
    pub chat_compact_every: String,
    /// Let any two users message privately, not only friends.
    #[arg(long, env = "MESH_CHAT_OPEN_PRIVATE", default_value = "false")]
    pub chat_open_private: String,
    /// How long after sending a message its sender may recall it.
    #[arg(long, env = "MESH_CHAT_RECALL_WINDOW", default_value = "2m")]
    pub chat_recall_window: String,
    /// How long JetStream drops resent messages by id (the chat store recognises later
    /// resends, and the event consumers later republished events). nats-server keeps every
    /// id of the window in its heap: at 10,000 msg/s a 2-minute window holds over a million,
    /// whose garbage collection stalled the chat stream for 100-300 ms every few seconds.
    #[arg(long, env = "MESH_CHAT_DEDUP_WINDOW", default_value = "5s")]
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
    /// Frames queued for one slow connection before it is disconnected. The chat worker
    /// pushes a round's frames at once, up to 2 x 4 x MESH_CHAT_BATCH_SIZE for one user (2,048
    /// by default), so the default holds two such bursts.
    #[arg(long, env = "MESH_WS_SEND_QUEUE", default_value = "4096")]
    pub ws_send_queue: String,
    /// Largest frame a client may send, in bytes.
    #[arg(long, env = "MESH_WS_MAX_FRAME_BYTES", default_value = "32768")]
    pub ws_max_frame_bytes: String,
    /// Comma-separated phones that become admins when they register.
    #[arg(long, env = "MESH_BOOTSTRAP_ADMINS", default_value = "")]
    pub bootstrap_admins: String,
    /// Password-hashing threads of the user service, 1-256; each keeps a 19 MiB buffer.
    /// Default: the CPUs this process may use, at most 8.
    #[arg(long, env = "MESH_USER_HASH_THREADS")]
    pub user_hash_threads: Option<String>,
    #[command(flatten)]
    pub guard: crate::guard_flags::GuardFlags,
    #[command(flatten)]
    pub console: crate::console_flags::ConsoleFlags,
}

/// Shown in place of a value that may hold a secret.
const REDACTED: &str = "[redacted]";

/// A database URL as `Debug` shows it: as it is when it cannot carry credentials (no user
/// info, query or key-value pairs), else redacted. (NATS URLs go through
/// `mesh_nats::redact_urls`, which keeps the hosts.)
fn shown_url(url: &str) -> &str {
    if url.contains(['@', '?', '=', ' ']) {
        REDACTED
    } else {
        url
    }
}

impl fmt::Debug for RawSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Taken apart field by field, so that a new flag does not compile until it is decided
        // here whether its value may hold a secret.
        let Self {
            nats_url,
            nats_user,
            nats_password,
            nats_token,
            nats_nkey_seed,
            nats_creds,
            nats_tls_ca,
            nats_tls_cert,
            nats_tls_key,
            nats_role_credentials,
            nats_replicas,
            nats_kept_max_bytes,
            prefix,
            database_url,
            user_database_url,
            social_database_url,
            chat_database_url,
            db_max_connections,
            http_addr,
            metrics_addr,
            public_url,
            jwt_private_key,
            jwt_public_key,
            jwt_issuer,
            jwt_audience,
            access_ttl,
            refresh_ttl,
            refresh_reuse_grace,
            rpc_timeout,
            audit_retention,
            max_body_bytes,
            chat_partitions,
            chat_max_unstored,
            chat_ingest_spacing,
            chat_batch_size,
            chat_store_rounds,
            chat_store_chains,
            chat_store_linger,
            chat_compact_every,
            chat_open_private,
            chat_recall_window,
            chat_dedup_window,
            ws_allowed_origins,
            ws_heartbeat,
            ws_idle_timeout,
            ws_send_queue,
            ws_max_frame_bytes,
            bootstrap_admins,
            user_hash_threads,
            guard,
            console,
        } = self;
        fn database(url: &Option<String>) -> Option<&str> {
            url.as_deref().map(shown_url)
        }
        f.debug_struct("RawSettings")
            .field("nats_url", &mesh_nats::redact_urls(nats_url))
            .field("nats_user", nats_user)
            .field("nats_password", nats_password)
            .field("nats_token", nats_token)
            .field("nats_nkey_seed", nats_nkey_seed)
            .field("nats_creds", nats_creds)
            .field("nats_tls_ca", nats_tls_ca)
            .field("nats_tls_cert", nats_tls_cert)
            .field("nats_tls_key", nats_tls_key)
            .field("nats_role_credentials", nats_role_credentials)
            .field("nats_replicas", nats_replicas)
            .field("nats_kept_max_bytes", nats_kept_max_bytes)
            .field("prefix", prefix)
            .field("database_url", &database(database_url))
            .field("user_database_url", &database(user_database_url))
            .field("social_database_url", &database(social_database_url))
            .field("chat_database_url", &database(chat_database_url))
            .field("db_max_connections", db_max_connections)
            .field("http_addr", http_addr)
            .field("metrics_addr", metrics_addr)
            .field("public_url", &public_url.as_deref().map(shown_url))
            .field("jwt_private_key", jwt_private_key)
            .field("jwt_public_key", jwt_public_key)
            .field("jwt_issuer", jwt_issuer)
            .field("jwt_audience", jwt_audience)
            .field("access_ttl", access_ttl)
            .field("refresh_ttl", refresh_ttl)
            .field("refresh_reuse_grace", refresh_reuse_grace)
            .field("rpc_timeout", rpc_timeout)
            .field("audit_retention", audit_retention)
            .field("max_body_bytes", max_body_bytes)
            .field("chat_partitions", chat_partitions)
            .field("chat_max_unstored", chat_max_unstored)
            .field("chat_ingest_spacing", chat_ingest_spacing)
            .field("chat_batch_size", chat_batch_size)
            .field("chat_store_rounds", chat_store_rounds)
            .field("chat_store_chains", chat_store_chains)
            .field("chat_store_linger", chat_store_linger)
            .field("chat_compact_every", chat_compact_every)
            .field("chat_open_private", chat_open_private)
            .field("chat_recall_window", chat_recall_window)
            .field("chat_dedup_window", chat_dedup_window)
            .field("ws_allowed_origins", ws_allowed_origins)
            .field("ws_heartbeat", ws_heartbeat)
            .field("ws_idle_timeout", ws_idle_timeout)
            .field("ws_send_queue", ws_send_queue)
            .field("ws_max_frame_bytes", ws_max_frame_bytes)
            .field("bootstrap_admins", bootstrap_admins)
            .field("user_hash_threads", user_hash_threads)
            .field("guard", guard)
            .field("console", console)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// The environment of a deployment whose URLs carry passwords.
    const SECRET_ENV: [(&str, &str); 5] = [
        ("MESH_NATS_URL", "nats://edge:nats-secret-1@nats:4222"),
        ("MESH_DATABASE_URL", "postgres://mesh:pg-secret-2@db/mesh"),
        (
            "MESH_USER_DATABASE_URL",
            "postgres://u:pg-secret-3@db/users",
        ),
        (
            "MESH_SOCIAL_DATABASE_URL",
            "postgres://s@db/social?password=pg-secret-4",
        ),
        ("MESH_CHAT_DATABASE_URL", "postgres://c:pg-secret-5@db/chat"),
    ];

    /// Set in the copy of this test binary that only prints the help.
    const PRINT_HELP: &str = "MESH_TEST_PRINT_HELP";

    /// `mesh --help` in an environment holding secrets names the variables, never their
    /// values. Clap reads the environment as the command is built, so the help is rendered by
    /// a copy of this test binary started with that environment (this process's own cannot be
    /// changed: no `unsafe`).
    #[test]
    fn help_never_shows_a_secret_from_the_environment() {
        if std::env::var_os(PRINT_HELP).is_some() {
            print!("{}", Cli::command().render_long_help());
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "flags::tests::help_never_shows_a_secret_from_the_environment",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(PRINT_HELP, "1")
            .envs(SECRET_ENV)
            .output()
            .expect("run the help printer");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{help}");
        for (name, value) in SECRET_ENV {
            assert!(help.contains(name), "{name} is described");
            let secret = value.rsplit_once("secret-").expect("a secret").1;
            assert!(
                !help.contains(&format!("secret-{secret}")),
                "the value of {name} shown:\n{help}"
            );
        }
        assert!(help.contains("[default: nats://127.0.0.1:4222]"));
    }

    /// Every flag whose value may be a secret hides it from `--help`.
    #[test]
    fn every_secret_flag_hides_its_value() {
        let command = Cli::command();
        let secret = |name: &str| {
            name.ends_with("_URL") && name != "MESH_PUBLIC_URL"
                || ["_PASSWORD", "_TOKEN", "_SEED", "_SECRET"]
                    .iter()
                    .any(|end| name.ends_with(end))
        };
        let mut checked = 0;
        for arg in command.get_arguments() {
            let Some(name) = arg.get_env().and_then(|n| n.to_str()) else {
                continue;
            };
            if secret(name) {
                assert!(arg.is_hide_env_values_set(), "{name} shows its value");
                checked += 1;
            }
        }
        assert_eq!(checked, 8, "the URLs, the NATS password, token and seed");
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let cli = Cli::try_parse_from([
            "mesh",
            "--nats-url=nats://a:nats-secret@n1:4222,nats://n2:4222",
            "--nats-password=pw-secret",
            "--database-url=postgres://mesh:pg-secret@db/mesh",
            "--user-database-url=postgres://db/users?password=q-secret",
            "--social-database-url=host=db password=kv-secret",
            "--chat-database-url=postgres://db/chat",
        ])
        .unwrap();
        let shown = format!("{cli:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(
            shown.contains(r#"chat_database_url: Some("postgres://db/chat")"#),
            "{shown}"
        );
        assert!(
            shown.contains("ws_heartbeat"),
            "every other field shown: {shown}"
        );
        let plain = Cli::try_parse_from(["mesh", "--nats-url=nats://n1:4222"]).unwrap();
        assert!(format!("{:?}", plain.raw).contains("nats://n1:4222"));
    }
}
