//! Flags and environment variables of the `mesh` binary, as given: the subcommand (which
//! roles run) and the raw values `Settings::parse` checks.

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
    /// Most messages of one ingest partition accepted but not yet stored; beyond it edges
    /// refuse new messages to the partition `overloaded` (with `retry_after_ms`); 0 for no bound.
    #[arg(long, env = "MESH_CHAT_MAX_UNSTORED", default_value = "2048")]
    pub chat_max_unstored: String,
    /// Most chat messages a partition's owner reads into one batch (1-1024); a store round
    /// gathers up to four batches' worth from the partitions waiting for it.
    #[arg(long, env = "MESH_CHAT_BATCH_SIZE", default_value = "256")]
    pub chat_batch_size: String,
    /// Store rounds a chat worker runs at once (1-64): each takes the batches of every partition
    /// waiting when it starts through one authorization and one storing transaction.
    #[arg(long, env = "MESH_CHAT_STORE_ROUNDS", default_value = "4")]
    pub chat_store_rounds: String,
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
    #[command(flatten)]
    pub guard: crate::guard_flags::GuardFlags,
    #[command(flatten)]
    pub console: crate::console_flags::ConsoleFlags,
}
