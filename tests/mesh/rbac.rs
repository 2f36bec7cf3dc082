//! Permissions through the API (issue #15): roles created, changed and deleted by
//! administrators, direct grants, effective permissions, nobody granting what they do not hold,
//! and every edge dropping a changed role from its cache within moments.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{Client, TestMesh, Tokens, assert_problem, unique_phone, wait_until};
use crate::social_friends::ok;

/// The phone that the test settings make a `super_admin` when it registers.
const ROOT_PHONE: &str = "+10000000001";

/// Registers the bootstrap super admin and logs it in.
pub async fn root(c: &Client) -> Tokens {
    c.register(ROOT_PHONE, "Root").await;
    c.login(ROOT_PHONE).await
}

/// A new user holding `role` (granted by `root`), signed in after the grant.
pub async fn user_with_role(c: &Client, root: &Tokens, nickname: &str, role: &str) -> Tokens {
    let phone = unique_phone();
    let profile = c.register(&phone, nickname).await;
    let id = profile["id"].as_str().unwrap();
    ok(c.send(
        Method::PUT,
        &format!("/v1/admin/users/{id}/roles/{role}"),
        Some(&root.access),
        None,
    )
    .await);
    c.login(&phone).await
}

async fn put(c: &Client, path: &str, token: &str, body: Option<Value>) -> (StatusCode, Value) {
    c.send(Method::PUT, path, Some(token), body.as_ref()).await
}

async fn delete(c: &Client, path: &str, token: &str) -> (StatusCode, Value) {
    c.send(Method::DELETE, path, Some(token), None).await
}

async fn patch(c: &Client, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
    c.send(Method::PATCH, path, Some(token), Some(&body)).await
}

/// A role created by an administrator grants its permissions to holders on every edge; when
/// the role changes, both edges refuse within moments (the cache is dropped by the event), and
/// deleting the role takes it from its holders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_roles_bite_and_change_on_every_edge() {
    let mut mesh = TestMesh::spawn().await;
    let second = mesh.spawn_edge().await;
    let c = &mesh.client;
    let root = root(c).await;

    let (status, role) = c
        .post_as(
            "/v1/admin/roles",
            &root.access,
            json!({"name": "support", "description": "reads accounts", "permissions": ["users:read"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{role}");
    assert_eq!(role["builtin"], false);
    let roles = ok(c.get_as("/v1/admin/roles", &root.access).await);
    let names: Vec<&str> = roles["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["admin", "moderator", "super_admin", "user", "support"]
    );

    let sam = user_with_role(c, &root, "Sam", "support").await;
    // Warm both edges' caches, then narrow the role.
    for edge in [c, &second] {
        assert_eq!(
            edge.get_as("/v1/admin/users", &sam.access).await.0,
            StatusCode::OK
        );
        assert_problem(
            &edge.get_as("/v1/admin/audit", &sam.access).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        );
    }
    let (status, changed) = patch(
        c,
        "/v1/admin/roles/support",
        &root.access,
        json!({"permissions": ["audit:read"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["permissions"], json!(["audit:read"]));
    // `admin_user_permissions` answers from the database; the audit route is decided by the
    // edge's cache first, so it passes only once each edge dropped its copy of the role.
    for edge in [c, &second] {
        wait_until("the edge reads the changed role", || async {
            edge.get_as("/v1/admin/audit", &sam.access).await.0 == StatusCode::OK
        })
        .await;
        assert_problem(
            &edge.get_as("/v1/admin/users", &sam.access).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        );
    }

    // Deleting the role takes it from its holders.
    let (status, _) = delete(c, "/v1/admin/roles/support", &root.access).await;
    assert_eq!(status, StatusCode::OK);
    for edge in [c, &second] {
        wait_until("the edge forgets the deleted role", || async {
            edge.get_as("/v1/admin/audit", &sam.access).await.0 == StatusCode::FORBIDDEN
        })
        .await;
    }
    let me = ok(c.get_as("/v1/users/me", &sam.access).await);
    assert_eq!(me["roles"], json!(["user"]));
    mesh.stop().await;
}

/// Direct grants add to a user's roles and show in the effective permissions; revoking one
/// takes it away on the edge within moments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_grants_and_effective_permissions() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let root = root(c).await;
    let (ann, ann_tokens) = c.user("Ann").await;
    let ann_id = ann["id"].as_str().unwrap();

    let view = ok(c
        .get_as(
            &format!("/v1/admin/users/{ann_id}/permissions"),
            &root.access,
        )
        .await);
    assert_eq!(view["roles"], json!(["user"]));
    assert_eq!(view["effective"], json!([]));
    assert_problem(
        &c.get_as("/v1/admin/audit", &ann_tokens.access).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );

    let (status, view) = put(
        c,
        &format!("/v1/admin/users/{ann_id}/permissions/audit:read"),
        &root.access,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["direct"], json!(["audit:read"]));
    assert_eq!(view["effective"], json!(["audit:read"]));
    // The same token works now: direct grants are not in the token.
    wait_until("the direct grant counts at the edge", || async {
        c.get_as("/v1/admin/audit", &ann_tokens.access).await.0 == StatusCode::OK
    })
    .await;
    // Roles and direct grants add up.
    ok(put(
        c,
        &format!("/v1/admin/users/{ann_id}/roles/moderator"),
        &root.access,
        None,
    )
    .await);
    let view = ok(c
        .get_as(
            &format!("/v1/admin/users/{ann_id}/permissions"),
            &root.access,
        )
        .await);
    assert_eq!(view["roles"], json!(["user", "moderator"]));
    assert_eq!(
        view["effective"],
        json!([
            "audit:read",
            "groups:moderate",
            "messages:moderate",
            "sessions:read",
            "sessions:revoke",
            "users:disable",
            "users:read"
        ])
    );

    let (status, view) = delete(
        c,
        &format!("/v1/admin/users/{ann_id}/permissions/audit:read"),
        &root.access,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["direct"], json!([]));
    wait_until("the revoked grant stops counting", || async {
        c.get_as("/v1/admin/audit", &ann_tokens.access).await.0 == StatusCode::FORBIDDEN
    })
    .await;

    // Malformed and unknown permissions, unknown roles.
    for bad in ["users", "users:fly", "*:read", "Users:read"] {
        let answer = put(
            c,
            &format!("/v1/admin/users/{ann_id}/permissions/{bad}"),
            &root.access,
            None,
        )
        .await;
        assert_problem(&answer, StatusCode::BAD_REQUEST, "validation_failed");
    }
    let answer = put(
        c,
        &format!("/v1/admin/users/{ann_id}/roles/nosuch"),
        &root.access,
        None,
    )
    .await;
    assert_problem(&answer, StatusCode::BAD_REQUEST, "validation_failed");
    mesh.stop().await;
}

/// Nobody grants what they do not hold; built-in roles stay; the last super_admin stays; every
/// administrative act lands in the audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grantors_hold_what_they_grant_and_the_last_super_admin_stays() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let root = root(c).await;
    let root_id = root.user_id.clone();
    let admin = user_with_role(c, &root, "Ada", "admin").await;
    let moderator = user_with_role(c, &root, "Mo", "moderator").await;
    let (bob, _) = c.user("Bob").await;
    let bob_id = bob["id"].as_str().unwrap();

    // A moderator does not hold `roles:grant` or `roles:write`.
    assert_problem(
        &put(
            c,
            &format!("/v1/admin/users/{bob_id}/roles/moderator"),
            &moderator.access,
            None,
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_problem(
        &c.post_as(
            "/v1/admin/roles",
            &moderator.access,
            json!({"name": "x", "permissions": []}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    // An admin holds neither `*:*` nor, say, a wildcard it lacks.
    for permissions in [json!(["*:*"]), json!(["audit:*"])] {
        assert_problem(
            &c.post_as(
                "/v1/admin/roles",
                &admin.access,
                json!({"name": "wide", "permissions": permissions}),
            )
            .await,
            StatusCode::FORBIDDEN,
            "forbidden",
        );
    }
    for path in [
        format!("/v1/admin/users/{bob_id}/roles/super_admin"),
        format!("/v1/admin/users/{bob_id}/permissions/*:*"),
    ] {
        assert_problem(
            &put(c, &path, &admin.access, None).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        );
    }
    // An admin may not disable the super_admin (who holds more than it does) ...
    assert_problem(
        &c.post_as(
            &format!("/v1/admin/users/{root_id}/disable"),
            &admin.access,
            json!({}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    // ... but grants what it holds.
    let view = ok(put(
        c,
        &format!("/v1/admin/users/{bob_id}/roles/moderator"),
        &admin.access,
        None,
    )
    .await);
    assert_eq!(view["roles"], json!(["user", "moderator"]));

    // Built-in roles cannot be deleted; super_admin's permissions cannot change; names are
    // checked; a taken name conflicts.
    assert_problem(
        &delete(c, "/v1/admin/roles/moderator", &root.access).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    assert_problem(
        &patch(
            c,
            "/v1/admin/roles/super_admin",
            &root.access,
            json!({"permissions": []}),
        )
        .await,
        StatusCode::CONFLICT,
        "conflict",
    );
    for bad in [
        json!({"name": "Bad Name", "permissions": []}),
        json!({"name": "ok", "permissions": ["users:fly"]}),
    ] {
        let answer = c
            .post_as("/v1/admin/roles", &root.access, bad.clone())
            .await;
        assert_eq!(answer.0, StatusCode::BAD_REQUEST, "{bad}: {}", answer.1);
    }
    assert_problem(
        &c.post_as(
            "/v1/admin/roles",
            &root.access,
            json!({"name": "admin", "permissions": []}),
        )
        .await,
        StatusCode::CONFLICT,
        "conflict",
    );
    assert_problem(
        &delete(c, "/v1/admin/roles/nosuch", &root.access).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // The last super_admin: not revoked, not even by itself; with a second one, it can go.
    assert_problem(
        &delete(
            c,
            &format!("/v1/admin/users/{root_id}/roles/super_admin"),
            &root.access,
        )
        .await,
        StatusCode::CONFLICT,
        "conflict",
    );
    ok(put(
        c,
        &format!("/v1/admin/users/{bob_id}/roles/super_admin"),
        &root.access,
        None,
    )
    .await);
    let view = ok(delete(
        c,
        &format!("/v1/admin/users/{root_id}/roles/super_admin"),
        &root.access,
    )
    .await);
    assert_eq!(view["roles"], json!(["user"]));
    // Now Bob is the last one, and keeps the role.
    let bob_phone = bob["phone"].as_str().unwrap();
    let bob_root = c.login(bob_phone).await;
    assert_problem(
        &delete(
            c,
            &format!("/v1/admin/users/{bob_id}/roles/super_admin"),
            &bob_root.access,
        )
        .await,
        StatusCode::CONFLICT,
        "conflict",
    );

    // Every administrative act is in the audit log.
    for action in [
        "admin_grant_role",
        "admin_revoke_role",
        "admin_create_role",
        "admin_grant_permission",
        "admin_delete_role",
        "admin_disable_user",
    ] {
        wait_until(&format!("audit records of {action}"), || async {
            let (status, page) = c
                .get_as(
                    &format!("/v1/admin/audit?action={action}"),
                    &bob_root.access,
                )
                .await;
            status == StatusCode::OK && !page["items"].as_array().unwrap().is_empty()
        })
        .await;
    }
    mesh.stop().await;
}

/// Enabling an account takes the same standing as disabling it: a moderator holding
/// `users:disable` cannot bring back an administrator a super_admin disabled (it would hand the
/// administrator's permissions back), but can enable an account holding no more than it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_who_holds_what_an_account_is_granted_enables_it() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let root = root(c).await;
    let admin = user_with_role(c, &root, "Ada", "admin").await;
    let moderator = user_with_role(c, &root, "Mo", "moderator").await;
    let (bob, _) = c.user("Bob").await;
    let bob_id = bob["id"].as_str().unwrap();
    let admin_id = admin.user_id.clone();
    // `action` (disable or enable) of account `id`, by `actor`.
    let act = |action: &'static str, id: String, actor: &Tokens| {
        let token = actor.access.clone();
        async move {
            c.post_as(&format!("/v1/admin/users/{id}/{action}"), &token, json!({}))
                .await
        }
    };
    for id in [&admin_id, bob_id] {
        ok(act("disable", id.to_string(), &root).await);
    }

    assert_problem(
        &act("enable", admin_id.clone(), &moderator).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let (_, still) = c
        .get_as(&format!("/v1/admin/users?q={admin_id}"), &root.access)
        .await;
    let listed = still["items"].as_array().expect("a page of accounts");
    assert!(
        listed
            .iter()
            .any(|a| a["id"] == admin_id.as_str() && a["disabled"] == true),
        "the administrator stays disabled: {still}"
    );

    let enabled = ok(act("enable", bob_id.to_string(), &moderator).await);
    assert_eq!(enabled["disabled"], false);
    let enabled = ok(act("enable", admin_id.clone(), &root).await);
    assert_eq!(enabled["disabled"], false);
}
