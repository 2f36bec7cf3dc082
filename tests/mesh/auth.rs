//! Accounts and sessions end to end: register, login, tokens, refresh rotation, logout.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{
    PASSWORD, TestMesh, Tokens, assert_problem, keys, poll_until, unique_phone, wait_until,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_login_and_read_own_profile() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let phone = unique_phone();
    let profile = c.register(&phone, "  Ann  ").await;
    assert_eq!(profile["nickname"], "Ann");
    assert_eq!(profile["phone"], phone);
    assert_eq!(profile["roles"], json!(["user"]));
    assert!(profile.get("password_hash").is_none() && profile.get("password").is_none());

    let (status, tokens) = c
        .post(
            "/v1/auth/login",
            json!({ "phone": phone, "password": PASSWORD, "device_name": "laptop" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 900);
    assert_eq!(tokens["user_id"], profile["id"]);
    let access = tokens["access_token"].as_str().unwrap();

    let (status, me) = c.get_as("/v1/users/me", access).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["id"], profile["id"]);
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_unknown_phone_and_duplicate_phone_are_refused() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let phone = unique_phone();
    c.register(&phone, "Ann").await;

    let wrong = c
        .post(
            "/v1/auth/login",
            json!({ "phone": phone, "password": "not the password" }),
        )
        .await;
    assert_problem(&wrong, StatusCode::UNAUTHORIZED, "invalid_credentials");
    let unknown = c
        .post(
            "/v1/auth/login",
            json!({ "phone": unique_phone(), "password": PASSWORD }),
        )
        .await;
    assert_problem(&unknown, StatusCode::UNAUTHORIZED, "invalid_credentials");
    let garbage = c
        .post(
            "/v1/auth/login",
            json!({ "phone": "not a phone", "password": PASSWORD }),
        )
        .await;
    assert_problem(&garbage, StatusCode::UNAUTHORIZED, "invalid_credentials");

    let again = c
        .post(
            "/v1/auth/register",
            json!({ "phone": phone, "password": PASSWORD, "nickname": "Bob" }),
        )
        .await;
    assert_problem(&again, StatusCode::CONFLICT, "phone_taken");
    // The same number written without '+' is the same phone.
    let bare = c.post("/v1/auth/register", json!({ "phone": phone.trim_start_matches('+'), "password": PASSWORD, "nickname": "Bob" })).await;
    assert_problem(&bare, StatusCode::CONFLICT, "phone_taken");
    mesh.stop().await;
}

/// Signs `claims` as an access token with `private_pem`, using the test key's `kid`.
fn sign(claims: &serde_json::Value, private_pem: &str) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(mesh_contracts::auth::key_id(&keys().public_pem));
    let key = jsonwebtoken::EncodingKey::from_ed_pem(private_pem.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Claims that would be valid for `user`/`session` on the test mesh.
fn claims(user: &str, session: &str) -> serde_json::Value {
    json!({
        "sub": user, "sid": session, "jti": uuid::Uuid::new_v4(), "roles": ["user", "admin"],
        "iss": "nats-mesh-test", "aud": "nats-mesh-test", "iat": now(), "exp": now() + 600,
    })
}

fn b64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_unsigned_and_foreign_tokens_are_refused() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, tokens) = c.user("Ann").await;
    let base = claims(&tokens.user_id, &tokens.session_id);

    // Control: a correctly signed token of our own making is accepted, so the refusals
    // below are caused by the one thing each changes.
    let good = sign(&base, &keys().private_pem);
    assert_eq!(c.get_as("/v1/users/me", &good).await.0, StatusCode::OK);

    let other_key = mesh_user::keys::generate().unwrap();
    let forged = sign(&base, &other_key.private_pem);
    assert_problem(
        &c.get_as("/v1/users/me", &forged).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );

    let mut expired = base.clone();
    expired["iat"] = json!(now() - 7200);
    expired["exp"] = json!(now() - 3600);
    let expired = sign(&expired, &keys().private_pem);
    assert_problem(
        &c.get_as("/v1/users/me", &expired).await,
        StatusCode::UNAUTHORIZED,
        "token_expired",
    );

    let mut foreign_aud = base.clone();
    foreign_aud["aud"] = json!("someone-else");
    let foreign_aud = sign(&foreign_aud, &keys().private_pem);
    assert_problem(
        &c.get_as("/v1/users/me", &foreign_aud).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );

    let mut foreign_iss = base.clone();
    foreign_iss["iss"] = json!("evil");
    let foreign_iss = sign(&foreign_iss, &keys().private_pem);
    assert_problem(
        &c.get_as("/v1/users/me", &foreign_iss).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );

    let unsigned = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(serde_json::to_string(&base).unwrap().as_bytes())
    );
    assert_problem(
        &c.get_as("/v1/users/me", &unsigned).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );

    let hs256 = {
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        let key = jsonwebtoken::EncodingKey::from_secret(keys().public_pem.as_bytes());
        jsonwebtoken::encode(&header, &base, &key).unwrap()
    };
    assert_problem(
        &c.get_as("/v1/users/me", &hs256).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );

    // A tampered payload breaks the signature.
    let mut parts: Vec<String> = tokens.access.split('.').map(str::to_owned).collect();
    let mut tampered = base.clone();
    tampered["sub"] = json!(uuid::Uuid::now_v7());
    parts[1] = b64(serde_json::to_string(&tampered).unwrap().as_bytes());
    assert_problem(
        &c.get_as("/v1/users/me", &parts.join(".")).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotates_and_a_replayed_token_revokes_the_session() {
    // No grace: any second use of a rotated token is a replay.
    let mesh = TestMesh::spawn_with(|s| s.refresh_reuse_grace = std::time::Duration::ZERO).await;
    let c = &mesh.client;
    let (_, first) = c.user("Ann").await;

    let (status, body) = c
        .post(
            "/v1/auth/refresh",
            json!({ "refresh_token": first.refresh }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second = Tokens::from(&body);
    assert_ne!(second.refresh, first.refresh);
    assert_ne!(second.access, first.access);
    assert_eq!(second.session_id, first.session_id);
    assert_eq!(
        c.get_as("/v1/users/me", &second.access).await.0,
        StatusCode::OK
    );

    // The old refresh token comes back: it leaked. The whole session dies.
    let replay = c
        .post(
            "/v1/auth/refresh",
            json!({ "refresh_token": first.refresh }),
        )
        .await;
    assert_problem(&replay, StatusCode::UNAUTHORIZED, "refresh_token_reused");
    let after = c
        .post(
            "/v1/auth/refresh",
            json!({ "refresh_token": second.refresh }),
        )
        .await;
    assert_problem(&after, StatusCode::UNAUTHORIZED, "invalid_refresh_token");
    wait_until("access token of the revoked session refused", || async {
        c.get_as("/v1/users/me", &second.access).await.0 == StatusCode::UNAUTHORIZED
    })
    .await;
    assert_problem(
        &c.get_as("/v1/users/me", &second.access).await,
        StatusCode::UNAUTHORIZED,
        "session_revoked",
    );

    let unknown = c
        .post(
            "/v1/auth/refresh",
            json!({ "refresh_token": "f".repeat(64) }),
        )
        .await;
    assert_problem(&unknown, StatusCode::UNAUTHORIZED, "invalid_refresh_token");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_with_one_token_have_exactly_one_winner() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    for round in 0..3 {
        let (_, tokens) = c.user(&format!("Racer {round}")).await;
        let body = json!({ "refresh_token": tokens.refresh });
        let attempts = (0..4).map(|_| c.post("/v1/auth/refresh", body.clone()));
        let answers = futures::future::join_all(attempts).await;
        let winners: Vec<_> = answers
            .iter()
            .filter(|(s, _)| *s == StatusCode::OK)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {answers:?}");
        for (status, body) in answers.iter().filter(|(s, _)| *s != StatusCode::OK) {
            assert_eq!(*status, StatusCode::CONFLICT, "{body}");
            assert_eq!(body["code"], "refresh_conflict");
        }
        // The winner's new tokens keep working: losing a race is not a replay.
        let won = Tokens::from(&winners[0].1);
        assert_eq!(
            c.get_as("/v1/users/me", &won.access).await.0,
            StatusCode::OK
        );
        let next = c
            .post("/v1/auth/refresh", json!({ "refresh_token": won.refresh }))
            .await;
        assert_eq!(next.0, StatusCode::OK, "{}", next.1);
    }
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_is_refused_on_every_edge_and_logout_all_ends_every_device() {
    let mut mesh = TestMesh::spawn().await;
    let second_edge = mesh.spawn_edge().await;
    let c = mesh.client.clone();
    let phone = unique_phone();
    // Registering signs the laptop in; the other devices log in.
    let laptop = Tokens::from(&c.register(&phone, "Ann").await);
    let phone_device = c.login(&phone).await;
    let tablet = c.login(&phone).await;
    assert_eq!(
        second_edge.get_as("/v1/users/me", &laptop.access).await.0,
        StatusCode::OK
    );

    let (status, body) = c
        .post_as("/v1/auth/logout", &laptop.access, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["revoked_sessions"], 1);
    wait_until("the other edge refuses the logged-out token", || async {
        second_edge.get_as("/v1/users/me", &laptop.access).await.0 == StatusCode::UNAUTHORIZED
    })
    .await;
    assert_problem(
        &second_edge.get_as("/v1/users/me", &laptop.access).await,
        StatusCode::UNAUTHORIZED,
        "session_revoked",
    );
    assert_problem(
        &c.get_as("/v1/users/me", &laptop.access).await,
        StatusCode::UNAUTHORIZED,
        "session_revoked",
    );
    let refresh = c
        .post(
            "/v1/auth/refresh",
            json!({ "refresh_token": laptop.refresh }),
        )
        .await;
    assert_problem(&refresh, StatusCode::UNAUTHORIZED, "invalid_refresh_token");
    // Other devices are untouched by a single logout.
    assert_eq!(
        second_edge
            .get_as("/v1/users/me", &phone_device.access)
            .await
            .0,
        StatusCode::OK
    );

    let (status, body) = second_edge
        .post_as("/v1/auth/logout-all", &phone_device.access, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["revoked_sessions"], 2);
    for device in [&phone_device, &tablet] {
        wait_until("every device is signed out on the first edge", || async {
            c.get_as("/v1/users/me", &device.access).await.0 == StatusCode::UNAUTHORIZED
        })
        .await;
    }
    // Signing in again works.
    let fresh = c.login(&phone).await;
    assert_eq!(
        second_edge.get_as("/v1/users/me", &fresh.access).await.0,
        StatusCode::OK
    );
    mesh.stop().await;
}

/// A session revoked as its token was issued stays refused for as long as an edge still takes
/// the token (its expiry plus the clock leeway), not only for the access-token lifetime: the
/// edge that saw the revocation remembers it, and an edge started later finds it in the
/// `REVOKED` bucket. (Both forgot it after the lifetime, and the token worked again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_outlives_the_access_token_lifetime() {
    let access_ttl = Duration::from_secs(2);
    let mut mesh = TestMesh::spawn_with(|s| s.access_ttl = access_ttl).await;
    let c = mesh.client.clone();
    let phone = unique_phone();
    c.register(&phone, "Ann").await;
    let ann = c.login(&phone).await;
    let (status, body) = c.post_as("/v1/auth/logout", &ann.access, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let revoked_at = Instant::now();
    wait_until("the edge refuses the logged-out token", || async {
        c.get_as("/v1/users/me", &ann.access).await.0 == StatusCode::UNAUTHORIZED
    })
    .await;
    // The token expires with the lifetime but is taken for the 30 s leeway after it: refused
    // all along, until well past the lifetime.
    let past_lifetime = access_ttl + Duration::from_secs(2);
    poll_until(
        "the access-token lifetime to pass",
        past_lifetime + Duration::from_secs(10),
        || async {
            assert_problem(
                &c.get_as("/v1/users/me", &ann.access).await,
                StatusCode::UNAUTHORIZED,
                "session_revoked",
            );
            (revoked_at.elapsed() > past_lifetime).then_some(())
        },
    )
    .await;
    let late_edge = mesh.spawn_edge().await;
    assert_problem(
        &late_edge.get_as("/v1/users/me", &ann.access).await,
        StatusCode::UNAUTHORIZED,
        "session_revoked",
    );
    mesh.stop().await;
}

/// `mesh migrate` brings an existing `REVOKED` bucket to the age the settings ask for (an
/// upgrade from a release that kept revocations for the access-token lifetime only), and the
/// serving roles start on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_updates_the_age_of_an_existing_revocation_bucket() {
    use mesh_contracts::Bucket;
    use mesh_contracts::nats_permissions::NatsRole;

    let mut mesh = TestMesh::spawn().await;
    let age = async |mesh: &TestMesh| {
        let client = mesh.nats_client_as(NatsRole::Migrate).await;
        let name = mesh.settings.prefix.bucket(Bucket::Revoked);
        let bucket = async_nats::jetstream::new(client)
            .get_key_value(&name)
            .await
            .expect("the REVOKED bucket");
        bucket.status().await.expect("bucket status").max_age()
    };
    let wanted = mesh_edge::revocation_ttl(mesh.settings.access_ttl);
    assert!(wanted > mesh.settings.access_ttl);
    assert_eq!(age(&mesh).await, wanted);
    // As an older release left it.
    let mut older = mesh.settings.clone();
    older.access_ttl = Duration::from_secs(60);
    let left = nats_mesh::roles::topology_settings(&older);
    let migrate = mesh.bus_as(NatsRole::Migrate, "older-migrate").await;
    // Migrate never shortens the age of an existing bucket, so the older one is made anew.
    migrate.delete_bucket(Bucket::Revoked).await;
    migrate
        .ensure_topology(&left)
        .await
        .expect("older topology");
    assert_ne!(age(&mesh).await, wanted);
    nats_mesh::roles::migrate_nats(&mesh.settings)
        .await
        .expect("migrate");
    assert_eq!(age(&mesh).await, wanted);
    let edge = mesh.spawn_edge().await;
    assert_eq!(edge.get("/healthz").await.0, StatusCode::OK);
    mesh.stop().await;
}

/// Roles whose `MESH_ACCESS_TTL` differs from the one `mesh migrate` ran with cannot split
/// the revocation guarantee: a user role or edge whose tokens would outlive the `REVOKED`
/// bucket's memory refuses to start (and starts once migrate ran with its lifetime), and an
/// edge lets no token live longer than its own setting from its issue, so none outlives a
/// revocation the edge forgets after that. Roles that never touch the bucket do not care.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_outlives_what_the_edges_remember_of_its_revocation() {
    use mesh_contracts::nats_permissions::NatsRole;

    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let mut longer = mesh.settings.clone();
    longer.access_ttl = mesh.settings.access_ttl * 4;
    for role in [NatsRole::User, NatsRole::Edge] {
        let Err(refused) = nats_mesh::roles::connect_bus(&longer, role, "test-longer-ttl").await
        else {
            panic!("{role:?} started with tokens outliving the REVOKED bucket");
        };
        let refused = refused.to_string();
        assert!(
            refused.contains("MESH_ACCESS_TTL") && refused.contains("mesh migrate"),
            "{role:?}: {refused}"
        );
    }
    nats_mesh::roles::connect_bus(&longer, NatsRole::Chat, "test-chat")
        .await
        .expect("the chat role binds whatever the lifetime")
        .drain()
        .await;
    nats_mesh::roles::connect_bus(&mesh.settings, NatsRole::User, "test-same-ttl")
        .await
        .expect("the lifetime migrate ran with binds")
        .drain()
        .await;

    // The running edge grants a token no more than its own lifetime from its issue, whatever
    // the token says: one issued longer ago than that is expired (the client refreshes), one
    // issued just now works.
    let (_, tokens) = c.user("Ann").await;
    let lifetime = mesh.settings.access_ttl.as_secs() as i64;
    let mut old = claims(&tokens.user_id, &tokens.session_id);
    old["iat"] = json!(now() - lifetime - 120);
    old["exp"] = json!(now() + 10 * lifetime);
    let old = sign(&old, &keys().private_pem);
    assert_problem(
        &c.get_as("/v1/users/me", &old).await,
        StatusCode::UNAUTHORIZED,
        "token_expired",
    );
    let mut recent = claims(&tokens.user_id, &tokens.session_id);
    recent["exp"] = json!(now() + 10 * lifetime);
    let recent = sign(&recent, &keys().private_pem);
    assert_eq!(c.get_as("/v1/users/me", &recent).await.0, StatusCode::OK);

    // Migrated with the longer lifetime, the bucket keeps revocations long enough for it; and
    // a later migrate with the shorter one (an upgrade lowering the setting while pods of the
    // longer one still run) does not shorten it again.
    nats_mesh::roles::migrate_nats(&longer)
        .await
        .expect("migrate with the longer lifetime");
    nats_mesh::roles::migrate_nats(&mesh.settings)
        .await
        .expect("migrate with the shorter lifetime");
    nats_mesh::roles::connect_bus(&longer, NatsRole::User, "test-longer-migrated")
        .await
        .expect("binds once migrate ran with its lifetime")
        .drain()
        .await;
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_refuses_out_of_bounds_fields_with_validation_codes() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let cases = [
        json!({ "phone": "12", "password": PASSWORD, "nickname": "Ann" }),
        json!({ "phone": unique_phone(), "password": "short", "nickname": "Ann" }),
        json!({ "phone": unique_phone(), "password": PASSWORD, "nickname": "   " }),
        json!({ "phone": unique_phone(), "password": PASSWORD, "nickname": "Ann", "avatar": "ftp://x" }),
    ];
    for body in cases {
        let answer = c.post("/v1/auth/register", body.clone()).await;
        assert_problem(&answer, StatusCode::BAD_REQUEST, "validation_failed");
    }
    mesh.stop().await;
}

/// A storm of slow sign-ins (each waiting out a throttle delay) takes every turn of the user
/// service's `login` endpoint, yet the service's other operations answer at once: each
/// operation has its own bound. And the sign-ins whose callers gave up are dropped at their
/// callers' deadline (`Mesh-Deadline`), not hashed and signed in for nobody after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_storm_holds_back_neither_other_operations_nor_past_its_callers() {
    use mesh_contracts::Service;
    use mesh_contracts::nats_permissions::NatsRole;

    const STORM: usize = 300;
    let delay = Duration::from_secs(3);
    let patience = Duration::from_millis(2_500);
    let mesh = TestMesh::spawn_with(|s| {
        // Every sign-in waits `delay` before its hash; none is ever locked.
        s.login_throttle = mesh_user::LoginThrottle {
            delay_after: 0,
            lock_after: 1_000_000,
            ip_lock_after: 1_000_000,
            base_delay: delay,
            max_delay: delay,
        };
    })
    .await;
    let c = &mesh.client;
    let phone = unique_phone();
    let registered = c
        .post(
            "/v1/auth/register",
            json!({ "phone": phone, "password": PASSWORD, "nickname": "Ann" }),
        )
        .await;
    assert_eq!(registered.0, StatusCode::CREATED, "{}", registered.1);
    let tokens = Tokens::from(&registered.1);
    let db = sqlx::PgPool::connect(mesh.database_url())
        .await
        .expect("connect to the test database");
    let sessions = async || -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM users.sessions")
            .fetch_one(&db)
            .await
            .expect("count sessions")
    };
    assert_eq!(sessions().await, 1);

    // More sign-ins than the endpoint takes at once (256), sent as the edge sends them, with
    // the deadline of a caller waiting `patience`.
    let nats = mesh.nats_client_as(NatsRole::Edge).await;
    let subject = mesh.settings.prefix.rpc(Service::User, "login");
    let body = serde_json::to_vec(&json!({ "phone": phone, "password": PASSWORD })).unwrap();
    let mut storm = tokio::task::JoinSet::new();
    for _ in 0..STORM {
        let (nats, subject, body) = (nats.clone(), subject.clone(), body.clone());
        storm.spawn(async move {
            let mut headers = async_nats::HeaderMap::new();
            mesh_nats::put_deadline(&mut headers, patience);
            let request = async_nats::Request::new()
                .payload(body.into())
                .headers(headers)
                .timeout(Some(patience));
            let _ = nats.send_request(subject, request).await;
        });
    }
    nats.flush().await.expect("flush");
    // The storm holds every turn of `login` (its bound, 256, as the service reports it).
    let gauge = |name: &str| {
        let line = format!("{name}{{subject=\"{subject}\"}} ");
        async move {
            let text = c.metrics_text().await;
            text.lines()
                .find_map(|l| l.strip_prefix(line.as_str())?.parse::<f64>().ok())
        }
    };
    let turns = gauge("mesh_rpc_server_turns").await;
    assert_eq!(turns, Some(256.0), "login's bound as reported");
    wait_until("every turn of login taken by the storm", || async {
        gauge("mesh_rpc_server_in_flight").await == turns
    })
    .await;

    // The service's other operations answer while the storm holds `login`.
    let asked = Instant::now();
    let (status, me) = c.get_as("/v1/users/me", &tokens.access).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    let refreshed = c
        .post(
            "/v1/auth/refresh",
            json!({ "refresh_token": tokens.refresh }),
        )
        .await;
    assert_eq!(refreshed.0, StatusCode::OK, "{}", refreshed.1);
    let waited = asked.elapsed();
    assert!(
        waited < Duration::from_secs(2),
        "get_me and refresh waited {waited:?} behind the sign-ins"
    );

    // Past the callers' deadline every sign-in is dropped.
    while storm.join_next().await.is_some() {}
    // Each was answered `timeout` (its caller may see why), and counted so.
    let labels = [
        format!("subject=\"{subject}\""),
        "outcome=\"timeout\"".to_owned(),
    ];
    let timed_out = async || {
        let text = c.metrics_text().await;
        text.lines()
            .filter(|line| line.starts_with("mesh_rpc_server_requests_total{"))
            .find(|line| labels.iter().all(|label| line.contains(label.as_str())))
            .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
    };
    let counted = tokio::time::timeout(Duration::from_secs(10), async {
        while timed_out().await != Some(STORM as f64) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        counted.is_ok(),
        "sign-ins answered timeout: {:?}",
        timed_out().await
    );
    // Every one answered `timeout` was dropped before it ran to the end: none was hashed and
    // signed in, now or later.
    assert_eq!(
        sessions().await,
        1,
        "sign-ins nobody waited for opened sessions"
    );
    // Their turns are all given back.
    wait_until("login's turns given back", || async {
        gauge("mesh_rpc_server_in_flight").await == Some(0.0)
    })
    .await;
    mesh.stop().await;
}
