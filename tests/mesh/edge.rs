//! The HTTP edge itself: malformed and oversized requests, routing errors, request ids,
//! health, OpenAPI, metrics, bearer authentication, and "no input ever yields a 5xx".

use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use crate::harness::{Answer, PASSWORD, TestMesh, assert_problem, unique_phone, wait_until};

/// An answer with its headers, for the checks that need them.
struct Full {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Full {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    fn answer(&self) -> Answer {
        (self.status, self.json())
    }

    fn content_type(&self) -> &str {
        self.headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn request_id(&self) -> &str {
        self.headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts a problem document served with the problem+json media type.
    #[track_caller]
    fn assert_problem(&self, status: StatusCode, code: &str) {
        assert_problem(&self.answer(), status, code);
        assert!(
            self.content_type().starts_with("application/problem+json"),
            "content type {:?} for {}",
            self.content_type(),
            self.text
        );
    }
}

/// Sends `body` as-is with the given content type (none when `None`) and headers.
async fn raw(
    mesh: &TestMesh,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
    headers: &[(&str, &str)],
) -> Full {
    let mut request = mesh
        .client
        .raw()
        .request(method, mesh.client.url(path))
        .body(body);
    if let Some(content_type) = content_type {
        request = request.header(CONTENT_TYPE, content_type);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    Full {
        status,
        headers,
        text,
    }
}

async fn post_json_text(mesh: &TestMesh, path: &str, body: &str) -> Full {
    raw(
        mesh,
        Method::POST,
        path,
        Some("application/json"),
        body.to_owned(),
        &[],
    )
    .await
}

/// Sends a chunked request over a plain TCP connection (reqwest here has no streaming bodies)
/// and returns the status code of the answer.
async fn chunked_post(mesh: &TestMesh, path: &str, chunks: &[Vec<u8>]) -> u16 {
    let addr = mesh.url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect to the edge");
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in chunks {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    // The edge may answer before it has read everything; a failed write is not the test's concern.
    let _ = stream.write_all(&request).await;
    let mut response = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(15), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the edge did not answer a chunked request");
    let text = String::from_utf8_lossy(&response);
    let status_line = text.lines().next().unwrap_or_default();
    status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

/// A syntactically broken body, a body of the wrong shape, and a missing body are 400 problems.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_or_missing_json_is_a_400_problem() {
    let mesh = TestMesh::spawn().await;
    for body in [
        r#"{"phone": "+123456", "password": "#,
        "not json",
        r#"["a"]"#,
        r#"{"phone": {}, "password": "x"}"#,
        r#"{"password": "12345678"}"#,
        "null",
        "",
        "\u{0}",
    ] {
        let answer = post_json_text(&mesh, "/v1/auth/login", body).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{body:?}: {}",
            answer.text
        );
        answer.assert_problem(StatusCode::BAD_REQUEST, "bad_request");
    }
    let (status, _) = mesh
        .client
        .post(
            "/v1/auth/register",
            json!({ "phone": "+123456", "password": PASSWORD, "nickname": "A", "sex": "robot" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "unknown enum value");
    mesh.stop().await;
}

/// A body that is not JSON by its content type is refused with 415 before anything parses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_json_content_types_are_415() {
    let mesh = TestMesh::spawn().await;
    let body = json!({ "phone": unique_phone(), "password": PASSWORD }).to_string();
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/xml"),
        None,
    ] {
        let answer = raw(
            &mesh,
            Method::POST,
            "/v1/auth/login",
            content_type,
            body.clone(),
            &[],
        )
        .await;
        answer.assert_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    }
    // With the right type and a charset parameter the same body is understood.
    let accepted = raw(
        &mesh,
        Method::POST,
        "/v1/auth/login",
        Some("application/json; charset=utf-8"),
        body,
        &[],
    )
    .await;
    accepted.assert_problem(StatusCode::UNAUTHORIZED, "invalid_credentials");
    mesh.stop().await;
}

/// A body over the limit is refused with 413 whether its length is declared or chunked; a padded
/// body just under the limit still goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_413() {
    let mesh = TestMesh::spawn().await;
    let max = mesh.settings.max_body_bytes;
    let login = json!({ "phone": unique_phone(), "password": PASSWORD }).to_string();

    // Whitespace padding keeps the JSON valid, so only the size can be the reason.
    let padded = |total: usize| format!("{}{login}", " ".repeat(total - login.len()));
    let under = post_json_text(&mesh, "/v1/auth/login", &padded(max)).await;
    under.assert_problem(StatusCode::UNAUTHORIZED, "invalid_credentials");
    let over = post_json_text(&mesh, "/v1/auth/login", &padded(max + 1)).await;
    over.assert_problem(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let huge = post_json_text(&mesh, "/v1/auth/register", &padded(max * 8)).await;
    huge.assert_problem(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    // Without a declared length: chunks adding up to just over the limit.
    let body = padded(max + 1).into_bytes();
    let chunks: Vec<Vec<u8>> = body.chunks(4096).map(<[u8]>::to_vec).collect();
    assert_eq!(chunked_post(&mesh, "/v1/auth/login", &chunks).await, 413);
    // The same way, a body under the limit is read whole.
    let body = padded(max).into_bytes();
    let chunks: Vec<Vec<u8>> = body.chunks(4096).map(<[u8]>::to_vec).collect();
    assert_eq!(chunked_post(&mesh, "/v1/auth/login", &chunks).await, 401);

    // The edge still serves normally afterwards.
    assert_eq!(mesh.client.get("/healthz").await.0, StatusCode::OK);
    mesh.stop().await;
}

/// Fields longer than their documented maximum are a 400 problem; the maximum itself is accepted
/// (counted in characters, not bytes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_long_fields_are_400_and_limits_count_characters() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let register = |phone: String, password: String, nickname: String| json!({ "phone": phone, "password": password, "nickname": nickname });
    let too_long = [
        register(unique_phone(), PASSWORD.into(), "n".repeat(33)),
        register(unique_phone(), "p".repeat(129), "Ann".into()),
        register("+1234567890123456".into(), PASSWORD.into(), "Ann".into()),
        register(
            format!("+{}", "1".repeat(100)),
            PASSWORD.into(),
            "Ann".into(),
        ),
        json!({ "phone": unique_phone(), "password": PASSWORD, "nickname": "Ann", "avatar": format!("https://a.example/{}", "x".repeat(600)) }),
    ];
    for body in too_long {
        let (status, problem) = c.post("/v1/auth/register", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {problem}");
        let code = problem["code"].as_str().unwrap_or_default();
        assert!(
            code == "validation_failed" || code == "bad_request",
            "code {code} for {body}"
        );
        assert_problem(&(status, problem.clone()), StatusCode::BAD_REQUEST, code);
    }
    // Too short is the service's call: validation_failed.
    let short = c
        .post(
            "/v1/auth/register",
            register(unique_phone(), "1234567".into(), "Ann".into()),
        )
        .await;
    assert_problem(&short, StatusCode::BAD_REQUEST, "validation_failed");
    let blank = c
        .post(
            "/v1/auth/register",
            register(unique_phone(), PASSWORD.into(), "   ".into()),
        )
        .await;
    assert_problem(&blank, StatusCode::BAD_REQUEST, "validation_failed");

    // Exactly at the limits, in multi-byte characters: accepted.
    let phone = unique_phone();
    let (status, profile) = c
        .post(
            "/v1/auth/register",
            register(phone.clone(), "密".repeat(128), "é".repeat(32)),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{profile}");
    assert_eq!(profile["nickname"], "é".repeat(32));
    let (status, tokens) = c
        .post(
            "/v1/auth/login",
            json!({ "phone": phone, "password": "密".repeat(128), "device_name": "d".repeat(64) }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let (status, _) = c
        .post(
            "/v1/auth/login",
            json!({ "phone": phone, "password": "密".repeat(128), "device_name": "d".repeat(65) }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let access = tokens["access_token"].as_str().unwrap();
    let patch = c
        .send(
            Method::PATCH,
            "/v1/users/me",
            Some(access),
            Some(&json!({ "nickname": "n".repeat(33) })),
        )
        .await;
    assert_eq!(patch.0, StatusCode::BAD_REQUEST, "{}", patch.1);
    assert!(patch.1["code"].is_string(), "{}", patch.1);
    mesh.stop().await;
}

/// An unknown path is a 404 problem, a known path with the wrong method a 405.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_are_404_and_wrong_methods_405() {
    let mesh = TestMesh::spawn().await;
    for path in [
        "/nope",
        "/v1/nope",
        "/v1/auth/login/extra",
        "/v2/auth/login",
        "/v1/users/me/x",
    ] {
        let answer = raw(&mesh, Method::GET, path, None, "", &[]).await;
        answer.assert_problem(StatusCode::NOT_FOUND, "not_found");
    }
    for (method, path) in [
        (Method::GET, "/v1/auth/login"),
        (Method::DELETE, "/v1/users/me"),
        (Method::PUT, "/v1/auth/register"),
        (Method::POST, "/healthz"),
        (Method::DELETE, "/readyz"),
        (Method::POST, "/metrics"),
        (Method::PUT, "/openapi.json"),
    ] {
        let answer = raw(&mesh, method.clone(), path, None, "", &[]).await;
        answer.assert_problem(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    }
    mesh.stop().await;
}

/// Every response carries `x-request-id`; a plain client id is echoed, a junk one replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_a_request_id() {
    let mesh = TestMesh::spawn().await;
    let mut seen = std::collections::HashSet::new();
    for (method, path, content_type, body) in [
        (Method::GET, "/healthz", None, ""),
        (Method::GET, "/readyz", None, ""),
        (Method::GET, "/metrics", None, ""),
        (Method::GET, "/openapi.json", None, ""),
        (Method::GET, "/nope", None, ""),
        (Method::GET, "/v1/users/me", None, ""),
        (
            Method::POST,
            "/v1/auth/login",
            Some("application/json"),
            "{",
        ),
        (Method::POST, "/v1/auth/login", Some("text/plain"), "{}"),
        (
            Method::POST,
            "/v1/auth/login",
            Some("application/json"),
            r#"{"phone":"+123456","password":"wrong pass"}"#,
        ),
    ] {
        let answer = raw(&mesh, method, path, content_type, body, &[]).await;
        let id = answer.request_id();
        assert!(Uuid::parse_str(id).is_ok(), "{path}: request id {id:?}");
        assert!(seen.insert(id.to_owned()), "request ids repeat: {id}");
    }
    let oversized = post_json_text(
        &mesh,
        "/v1/auth/login",
        &" ".repeat(mesh.settings.max_body_bytes + 1),
    )
    .await;
    assert!(
        Uuid::parse_str(oversized.request_id()).is_ok(),
        "413 without a request id"
    );

    for plain in ["abc-123_x.y", "0123456789", &"a".repeat(64)] {
        let answer = raw(
            &mesh,
            Method::GET,
            "/healthz",
            None,
            "",
            &[("x-request-id", plain)],
        )
        .await;
        assert_eq!(answer.request_id(), plain);
        let failed = raw(
            &mesh,
            Method::GET,
            "/v1/users/me",
            None,
            "",
            &[("x-request-id", plain)],
        )
        .await;
        assert_eq!(failed.request_id(), plain);
    }
    let too_long = "a".repeat(65);
    for junk in ["a b", "<script>", "id;drop", "", too_long.as_str(), "ü"] {
        let answer = raw(
            &mesh,
            Method::GET,
            "/healthz",
            None,
            "",
            &[("x-request-id", junk)],
        )
        .await;
        assert_ne!(answer.request_id(), junk, "junk {junk:?} echoed");
        assert!(
            Uuid::parse_str(answer.request_id()).is_ok(),
            "replacement for {junk:?}: {:?}",
            answer.request_id()
        );
    }
    mesh.stop().await;
}

/// Liveness, readiness, the OpenAPI document and the Swagger UI are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_openapi_and_docs_are_served() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (status, health) = c.get("/healthz").await;
    assert_eq!(
        (status, health["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let (status, ready) = c.get("/readyz").await;
    assert_eq!(
        (status, ready["status"].as_str()),
        (StatusCode::OK, Some("ready")),
        "{ready}"
    );

    let spec = raw(&mesh, Method::GET, "/openapi.json", None, "", &[]).await;
    assert_eq!(spec.status, StatusCode::OK);
    assert!(
        spec.content_type().starts_with("application/json"),
        "{}",
        spec.content_type()
    );
    let spec = spec.json();
    assert!(
        spec["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.")),
        "openapi version in spec"
    );
    let paths = spec["paths"].as_object().expect("paths in the spec");
    for path in [
        "/v1/auth/login",
        "/v1/auth/register",
        "/v1/users/me",
        "/v1/sessions",
        "/v1/admin/users",
    ] {
        assert!(paths.contains_key(path), "{path} missing from the spec");
    }
    assert!(spec["paths"]["/v1/auth/login"]["post"].is_object());

    let docs = raw(&mesh, Method::GET, "/docs", None, "", &[]).await;
    assert_eq!(docs.status, StatusCode::OK);
    assert!(
        docs.content_type().starts_with("text/html"),
        "{}",
        docs.content_type()
    );
    assert!(
        docs.text.to_lowercase().contains("swagger"),
        "not the Swagger UI"
    );
    mesh.stop().await;
}

/// With a worker role down (no social service), `/readyz` is 503 and names it, while
/// `/readyz?exclude=services`, the edge's Kubernetes readiness probe, is 200: one role down does
/// not take every edge out of its Service. The edge serves what it can and answers the routes
/// of the missing service with a 503 problem itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_can_leave_the_services_out() {
    use nats_mesh::Role;

    let roles = &[Role::Edge, Role::User, Role::Chat, Role::Outbox];
    let mesh = TestMesh::spawn_roles(roles, |_| {}).await;
    let c = &mesh.client;
    // The services are asked in order: once the user service answers, social is the one named.
    wait_until("readiness names the social service", || async {
        let (status, body) = c.get("/readyz").await;
        status == StatusCode::SERVICE_UNAVAILABLE
            && body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("social"))
    })
    .await;
    assert_problem(
        &c.get("/readyz").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    );
    for query in ["exclude=services", "exclude=services&exclude=services"] {
        let (status, body) = c.get(&format!("/readyz?{query}")).await;
        assert_eq!(
            (status, body["status"].as_str()),
            (StatusCode::OK, Some("ready")),
            "{query}: {body}"
        );
    }
    for query in [
        "exclude=nats",
        "exclude=services&exclude=social",
        "exclude=",
    ] {
        assert_problem(
            &c.get(&format!("/readyz?{query}")).await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        );
    }
    let (_, ann) = c.user("ann").await;
    assert_eq!(
        c.get_as("/v1/users/me", &ann.access).await.0,
        StatusCode::OK
    );
    assert_problem(
        &c.get_as("/v1/friends", &ann.access).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    );
    mesh.stop().await;
}

/// `/readyz` is outside the rate limits, so its checks of the services are shared: 64 probes
/// at once cost at most one check (a health RPC to each service), and a stream of probes one
/// check a second. A subscriber of the user service's health subject sees every check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_probes_share_the_services_checks() {
    use futures::FutureExt;
    use futures::StreamExt;
    use mesh_contracts::Rpc;
    use mesh_contracts::nats_permissions::NatsRole;
    use mesh_contracts::user::Health;
    use std::time::{Duration, Instant};

    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let watcher = mesh.nats_client_as(NatsRole::User).await;
    let subject = mesh.settings.prefix.rpc(Health::SERVICE, Health::OP);
    let mut asked = watcher.subscribe(subject).await.expect("subscribe");
    watcher.flush().await.expect("flush");
    // The checks made so far and not yet counted: the server sends this connection the copies
    // of the requests it took before the flush's ping, ahead of the pong.
    let mut checks = async || {
        watcher.flush().await.expect("flush");
        let mut seen = 0;
        while let Some(Some(_)) = asked.next().now_or_never() {
            seen += 1;
        }
        seen
    };

    let probes = (0..64).map(|_| c.get("/readyz"));
    for (status, body) in futures::future::join_all(probes).await {
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let burst = checks().await;
    assert!(burst <= 1, "{burst} checks for 64 probes at once");

    // Probes one after another until two checks were made: about a second apart (less the
    // time a probe takes to be answered and counted).
    let mut first_check = None;
    let mut probes = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    let apart = loop {
        assert!(Instant::now() < deadline, "no second check within 20 s");
        assert_eq!(c.get("/readyz").await.0, StatusCode::OK);
        probes += 1;
        let seen = checks().await;
        assert!(seen <= 1, "{seen} checks for one probe");
        if seen == 1 {
            match first_check {
                None => first_check = Some((Instant::now(), probes)),
                Some((at, probe)) => break (at.elapsed(), probes - probe),
            }
        }
    };
    let (elapsed, between) = apart;
    assert!(
        elapsed >= Duration::from_millis(500),
        "two checks {elapsed:?} apart ({between} probes)"
    );
    // At least one probe in between was answered from the shared check (each probe takes far
    // less than the second a check is reused for, however loaded the machine).
    assert!(between >= 2, "{between} probes between two checks");
    mesh.stop().await;
}

/// The value of the first sample of `metric` whose labels include all of `labels`.
fn sample(metrics: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|line| line.starts_with(&format!("{metric}{{")))
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// After a login, `/metrics` counts it by route and by RPC subject on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_http_requests_and_rpc_calls() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let phone = unique_phone();
    c.register(&phone, "Ann").await;
    c.login(&phone).await;
    let subject = format!("subject=\"{}.user.login\"", mesh.settings.prefix.as_str());

    let metrics = raw(&mesh, Method::GET, "/metrics", None, "", &[]).await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(
        metrics.content_type().starts_with("text/plain"),
        "{}",
        metrics.content_type()
    );
    let text = &metrics.text;
    let logins = sample(
        text,
        "mesh_http_requests_total",
        &["route=\"login\"", "method=\"POST\"", "status=\"200\""],
    );
    assert!(
        logins.is_some_and(|n| n >= 1.0),
        "no login in mesh_http_requests_total:\n{text}"
    );
    let served = sample(
        text,
        "mesh_rpc_server_requests_total",
        &[&subject, "outcome=\"ok\""],
    );
    assert_eq!(
        served,
        Some(1.0),
        "mesh_rpc_server_requests_total for {subject}:\n{text}"
    );
    let called = sample(
        text,
        "mesh_rpc_client_calls_total",
        &[&subject, "outcome=\"ok\""],
    );
    assert_eq!(
        called,
        Some(1.0),
        "mesh_rpc_client_calls_total for {subject}:\n{text}"
    );

    // A refused login is counted under its error code.
    let wrong = c
        .post(
            "/v1/auth/login",
            json!({ "phone": phone, "password": "wrong password" }),
        )
        .await;
    assert_problem(&wrong, StatusCode::UNAUTHORIZED, "invalid_credentials");
    let text = raw(&mesh, Method::GET, "/metrics", None, "", &[])
        .await
        .text;
    let refused = sample(
        &text,
        "mesh_rpc_server_requests_total",
        &[&subject, "outcome=\"invalid_credentials\""],
    );
    assert_eq!(refused, Some(1.0), "refused login not counted:\n{text}");
    mesh.stop().await;
}

/// Every Postgres pool of the process is on `/metrics`, each role's and each one the outbox
/// relay reads an outbox with, so `MeshDbPoolExhausted` sees them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_every_database_pool_the_relays_included() {
    let mesh = TestMesh::spawn().await;
    let text = mesh.metrics_text().await;
    for service in ["user", "social", "chat", "outbox"] {
        let label = format!("service=\"{service}\"");
        let most = sample(&text, "mesh_db_pool_max_connections", &[&label]);
        assert!(
            most.is_some_and(|n| n >= 1.0),
            "{service}'s pool size missing:\n{text}"
        );
    }
    for service in ["relay-user", "relay-social", "relay-chat"] {
        let label = format!("service=\"{service}\"");
        let most = sample(&text, "mesh_db_pool_max_connections", &[&label]);
        assert_eq!(most, Some(1.0), "{service}'s pool size:\n{text}");
        for state in ["idle", "busy"] {
            let state = format!("state=\"{state}\"");
            assert!(
                sample(&text, "mesh_db_pool_connections", &[&label, &state]).is_some(),
                "{service}'s {state} connections missing:\n{text}"
            );
        }
    }
    mesh.stop().await;
}

/// A missing or unusable bearer token is a 401 with a code saying which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_are_required_and_checked() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, tokens) = c.user("Ann").await;

    let missing = raw(&mesh, Method::GET, "/v1/users/me", None, "", &[]).await;
    missing.assert_problem(StatusCode::UNAUTHORIZED, "unauthorized");
    let basic = raw(
        &mesh,
        Method::GET,
        "/v1/users/me",
        None,
        "",
        &[("authorization", "Basic YTpi")],
    )
    .await;
    basic.assert_problem(StatusCode::UNAUTHORIZED, "unauthorized");
    let empty = raw(
        &mesh,
        Method::GET,
        "/v1/users/me",
        None,
        "",
        &[("authorization", "Bearer ")],
    )
    .await;
    empty.assert_problem(StatusCode::UNAUTHORIZED, "unauthorized");
    for garbage in ["garbage", "a.b.c", &tokens.refresh] {
        assert_eq!(
            c.get_as("/v1/users/me", garbage).await.0,
            StatusCode::UNAUTHORIZED,
            "{garbage:?}"
        );
        assert_problem(
            &c.get_as("/v1/users/me", garbage).await,
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        );
    }
    // A valid token with one character of its signature changed.
    let mut tampered = tokens.access.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert_problem(
        &c.get_as("/v1/users/me", &tampered).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
    // Someone else's claims under our header and signature.
    let parts: Vec<&str> = tokens.access.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], "eyJzdWIiOiJ4In0", parts[2]);
    assert_problem(
        &c.get_as("/v1/users/me", &forged).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );

    assert_eq!(
        c.get_as("/v1/users/me", &tokens.access).await.0,
        StatusCode::OK
    );
    mesh.stop().await;
}

/// Replaces `{param}` segments of an OpenAPI path with `value`.
fn fill(path: &str, value: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                value
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Every route of the OpenAPI document, hit with hostile bodies, parameters and tokens, answers
/// below 500, with a problem document whenever it refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_input_yields_a_5xx() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let admin_phone = "+10000000001";
    c.register(admin_phone, "Root").await;
    let user_phone = unique_phone();
    c.register(&user_phone, "Ann").await;
    let user = c.login(&user_phone).await;

    let (_, spec) = c.get("/openapi.json").await;
    let paths = spec["paths"].as_object().expect("paths").clone();
    let long = "x".repeat(5000);
    let params = [
        "00000000-0000-0000-0000-000000000000",
        "not-a-uuid",
        "%00",
        "..",
        &long,
        &user.user_id,
    ];
    let bodies = [
        None,
        Some("".to_owned()),
        Some("{".to_owned()),
        Some("[]".to_owned()),
        Some("null".to_owned()),
        Some("{}".to_owned()),
        Some(r#"{"phone":"+1\u0000","password":"\u0000\u0000\u0000\u0000\u0000\u0000\u0000\u0000","nickname":"\u0000"}"#.to_owned()),
        Some(r#"{"phone":1e400,"password":[],"nickname":{},"roles":["root"],"sex":"x","refresh_token":null}"#.to_owned()),
        Some(r#"{"nickname":"\ud800","avatar":"javascript:alert(1)","roles":[]}"#.to_owned()),
        Some(format!(r#"{{"refresh_token":"{}","roles":["admin","admin"]}}"#, "r".repeat(128))),
        Some("\u{feff}{}".to_owned()),
    ];
    let queries = [
        "",
        "?limit=0",
        "?limit=-1",
        "?limit=99999999999",
        // A NUL in a list cursor's id, and in a UUID cursor.
        "?cursor=1.0.g:%00",
        "?disabled=maybe",
        "?phone=%2B&nickname=%25",
        "?ids=,,,",
        "?nickname=%5C",
        // A list cursor whose time Postgres cannot hold (about 7500 BC).
        "?cursor=0.-300000000000000000000.g:00000000-0000-0000-0000-000000000000",
        // Other page bounds at their extremes, and NULs in the search filters.
        "?since=0000-01-01T00:00:00%2B23:59&from=0000-01-01T00:00:00%2B23:59\
         &to=9999-12-31T23:59:59-23:59&before_seq=9223372036854775807\
         &nickname=%00&q=%00&action=%00",
    ];
    // Each body is sent with one query, so a query past the bodies would never be sent.
    assert!(queries.len() <= bodies.len());
    let mut checked = 0;
    for (path, operations) in &paths {
        for method in operations.as_object().expect("operations").keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            // Fresh, valid tokens for every operation: the noise may log out or disable.
            let admin = c.login(admin_phone).await;
            let enabled = c
                .post_as(
                    &format!("/v1/admin/users/{}/enable", user.user_id),
                    &admin.access,
                    json!({}),
                )
                .await;
            assert_eq!(enabled.0, StatusCode::OK, "{}", enabled.1);
            let user_now = c.login(&user_phone).await;
            let tokens = [
                None,
                Some(admin.access.as_str()),
                Some(user_now.access.as_str()),
                Some("x"),
            ];
            let urls: std::collections::BTreeSet<String> =
                params.iter().map(|param| fill(path, param)).collect();
            for url in &urls {
                for token in tokens {
                    for (i, body) in bodies.iter().enumerate() {
                        let query = queries[i % queries.len()];
                        let mut request = c
                            .raw()
                            .request(method.clone(), c.url(&format!("{url}{query}")));
                        if let Some(token) = token {
                            request = request.bearer_auth(token);
                        }
                        if let Some(body) = body {
                            request = request
                                .header(CONTENT_TYPE, "application/json")
                                .body(body.clone());
                        }
                        let response = request.send().await.expect("request sent");
                        let status = response.status();
                        let text = response.text().await.unwrap_or_default();
                        assert!(
                            status.as_u16() < 500,
                            "{method} {url}{query} with {body:?}: {status} {text}"
                        );
                        if !status.is_success() {
                            let problem: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                            assert!(
                                problem["code"].is_string(),
                                "{method} {url}{query}: {status} without a problem: {text}"
                            );
                        }
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(
        checked > 500,
        "only {checked} requests: did the spec lose its paths?"
    );
    // The admin is still an enabled admin: the noise did not lock it out by accident.
    assert_eq!(
        c.get_as("/v1/admin/users", &c.login(admin_phone).await.access)
            .await
            .0,
        StatusCode::OK
    );
    mesh.stop().await;
}

/// A sign-in from behind the trusted proxy (the tests' own loopback peer), with `headers`.
async fn login_through_proxy(mesh: &TestMesh, headers: &[(&str, String)]) -> Answer {
    let mut request = mesh
        .client
        .raw()
        .post(mesh.client.url("/v1/auth/login"))
        .json(&json!({ "phone": unique_phone(), "password": "wrong password" }));
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    crate::harness::answer(request.send().await.expect("login answered")).await
}

/// Behind proxies that write `X-Forwarded-For` (the default), a client's own `Forwarded`
/// header does not choose its address: rotating it does not escape the per-address sign-in
/// limit. Told that its proxies write `Forwarded`, the edge believes that one instead, and
/// the client's own `X-Forwarded-For` is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_pick_its_address_with_a_header_the_proxies_do_not_write() {
    let behind_proxy = |header: mesh_edge::ForwardedHeader| {
        move |s: &mut nats_mesh::Settings| {
            s.guard.limits.auth_per_ip =
                mesh_edge::Quota::new(2, std::time::Duration::from_secs(60));
            s.guard.trusted_proxies = vec![mesh_edge::Cidr::parse("127.0.0.0/8").unwrap()];
            s.guard.forwarded_header = header;
        }
    };
    use mesh_edge::ForwardedHeader::{Forwarded, XForwardedFor};
    // (what the proxies write, a client's own header with its spelling of an address, the
    // header the proxies wrote naming the client)
    type Spell = fn(&str) -> String;
    let cases: [(_, &str, Spell, (&str, &str)); 2] = [
        (
            XForwardedFor,
            "forwarded",
            |ip| format!("for={ip}"),
            ("x-forwarded-for", "198.51.100.7"),
        ),
        (
            Forwarded,
            "x-forwarded-for",
            |ip| ip.to_owned(),
            ("forwarded", "for=198.51.100.7;proto=https"),
        ),
    ];
    for (written, forged_header, spell, (named_header, named)) in cases {
        let mesh = TestMesh::spawn_with(behind_proxy(written)).await;
        for n in 0..2 {
            let forged = [(forged_header, spell(&format!("203.0.113.{n}")))];
            let guess = login_through_proxy(&mesh, &forged).await;
            assert_problem(&guess, StatusCode::UNAUTHORIZED, "invalid_credentials");
        }
        let forged = [(forged_header, spell("203.0.113.99"))];
        let refused = login_through_proxy(&mesh, &forged).await;
        assert_problem(&refused, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
        // The header the proxies write still names the client.
        let guess = login_through_proxy(&mesh, &[(named_header, named.to_owned())]).await;
        assert_problem(&guess, StatusCode::UNAUTHORIZED, "invalid_credentials");
        mesh.stop().await;
    }
}
