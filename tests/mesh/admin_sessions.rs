//! Operators and other accounts' sessions (issue #17): an administrator lists a user's devices
//! and signs one or all of them out, the revoked tokens are refused at once, the acts land in
//! the audit log; plain users, unknown accounts and malformed ids are refused. Also the
//! server-side account search of the admin listing (`q`).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{Client, TestMesh, Tokens, assert_problem, unique_phone, wait_until};
use crate::rbac::{root, user_with_role};
use crate::social_friends::ok;
use crate::users::{enc, wait_revoked};

/// Signs `phone` in as the device `device`.
async fn sign_in(c: &Client, phone: &str, device: &str) -> Tokens {
    let body = ok(c
        .post(
            "/v1/auth/login",
            json!({ "phone": phone, "password": crate::harness::PASSWORD, "device_name": device }),
        )
        .await);
    Tokens::from(&body)
}

async fn delete(c: &Client, path: &str, token: &str) -> (StatusCode, Value) {
    c.send(Method::DELETE, path, Some(token), None).await
}

fn session_ids(list: &Value) -> Vec<&str> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_lists_and_revokes_another_users_sessions() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let root = root(c).await;
    // The built-in `admin` role holds the new permissions (migration 0004).
    let admin = user_with_role(c, &root, "Ada", "admin").await;
    let phone = unique_phone();
    let ann = c.register(&phone, "Ann").await;
    let ann_id = ann["id"].as_str().unwrap();
    let on_phone = sign_in(c, &phone, "phone").await;
    let on_laptop = sign_in(c, &phone, "laptop").await;
    let sessions = format!("/v1/admin/users/{ann_id}/sessions");

    let listed = ok(c.get_as(&sessions, &admin.access).await);
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "register, phone and laptop: {listed}");
    // Newest first, with what an operator needs to tell the devices apart.
    assert_eq!(items[0]["id"], on_laptop.session_id.as_str());
    assert_eq!(items[0]["device_name"], "laptop");
    assert_eq!(items[1]["device_name"], "phone");
    assert_eq!(items[0]["ip"], "127.0.0.1");
    for item in items {
        assert_eq!(item["current"], false, "{item}");
        assert!(item["created_at"].is_string() && item["last_used_at"].is_string());
    }

    // One device signed out: its token is refused, its refresh token dead, the others live.
    let one = format!("{sessions}/{}", on_phone.session_id);
    let body = ok(delete(c, &one, &admin.access).await);
    assert_eq!(body["revoked_sessions"], 1);
    wait_revoked(c, &on_phone.access).await;
    assert_problem(
        &c.post(
            "/v1/auth/refresh",
            json!({ "refresh_token": on_phone.refresh }),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    );
    assert_eq!(
        c.get_as("/v1/users/me", &on_laptop.access).await.0,
        StatusCode::OK
    );
    let listed = ok(c.get_as(&sessions, &admin.access).await);
    assert_eq!(session_ids(&listed).len(), 2, "{listed}");
    assert!(!session_ids(&listed).contains(&on_phone.session_id.as_str()));
    // Gone is gone; and a session is found only under its own account.
    assert_problem(
        &delete(c, &one, &admin.access).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let other = format!(
        "/v1/admin/users/{}/sessions/{}",
        admin.user_id, on_laptop.session_id
    );
    assert_problem(
        &delete(c, &other, &admin.access).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // Signed out everywhere.
    let body = ok(delete(c, &sessions, &admin.access).await);
    assert_eq!(body["revoked_sessions"], 2);
    wait_revoked(c, &on_laptop.access).await;
    assert_eq!(
        ok(c.get_as(&sessions, &admin.access).await)["items"],
        json!([])
    );
    assert_eq!(
        ok(delete(c, &sessions, &admin.access).await)["revoked_sessions"],
        0
    );
    // Ann can sign in again: the account is not disabled.
    sign_in(c, &phone, "phone again").await;

    // Both acts are in the audit log, naming the account and the session.
    let audit = |action: &'static str| {
        let token = root.access.clone();
        async move {
            let (status, page) = c
                .get_as(&format!("/v1/admin/audit?action={action}"), &token)
                .await;
            assert_eq!(status, StatusCode::OK, "{page}");
            page["items"].as_array().cloned().unwrap_or_default()
        }
    };
    wait_until("the revocations are audited", || async {
        !audit("admin_revoke_user_session").await.is_empty()
            && audit("admin_revoke_user_sessions").await.len() >= 2
    })
    .await;
    let records = audit("admin_revoke_user_session").await;
    let first = records
        .iter()
        .find(|r| r["status"] == 200)
        .expect("the successful revocation");
    assert_eq!(first["actor_id"], admin.user_id.as_str());
    assert_eq!(first["method"], "DELETE");
    assert_eq!(
        first["path"],
        "/v1/admin/users/{user_id}/sessions/{session_id}"
    );
    assert_eq!(
        first["target"],
        format!("user_id={ann_id},session_id={}", on_phone.session_id)
    );
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_administration_is_refused_without_rights_or_with_bad_ids() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let root = root(c).await;
    let moderator = user_with_role(c, &root, "Mo", "moderator").await;
    let admin = user_with_role(c, &root, "Ada", "admin").await;
    let (bob, bob_tokens) = c.user("Bob").await;
    let (_, eve) = c.user("Eve").await;
    let bob_sessions = format!("/v1/admin/users/{}/sessions", bob["id"].as_str().unwrap());
    let bob_one = format!("{bob_sessions}/{}", bob_tokens.session_id);

    // A plain user may not see or end anyone's sessions, not even with a valid session id.
    for answer in [
        c.get_as(&bob_sessions, &eve.access).await,
        delete(c, &bob_one, &eve.access).await,
        delete(c, &bob_sessions, &eve.access).await,
    ] {
        assert_problem(&answer, StatusCode::FORBIDDEN, "forbidden");
    }
    assert_problem(
        &c.get(&bob_sessions).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert_eq!(
        c.get_as("/v1/users/me", &bob_tokens.access).await.0,
        StatusCode::OK
    );

    // Unknown accounts are 404; malformed ids 400.
    let nobody = uuid::Uuid::now_v7();
    for answer in [
        c.get_as(&format!("/v1/admin/users/{nobody}/sessions"), &admin.access)
            .await,
        delete(
            c,
            &format!("/v1/admin/users/{nobody}/sessions"),
            &admin.access,
        )
        .await,
        delete(
            c,
            &format!(
                "/v1/admin/users/{nobody}/sessions/{}",
                bob_tokens.session_id
            ),
            &admin.access,
        )
        .await,
    ] {
        assert_problem(&answer, StatusCode::NOT_FOUND, "not_found");
    }
    for path in [
        "/v1/admin/users/not-a-uuid/sessions".to_owned(),
        format!("{bob_sessions}/not-a-uuid"),
        format!("{bob_sessions}/{}x", bob_tokens.session_id),
    ] {
        let answer = if path.ends_with("/sessions") {
            c.get_as(&path, &admin.access).await
        } else {
            delete(c, &path, &admin.access).await
        };
        assert_problem(&answer, StatusCode::BAD_REQUEST, "validation_failed");
    }

    // A moderator sees an administrator's sessions but cannot end them (the administrator
    // holds permissions the moderator does not); a plain user's it can.
    let admin_sessions = format!("/v1/admin/users/{}/sessions", admin.user_id);
    assert!(!session_ids(&ok(c.get_as(&admin_sessions, &moderator.access).await)).is_empty());
    assert_problem(
        &delete(c, &admin_sessions, &moderator.access).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_eq!(
        c.get_as("/v1/users/me", &admin.access).await.0,
        StatusCode::OK
    );
    let body = ok(delete(c, &bob_one, &moderator.access).await);
    assert_eq!(body["revoked_sessions"], 1);
    wait_revoked(c, &bob_tokens.access).await;
    mesh.stop().await;
}

/// The pages of the admin listing for `query`, followed to the end; the nicknames found.
async fn search(c: &Client, admin: &Tokens, query: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/admin/users?limit=1&{query}");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={}", enc(cursor)));
        }
        let page = ok(c.get_as(&path, &admin.access).await);
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 1, "{page}");
        found.extend(
            items
                .iter()
                .map(|u| u["nickname"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_search_accounts_by_phone_prefix_nickname_or_id() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let root = root(c).await;
    // Phones sharing a prefix no other account has.
    let prefix = format!("+3{}", &unique_phone()[2..8]);
    let literal = c.register(&format!("{prefix}0001"), "100%_sure").await;
    c.register(&format!("{prefix}0002"), "100 x sure").await;
    c.register(&format!("{prefix}0003"), "Ann_b").await;
    c.register(&unique_phone(), "annabel").await;
    let encode = |q: &str| format!("q={}", enc(q));

    // `%` and `_` match themselves, not any characters.
    assert_eq!(search(c, &root, &encode("100%_")).await, ["100%_sure"]);
    assert_eq!(search(c, &root, &encode("0%")).await, ["100%_sure"]);
    assert_eq!(search(c, &root, &encode("_")).await, ["100%_sure", "Ann_b"]);
    // Nickname substrings in any case; phone prefixes with or without `+`.
    assert_eq!(search(c, &root, &encode("ANN")).await, ["Ann_b", "annabel"]);
    let by_prefix = ["100 x sure", "100%_sure", "Ann_b"];
    assert_eq!(search(c, &root, &encode(&prefix)).await, by_prefix);
    assert_eq!(search(c, &root, &encode(&prefix[1..])).await, by_prefix);
    assert_eq!(
        search(c, &root, &encode(&format!("{prefix}0003"))).await,
        ["Ann_b"]
    );
    // A phone matches from its start only.
    assert!(search(c, &root, &encode("0001")).await.is_empty());
    // An exact id.
    let id = literal["id"].as_str().unwrap();
    assert_eq!(search(c, &root, &encode(id)).await, ["100%_sure"]);
    // Combined with the state filter.
    ok(c.post_as(
        &format!("/v1/admin/users/{id}/disable"),
        &root.access,
        json!({}),
    )
    .await);
    assert_eq!(
        search(c, &root, &format!("{}&disabled=true", encode(&prefix))).await,
        ["100%_sure"]
    );
    assert_eq!(
        search(c, &root, &format!("{}&disabled=false", encode(&prefix))).await,
        ["100 x sure", "Ann_b"]
    );
    // Blank searches list everyone; long ones are refused; plain users may not search.
    let everyone = search(c, &root, "q=%20%20").await;
    assert_eq!(everyone.len(), 5, "{everyone:?}");
    assert_problem(
        &c.get_as(
            &format!("/v1/admin/users?q={}", "a".repeat(65)),
            &root.access,
        )
        .await,
        StatusCode::BAD_REQUEST,
        "validation_failed",
    );
    let (_, eve) = c.user("Eve").await;
    assert_problem(
        &c.get_as("/v1/admin/users?q=ann", &eve.access).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    mesh.stop().await;
}
