//! Chat ingest under faults (#10): chat workers in processes of their own, stopped (SIGSTOP)
//! past their lease during traffic, several times and inside storing transactions, are fenced
//! out: a client that resends until `stored` finds every message in the table once, in its
//! send order, and no partition waits for a stopped worker. A handover re-reads nothing already
//! stored; with Postgres gone, the edge answers 503 with `Retry-After` promptly.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use mesh_contracts::nats_permissions::NatsRole;
use mesh_contracts::{Bucket, Stream};
use mesh_nats::KvBucket;
use nats_mesh::Role;
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;

use crate::chat::{Friends, friends, private_id};
use crate::faults::PrivateNats;
use crate::harness::{TestMesh, Tokens, poll_until, scraped_sum, wait_until};
use crate::social_friends::{befriend, send_request};
use crate::ws::Ws;

/// Every storing transaction of the worker processes stays open this long
/// (`MESH_CHAT_TEST_HOLD_TX_MS`), so a stop usually lands inside one.
const HOLD_TX_MS: &str = "300";
/// How many times a worker is stopped.
const STOPS: usize = 3;
/// The lease (6 s) plus a takeover: every conversation must store again within this while a
/// worker is stopped.
const TAKEOVER_LIMIT: Duration = Duration::from_secs(20);
/// The client sends one message this often while faults are injected.
const SEND_EVERY: Duration = Duration::from_millis(40);
/// A message not answered `stored` for this long is sent again.
const RESEND_AFTER: Duration = Duration::from_secs(3);

/// The chat role in a process of its own (the `mesh` binary), so it can be stopped.
pub struct ChatProcess {
    child: Child,
}

impl ChatProcess {
    fn start(mesh: &TestMesh) -> Self {
        Self::holding(mesh, HOLD_TX_MS)
    }

    /// A worker that keeps each storing transaction open `hold_ms` milliseconds (a slow store).
    pub fn holding(mesh: &TestMesh, hold_ms: &str) -> Self {
        Self::with_env(mesh, hold_ms, &[])
    }

    /// `holding`, with more environment for the worker (e.g. a smaller batch size).
    pub fn with_env(mesh: &TestMesh, hold_ms: &str, env: &[(&str, &str)]) -> Self {
        let s = &mesh.settings;
        let database = mesh.database_url().to_owned();
        let mut command = Command::new(env!("CARGO_BIN_EXE_mesh"));
        command
            .arg("chat")
            .env("MESH_NATS_URL", &s.nats_url)
            .env("MESH_PREFIX", s.prefix.as_str())
            .env("MESH_DATABASE_URL", &database)
            .env("MESH_CHAT_DATABASE_URL", &database)
            .env("MESH_CHAT_PARTITIONS", s.chat.partitions.to_string())
            .env("MESH_CHAT_OPEN_PRIVATE", s.chat.open_private.to_string())
            .env("MESH_DB_MAX_CONNECTIONS", "5")
            .env("MESH_METRICS_ADDR", "127.0.0.1:0")
            .env("MESH_NATS_REPLICAS", "1")
            .env("MESH_CHAT_TEST_HOLD_TX_MS", hold_ms)
            // As the in-process workers: compacting the ingest stream beneath the faults.
            .env(
                "MESH_CHAT_COMPACT_EVERY",
                format!("{}ms", s.chat.compact_every.as_millis()),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if std::env::var_os("MESH_TEST_LOG").is_none() {
            command.stdout(Stdio::null()).stderr(Stdio::null());
        }
        Self {
            child: command.spawn().expect("start a chat worker process"),
        }
    }

    /// `with_env`, serving its metrics on a port of its own: the worker and its metrics URL.
    pub fn with_metrics(mesh: &TestMesh, hold_ms: &str, env: &[(&str, &str)]) -> (Self, String) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local address").to_string();
        // Free a moment ago; the worker binds it next (a lost race fails the test, never
        // passes it).
        drop(listener);
        let mut env = env.to_vec();
        env.push(("MESH_METRICS_ADDR", addr.as_str()));
        let worker = Self::with_env(mesh, hold_ms, &env);
        (worker, format!("http://{addr}/metrics"))
    }

    /// Sends SIGTERM (as Kubernetes stops a pod) and answers how long the process took to
    /// exit; at most 15 s is waited.
    pub async fn terminate_timed(mut self) -> Duration {
        let started = Instant::now();
        self.signal("-TERM");
        let _ = tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await;
        started.elapsed()
    }

    /// Sends `signal` (`-STOP`, `-CONT`) to the process.
    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the worker runs").to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid}");
    }
}

/// Enough partitions that two workers always share them: rendezvous hashing gives all of 4
/// partitions to one of two workers in 1 run of 8, all of 16 in 1 of 32,768.
fn shared(settings: &mut nats_mesh::Settings) {
    settings.chat.partitions = 16;
}

/// Who holds each partition's lease (worker ids), by partition.
async fn lease_holders(leases: &KvBucket, partitions: u32) -> Vec<Option<String>> {
    let mut holders = Vec::new();
    for partition in 0..partitions {
        let entry = leases
            .get(&format!("part.{partition}"))
            .await
            .ok()
            .flatten();
        holders.push(entry.map(|e| String::from_utf8_lossy(&e.value).into_owned()));
    }
    holders
}

/// True when every partition is held and `workers` distinct workers hold them.
async fn held_by(leases: &KvBucket, partitions: u32, workers: usize) -> bool {
    let holders = lease_holders(leases, partitions).await;
    let mut distinct: Vec<&String> = holders.iter().flatten().collect();
    distinct.sort();
    distinct.dedup();
    holders.iter().all(Option::is_some) && distinct.len() == workers
}

/// Each conversation's newest stored seq.
async fn last_seqs(db: &PgPool) -> HashMap<String, i64> {
    sqlx::query_as("SELECT id, last_seq FROM chat.conversations")
        .fetch_all(db)
        .await
        .expect("read conversations")
        .into_iter()
        .collect()
}

/// Each conversation's client ids in seq order, as stored.
async fn stored_order(db: &PgPool) -> HashMap<String, Vec<String>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT conversation_id, client_id FROM chat.messages ORDER BY conversation_id, seq",
    )
    .fetch_all(db)
    .await
    .expect("read messages");
    let mut order: HashMap<String, Vec<String>> = HashMap::new();
    for (conversation, client_id) in rows {
        order.entry(conversation).or_default().push(client_id);
    }
    order
}

/// A client that sends to its friends in turn and resends every message until it hears
/// `stored` (at once after a `service_unavailable` refusal, else after [`RESEND_AFTER`]), as
/// the client contract says.
struct ResendingClient {
    ws: Ws,
    friends: Vec<String>,
    /// Index of each sent message: (friend, last sent at); removed once stored.
    pending: BTreeMap<usize, Instant>,
    sent: usize,
}

impl ResendingClient {
    fn message(&self, index: usize) -> (String, String) {
        let friend = self.friends[index % self.friends.len()].clone();
        (friend, format!("m-{index}"))
    }

    async fn send(&mut self, index: usize) {
        let (friend, client_id) = self.message(index);
        self.ws
            .send_to(&friend, &client_id, &format!("body {index}"))
            .await;
        self.pending.insert(index, Instant::now());
    }

    async fn send_next(&mut self) {
        self.send(self.sent).await;
        self.sent += 1;
    }

    /// Resends, oldest first, whatever waited too long.
    async fn resend_overdue(&mut self) {
        let overdue: Vec<usize> = self
            .pending
            .iter()
            .filter(|(_, at)| at.elapsed() >= RESEND_AFTER)
            .map(|(index, _)| *index)
            .collect();
        for index in overdue {
            self.send(index).await;
        }
    }

    /// Handles the frames that arrive within a short while.
    async fn listen(&mut self) {
        let Some(frame) = self.ws.next_within(Duration::from_millis(20)).await else {
            return;
        };
        if frame["type"] != "ack" {
            return;
        }
        let Some(index) = frame["client_id"]
            .as_str()
            .and_then(|id| id.strip_prefix("m-"))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            return;
        };
        match frame["status"].as_str() {
            Some("stored") => {
                self.pending.remove(&index);
            }
            Some("accepted") => {}
            Some("rejected") if frame["reason"] == "service_unavailable" => {
                if self.pending.contains_key(&index) {
                    self.send(index).await;
                }
            }
            _ => panic!("unexpected ack {frame}"),
        }
    }

    /// Each friend's client ids in the order they were first sent.
    fn sent_order(&self) -> HashMap<String, Vec<String>> {
        let mut order: HashMap<String, Vec<String>> = HashMap::new();
        for index in 0..self.sent {
            let (friend, client_id) = self.message(index);
            order.entry(friend).or_default().push(client_id);
        }
        order
    }
}

/// Ann and four friends (four conversations spread over the partitions).
pub(crate) async fn ann_and_friends(mesh: &TestMesh) -> (Tokens, Vec<Tokens>) {
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;
    let mut friends = Vec::new();
    for name in ["b", "c", "d", "e"] {
        let (_, friend) = c.user(name).await;
        befriend(c, &ann, &friend).await;
        friends.push(friend);
    }
    (ann, friends)
}

pub(crate) async fn test_database(mesh: &TestMesh) -> PgPool {
    PgPool::connect(mesh.database_url())
        .await
        .expect("connect to the test database")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_chat_workers_are_fenced_out_and_nothing_is_lost_reordered_or_doubled() {
    let mesh = TestMesh::spawn_roles(&[Role::Edge, Role::User, Role::Social], shared).await;
    let first = ChatProcess::start(&mesh);
    mesh.wait_ready().await;
    let workers = [first, ChatProcess::start(&mesh)];
    let (ann, friends) = ann_and_friends(&mesh).await;
    let db = test_database(&mesh).await;
    let bus = mesh.bus_as(NatsRole::Chat, "fencing-test").await;
    let leases = bus.bucket(Bucket::Leases).await.expect("the lease bucket");
    let partitions = mesh.settings.chat.partitions;

    // Faults: each time both workers share the partitions, one is stopped until every
    // conversation has stored again (its partitions were taken over while it stands still),
    // then resumed.
    let conversations: Vec<String> = friends.iter().map(|f| private_id(&ann, f)).collect();
    let faults = tokio::spawn({
        let db = db.clone();
        async move {
            for stop in 0..STOPS {
                // A resumed worker is given partitions back within seconds (longer on a
                // loaded machine, where the worker processes also start slowly).
                poll_until(
                    "both workers hold partitions",
                    Duration::from_secs(60),
                    || async { held_by(&leases, partitions, 2).await.then_some(()) },
                )
                .await;
                let seq_of =
                    |seqs: &HashMap<String, i64>, id: &String| seqs.get(id).copied().unwrap_or(0);
                let before = last_seqs(&db).await;
                let worker = &workers[stop % workers.len()];
                worker.signal("-STOP");
                // Stopped until its leases expired, the other worker took every partition
                // and every conversation stored again: the stopped worker's partitions
                // (and any transaction it was in) did not hold them up past the takeover.
                poll_until(
                    "a takeover of every partition while a worker is stopped",
                    TAKEOVER_LIMIT,
                    || async {
                        let now = last_seqs(&db).await;
                        let stored_again = conversations
                            .iter()
                            .all(|id| seq_of(&now, id) > seq_of(&before, id));
                        (stored_again && held_by(&leases, partitions, 1).await).then_some(())
                    },
                )
                .await;
                worker.signal("-CONT");
            }
            workers
        }
    });

    let mut client = ResendingClient {
        ws: Ws::connect(&mesh.url, &ann.access).await,
        friends: friends.iter().map(|f| f.user_id.clone()).collect(),
        pending: BTreeMap::new(),
        sent: 0,
    };
    let mut next_send = Instant::now();
    while !faults.is_finished() {
        if Instant::now() >= next_send {
            client.send_next().await;
            next_send += SEND_EVERY;
        }
        client.resend_overdue().await;
        client.listen().await;
    }
    let workers = faults.await.expect("faults injected");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !client.pending.is_empty() {
        assert!(
            Instant::now() < deadline,
            "messages never stored: {:?}",
            client.pending.keys().collect::<Vec<_>>()
        );
        client.resend_overdue().await;
        client.listen().await;
    }

    // The table: every message once, in its sender's order.
    let stored = stored_order(&db).await;
    let sent = client.sent_order();
    for friend in &friends {
        let conversation = private_id(&ann, friend);
        assert_eq!(
            stored.get(&conversation),
            sent.get(&friend.user_id),
            "conversation {conversation}"
        );
    }
    drop(workers);
    mesh.stop().await;
}

/// Ann's `stored` acks of `count` messages `h-<i>`, one per friend in turn, each awaited.
async fn send_and_store(ws: &mut Ws, friends: &[Tokens], from: usize, count: usize) {
    for i in from..from + count {
        let friend = &friends[i % friends.len()];
        ws.send_to(&friend.user_id, &format!("h-{i}"), "x").await;
    }
    for i in from..from + count {
        ws.stored(&format!("h-{i}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handover_rereads_nothing_already_stored() {
    let mut mesh = TestMesh::spawn_roles(&[Role::Edge, Role::User, Role::Social], shared).await;
    let first = mesh.start_node(&[Role::Chat]).await;
    mesh.wait_ready().await;
    let (ann, friends) = ann_and_friends(&mesh).await;
    let bus = mesh.bus_as(NatsRole::Chat, "fencing-test").await;
    let leases = bus.bucket(Bucket::Leases).await.expect("the lease bucket");
    let partitions = mesh.settings.chat.partitions;
    let mut ws = Ws::connect(&mesh.url, &ann.access).await;

    // A long retained stream, all of it stored and acknowledged by the first worker.
    const RETAINED: usize = 400;
    send_and_store(&mut ws, &friends, 0, RETAINED).await;

    // A second worker takes half the partitions over (a handover), then the first dies and
    // the second takes the rest (a takeover after the lease expired).
    mesh.start_node(&[Role::Chat]).await;
    poll_until(
        "two workers share the partitions",
        Duration::from_secs(60),
        || async { held_by(&leases, partitions, 2).await.then_some(()) },
    )
    .await;
    send_and_store(&mut ws, &friends, RETAINED, friends.len()).await;
    mesh.kill_node(first);
    poll_until(
        "the second worker holds every partition",
        Duration::from_secs(30),
        || async { held_by(&leases, partitions, 1).await.then_some(()) },
    )
    .await;
    send_and_store(&mut ws, &friends, RETAINED + friends.len(), friends.len()).await;

    // Each message was answered `stored` exactly once: a re-read of stored messages would
    // answer them again (as resends) before the messages sent after the handovers.
    let again: Vec<Value> = ws
        .drain("ack", Duration::from_millis(300))
        .await
        .into_iter()
        .filter(|ack| ack["status"] == "stored")
        .collect();
    assert!(again.is_empty(), "stored acks pushed again: {again:?}");
    mesh.stop().await;
}

/// A TCP proxy in front of Postgres that the test can take down (new connections refused,
/// open ones cut) and bring back on the same address.
struct PostgresProxy {
    addr: SocketAddr,
    upstream: String,
    serving: Option<tokio::task::JoinHandle<()>>,
}

impl PostgresProxy {
    /// A proxy in front of the Postgres the tests run on (`MESH_DATABASE_URL`).
    async fn in_front_of_the_tests_postgres() -> Self {
        let admin = std::env::var("MESH_DATABASE_URL").expect("MESH_DATABASE_URL");
        let admin_url = reqwest::Url::parse(&admin).expect("database URL");
        let upstream = format!(
            "{}:{}",
            admin_url.host_str().expect("host"),
            admin_url.port().unwrap_or(5432)
        );
        Self::start(upstream).await
    }

    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let mut proxy = Self {
            addr,
            upstream,
            serving: None,
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&mut self, listener: TcpListener) {
        let upstream = self.upstream.clone();
        self.serving = Some(tokio::spawn(async move {
            // Dropping the set (when this task is aborted) cuts every open connection.
            let mut connections = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let upstream = upstream.clone();
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }

    async fn down(&mut self) {
        let serving = self.serving.take().expect("serving");
        serving.abort();
        let _ = serving.await;
    }

    async fn up(&mut self) {
        let listener = TcpListener::bind(self.addr).await.expect("rebind");
        self.serve(listener);
    }
}

/// `url` (a Postgres URL) pointing at `port` instead.
fn with_port(url: &str, port: u16) -> String {
    let mut url = reqwest::Url::parse(url).expect("database URL");
    url.set_port(Some(port)).expect("a URL with a host");
    url.to_string()
}

/// GET `path` with a client that gives up after a second: the answer must come before.
async fn get_within_a_second(mesh: &TestMesh, path: &str, token: &str) -> reqwest::Response {
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .expect("http client");
    quick
        .get(mesh.client.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap_or_else(|err| panic!("{path} answers within a second: {err}"))
}

/// Asserts a 503 `service_unavailable` problem that says when to come back.
async fn assert_unavailable(response: reqwest::Response) {
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(
        retry_after.is_some_and(|s| s >= 1),
        "Retry-After in seconds"
    );
    let body: Value = response.json().await.expect("a problem document");
    assert_eq!(body["code"], "service_unavailable", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_postgres_the_edge_answers_503_with_retry_after_at_once() {
    let mut proxy = PostgresProxy::in_front_of_the_tests_postgres().await;
    let port = proxy.addr.port();
    // The user service reaches Postgres through the proxy; the rest directly.
    let mesh = TestMesh::spawn_with(|s| {
        let user = s.roles.user.as_mut().expect("the user role");
        user.database_url = with_port(&user.database_url, port);
    })
    .await;
    let (_, ann) = mesh.client.user("ann").await;
    assert_eq!(
        get_within_a_second(&mesh, "/v1/users/me", &ann.access)
            .await
            .status(),
        StatusCode::OK
    );

    proxy.down().await;
    assert_unavailable(get_within_a_second(&mesh, "/v1/users/me", &ann.access).await).await;
    // Readiness reuses the services' answer for a second, so it may say "ready" that long.
    wait_until("readiness sees the user service's outage", || async {
        mesh.client.get("/readyz").await.0 == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    assert_unavailable(get_within_a_second(&mesh, "/readyz", &ann.access).await).await;

    proxy.up().await;
    wait_until("the profile is served again", || async {
        mesh.client.get_as("/v1/users/me", &ann.access).await.0 == StatusCode::OK
    })
    .await;
    mesh.stop().await;
}

/// A Postgres outage longer than any retry budget loses no domain event: chat's notification
/// consumer (a worker process of its own, reaching Postgres through the proxy) keeps trying an
/// event it cannot record while the database is away, the user is notified once it is back,
/// and nothing is dead-lettered. (Before, the event was dead-lettered after four quick retries,
/// about 3 s, and with the dead letter unwritable too, JetStream stopped delivering it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_events_wait_out_a_postgres_outage() {
    let mut proxy = PostgresProxy::in_front_of_the_tests_postgres().await;
    let roles = &[Role::Edge, Role::User, Role::Social, Role::Outbox];
    let mesh = TestMesh::spawn_roles(roles, |_| {}).await;
    let through_proxy = with_port(mesh.database_url(), proxy.addr.port());
    let (_worker, metrics) = ChatProcess::with_metrics(
        &mesh,
        "0",
        &[
            ("MESH_DATABASE_URL", through_proxy.as_str()),
            ("MESH_CHAT_DATABASE_URL", through_proxy.as_str()),
        ],
    );
    mesh.wait_ready().await;
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;
    let (_, bob) = c.user("bob").await;
    let mut bob_ws = Ws::connect(&mesh.url, &bob.access).await;

    proxy.down().await;
    send_request(c, &ann, &bob, "while chat's database is away").await;
    // Past the old budget of six deliveries: the event is still being tried.
    let retries = r#"mesh_events_consumed_total{consumer="chat-notifications",outcome="retry"}"#;
    poll_until(
        "chat's notification consumer tries the event again through the outage",
        Duration::from_secs(30),
        || async { (scraped_sum(&metrics, retries).await? >= 8.0).then_some(()) },
    )
    .await;
    proxy.up().await;

    let received = bob_ws
        .expect("the friend request's notification", |f| {
            f["type"] == "notification" && f["kind"] == "friend_request_received"
        })
        .await;
    assert_eq!(
        received["data"]["request"]["from_user_id"],
        ann.user_id.as_str()
    );
    let pool = PgPool::connect(mesh.database_url()).await.expect("connect");
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM chat.dead_letters")
        .fetch_one(&pool)
        .await
        .expect("count dead letters");
    assert_eq!(dead, 0, "an event was dead-lettered during the outage");
    mesh.stop().await;
}

/// Told to stop while Postgres is away (with chat messages accepted and waiting to be stored),
/// every role stops within a few seconds: no store round, relay or handler waits out its
/// retries first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_postgres_every_role_stops_promptly() {
    let mut proxy = PostgresProxy::in_front_of_the_tests_postgres().await;
    let port = proxy.addr.port();
    // Every role reaches Postgres through the proxy.
    let mesh = TestMesh::spawn_with(|s| {
        let roles = &mut s.roles;
        let user = roles.user.as_mut().expect("the user role");
        user.database_url = with_port(&user.database_url, port);
        for role in [roles.social.as_mut(), roles.chat.as_mut()] {
            let role = role.expect("the role");
            role.database_url = with_port(&role.database_url, port);
        }
        let outbox = roles.outbox.as_mut().expect("the outbox role");
        for url in [
            &mut outbox.user,
            &mut outbox.social,
            &mut outbox.chat,
            &mut outbox.audit,
        ] {
            *url = with_port(url, port);
        }
    })
    .await;
    let Friends {
        conversation,
        ann_ws: mut ws,
        ..
    } = friends(&mesh).await;
    proxy.down().await;
    for i in 0..5 {
        let id = format!("while-down-{i}");
        ws.send_in(&conversation, &id, "waits for Postgres").await;
        ws.ack(&id, "accepted").await;
    }
    let took = mesh.stop_timed().await;
    assert!(
        took < Duration::from_secs(5),
        "the roles took {took:?} to stop without Postgres"
    );
    drop(proxy);
}

/// Each partition's recorded owner epoch.
async fn epochs(db: &PgPool) -> Vec<(i32, i64)> {
    sqlx::query_as("SELECT partition, epoch FROM chat.partitions ORDER BY partition")
        .fetch_all(db)
        .await
        .expect("read partitions")
}

/// Each partition's lease revision, once every partition is held.
async fn lease_revisions(leases: &KvBucket, partitions: u32) -> Option<Vec<u64>> {
    let mut revisions = Vec::new();
    for partition in 0..partitions {
        let entry = leases.get(&format!("part.{partition}")).await.ok()??;
        revisions.push(entry.revision);
    }
    Some(revisions)
}

/// Waits until every lease was renewed since `since`; the new revisions.
async fn renewed_since(leases: &KvBucket, partitions: u32, since: &[u64]) -> Vec<u64> {
    poll_until("every lease renewed", Duration::from_secs(20), || async {
        lease_revisions(leases, partitions)
            .await
            .filter(|now| now.iter().zip(since).all(|(n, s)| n > s))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_second_nats_outage_keeps_the_chat_leases() {
    let mut nats = PrivateNats::start().await;
    let url = nats.url();
    let mesh = TestMesh::spawn_with(|s| s.nats_url = url).await;
    let db = test_database(&mesh).await;
    let partitions = mesh.settings.chat.partitions;
    poll_until(
        "every partition claimed",
        Duration::from_secs(20),
        || async {
            let claimed = epochs(&db).await;
            (claimed.len() == partitions as usize).then_some(())
        },
    )
    .await;
    let before = epochs(&db).await;
    let revisions = {
        let bus = mesh.bus_as(NatsRole::Chat, "fencing-test").await;
        let leases = bus.bucket(Bucket::Leases).await.expect("the lease bucket");
        poll_until("every lease held", Duration::from_secs(20), || {
            lease_revisions(&leases, partitions)
        })
        .await
    };

    nats.kill().await;
    // The outage itself.
    tokio::time::sleep(Duration::from_secs(3)).await;
    nats.run().await;

    // Renewed twice after the outage (a lease taken anew would have been claimed by then),
    // each by the epoch that held it before: no partition changed hands.
    let bus = mesh.bus_as(NatsRole::Chat, "fencing-test").await;
    let leases = bus.bucket(Bucket::Leases).await.expect("the lease bucket");
    let once = renewed_since(&leases, partitions, &revisions).await;
    renewed_since(&leases, partitions, &once).await;
    assert_eq!(epochs(&db).await, before, "leases lost in a 3 s outage");
    mesh.stop().await;
}

/// The chat ingest consumers keep their state in memory only: where a partition was read to
/// lives in Postgres, and each owner starts its consumer right after what is stored. So a NATS
/// server that restarts comes back without them, and every owner must open its feed again by
/// itself: messages sent afterwards are stored next in line and delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_resumes_after_nats_restarts_without_its_consumers() {
    let mut nats = PrivateNats::start().await;
    let url = nats.url();
    let mesh = TestMesh::spawn_with(|s| s.nats_url = url.clone()).await;
    let (ann, friends) = ann_and_friends(&mesh).await;
    let bob = &friends[0];
    let partition = partition_of(&mesh, &private_id(&ann, bob));
    let mut ws = Ws::connect(&mesh.url, &ann.access).await;
    ws.send_to(&bob.user_id, "before", "x").await;
    assert_eq!(ws.stored("before").await, 1);
    drop(ws);

    let client = async_nats::connect(&url).await.expect("connect to NATS");
    let jetstream = async_nats::jetstream::new(client);
    let stream_name = mesh.settings.prefix.stream(Stream::ChatIn);
    let consumer = || async {
        let (stream, names) =
            crate::harness::stream_and_consumers(&jetstream, &stream_name).await?;
        let name = names
            .into_iter()
            .find(|name| name.starts_with(&format!("chat-p{partition}-")))?;
        let info = stream.consumer_info(&name).await.ok()?;
        Some(info.config.memory_storage)
    };
    let in_memory = poll_until(
        "the partition's consumer",
        Duration::from_secs(10),
        consumer,
    )
    .await;
    assert!(
        in_memory,
        "the partition's consumer keeps its state on disk"
    );

    // Killed and started again at once: the consumers are gone however short the outage.
    nats.kill().await;
    nats.run().await;
    mesh.wait_ready().await;

    // The sender's socket may have ended with the outage; a new one sends on.
    let mut ann_ws = Ws::connect(&mesh.url, &ann.access).await;
    let mut bob_ws = Ws::connect(&mesh.url, &bob.access).await;
    ann_ws.send_to(&bob.user_id, "after", "y").await;
    assert_eq!(ann_ws.stored("after").await, 2, "stored next in line");
    let message = bob_ws.message("after").await;
    assert_eq!(message["seq"], 2);
    assert!(
        bob_ws
            .drain("message", Duration::from_millis(500))
            .await
            .is_empty(),
        "a message was delivered again"
    );
    mesh.stop().await;
}

/// The partition `conversation` is ingested on.
pub(crate) fn partition_of(mesh: &TestMesh, conversation: &str) -> i32 {
    let id = mesh_contracts::chat::ConversationId::parse(conversation).expect("conversation id");
    i32::try_from(id.partition(mesh.settings.chat.partitions)).expect("small partition")
}

pub(crate) async fn epoch_of(db: &PgPool, partition: i32) -> i64 {
    sqlx::query_scalar("SELECT epoch FROM chat.partitions WHERE partition = $1")
        .bind(partition)
        .fetch_one(db)
        .await
        .expect("read the partition's epoch")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_whose_epoch_was_claimed_stores_nothing() {
    let mesh = TestMesh::spawn().await;
    let (ann, friends) = ann_and_friends(&mesh).await;
    let bob = &friends[0];
    let mut ws = Ws::connect(&mesh.url, &ann.access).await;
    ws.send_to(&bob.user_id, "first", "x").await;
    ws.stored("first").await;
    let db = test_database(&mesh).await;
    let partition = partition_of(&mesh, &private_id(&ann, bob));
    let epoch = epoch_of(&db, partition).await;

    // A later owner claims the partition behind the current owner's back (as one that took
    // an expired lease over would), while the current owner still holds its lease.
    sqlx::query("UPDATE chat.partitions SET epoch = epoch + 1 WHERE partition = $1")
        .bind(partition)
        .execute(&db)
        .await
        .expect("claim the partition");

    // The fenced-out owner stores nothing and stops; its worker gives the lease back, takes
    // the partition again under a new epoch, and that owner stores the message, once.
    ws.send_to(&bob.user_id, "second", "y").await;
    assert_eq!(ws.stored("second").await, 2);
    assert!(
        epoch_of(&db, partition).await > epoch + 1,
        "stored by the fenced-out owner"
    );
    mesh.stop().await;
}
