//! `TestMesh`: the real mesh, started in-process for one test, and a small HTTP client for it.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mesh_contracts::Prefix;
use mesh_contracts::nats_permissions::NatsRole;
use mesh_nats::NatsCredentials;
use nats_mesh::config::{
    ChatSettings, DatabaseRole, Databases, EdgeRole, RoleSettings, UserRole, WsSettings,
};
use nats_mesh::{Role, Settings, roles};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// One key pair for the whole test process (generation is cheap, but needless work is not).
pub fn keys() -> &'static mesh_user::keys::KeyPair {
    static KEYS: OnceLock<mesh_user::keys::KeyPair> = OnceLock::new();
    KEYS.get_or_init(|| mesh_user::keys::generate().expect("key generation"))
}

pub fn nats_url() -> String {
    std::env::var("MESH_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// Every role's NATS login from `MESH_NATS_ROLE_CREDENTIALS` (printed by `scripts/services.sh`
/// when NATS runs with authorization); none for a server without it.
pub fn role_credentials() -> Vec<(NatsRole, NatsCredentials)> {
    let Some(path) = std::env::var_os("MESH_NATS_ROLE_CREDENTIALS") else {
        return Vec::new();
    };
    let text = std::fs::read_to_string(&path).expect("read MESH_NATS_ROLE_CREDENTIALS");
    mesh_nats::parse_role_passwords(&text).expect("parse MESH_NATS_ROLE_CREDENTIALS")
}

fn admin_database_url() -> String {
    std::env::var("MESH_DATABASE_URL")
        .expect("MESH_DATABASE_URL must point at the Postgres of scripts/services.sh")
}

/// Creates an empty database for one test and returns its URL.
pub async fn fresh_database() -> String {
    fresh_database_with("").await
}

/// `fresh_database` created with `options` (`CREATE DATABASE <name> <options>`), e.g. another
/// template or locale.
pub async fn fresh_database_with(options: &str) -> String {
    let admin = admin_database_url();
    let name = format!("t_{}", Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connect to the admin database");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {name} {options}"
    )))
    .execute(&mut conn)
    .await
    .expect("create database");
    let (base, _) = admin.rsplit_once('/').expect("database URL has a path");
    let query = admin
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    format!("{base}/{name}{query}")
}

/// Settings for a test mesh on `prefix` and `database_url`, with short but sane limits.
pub fn test_settings(prefix: &str, database_url: Option<String>) -> Settings {
    let keys = keys();
    Settings {
        nats_url: nats_url(),
        nats_credentials: NatsCredentials::default(),
        nats_role_credentials: role_credentials(),
        nats_replicas: 1,
        prefix: Prefix::parse(prefix).expect("valid prefix"),
        db_max_connections: 5,
        http_addr: "127.0.0.1:0".parse().unwrap(),
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        public_url: "http://127.0.0.1".into(),
        jwt_issuer: "nats-mesh-test".into(),
        jwt_audience: "nats-mesh-test".into(),
        access_ttl: Duration::from_secs(900),
        refresh_ttl: Duration::from_secs(3600),
        refresh_reuse_grace: Duration::from_secs(2),
        rpc_timeout: Duration::from_secs(5),
        audit_retention: Duration::from_secs(90 * 24 * 3600),
        // JetStream reserves a stream's byte cap on its store when it is made: at the default
        // 1 GiB, each test's prefix would reserve 2 GiB and the shared server run out.
        nats_kept_max_bytes: 4 << 20,
        max_body_bytes: 16 * 1024,
        bootstrap_admin_phones: vec!["+10000000001".into()],
        chat: ChatSettings {
            partitions: 4,
            max_unstored: 2048,
            ingest_spacing: Duration::from_millis(8),
            batch_size: 256,
            store_rounds: 4,
            store_chains: 2,
            store_linger: Duration::from_millis(5),
            // Often, so that every chat test (failover and fencing among them) runs with the
            // ingest stream being compacted beneath it.
            compact_every: Duration::from_millis(250),
            open_private: false,
            recall_window: Duration::from_secs(120),
            dedup_window: Duration::from_secs(120),
        },
        ws: WsSettings {
            allowed_origins: vec!["https://app.example".into()],
            heartbeat: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            // Roomy: tests send bursts before reading; the slow-client test sets its own.
            send_queue: 4096,
            max_frame_bytes: 32 * 1024,
        },
        guard: lifted_limits(),
        login_throttle: mesh_user::LoginThrottle::default(),
        user_hash_threads: 2,
        console: None,
        roles: every_role(database_url, keys),
        migrate: None,
    }
}

/// Every role's part, all on one database (none without one).
fn every_role(database_url: Option<String>, keys: &mesh_user::keys::KeyPair) -> RoleSettings {
    let edge = Some(EdgeRole {
        jwt_public_key_pem: keys.public_pem.clone(),
    });
    let Some(url) = database_url else {
        return RoleSettings {
            edge,
            ..RoleSettings::default()
        };
    };
    RoleSettings {
        edge,
        user: Some(UserRole {
            database_url: url.clone(),
            jwt_private_key_pem: keys.private_pem.clone(),
            jwt_public_key_pem: keys.public_pem.clone(),
        }),
        social: Some(DatabaseRole {
            database_url: url.clone(),
        }),
        chat: Some(DatabaseRole {
            database_url: url.clone(),
        }),
        outbox: Some(Databases {
            user: url.clone(),
            social: url.clone(),
            chat: url.clone(),
            audit: url,
        }),
    }
}

/// The edge's defences with rate limits far above what any test sends (every test client
/// shares 127.0.0.1); tests of the limits set their own.
pub fn lifted_limits() -> mesh_edge::GuardConfig {
    let lots = mesh_edge::Quota::new(1_000_000, Duration::from_secs(1));
    mesh_edge::GuardConfig {
        limits: mesh_edge::RateLimitConfig {
            auth_per_ip: lots,
            write_per_ip: lots,
            write_per_user: lots,
            read_per_ip: lots,
            read_per_user: lots,
            chat_sends_per_user: lots,
            ws_frames: lots,
            ws_frames_per_user: lots,
            ws_flood_close_after: 1_000,
            connections_per_user: 100_000,
            connections_per_ip: 100_000,
        },
        ..mesh_edge::GuardConfig::default()
    }
}

/// A process running some roles of the mesh; stopped when dropped.
struct Node {
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Node {
    async fn start(settings: Settings, roles_run: &'static [Role]) -> (Self, Option<String>) {
        let (listener, url) = if roles_run.contains(&Role::Edge) {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let url = format!("http://{}", listener.local_addr().unwrap());
            (Some(listener), Some(url))
        } else {
            (None, None)
        };
        let shutdown = CancellationToken::new();
        let settings = settings.only(roles_run);
        let task = tokio::spawn(roles::run(settings, listener, shutdown.clone()));
        (Self { shutdown, task }, url)
    }
}

/// The whole mesh for one test.
pub struct TestMesh {
    /// Base URL of the first edge, e.g. `http://127.0.0.1:40000`.
    pub url: String,
    pub settings: Settings,
    pub client: Client,
    nodes: Vec<Node>,
}

impl TestMesh {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Spawns with settings adjusted by `tune` (fresh database and unique prefix already set).
    pub async fn spawn_with(tune: impl FnOnce(&mut Settings)) -> Self {
        Self::spawn_roles(Role::ALL, tune).await
    }

    /// Spawns every role on the database at `database_url` (made by the test, e.g. with
    /// `fresh_database_with`) instead of a fresh one.
    pub async fn spawn_on(database_url: String) -> Self {
        Self::spawn_roles_on(database_url, Role::ALL, |_| {}).await
    }

    /// Spawns a first node running `roles` (the edge among them), with tuned settings. Unless
    /// every role runs, it only waits for the edge to be up: start the other roles with
    /// `start_node`, then `wait_ready`.
    pub async fn spawn_roles(roles: &'static [Role], tune: impl FnOnce(&mut Settings)) -> Self {
        Self::spawn_roles_on(fresh_database().await, roles, tune).await
    }

    /// `spawn_roles` on the database at `database_url`.
    async fn spawn_roles_on(
        database_url: String,
        roles: &'static [Role],
        tune: impl FnOnce(&mut Settings),
    ) -> Self {
        // `MESH_TEST_LOG=1` prints the mesh's logs (filtered by RUST_LOG) while debugging.
        if std::env::var_os("MESH_TEST_LOG").is_some() {
            static LOGS: OnceLock<()> = OnceLock::new();
            LOGS.get_or_init(|| {
                std::mem::forget(mesh_observability::init(
                    "mesh-test",
                    "mesh",
                    &[mesh_nats::CLIENT_LOG_TARGET],
                ))
            });
        }
        let prefix = format!("t{}", &Uuid::new_v4().simple().to_string()[..12]);
        let mut settings = test_settings(&prefix, Some(database_url));
        tune(&mut settings);
        // A cluster that is still forming (a peer not yet current) refuses replicated streams
        // for a moment; like an operator's migration job, try again until it is placed.
        poll_until(
            "the test's streams and buckets",
            Duration::from_secs(60),
            || async {
                roles::migrate_nats(&settings)
                    .await
                    .inspect_err(|err| eprintln!("migrate NATS: {err}; retrying"))
                    .ok()
            },
        )
        .await;
        let (node, url) = Node::start(settings.clone(), roles).await;
        let url = url.expect("edge url");
        let mesh = Self {
            client: Client::new(&url),
            url,
            settings,
            nodes: vec![node],
        };
        if roles == Role::ALL {
            mesh.wait_ready().await;
        } else {
            wait_until("edge up", || async {
                mesh.client.get("/healthz").await.0 == StatusCode::OK
            })
            .await;
        }
        mesh
    }

    /// The database the services of this mesh share (tests give each mesh a fresh one).
    pub fn database_url(&self) -> &str {
        let chat = self.settings.roles.chat.as_ref();
        &chat.expect("a mesh with a database").database_url
    }

    /// Starts another edge on the same prefix (another node of the same deployment).
    pub async fn spawn_edge(&mut self) -> Client {
        let (node, url) = Node::start(self.settings.clone(), &[Role::Edge]).await;
        self.nodes.push(node);
        let client = Client::new(&url.expect("edge url"));
        wait_until("second edge ready", || async {
            client.get("/readyz").await.0 == StatusCode::OK
        })
        .await;
        client
    }

    /// Starts another node of the same deployment running `roles`; returns its index.
    pub async fn start_node(&mut self, roles: &'static [Role]) -> usize {
        let (node, _) = Node::start(self.settings.clone(), roles).await;
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Kills node `index` the hard way: its tasks are dropped mid-work, nothing is handed
    /// back (leases expire, unacknowledged messages stay unacknowledged).
    pub fn kill_node(&mut self, index: usize) {
        self.nodes[index].task.abort();
    }

    /// The Prometheus text the edge serves on `/metrics` (the test process's registry).
    pub async fn metrics_text(&self) -> String {
        self.client.metrics_text().await
    }

    /// A plain NATS client with `role`'s login (user, password and inbox prefix), for what the
    /// `Bus` does not offer.
    pub async fn nats_client_as(&self, role: NatsRole) -> async_nats::Client {
        let credentials = self.settings.nats_credentials_for(role);
        let mut options = async_nats::ConnectOptions::new();
        if let (Some(user), Some(password)) = (&credentials.user, &credentials.password) {
            options = options.user_and_password(user.clone(), password.expose().to_owned());
        }
        if let Some(inbox) = &credentials.inbox_prefix {
            options = options.custom_inbox_prefix(inbox.clone());
        }
        options
            .connect(&self.settings.nats_url)
            .await
            .expect("connect to NATS")
    }

    /// A NATS connection of this mesh holding `role`'s credentials, as that role's processes
    /// connect.
    pub async fn bus_as(&self, role: NatsRole, name: &str) -> mesh_nats::Bus {
        self.try_bus_as(role, name).await.expect("connect to NATS")
    }

    async fn try_bus_as(
        &self,
        role: NatsRole,
        name: &str,
    ) -> Result<mesh_nats::Bus, mesh_nats::ConnectError> {
        mesh_nats::Bus::connect_with(
            &self.settings.nats_url,
            &self.settings.nats_credentials_for(role),
            self.settings.prefix.clone(),
            name,
            Duration::from_secs(5),
        )
        .await
    }

    /// Waits until `/readyz` answers 200 from a check of the services made after this call
    /// (an edge shares one answer for a second: one from before a worker died would do).
    pub async fn wait_ready(&self) {
        let since = Instant::now();
        wait_until("mesh ready", || async {
            let (status, body) = self.client.get("/readyz").await;
            status == StatusCode::OK
                && body["services_checked_ms_ago"]
                    .as_u64()
                    .is_some_and(|ago| Duration::from_millis(ago) <= since.elapsed())
        })
        .await;
    }

    /// Stops every role as SIGTERM would and answers how long they took to finish, all of
    /// them (at most 15 s each; what has not finished by then is left to be dropped).
    pub async fn stop_timed(mut self) -> Duration {
        let started = Instant::now();
        let nodes = std::mem::take(&mut self.nodes);
        for node in &nodes {
            node.shutdown.cancel();
        }
        for node in nodes {
            let _ = tokio::time::timeout(Duration::from_secs(15), node.task).await;
        }
        started.elapsed()
    }

    /// Stops every role and waits for them to finish.
    pub async fn stop(mut self) {
        for node in std::mem::take(&mut self.nodes) {
            node.shutdown.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(15), node.task).await;
        }
        // Streams and buckets of this test's prefix would otherwise pile up on the server.
        if let Ok(bus) = self.try_bus_as(NatsRole::Migrate, "test-cleanup").await {
            bus.delete_topology().await;
            bus.drain().await;
        }
    }
}

impl Drop for TestMesh {
    fn drop(&mut self) {
        for node in &self.nodes {
            node.shutdown.cancel();
        }
    }
}

/// The sum of the Prometheus series `name` (all its labels) at the metrics URL `url`; `None`
/// while it cannot be scraped or has no such series.
pub async fn scraped_sum(url: &str, name: &str) -> Option<f64> {
    scraped_sum_with(url, name, "").await
}

/// `scraped_sum` of the series whose labels hold `label` (e.g. `reason="quota"`).
pub async fn scraped_sum_with(url: &str, name: &str, label: &str) -> Option<f64> {
    let text = reqwest::get(url).await.ok()?.text().await.ok()?;
    let values: Vec<f64> = text
        .lines()
        .filter(|line| {
            line.strip_prefix(name).is_some_and(|rest| {
                (rest.starts_with('{') || rest.starts_with(' ')) && rest.contains(label)
            })
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// The JetStream stream `name` and the names of its consumers; `None` while it cannot be read.
pub async fn stream_and_consumers(
    jetstream: &async_nats::jetstream::Context,
    name: &str,
) -> Option<(async_nats::jetstream::stream::Stream, Vec<String>)> {
    use futures::StreamExt;
    let stream = jetstream.get_stream(name).await.ok()?;
    let names = stream
        .consumer_names()
        .filter_map(|n| async { n.ok() })
        .collect()
        .await;
    Some((stream, names))
}

/// Polls `check` until it is true, failing the test after 20 s.
pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    poll_until(what, Duration::from_secs(20), || {
        let checked = check();
        async move { checked.await.then_some(()) }
    })
    .await
}

/// Tries `attempt` until it yields a value, for at most `limit`: the one waiting loop of the
/// tests (a condition to see, or an action to retry while the mesh recovers).
pub async fn poll_until<T, F, Fut>(what: &str, limit: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A JSON-over-HTTP client for one edge; answers are (status, body as JSON or null).
#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

pub type Answer = (StatusCode, Value);

impl Client {
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .expect("http client");
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The Prometheus text the edge serves on `/metrics`.
    pub async fn metrics_text(&self) -> String {
        let answer = self.raw().get(self.url("/metrics")).send().await;
        answer.unwrap().text().await.unwrap()
    }

    pub fn raw(&self) -> &reqwest::Client {
        &self.http
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("request sent");
        answer(response).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None, None).await
    }

    pub async fn get_as(&self, path: &str, token: &str) -> Answer {
        self.send(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(Method::POST, path, None, Some(&body)).await
    }

    pub async fn post_as(&self, path: &str, token: &str, body: Value) -> Answer {
        self.send(Method::POST, path, Some(token), Some(&body))
            .await
    }

    /// Registers an account; panics unless it succeeds.
    pub async fn register(&self, phone: &str, nickname: &str) -> Value {
        let (status, body) = self
            .post(
                "/v1/auth/register",
                json!({ "phone": phone, "password": PASSWORD, "nickname": nickname }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "register {phone}: {body}");
        body
    }

    /// Logs in; panics unless it succeeds. Returns the token pair.
    pub async fn login(&self, phone: &str) -> Tokens {
        let (status, body) = self
            .post(
                "/v1/auth/login",
                json!({ "phone": phone, "password": PASSWORD }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "login {phone}: {body}");
        Tokens::from(&body)
    }

    /// Registers and logs in a new user with a unique phone.
    pub async fn user(&self, nickname: &str) -> (Value, Tokens) {
        let phone = unique_phone();
        let profile = self.register(&phone, nickname).await;
        (profile, self.login(&phone).await)
    }
}

pub const PASSWORD: &str = "correct horse battery";

pub async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, body)
}

/// A phone number no other test uses.
pub fn unique_phone() -> String {
    let n = Uuid::new_v4().as_u128() % 10_000_000_000;
    format!("+2{n:010}")
}

#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
    pub user_id: String,
    pub session_id: String,
}

impl From<&Value> for Tokens {
    fn from(body: &Value) -> Self {
        let field = |name: &str| {
            body[name]
                .as_str()
                .unwrap_or_else(|| panic!("{name} in {body}"))
                .to_owned()
        };
        Self {
            access: field("access_token"),
            refresh: field("refresh_token"),
            user_id: field("user_id"),
            session_id: field("session_id"),
        }
    }
}

/// Asserts an RFC 9457 problem with `code` and `status`.
#[track_caller]
pub fn assert_problem(answer: &Answer, status: StatusCode, code: &str) {
    let (got, body) = answer;
    assert_eq!(*got, status, "expected {status} {code}, got {got}: {body}");
    assert_eq!(body["code"], code, "wrong code in {body}");
    assert_eq!(body["status"], status.as_u16(), "status field in {body}");
    assert!(
        body["title"].is_string() && body["type"].is_string(),
        "problem fields in {body}"
    );
}
