//! Edge hardening (issue #13) through the whole mesh: idempotency keys replayed on any edge,
//! in-flight duplicates refused, mismatches, malformed keys, 5xx releasing a key and the
//! fail-open path; rate limits by route class, address (through trusted proxies) and user;
//! chat-send, WebSocket-frame and connection limits (sockets waiting for their `auth` frame
//! included).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mesh_contracts::nats_permissions::NatsRole;
use mesh_contracts::user::{Empty, Health, Register, RegisterRequest, Registered};
use mesh_contracts::{Bucket, ErrorCode, Service, ServiceError};
use mesh_edge::Quota;
use mesh_nats::ServiceHost;
use mesh_user::login_failures::{LoginFailures, Subjects};
use nats_mesh::{Role, Settings};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;

use crate::harness::{
    Client, PASSWORD, TestMesh, assert_problem, poll_until, unique_phone, wait_until,
};
use crate::ws::{Ws, ws_url};

/// An answer with its headers.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn answer(&self) -> (StatusCode, Value) {
        (self.status, self.body.clone())
    }
}

/// Sends a JSON request with extra headers.
pub async fn send(
    c: &Client,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = c.raw().request(method, c.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    Reply {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

async fn create_group(c: &Client, token: &str, name: &str, key: &str) -> Reply {
    let body = json!({ "name": name, "join_policy": "open", "max_members": 10 });
    send(
        c,
        Method::POST,
        "/v1/groups",
        Some(token),
        Some(&body),
        &[("idempotency-key", key)],
    )
    .await
}

async fn my_group_count(c: &Client, token: &str) -> usize {
    let (status, page) = c.get_as("/v1/groups?limit=100", token).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"].as_array().expect("items").len()
}

/// A value of an edge metric, summed over the series whose labels include `label`.
pub async fn metric(c: &Client, name: &str, label: &str) -> f64 {
    let text = c
        .raw()
        .get(c.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")) && line.contains(label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The first response is stored and replayed (same status and body, `Idempotent-Replayed`)
/// to a retry on the same edge and on another edge; the group exists once. The same key with
/// another body is 422; another user's identical key is their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_creates_are_replayed_on_any_edge() {
    let mut mesh = TestMesh::spawn().await;
    let c = mesh.client.clone();
    let (_, ann) = c.user("Ann").await;
    let other_edge = mesh.spawn_edge().await;

    let first = create_group(&c, &ann.access, "Climbers", "create-climbers-1").await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.header("idempotent-replayed"), None);

    let again = create_group(&c, &ann.access, "Climbers", "create-climbers-1").await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert!(
        again
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json"))
    );
    assert!(again.header("x-request-id").is_some());

    let elsewhere = create_group(&other_edge, &ann.access, "Climbers", "create-climbers-1").await;
    assert_eq!(elsewhere.status, StatusCode::CREATED);
    assert_eq!(elsewhere.body, first.body);
    assert_eq!(elsewhere.header("idempotent-replayed"), Some("true"));
    assert_eq!(my_group_count(&c, &ann.access).await, 1);

    // The legacy header name names the same key.
    let legacy = send(
        &c,
        Method::POST,
        "/v1/groups",
        Some(&ann.access),
        Some(&json!({ "name": "Climbers", "join_policy": "open", "max_members": 10 })),
        &[("x-idempotency-key", "create-climbers-1")],
    )
    .await;
    assert_eq!(legacy.header("idempotent-replayed"), Some("true"));

    let mismatch = create_group(&other_edge, &ann.access, "Divers", "create-climbers-1").await;
    assert_problem(
        &mismatch.answer(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_mismatch",
    );

    // Keys are scoped to the caller: Bob's identical key creates Bob's group.
    let (_, bob) = c.user("Bob").await;
    let bobs = create_group(&c, &bob.access, "Climbers", "create-climbers-1").await;
    assert_eq!(bobs.status, StatusCode::CREATED);
    assert_eq!(bobs.header("idempotent-replayed"), None);
    assert_ne!(bobs.body["id"], first.body["id"]);

    // Without a key nothing is replayed.
    let plain = c
        .post_as(
            "/v1/groups",
            &ann.access,
            json!({ "name": "Climbers", "join_policy": "open", "max_members": 10 }),
        )
        .await;
    assert_eq!(plain.0, StatusCode::CREATED);
    assert_eq!(my_group_count(&c, &ann.access).await, 2);
    assert!(metric(&c, "mesh_idempotency_total", "outcome=\"replayed\"").await >= 3.0);
    assert!(metric(&c, "mesh_idempotency_total", "outcome=\"mismatch\"").await >= 1.0);
    mesh.stop().await;
}

/// Empty, over-long and non-visible-ASCII keys are 400 `invalid_idempotency_key`, and nothing
/// is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_idempotency_keys_are_refused() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("Ann").await;
    let long = "k".repeat(256);
    for key in ["", long.as_str(), "two words", "tab\tkey"] {
        let reply = create_group(c, &ann.access, "Climbers", key).await;
        assert_problem(
            &reply.answer(),
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
        );
    }
    let max = "k".repeat(255);
    assert_eq!(
        create_group(c, &ann.access, "Climbers", &max).await.status,
        StatusCode::CREATED
    );
    assert_eq!(my_group_count(c, &ann.access).await, 1);
    mesh.stop().await;
}

/// A stand-in user service whose `register` blocks until released: the first call answers
/// 500, later ones `phone_taken`.
struct SlowRegister {
    calls: Arc<AtomicUsize>,
    gate: Arc<Notify>,
    stop: CancellationToken,
}

impl SlowRegister {
    async fn start(mesh: &TestMesh) -> Self {
        let bus = mesh.bus_as(NatsRole::User, "slow-register").await;
        let calls = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let state = (calls.clone(), gate.clone());
        let host = ServiceHost::new(bus, Service::User, "slow register")
            .handle::<Register, _, _, _, ServiceError>(
                state,
                |(calls, gate), _ctx, _req: RegisterRequest| async move {
                    if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                        gate.notified().await;
                        return Err::<Registered, _>(ServiceError::internal());
                    }
                    Err(ServiceError::new(ErrorCode::PhoneTaken, "taken"))
                },
            )
            .handle::<Health, _, _, _, ServiceError>((), |(), _ctx, _req: Empty| async {
                Ok(Empty {})
            });
        let shutdown = stop.clone();
        tokio::spawn(async move { host.run(shutdown.cancelled_owned()).await });
        Self { calls, gate, stop }
    }
}

fn register_body(phone: &str, nickname: &str) -> Value {
    json!({ "phone": phone, "password": PASSWORD, "nickname": nickname })
}

async fn register_with_key(c: &Client, body: &Value, key: &str) -> Reply {
    send(
        c,
        Method::POST,
        "/v1/auth/register",
        None,
        Some(body),
        &[("idempotency-key", key)],
    )
    .await
}

/// While the first request with a key runs, a duplicate on another edge gets 409
/// `idempotency_in_progress` (and a different body 422); the first one's 5xx frees the key, so
/// the retry runs again, and its 4xx answer is stored and replayed. Anonymous requests are
/// scoped to the client address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_duplicates_conflict_and_server_errors_free_the_key() {
    let mut mesh = TestMesh::spawn_roles(&[Role::Edge, Role::Social, Role::Chat], |s| {
        s.rpc_timeout = Duration::from_secs(30);
    })
    .await;
    let c = mesh.client.clone();
    let service = SlowRegister::start(&mesh).await;
    let other_edge = mesh.spawn_edge().await;
    let body = register_body(&unique_phone(), "Ann");

    let first = tokio::spawn({
        let (c, body) = (c.clone(), body.clone());
        async move { register_with_key(&c, &body, "signup-1").await }
    });
    wait_until("the first register reaches the service", || async {
        service.calls.load(Ordering::SeqCst) == 1
    })
    .await;
    let duplicate = register_with_key(&other_edge, &body, "signup-1").await;
    assert_problem(
        &duplicate.answer(),
        StatusCode::CONFLICT,
        "idempotency_in_progress",
    );
    let changed = register_with_key(
        &other_edge,
        &register_body(&unique_phone(), "Eve"),
        "signup-1",
    )
    .await;
    assert_problem(
        &changed.answer(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_mismatch",
    );
    assert_eq!(
        service.calls.load(Ordering::SeqCst),
        1,
        "duplicates never ran"
    );

    service.gate.notify_one();
    let first = first.await.expect("first request");
    assert_problem(
        &first.answer(),
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
    );

    let retry = register_with_key(&other_edge, &body, "signup-1").await;
    assert_problem(&retry.answer(), StatusCode::CONFLICT, "phone_taken");
    assert_eq!(retry.header("idempotent-replayed"), None);
    assert_eq!(service.calls.load(Ordering::SeqCst), 2, "the retry ran");
    let replay = register_with_key(&c, &body, "signup-1").await;
    assert_problem(&replay.answer(), StatusCode::CONFLICT, "phone_taken");
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        service.calls.load(Ordering::SeqCst),
        2,
        "the replay did not run"
    );
    assert!(metric(&c, "mesh_idempotency_total", "outcome=\"in_progress\"").await >= 1.0);
    assert!(metric(&c, "mesh_idempotency_total", "outcome=\"released\"").await >= 1.0);
    service.stop.cancel();
    mesh.stop().await;
}

/// Without the idempotency bucket the edge serves keyed requests anyway (fail-open) and
/// counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_bucket_keyed_requests_fail_open() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("Ann").await;
    let bus = mesh.bus_as(NatsRole::Migrate, "bucket-remover").await;
    bus.delete_bucket(Bucket::Idempotency).await;
    let before = metric(c, "mesh_idempotency_total", "outcome=\"fail_open\"").await;
    let first = create_group(c, &ann.access, "Climbers", "k-1").await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let second = create_group(c, &ann.access, "Climbers", "k-1").await;
    assert_eq!(second.status, StatusCode::CREATED);
    assert_eq!(second.header("idempotent-replayed"), None);
    assert_eq!(my_group_count(c, &ann.access).await, 2);
    assert!(metric(c, "mesh_idempotency_total", "outcome=\"fail_open\"").await >= before + 2.0);
    bus.drain().await;
    mesh.stop().await;
}

/// A keyed sign-in is replayed with the same tokens, but the bucket holds neither the tokens
/// nor the password nor a plain digest of the request that would let a reader guess the
/// password offline; a record altered in the bucket is not replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idempotency_bucket_holds_no_token_or_password() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let phone = unique_phone();
    c.register(&phone, "Ann").await;
    let body = json!({ "phone": phone, "password": PASSWORD });
    let login = |key: &'static str| {
        let body = body.clone();
        async move {
            send(
                c,
                Method::POST,
                "/v1/auth/login",
                None,
                Some(&body),
                &[("idempotency-key", key)],
            )
            .await
        }
    };
    let first = login("sign-in-1").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let again = login("sign-in-1").await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body, "the same tokens, replayed");

    let bus = mesh.bus_as(NatsRole::Edge, "bucket-reader").await;
    let bucket = bus.bucket(Bucket::Idempotency).await.expect("bucket");
    let keys = bucket.keys_with_prefix("").await.expect("keys");
    assert_eq!(keys.len(), 1, "one keyed request: {keys:?}");
    let key = keys.first().expect("a key").clone();
    let entry = bucket.get(&key).await.expect("get").expect("the record");
    let stored = String::from_utf8_lossy(&entry.value).into_owned();
    let request = serde_json::to_vec(&body).unwrap();
    let plain_digest = |bytes: &[u8]| {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        hash.update(0u64.to_be_bytes());
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
        hex::encode(hash.finalize())
    };
    for (what, secret) in [
        ("access token", first.body["access_token"].as_str().unwrap()),
        (
            "refresh token",
            first.body["refresh_token"].as_str().unwrap(),
        ),
        ("password", PASSWORD),
        ("phone", phone.as_str()),
        ("digest of the request", &plain_digest(&request)),
        ("client key", "sign-in-1"),
    ] {
        assert!(!secret.is_empty(), "{what} is known");
        assert!(
            !stored.contains(secret),
            "the bucket holds the {what}: {stored}"
        );
    }

    // A record altered in the bucket does not open: the retry is served anew (fail-open),
    // never answered with what someone wrote there.
    let mut record: Value = serde_json::from_slice(&entry.value).expect("a JSON record");
    let sealed = record["sealed"]
        .as_str()
        .expect("a sealed response")
        .to_owned();
    let middle = sealed.len() / 2;
    let flipped = if &sealed[middle..=middle] == "A" {
        "B"
    } else {
        "A"
    };
    record["sealed"] = Value::String(format!(
        "{}{flipped}{}",
        &sealed[..middle],
        &sealed[middle + 1..]
    ));
    bucket
        .put(&key, serde_json::to_vec(&record).unwrap().into())
        .await
        .expect("put");
    let altered = login("sign-in-1").await;
    assert_eq!(altered.status, StatusCode::OK, "{}", altered.body);
    assert_eq!(altered.header("idempotent-replayed"), None);
    assert_ne!(altered.body["refresh_token"], first.body["refresh_token"]);
    bus.drain().await;
    mesh.stop().await;
}

/// Limits tuned low for one test, everything else lifted.
fn limited(tune: impl FnOnce(&mut mesh_edge::RateLimitConfig)) -> impl FnOnce(&mut Settings) {
    move |s: &mut Settings| tune(&mut s.guard.limits)
}

fn per_minute(burst: u32) -> Quota {
    Quota::new(burst, Duration::from_secs(60))
}

/// Writes over a user's budget are 429 `rate_limited` with `Retry-After` and the rate-limit
/// headers; another user behind the same address keeps their own budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_over_the_user_budget_are_429_with_rate_limit_headers() {
    let mesh = TestMesh::spawn_with(limited(|l| l.write_per_user = per_minute(2))).await;
    let c = &mesh.client;
    let (_, ann) = c.user("Ann").await;
    for n in 0..2 {
        let ok = create_group(c, &ann.access, "Climbers", &format!("g-{n}")).await;
        assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.body);
        assert_eq!(
            ok.header("ratelimit-policy"),
            Some("\"write_user\";q=2;w=60")
        );
        assert!(
            ok.header("ratelimit")
                .is_some_and(|v| v.starts_with(&format!("\"write_user\";r={};t=", 1 - n)))
        );
    }
    let refused = create_group(c, &ann.access, "Climbers", "g-2").await;
    assert_problem(
        &refused.answer(),
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    );
    let retry: u64 = refused
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=30).contains(&retry), "{retry}");
    assert!(
        refused
            .header("ratelimit")
            .is_some_and(|v| v.contains(";r=0;"))
    );
    assert_eq!(
        my_group_count(c, &ann.access).await,
        2,
        "the refused write did nothing"
    );

    let (_, bob) = c.user("Bob").await;
    assert_eq!(
        create_group(c, &bob.access, "Climbers", "g-0").await.status,
        StatusCode::CREATED
    );
    assert!(metric(c, "mesh_rate_limited_total", "limit=\"write_user\"").await >= 1.0);
    mesh.stop().await;
}

async fn login_from(c: &Client, phone: &str, forwarded_for: Option<&str>) -> Reply {
    let body = json!({ "phone": phone, "password": "wrong password" });
    let headers: Vec<(&str, &str)> = forwarded_for
        .map(|ip| vec![("x-forwarded-for", ip)])
        .unwrap_or_default();
    send(
        c,
        Method::POST,
        "/v1/auth/login",
        None,
        Some(&body),
        &headers,
    )
    .await
}

/// Auth routes are limited per client address. `X-Forwarded-For` names the client only when
/// the peer is a trusted proxy: from 127.0.0.1 (trusted here) each forwarded address has its
/// own budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_routes_are_limited_per_client_address_through_trusted_proxies() {
    let mesh = TestMesh::spawn_with(|s| {
        s.guard.limits.auth_per_ip = per_minute(2);
        s.guard.trusted_proxies = vec![mesh_edge::Cidr::parse("127.0.0.0/8").unwrap()];
    })
    .await;
    let c = &mesh.client;
    let phone = unique_phone();
    for _ in 0..2 {
        let reply = login_from(c, &phone, Some("198.51.100.7")).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
    }
    let refused = login_from(c, &phone, Some("198.51.100.7")).await;
    assert_problem(
        &refused.answer(),
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    );
    assert!(refused.header("retry-after").is_some());
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some("\"auth_ip\";q=2;w=60")
    );
    let other = login_from(c, &phone, Some("203.0.113.5, 198.51.100.7")).await;
    assert_problem(
        &other.answer(),
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    );
    let fresh = login_from(c, &phone, Some("198.51.100.7, 203.0.113.5")).await;
    assert_eq!(fresh.status, StatusCode::UNAUTHORIZED, "{}", fresh.body);
    mesh.stop().await;
}

/// An IPv6 client gains nothing by rotating through the addresses of its /64: the edge's auth
/// limit and the user service's sign-in lockout both count the whole /64. (The addresses come
/// as a trusted proxy's `X-Forwarded-For`: the tests' own peer is one loopback address.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_client_rotating_addresses_in_its_64_shares_its_limits() {
    let mesh = TestMesh::spawn_with(|s| {
        quick_throttle(1_000, 1_000, 2)(s);
        s.guard.limits.auth_per_ip = per_minute(3);
        s.guard.trusted_proxies = vec![mesh_edge::Cidr::parse("127.0.0.0/8").unwrap()];
    })
    .await;
    let c = &mesh.client;
    let from = async |address: &str| login_from(c, &unique_phone(), Some(address)).await;
    for address in ["2001:db8:1:2::1", "2001:db8:1:2:ffff::2"] {
        let guess = from(address).await;
        assert_problem(
            &guess.answer(),
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        );
    }
    // Two failures lock the /64 out, whichever of its addresses comes next ...
    assert_problem(
        &from("2001:db8:1:2::3").await.answer(),
        StatusCode::TOO_MANY_REQUESTS,
        "login_locked",
    );
    // ... and three attempts spent its budget at the edge.
    assert_problem(
        &from("2001:db8:1:2::4").await.answer(),
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    );
    // The next /64 is another client.
    assert_problem(
        &from("2001:db8:1:3::1").await.answer(),
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
    mesh.stop().await;
}

/// Without trusted proxies a forged `X-Forwarded-For` changes nothing: the peer is the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_of_untrusted_peers_are_ignored() {
    let mesh = TestMesh::spawn_with(limited(|l| l.auth_per_ip = per_minute(1))).await;
    let c = &mesh.client;
    let phone = unique_phone();
    assert_eq!(
        login_from(c, &phone, Some("198.51.100.1")).await.status,
        StatusCode::UNAUTHORIZED
    );
    let forged = login_from(c, &phone, Some("198.51.100.2")).await;
    assert_problem(
        &forged.answer(),
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    );
    mesh.stop().await;
}

/// Chat sends are limited per user across REST and WebSocket: over the budget, REST answers
/// 429 and the socket a `rejected` ack with `rate_limited`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_sends_are_limited_per_user() {
    let mesh = TestMesh::spawn_with(limited(|l| l.chat_sends_per_user = per_minute(2))).await;
    let c = &mesh.client;
    let (_, ann) = c.user("Ann").await;
    let (_, bob) = c.user("Bob").await;
    let message = |id: &str| json!({ "client_id": id, "to": bob.user_id, "body": "hi" });
    let first = c.post_as("/v1/messages", &ann.access, message("m-1")).await;
    assert_ne!(first.0, StatusCode::TOO_MANY_REQUESTS, "{}", first.1);
    let mut ws = Ws::connect(&mesh.url, &ann.access).await;
    ws.send(json!({ "type": "send", "client_id": "m-2", "to": bob.user_id, "body": "hi" }))
        .await;
    let ack = ws
        .expect("ack of m-2", |f| {
            f["type"] == "ack" && f["client_id"] == "m-2"
        })
        .await;
    assert_ne!(ack["reason"], "rate_limited", "{ack}");
    ws.send(json!({ "type": "send", "client_id": "m-3", "to": bob.user_id, "body": "hi" }))
        .await;
    let ack = ws
        .expect("ack of m-3", |f| {
            f["type"] == "ack" && f["client_id"] == "m-3"
        })
        .await;
    assert_eq!(ack["status"], "rejected", "{ack}");
    assert_eq!(ack["reason"], "rate_limited", "{ack}");
    let refused = c.post_as("/v1/messages", &ann.access, message("m-4")).await;
    assert_problem(&refused, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    // Bob's budget is his own.
    let bobs = c
        .post_as(
            "/v1/messages",
            &bob.access,
            json!({ "client_id": "b-1", "to": ann.user_id, "body": "hi" }),
        )
        .await;
    assert_ne!(bobs.0, StatusCode::TOO_MANY_REQUESTS);
    ws.close().await;
    mesh.stop().await;
}

/// A WebSocket over its frame budget gets `rate_limited` error frames, and one that keeps
/// flooding is closed with 4029.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_websockets_are_warned_then_closed_with_4029() {
    let mesh = TestMesh::spawn_with(limited(|l| {
        l.ws_frames = per_minute(3);
        l.ws_flood_close_after = 3;
    }))
    .await;
    let (_, ann) = mesh.client.user("Ann").await;
    let mut ws = Ws::connect(&mesh.url, &ann.access).await;
    for nonce in 0..3 {
        ws.send(json!({ "type": "ping", "nonce": nonce.to_string() }))
            .await;
        ws.expect_type("pong").await;
    }
    for _ in 0..2 {
        ws.send(json!({ "type": "ping", "nonce": "over" })).await;
        let error = ws.expect_type("error").await;
        assert_eq!(error["code"], "rate_limited", "{error}");
    }
    ws.send(json!({ "type": "ping", "nonce": "flood" })).await;
    let close = ws.closed().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 4029);
    assert_eq!(close.reason.as_str(), "rate_limited");
    mesh.stop().await;
}

/// Open realtime connections are capped per user: one more WebSocket or SSE stream is 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_connections_are_capped_per_user() {
    let mesh = TestMesh::spawn_with(limited(|l| l.connections_per_user = 1)).await;
    let c = &mesh.client;
    let (_, ann) = c.user("Ann").await;
    let ws = Ws::connect(&mesh.url, &ann.access).await;
    let mut request = ws_url(&mesh.url).into_client_request().expect("ws request");
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", ann.access).parse().unwrap(),
    );
    match Ws::open(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 429);
        }
        Err(other) => panic!("expected a 429 handshake, got {other}"),
        Ok(_) => panic!("a second socket was accepted"),
    }
    let sse = send(c, Method::GET, "/v1/events", Some(&ann.access), None, &[]).await;
    assert_problem(&sse.answer(), StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    // Another user is not affected; closing frees the place.
    let (_, bob) = c.user("Bob").await;
    Ws::connect(&mesh.url, &bob.access).await.close().await;
    ws.close().await;
    wait_until("the place is freed", || async {
        let mut request = ws_url(&mesh.url).into_client_request().expect("ws request");
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {}", ann.access).parse().unwrap(),
        );
        Ws::open(request).await.is_ok()
    })
    .await;
    mesh.stop().await;
}

/// A refused WebSocket handshake's status.
fn handshake_status(opened: Result<Ws, tokio_tungstenite::tungstenite::Error>) -> u16 {
    match opened {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("expected a refused handshake, got {other}"),
        Ok(_) => panic!("the socket was accepted"),
    }
}

/// Sockets waiting for their `auth` frame hold places under their address's cap from the
/// handshake: over it, a handshake without a token is 429 like one with a token. A socket that
/// authenticates keeps its place; closing one gives it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_waiting_for_their_auth_frame_count_under_the_address_cap() {
    let mesh = TestMesh::spawn_with(limited(|l| l.connections_per_ip = 2)).await;
    let c = &mesh.client;
    let (_, ann) = c.user("Ann").await;
    let anonymous = || Ws::open(ws_url(&mesh.url).into_client_request().expect("ws request"));
    let mut first = anonymous().await.expect("a first socket without a token");
    let second = anonymous().await.expect("a second socket without a token");
    assert_eq!(handshake_status(anonymous().await), 429);
    let mut request = ws_url(&mesh.url).into_client_request().expect("ws request");
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", ann.access).parse().unwrap(),
    );
    assert_eq!(handshake_status(Ws::open(request).await), 429);

    first
        .send(json!({ "type": "auth", "token": ann.access }))
        .await;
    first.expect_type("ready").await;
    assert_eq!(
        handshake_status(anonymous().await),
        429,
        "an authenticated socket keeps its place"
    );
    second.close().await;
    wait_until("the place is freed", || async { anonymous().await.is_ok() }).await;
    first.close().await;
    mesh.stop().await;
}

fn quick_throttle(
    delay_after: u32,
    lock_after: u32,
    ip_lock_after: u32,
) -> impl FnOnce(&mut Settings) {
    move |s: &mut Settings| {
        s.login_throttle = mesh_user::LoginThrottle {
            delay_after,
            lock_after,
            ip_lock_after,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        }
    }
}

async fn sign_in(c: &Client, phone: &str, password: &str, device_token: Option<&str>) -> Reply {
    let mut body = json!({ "phone": phone, "password": password });
    if let Some(token) = device_token {
        body["device_token"] = json!(token);
    }
    send(c, Method::POST, "/v1/auth/login", None, Some(&body), &[]).await
}

/// Failed sign-ins, counted in NATS KV, lock an account: then even the right password is
/// `login_locked` (429), the same answer an unknown phone gets, so the lock reveals nothing.
/// The owner's device, holding the device token of an earlier sign-in, still signs in, and
/// signed-in sessions keep refreshing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sign_ins_lock_the_account_but_not_its_known_device() {
    let mut mesh = TestMesh::spawn_with(quick_throttle(1, 3, 1_000)).await;
    let c = mesh.client.clone();
    let phone = unique_phone();
    c.register(&phone, "Ann").await;
    let first = sign_in(&c, &phone, PASSWORD, None).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let device = first.body["device_token"]
        .as_str()
        .expect("a device token")
        .to_owned();
    // The attacker spreads guesses over two edges: the count is cluster-wide.
    let other_edge = mesh.spawn_edge().await;
    for edge in [&c, &other_edge, &c] {
        let guess = sign_in(edge, &phone, "guess", None).await;
        assert_problem(
            &guess.answer(),
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        );
    }
    let locked = sign_in(&other_edge, &phone, PASSWORD, None).await;
    assert_problem(
        &locked.answer(),
        StatusCode::TOO_MANY_REQUESTS,
        "login_locked",
    );
    assert!(locked.header("retry-after").is_some());

    let unknown = unique_phone();
    for _ in 0..3 {
        let guess = sign_in(&c, &unknown, "guess", None).await;
        assert_problem(
            &guess.answer(),
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        );
    }
    let unknown_locked = sign_in(&c, &unknown, PASSWORD, None).await;
    assert_eq!(unknown_locked.body["detail"], locked.body["detail"]);
    assert_problem(
        &unknown_locked.answer(),
        StatusCode::TOO_MANY_REQUESTS,
        "login_locked",
    );

    // The owner's device passes the lock, with the right password only.
    let wrong = sign_in(&c, &phone, "guess", Some(&device)).await;
    assert_problem(
        &wrong.answer(),
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
    let owner = sign_in(&c, &phone, PASSWORD, Some(&device)).await;
    assert_eq!(owner.status, StatusCode::OK, "{}", owner.body);
    // A device token of another account does not open this one.
    let (_, bob) = c.user("Bob").await;
    let bobs = sign_in(&c, &phone, PASSWORD, Some(&bob.refresh)).await;
    assert_eq!(bobs.status, StatusCode::TOO_MANY_REQUESTS);
    // Signed-in sessions refresh as usual.
    let refreshed = c
        .post(
            "/v1/auth/refresh",
            json!({ "refresh_token": first.body["refresh_token"] }),
        )
        .await;
    assert_eq!(refreshed.0, StatusCode::OK, "{}", refreshed.1);
    mesh.stop().await;
}

/// A successful sign-in forgets the account's earlier failures: two failures, a sign-in, two
/// more failures, and the account (locked at three) still signs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_sign_in_forgets_earlier_failures() {
    let mesh = TestMesh::spawn_with(quick_throttle(1_000, 3, 1_000)).await;
    let c = &mesh.client;
    let phone = unique_phone();
    c.register(&phone, "Ann").await;
    for _ in 0..2 {
        for _ in 0..2 {
            let guess = sign_in(c, &phone, "guess", None).await;
            assert_problem(
                &guess.answer(),
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
            );
        }
        let owner = sign_in(c, &phone, PASSWORD, None).await;
        assert_eq!(owner.status, StatusCode::OK, "{}", owner.body);
    }
    mesh.stop().await;
}

/// A sign-in reads the account's failures before it hashes, and forgets them once it
/// succeeds; a failure another attempt counted while it hashed must survive that. The steps
/// of both attempts are taken in that order on the real bucket, so the race is not left to
/// timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_counted_while_a_sign_in_hashes_survive_its_success() {
    let mesh = TestMesh::spawn().await;
    let bus = mesh.bus_as(NatsRole::User, "test-login-failures").await;
    let failures = LoginFailures::open(&bus)
        .await
        .expect("the failures bucket");
    let subjects = Subjects::new(&unique_phone(), Some("203.0.113.7"));
    failures.record(&subjects).await;
    // The owner's sign-in reads the count, then hashes ...
    let read_before_hashing = failures.count(&subjects).await;
    assert_eq!(read_before_hashing.failures.account, 1);
    // ... while a guess fails and is counted ...
    failures.record(&subjects).await;
    // ... then the sign-in succeeds.
    failures.clear(&subjects, &read_before_hashing).await;
    let after = failures.count(&subjects).await;
    assert_eq!(
        after.failures.account, 2,
        "the failure counted during the sign-in was forgotten"
    );
    // With nothing counted meanwhile, success forgets the account's failures; the address
    // keeps its own.
    failures.clear(&subjects, &after).await;
    let cleared = failures.count(&subjects).await;
    assert_eq!(cleared.failures.account, 0);
    assert_eq!(cleared.failures.ip, 2);
    mesh.stop().await;
}

/// A user-service connection's failure counts, following the bucket's keys (as a user service
/// does) until stopped.
pub(crate) struct FollowedFailures {
    pub bus: mesh_nats::Bus,
    pub failures: LoginFailures,
    stop: tokio::sync::watch::Sender<bool>,
    follower: tokio::task::JoinHandle<()>,
}

impl FollowedFailures {
    pub(crate) async fn start(mesh: &TestMesh) -> Self {
        let bus = mesh.bus_as(NatsRole::User, "test-failures-follower").await;
        let failures = LoginFailures::open(&bus)
            .await
            .expect("the failures bucket");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let follower = tokio::spawn({
            let failures = failures.clone();
            async move { failures.follow(stopped).await }
        });
        Self {
            bus,
            failures,
            stop,
            follower,
        }
    }

    /// Messages this connection sends while `count` runs `times` for `subjects`.
    pub(crate) async fn messages_to_count(&self, subjects: &Subjects, times: u64) -> u64 {
        messages_to_count(&self.bus, &self.failures, subjects, times).await
    }

    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        self.follower.await.expect("the follower ends when stopped");
    }
}

/// Messages `bus` sends while `count` runs `times` for `subjects`.
pub(crate) async fn messages_to_count(
    bus: &mesh_nats::Bus,
    failures: &LoginFailures,
    subjects: &Subjects,
    times: u64,
) -> u64 {
    let before = bus.messages_sent();
    for _ in 0..times {
        failures.count(subjects).await;
    }
    bus.messages_sent() - before
}

/// A user service follows the failures bucket's keys, so a sign-in whose account and address
/// have no failure counted reads nothing from NATS; a failure another instance counts reaches
/// it within moments, and from then on that account is read from the bucket, until its
/// failures are forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_read_only_the_failures_the_bucket_holds() {
    let mesh = TestMesh::spawn().await;
    let followed = FollowedFailures::start(&mesh).await;
    let following = &followed.failures;
    let other_bus = mesh.bus_as(NatsRole::User, "test-failures-other").await;
    let other = LoginFailures::open(&other_bus)
        .await
        .expect("the failures bucket");
    let phone = unique_phone();
    let subjects = Subjects::new(&phone, Some("203.0.113.9"));

    // Not following, an instance reads both keys every time.
    assert!(messages_to_count(&other_bus, &other, &subjects, 20).await >= 40);
    // Following, once current, it reads nothing (the follower's own check of the bucket, every
    // 2 s, may fall in).
    poll_until(
        "the follower is current",
        Duration::from_secs(10),
        || async { (followed.messages_to_count(&subjects, 1).await == 0).then_some(()) },
    )
    .await;
    assert!(followed.messages_to_count(&subjects, 20).await <= 2);

    // Another instance counts a failure: it is seen, and read from the bucket.
    other.record(&subjects).await;
    let counted = poll_until(
        "another instance's failure seen",
        Duration::from_secs(5),
        || async {
            let counted = following.count(&subjects).await;
            (counted.failures.account == 1 && counted.failures.ip == 1).then_some(counted)
        },
    )
    .await;
    assert!(followed.messages_to_count(&subjects, 5).await >= 10);

    // Forgotten there, the account is no longer read; the address still is.
    following.clear(&subjects, &counted).await;
    let account_only = Subjects::new(&phone, None);
    poll_until(
        "the forgotten failures seen",
        Duration::from_secs(5),
        || async { (followed.messages_to_count(&account_only, 1).await == 0).then_some(()) },
    )
    .await;
    assert_eq!(following.count(&subjects).await.failures.ip, 1);
    followed.stop().await;
    mesh.stop().await;
}

/// Failures from one client address over many phones lock that address out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sign_ins_from_one_address_lock_it_out() {
    let mesh = TestMesh::spawn_with(quick_throttle(1_000, 1_000, 3)).await;
    let c = &mesh.client;
    let phone = unique_phone();
    c.register(&phone, "Ann").await;
    for _ in 0..3 {
        let guess = sign_in(c, &unique_phone(), "guess", None).await;
        assert_problem(
            &guess.answer(),
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        );
    }
    let locked = sign_in(c, &phone, PASSWORD, None).await;
    assert_problem(
        &locked.answer(),
        StatusCode::TOO_MANY_REQUESTS,
        "login_locked",
    );
    mesh.stop().await;
}

async fn preflight(c: &Client, origin: &str) -> Reply {
    send(
        c,
        Method::OPTIONS,
        "/v1/groups",
        None,
        None,
        &[
            ("origin", origin),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization, idempotency-key",
            ),
        ],
    )
    .await
}

/// CORS: a listed origin's preflight is 204 with the allowed methods and headers, and its
/// answers name it and expose the client's headers; another origin's preflight is 403 and its
/// answers carry no CORS headers. SSE obeys the WebSocket origin list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_on_allowed_origins_pass_cors() {
    let mesh = TestMesh::spawn_with(|s| {
        s.guard.cors_allowed_origins = vec!["https://app.example".into()];
    })
    .await;
    let c = &mesh.client;
    let (_, ann) = c.user("Ann").await;
    let ok = preflight(c, "https://app.example").await;
    assert_eq!(ok.status, StatusCode::NO_CONTENT);
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert!(
        ok.header("access-control-allow-methods")
            .is_some_and(|m| m.contains("POST"))
    );
    assert!(
        ok.header("access-control-allow-headers")
            .is_some_and(|h| h.contains("idempotency-key") && h.contains("authorization"))
    );
    let evil = preflight(c, "https://evil.example").await;
    assert_problem(&evil.answer(), StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(evil.header("access-control-allow-origin"), None);

    let me = send(
        c,
        Method::GET,
        "/v1/users/me",
        Some(&ann.access),
        None,
        &[("origin", "https://app.example")],
    )
    .await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(
        me.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let exposed = me
        .header("access-control-expose-headers")
        .unwrap_or_default();
    for header in [
        "x-request-id",
        "retry-after",
        "ratelimit",
        "idempotent-replayed",
    ] {
        assert!(exposed.contains(header), "{header} in {exposed}");
    }
    let other = send(
        c,
        Method::GET,
        "/v1/users/me",
        Some(&ann.access),
        None,
        &[("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(other.header("access-control-allow-origin"), None);

    let sse = send(
        c,
        Method::GET,
        "/v1/events",
        Some(&ann.access),
        None,
        &[("origin", "https://evil.example")],
    )
    .await;
    assert_problem(&sse.answer(), StatusCode::FORBIDDEN, "forbidden");
    mesh.stop().await;
}

/// Every answer carries the security headers; API answers are never cached; oversized
/// headers are a 431 problem; authenticated answers say when the token expires and, close to
/// that, that it needs refreshing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_carry_security_and_token_headers() {
    let mesh = TestMesh::spawn_with(|s| {
        // Longer than the token's life: every authenticated answer asks for a refresh.
        s.guard.token_refresh_hint = Duration::from_secs(3600);
    })
    .await;
    let c = &mesh.client;
    let (_, ann) = c.user("Ann").await;
    let login = sign_in(c, &unique_phone(), "guess", None).await;
    assert_eq!(login.header("cache-control"), Some("no-store"));
    assert_eq!(login.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(login.header("x-token-expires-at"), None);
    let health = send(c, Method::GET, "/healthz", None, None, &[]).await;
    assert_eq!(health.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(health.header("x-frame-options"), Some("DENY"));

    let me = send(c, Method::GET, "/v1/users/me", Some(&ann.access), None, &[]).await;
    assert_eq!(me.status, StatusCode::OK);
    let expires = me.header("x-token-expires-at").expect("X-Token-Expires-At");
    let expires =
        time::OffsetDateTime::parse(expires, &time::format_description::well_known::Rfc3339)
            .expect("RFC 3339");
    assert!(expires > time::OffsetDateTime::now_utc());
    assert_eq!(me.header("x-token-refresh-required"), Some("true"));

    let huge = "h".repeat(20 * 1024);
    let refused = send(
        c,
        Method::GET,
        "/v1/users/me",
        Some(&ann.access),
        None,
        &[("x-padding", &huge)],
    )
    .await;
    assert_problem(
        &refused.answer(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers_too_large",
    );
    assert!(
        refused
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/problem+json"))
    );
    mesh.stop().await;
}

/// With the default hint a fresh token is not flagged for refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_tokens_are_not_flagged_for_refresh() {
    let mesh = TestMesh::spawn().await;
    let (_, ann) = mesh.client.user("Ann").await;
    let me = send(
        &mesh.client,
        Method::GET,
        "/v1/users/me",
        Some(&ann.access),
        None,
        &[],
    )
    .await;
    assert!(me.header("x-token-expires-at").is_some());
    assert_eq!(me.header("x-token-refresh-required"), None);
    mesh.stop().await;
}

/// A number or boolean where a string is required is a 400, not coerced into a string.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_where_strings_are_required_are_refused() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("Ann").await;
    let login = c
        .post(
            "/v1/auth/login",
            json!({ "phone": 15550001, "password": PASSWORD }),
        )
        .await;
    assert_problem(&login, StatusCode::BAD_REQUEST, "validation_failed");
    assert!(login.1["detail"].as_str().unwrap().contains("$.phone"));
    let group = c
        .post_as("/v1/groups", &ann.access, json!({ "name": true }))
        .await;
    assert_problem(&group, StatusCode::BAD_REQUEST, "validation_failed");
    assert_eq!(my_group_count(c, &ann.access).await, 0);
    mesh.stop().await;
}
