//! The audit log through the API: every mutating request is recorded (asynchronously) with its
//! actor, action, target, status and result code, reads are not, no body or secret is kept,
//! and only administrators may query it, with filters and pages.

use mesh_contracts::Bucket;
use mesh_contracts::nats_permissions::NatsRole;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{Client, PASSWORD, TestMesh, Tokens, assert_problem, wait_until};

/// The phone that the test settings make an administrator when it registers.
const ADMIN_PHONE: &str = "+10000000001";

/// Registers the bootstrap administrator and logs it in.
async fn admin(c: &Client) -> Tokens {
    c.register(ADMIN_PHONE, "Root").await;
    c.login(ADMIN_PHONE).await
}

/// One page of the audit log as the admin sees it.
async fn audit_page(c: &Client, admin: &Tokens, query: &str) -> Value {
    let (status, body) = c
        .get_as(&format!("/v1/admin/audit?{query}"), &admin.access)
        .await;
    assert_eq!(status, StatusCode::OK, "audit {query}: {body}");
    body
}

/// The records of a page.
fn items(page: &Value) -> Vec<Value> {
    page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("items in {page}"))
        .clone()
}

/// Waits until the records `query` selects number at least `count`; returns them.
async fn wait_for_records(c: &Client, admin: &Tokens, query: &str, count: usize) -> Vec<Value> {
    wait_until(&format!("{count} audit records for {query}"), || async {
        items(&audit_page(c, admin, query).await).len() >= count
    })
    .await;
    items(&audit_page(c, admin, query).await)
}

/// The record of the request with id `request_id`, among `records`.
fn by_request<'a>(records: &'a [Value], request_id: &str) -> &'a Value {
    records
        .iter()
        .find(|r| r["request_id"] == request_id)
        .unwrap_or_else(|| panic!("no record of request {request_id} in {records:?}"))
}

/// Sends a request with a chosen request id, so its record can be found.
async fn send_tagged(
    c: &Client,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Value,
    request_id: &str,
) -> StatusCode {
    let mut request = c
        .raw()
        .request(method, c.url(path))
        .header("x-request-id", request_id)
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request sent").status()
}

/// A friend request that succeeds and requests that are refused (409, 404, 401) each leave
/// one record with the caller, the operation, the target, the status and the result code;
/// reads leave none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutating_requests_are_recorded_with_actor_action_and_result() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let root = admin(c).await;
    let (_, alice) = c.user("Alice").await;
    let (_, bob) = c.user("Bob").await;
    let ask_bob = json!({ "user_id": bob.user_id, "message": "hi" });

    let sent = send_tagged(
        c,
        Method::POST,
        "/v1/friend-requests",
        Some(&alice.access),
        ask_bob.clone(),
        "audit-sent",
    )
    .await;
    assert_eq!(sent, StatusCode::CREATED);
    let again = send_tagged(
        c,
        Method::POST,
        "/v1/friend-requests",
        Some(&alice.access),
        ask_bob.clone(),
        "audit-duplicate",
    )
    .await;
    assert_eq!(again, StatusCode::CONFLICT);
    let unknown = Uuid::now_v7();
    let missing = send_tagged(
        c,
        Method::POST,
        &format!("/v1/friend-requests/{unknown}/accept"),
        Some(&alice.access),
        json!({}),
        "audit-missing",
    )
    .await;
    assert_eq!(missing, StatusCode::NOT_FOUND);
    let anonymous = send_tagged(
        c,
        Method::POST,
        "/v1/friend-requests",
        None,
        ask_bob,
        "audit-anonymous",
    )
    .await;
    assert_eq!(anonymous, StatusCode::UNAUTHORIZED);
    // Reads are not recorded.
    assert_eq!(
        c.get_as("/v1/friend-requests?direction=outgoing", &alice.access)
            .await
            .0,
        StatusCode::OK
    );

    let mine = wait_for_records(c, &root, &format!("user_id={}", alice.user_id), 3).await;
    assert_eq!(mine.len(), 3, "alice's records: {mine:?}");
    let sent = by_request(&mine, "audit-sent");
    assert_eq!(sent["actor_id"], alice.user_id.as_str());
    assert_eq!(sent["session_id"], alice.session_id.as_str());
    assert_eq!(sent["action"], "send_friend_request");
    assert_eq!(sent["method"], "POST");
    assert_eq!(sent["path"], "/v1/friend-requests");
    assert_eq!(sent["status"], 201);
    assert_eq!(sent["result"], "ok");
    assert_eq!(sent["client_ip"], "127.0.0.1");
    assert!(sent["target"].is_null(), "{sent}");
    let duplicate = by_request(&mine, "audit-duplicate");
    assert_eq!(duplicate["action"], "send_friend_request");
    assert_eq!(duplicate["status"], 409);
    assert_eq!(duplicate["result"], "duplicate_request");
    let missing = by_request(&mine, "audit-missing");
    assert_eq!(missing["action"], "accept_friend_request");
    assert_eq!(missing["path"], "/v1/friend-requests/{request_id}/accept");
    assert_eq!(missing["target"], format!("request_id={unknown}"));
    assert_eq!(missing["status"], 404);
    assert_eq!(missing["result"], "not_found");

    // A request no route authenticated has no actor.
    let everyone = wait_for_records(c, &root, "action=send_friend_request", 3).await;
    let anonymous = by_request(&everyone, "audit-anonymous");
    assert!(anonymous["actor_id"].is_null(), "{anonymous}");
    assert_eq!(anonymous["status"], 401);
    assert_eq!(anonymous["result"], "unauthorized");

    let all = items(&audit_page(c, &root, "limit=100").await);
    assert!(
        all.iter().all(|r| r["method"] != "GET"),
        "reads were recorded: {all:?}"
    );
    mesh.stop().await;
}

/// Only enabled administrators read the log; filters by user, action and time and paging
/// work; register and login are recorded without bodies, and no password or token is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_is_admin_only_filtered_paged_and_keeps_no_secrets() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let root = admin(c).await;
    let (_, alice) = c.user("Alice").await;
    let refreshed = c
        .post(
            "/v1/auth/refresh",
            json!({ "refresh_token": alice.refresh }),
        )
        .await;
    assert_eq!(refreshed.0, StatusCode::OK, "{}", refreshed.1);
    let mut others = Vec::new();
    for name in ["Bob", "Carol", "Dave"] {
        let (_, other) = c.user(name).await;
        let (status, body) = c
            .post_as(
                "/v1/friend-requests",
                &alice.access,
                json!({ "user_id": other.user_id }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        others.push(other);
    }

    // Not an admin, or not signed in.
    assert_problem(
        &c.get_as("/v1/admin/audit", &alice.access).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_problem(
        &c.get("/v1/admin/audit").await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );

    // By user: alice's three friend requests, newest first.
    let mine = wait_for_records(c, &root, &format!("user_id={}", alice.user_id), 3).await;
    assert_eq!(mine.len(), 3);
    assert!(mine.iter().all(|r| r["actor_id"] == alice.user_id.as_str()));
    let ids: Vec<&str> = mine.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let mut newest_first = ids.clone();
    newest_first.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(ids, newest_first);

    // By action.
    let registered = wait_for_records(c, &root, "action=register", 5).await;
    assert_eq!(registered.len(), 5, "one per account: {registered:?}");
    assert!(registered.iter().all(|r| r["action"] == "register"
        && r["path"] == "/v1/auth/register"
        && r["actor_id"].is_null()));
    let logins = wait_for_records(c, &root, "action=login", 5).await;
    assert!(logins.iter().all(|r| r["status"] == 200));
    wait_for_records(c, &root, "action=refresh", 1).await;

    // By time: the records' own times bound them.
    let newest_at = mine[0]["at"].as_str().unwrap().to_owned();
    let oldest_at = mine[2]["at"].as_str().unwrap().to_owned();
    let encode = |at: &str| at.replace('+', "%2B").replace(':', "%3A");
    let window = items(
        &audit_page(
            c,
            &root,
            &format!(
                "user_id={}&from={}&to={}",
                alice.user_id,
                encode(&oldest_at),
                encode(&newest_at)
            ),
        )
        .await,
    );
    assert!(
        window.iter().all(|r| r["id"] != mine[0]["id"]),
        "`to` is exclusive"
    );
    assert!(
        window.iter().any(|r| r["id"] == mine[2]["id"]),
        "`from` is inclusive"
    );
    let future = items(&audit_page(c, &root, "from=2999-01-01T00%3A00%3A00Z").await);
    assert!(future.is_empty(), "{future:?}");

    // Pages of two cover the whole log once, newest first.
    let everything = items(&audit_page(c, &root, "limit=100").await);
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(cursor) => format!("limit=2&cursor={cursor}"),
            None => "limit=2".to_owned(),
        };
        let page = audit_page(c, &root, &query).await;
        let got = items(&page);
        assert!(got.len() <= 2);
        paged.extend(got);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    // Every mutating request so far: 5 registrations, 5 logins, a refresh, 3 friend requests.
    assert_eq!(everything.len(), 14, "{everything:?}");
    let ids = |records: &[Value]| -> Vec<String> {
        records.iter().map(|r| r["id"].to_string()).collect()
    };
    assert_eq!(ids(&paged), ids(&everything));

    // Bad filters.
    for query in [
        "limit=0",
        "limit=101",
        "cursor=nope",
        "action=not%20an%20id",
        "from=2025-01-02T00%3A00%3A00Z&to=2025-01-01T00%3A00%3A00Z",
        "user_id=nope",
    ] {
        assert_problem(
            &c.get_as(&format!("/v1/admin/audit?{query}"), &root.access)
                .await,
            StatusCode::BAD_REQUEST,
            "validation_failed",
        );
    }

    // Nothing secret was stored: no password, access token or refresh token.
    let stored = serde_json::to_string(&everything).unwrap();
    let mut secrets = vec![
        PASSWORD.to_owned(),
        root.access.clone(),
        root.refresh.clone(),
    ];
    secrets.extend([alice.access.clone(), alice.refresh.clone()]);
    secrets.extend(
        others
            .iter()
            .flat_map(|o| [o.access.clone(), o.refresh.clone()]),
    );
    for secret in &secrets {
        assert!(!stored.contains(secret.as_str()), "a secret was recorded");
    }
    mesh.stop().await;
}

/// A request no operation serves costs its client a token of the address's budget and
/// nothing more: no audit record and no idempotency record, however many come with fresh
/// `Idempotency-Key`s; past the budget, they are refused like any other request. A request a
/// limit refused leaves no record either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_no_operation_serves_are_limited_and_leave_no_records() {
    let mesh = TestMesh::spawn_with(|s| {
        s.guard.limits.write_per_ip = mesh_edge::Quota::new(4, std::time::Duration::from_secs(60));
    })
    .await;
    let c = &mesh.client;
    let root = admin(c).await;
    let stray = async |n: u32| {
        c.raw()
            .post(c.url(&format!("/anything/{n}")))
            .header("x-request-id", format!("audit-stray-{n}"))
            .header("idempotency-key", Uuid::now_v7().to_string())
            .json(&json!({ "n": n }))
            .send()
            .await
            .expect("request sent")
            .status()
    };
    for n in 0..3 {
        assert_eq!(stray(n).await, StatusCode::NOT_FOUND);
    }
    let ask = json!({ "user_id": Uuid::now_v7(), "message": "hi" });
    let marker = send_tagged(
        c,
        Method::POST,
        "/v1/friend-requests",
        Some(&root.access),
        ask.clone(),
        "audit-marker",
    )
    .await;
    assert_eq!(marker, StatusCode::NOT_FOUND, "no such user");
    assert_eq!(stray(3).await, StatusCode::TOO_MANY_REQUESTS);
    let limited = send_tagged(
        c,
        Method::POST,
        "/v1/friend-requests",
        Some(&root.access),
        ask,
        "audit-limited",
    )
    .await;
    assert_eq!(limited, StatusCode::TOO_MANY_REQUESTS);

    // Records go out in the order the edge publishes them: once the marker's is in, any of
    // the others would be too.
    let recorded = wait_for_records(c, &root, "action=send_friend_request", 1).await;
    by_request(&recorded, "audit-marker");
    assert_eq!(
        recorded.len(),
        1,
        "the limited request left a record: {recorded:?}"
    );
    let unmatched = items(&audit_page(c, &root, "action=unmatched").await);
    assert!(unmatched.is_empty(), "{unmatched:?}");

    let bus = mesh.bus_as(NatsRole::Edge, "bucket-reader").await;
    let bucket = bus.bucket(Bucket::Idempotency).await.expect("bucket");
    let keys = bucket.keys_with_prefix("").await.expect("keys");
    assert!(keys.is_empty(), "idempotency records of 404s: {keys:?}");
    mesh.stop().await;
}

/// What clients can make the mesh keep is bounded in bytes as well as in time: the AUDIT
/// stream (the oldest records go first) and the idempotency bucket (full, it takes nothing
/// more and keyed requests are served unprotected).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_stream_and_the_idempotency_bucket_are_bounded_in_bytes() {
    use async_nats::jetstream::stream::DiscardPolicy;
    use mesh_contracts::Stream;

    let mesh = TestMesh::spawn().await;
    let js = async_nats::jetstream::new(mesh.nats_client_as(NatsRole::Migrate).await);
    let audit = js
        .get_stream(mesh.settings.prefix.stream(Stream::Audit))
        .await
        .expect("the AUDIT stream")
        .info()
        .await
        .expect("its info")
        .config
        .clone();
    assert_eq!(audit.max_bytes, mesh.settings.nats_kept_max_bytes);
    assert_eq!(audit.discard, DiscardPolicy::Old);
    let idempotency = js
        .get_stream(format!(
            "KV_{}",
            mesh.settings.prefix.bucket(Bucket::Idempotency)
        ))
        .await
        .expect("the IDEMPOTENCY bucket's stream")
        .info()
        .await
        .expect("its info")
        .config
        .clone();
    assert_eq!(idempotency.max_bytes, mesh.settings.nats_kept_max_bytes);
    assert_eq!(idempotency.discard, DiscardPolicy::New);
    mesh.stop().await;
}

/// Records older than `MESH_AUDIT_RETENTION` are deleted; younger ones stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_older_than_the_retention_are_deleted() {
    let mesh = TestMesh::spawn().await;
    let pool = sqlx::PgPool::connect(mesh.database_url())
        .await
        .expect("the mesh's database");
    let day = 24 * 3600;
    let (old, recent) = (Uuid::now_v7(), Uuid::now_v7());
    for (id, days_ago) in [(old, 91), (recent, 89)] {
        sqlx::query(
            "INSERT INTO audit.records (id, at, action, method, path, status, result, request_id) \
             VALUES ($1, now() - make_interval(days => $2), 'logout', 'POST', '/v1/auth/logout', \
             204, 'ok', 'audit-retention')",
        )
        .bind(id)
        .bind(days_ago)
        .execute(&pool)
        .await
        .expect("record inserted");
    }
    // The outbox role prunes when it starts too, so either may delete the old one.
    mesh_outbox::audit::prune(&pool, std::time::Duration::from_secs(90 * day))
        .await
        .expect("pruned");
    let left: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM audit.records WHERE request_id = 'audit-retention'")
            .fetch_all(&pool)
            .await
            .expect("records read");
    assert_eq!(left, [recent]);
    mesh.stop().await;
}
