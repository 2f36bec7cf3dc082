//! Groups end to end: create, read, update, dissolve, join policies, invitations, join
//! requests, leaving, kicking, roles, ownership transfer and mutes, with every refusal and
//! the outbox rows each change writes.

use std::time::Duration;

use mesh_contracts::social::{GetMembership, GroupRole, Membership, MembershipRequest};
use mesh_nats::CallContext;
use nats_mesh::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{Client, TestMesh, Tokens, assert_problem, poll_until};
use crate::social_friends::{column, count, delete_as, ok, outbox_counts, patch_as, put_as};

/// Creates a group owned by `owner`; returns its id.
pub async fn create_group(c: &Client, owner: &Tokens, policy: &str, max_members: u32) -> String {
    let (status, group) = c
        .post_as(
            "/v1/groups",
            &owner.access,
            json!({ "name": format!("{policy} group"), "join_policy": policy, "max_members": max_members }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    group["id"].as_str().unwrap().to_owned()
}

pub async fn join(c: &Client, who: &Tokens, group: &str) -> (StatusCode, Value) {
    c.post_as(&format!("/v1/groups/{group}/join"), &who.access, json!({}))
        .await
}

pub async fn invite(c: &Client, who: &Tokens, group: &str, user: &Tokens) -> (StatusCode, Value) {
    c.post_as(
        &format!("/v1/groups/{group}/invite"),
        &who.access,
        json!({ "user_id": user.user_id }),
    )
    .await
}

/// Joins an open group; panics unless it worked at once.
pub async fn join_open(c: &Client, who: &Tokens, group: &str) {
    let reply = ok(join(c, who, group).await);
    assert_eq!(reply["outcome"], "joined", "{reply}");
}

/// The ids and roles of a group's members, as `who` lists them.
async fn members(c: &Client, who: &Tokens, group: &str) -> Vec<(String, String)> {
    let page = ok(c
        .get_as(
            &format!("/v1/groups/{group}/members?limit=100"),
            &who.access,
        )
        .await);
    column(&page, "user_id")
        .into_iter()
        .zip(column(&page, "role"))
        .collect()
}

pub async fn set_role(
    c: &Client,
    who: &Tokens,
    group: &str,
    user: &Tokens,
    role: &str,
) -> (StatusCode, Value) {
    put_as(
        c,
        &format!("/v1/groups/{group}/members/{}/role", user.user_id),
        &who.access,
        json!({ "role": role }),
    )
    .await
}

pub async fn kick(c: &Client, who: &Tokens, group: &str, user: &Tokens) -> (StatusCode, Value) {
    c.post_as(
        &format!("/v1/groups/{group}/members/{}/kick", user.user_id),
        &who.access,
        json!({}),
    )
    .await
}

pub async fn mute(
    c: &Client,
    who: &Tokens,
    group: &str,
    user: &Tokens,
    body: Value,
) -> (StatusCode, Value) {
    put_as(
        c,
        &format!("/v1/groups/{group}/members/{}/mute", user.user_id),
        &who.access,
        body,
    )
    .await
}

async fn leave(c: &Client, who: &Tokens, group: &str) -> (StatusCode, Value) {
    c.post_as(&format!("/v1/groups/{group}/leave"), &who.access, json!({}))
        .await
}

pub async fn transfer(c: &Client, who: &Tokens, group: &str, to: &Tokens) -> (StatusCode, Value) {
    c.post_as(
        &format!("/v1/groups/{group}/transfer"),
        &who.access,
        json!({ "user_id": to.user_id }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_created_read_updated_and_listed() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("Ann").await;
    let (_, bob) = c.user("Bob").await;
    let (_, cara) = c.user("Cara").await;

    let (status, group) = c
        .post_as(
            "/v1/groups",
            &ann.access,
            json!({ "name": "  Climbers ", "icon": "https://img.example/c.png", "announcement": "Sunday 9am",
                    "join_policy": "open", "max_members": 10 }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    assert_eq!(group["name"], "Climbers");
    assert_eq!(group["icon"], "https://img.example/c.png");
    assert_eq!(group["announcement"], "Sunday 9am");
    assert_eq!(group["join_policy"], "open");
    assert_eq!(
        (
            group["max_members"].as_u64(),
            group["member_count"].as_u64()
        ),
        (Some(10), Some(1))
    );
    assert_eq!(group["owner_id"], ann.user_id.as_str());
    assert_eq!(group["my_role"], "owner");
    let id = group["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/groups/{id}");

    // Defaults: approval, 500 members.
    let (_, plain) = c
        .post_as("/v1/groups", &ann.access, json!({ "name": "Plain" }))
        .await;
    assert_eq!(
        (plain["join_policy"].as_str(), plain["max_members"].as_u64()),
        (Some("approval"), Some(500))
    );

    // Anyone signed in reads the profile; my_role says what they are in it.
    let seen = ok(c.get_as(&path, &bob.access).await);
    assert_eq!(seen["name"], "Climbers");
    assert!(seen["my_role"].is_null());
    assert_problem(
        &c.get_as(&format!("/v1/groups/{}", Uuid::now_v7()), &bob.access)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_problem(
        &c.get(&path).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );

    // Owner and admins update; members and strangers may not.
    let updated = ok(patch_as(
        c,
        &path,
        &ann.access,
        json!({ "name": "Boulderers", "icon": "" }),
    )
    .await);
    assert_eq!(updated["name"], "Boulderers");
    assert!(updated["icon"].is_null());
    assert_eq!(updated["announcement"], "Sunday 9am", "absent fields stay");
    // Bob read the profile before the change; his next read sees it.
    let reread = ok(c.get_as(&path, &bob.access).await);
    assert_eq!(
        (reread["name"].as_str(), reread["icon"].as_str()),
        (Some("Boulderers"), None)
    );
    assert_problem(
        &patch_as(c, &path, &bob.access, json!({ "name": "Mine" })).await,
        StatusCode::FORBIDDEN,
        "not_member",
    );
    join_open(c, &bob, &id).await;
    let joined = ok(c.get_as(&path, &bob.access).await);
    assert_eq!(
        (joined["my_role"].as_str(), joined["member_count"].as_u64()),
        (Some("member"), Some(2))
    );
    assert_problem(
        &patch_as(c, &path, &bob.access, json!({ "name": "Mine" })).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    ok(set_role(c, &ann, &id, &bob, "admin").await);
    let by_admin = ok(patch_as(
        c,
        &path,
        &bob.access,
        json!({ "announcement": "Saturday now" }),
    )
    .await);
    assert_eq!(
        (
            by_admin["announcement"].as_str(),
            by_admin["my_role"].as_str()
        ),
        (Some("Saturday now"), Some("admin"))
    );
    assert_problem(
        &patch_as(c, &path, &ann.access, json!({})).await,
        StatusCode::BAD_REQUEST,
        "validation_failed",
    );
    assert_problem(
        &patch_as(c, &path, &ann.access, json!({ "name": "   " })).await,
        StatusCode::BAD_REQUEST,
        "validation_failed",
    );
    assert_problem(
        &patch_as(
            c,
            &path,
            &ann.access,
            json!({ "icon": "javascript:alert(1)" }),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "validation_failed",
    );
    let unknown = patch_as(
        c,
        &format!("/v1/groups/{}", Uuid::now_v7()),
        &ann.access,
        json!({ "name": "x" }),
    )
    .await;
    assert_problem(&unknown, StatusCode::NOT_FOUND, "not_found");

    for bad in [
        json!({ "name": "" }),
        json!({ "name": "n".repeat(65) }),
        json!({ "name": "ok", "max_members": 1 }),
        json!({ "name": "ok", "max_members": mesh_contracts::social::MAX_GROUP_MEMBERS + 1 }),
        json!({ "name": "ok", "icon": "ftp://x" }),
        json!({ "name": "ok", "announcement": "a".repeat(2001) }),
    ] {
        let refused = c.post_as("/v1/groups", &ann.access, bad.clone()).await;
        assert_problem(&refused, StatusCode::BAD_REQUEST, "validation_failed");
    }
    let bad_policy = c
        .post_as(
            "/v1/groups",
            &ann.access,
            json!({ "name": "ok", "join_policy": "anyone" }),
        )
        .await;
    assert_eq!(bad_policy.0, StatusCode::BAD_REQUEST, "{}", bad_policy.1);

    // My groups: the caller's groups with their role, paged.
    let third = create_group(c, &ann, "invite_only", 5).await;
    let mine = ok(c.get_as("/v1/groups?limit=2", &ann.access).await);
    assert_eq!(
        column(&mine, "id"),
        vec![id.clone(), plain["id"].as_str().unwrap().to_owned()]
    );
    assert_eq!(column(&mine, "my_role"), vec!["owner", "owner"]);
    let cursor = mine["next_cursor"].as_str().expect("a next page");
    let rest = ok(c
        .get_as(&format!("/v1/groups?limit=2&cursor={cursor}"), &ann.access)
        .await);
    assert_eq!(column(&rest, "id"), vec![third]);
    assert!(rest["next_cursor"].is_null());
    let bobs = ok(c.get_as("/v1/groups", &bob.access).await);
    assert_eq!(
        (column(&bobs, "id"), column(&bobs, "my_role")),
        (vec![id.clone()], vec!["admin".to_owned()])
    );
    assert!(
        ok(c.get_as("/v1/groups", &cara.access).await)["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    for query in ["limit=0", "limit=101", "cursor=nope"] {
        assert_problem(
            &c.get_as(&format!("/v1/groups?{query}"), &ann.access).await,
            StatusCode::BAD_REQUEST,
            "validation_failed",
        );
        let members = c
            .get_as(&format!("/v1/groups/{id}/members?{query}"), &ann.access)
            .await;
        assert_problem(&members, StatusCode::BAD_REQUEST, "validation_failed");
        let requests = c
            .get_as(&format!("/v1/groups/{id}/requests?{query}"), &ann.access)
            .await;
        assert_problem(&requests, StatusCode::BAD_REQUEST, "validation_failed");
    }

    let events = outbox_counts(&mesh).await;
    assert_eq!(count(&events, "group_created"), 3, "{events:?}");
    assert_eq!(count(&events, "group_updated"), 2, "{events:?}");
    assert_eq!(count(&events, "group_member_joined"), 4, "{events:?}");
    assert_eq!(count(&events, "group_member_role_changed"), 1, "{events:?}");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_follows_the_policy_and_requests_are_decided_by_managers() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("Ann").await;
    let (_, bob) = c.user("Bob").await;
    let (_, cara) = c.user("Cara").await;
    let (_, dan) = c.user("Dan").await;

    let open = create_group(c, &ann, "open", 10).await;
    let reply = ok(join(c, &bob, &open).await);
    assert_eq!(
        (reply["outcome"].as_str(), reply["member"]["role"].as_str()),
        (Some("joined"), Some("member"))
    );
    assert!(reply["request"].is_null());
    assert_problem(
        &join(c, &bob, &open).await,
        StatusCode::CONFLICT,
        "already_member",
    );
    assert_problem(
        &join(c, &ann, &open).await,
        StatusCode::CONFLICT,
        "already_member",
    );

    let closed = create_group(c, &ann, "invite_only", 10).await;
    assert_problem(
        &join(c, &bob, &closed).await,
        StatusCode::FORBIDDEN,
        "invite_only",
    );
    assert_problem(
        &join(c, &bob, &Uuid::now_v7().to_string()).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    let approval = create_group(c, &ann, "approval", 10).await;
    let (status, pending) = c
        .post_as(
            &format!("/v1/groups/{approval}/join"),
            &bob.access,
            json!({ "message": "let me in" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{pending}");
    assert_eq!(pending["outcome"], "pending");
    let request = &pending["request"];
    assert_eq!(
        (request["status"].as_str(), request["message"].as_str()),
        (Some("pending"), Some("let me in"))
    );
    assert_eq!(request["user_id"], bob.user_id.as_str());
    assert!(request["inviter_id"].is_null());
    let bobs_request = request["id"].as_str().unwrap().to_owned();
    assert_problem(
        &join(c, &bob, &approval).await,
        StatusCode::CONFLICT,
        "duplicate_request",
    );
    let long = c
        .post_as(
            &format!("/v1/groups/{approval}/join"),
            &cara.access,
            json!({ "message": "m".repeat(201) }),
        )
        .await;
    assert_problem(&long, StatusCode::BAD_REQUEST, "validation_failed");
    let caras_request = ok(join(c, &cara, &approval).await)["request"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let dans_request = ok(join(c, &dan, &approval).await)["request"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Only the owner and admins see or decide join requests.
    let requests = format!("/v1/groups/{approval}/requests");
    assert_problem(
        &c.get_as(&requests, &bob.access).await,
        StatusCode::FORBIDDEN,
        "not_member",
    );
    let listed = ok(c.get_as(&requests, &ann.access).await);
    assert_eq!(
        column(&listed, "id"),
        vec![
            bobs_request.clone(),
            caras_request.clone(),
            dans_request.clone()
        ]
    );
    let paged = ok(c.get_as(&format!("{requests}?limit=2"), &ann.access).await);
    let cursor = paged["next_cursor"].as_str().expect("a next page");
    assert_eq!(
        column(
            &ok(c
                .get_as(&format!("{requests}?limit=2&cursor={cursor}"), &ann.access)
                .await),
            "id"
        ),
        vec![dans_request.clone()]
    );
    let decide = |id: &str, action: &str| format!("/v1/groups/{approval}/requests/{id}/{action}");
    assert_problem(
        &c.post_as(&decide(&bobs_request, "approve"), &bob.access, json!({}))
            .await,
        StatusCode::FORBIDDEN,
        "not_member",
    );

    let approved = ok(c
        .post_as(&decide(&bobs_request, "approve"), &ann.access, json!({}))
        .await);
    assert_eq!(
        (approved["status"].as_str(), approved["handled_by"].as_str()),
        (Some("approved"), Some(ann.user_id.as_str()))
    );
    assert!(
        members(c, &ann, &approval)
            .await
            .contains(&(bob.user_id.clone(), "member".to_owned()))
    );
    // Bob is a plain member now: still no access to the requests.
    assert_problem(
        &c.get_as(&requests, &bob.access).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_problem(
        &c.post_as(&decide(&caras_request, "approve"), &bob.access, json!({}))
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_problem(
        &c.post_as(&decide(&bobs_request, "approve"), &ann.access, json!({}))
            .await,
        StatusCode::CONFLICT,
        "request_handled",
    );
    assert_problem(
        &c.post_as(&decide(&bobs_request, "reject"), &ann.access, json!({}))
            .await,
        StatusCode::CONFLICT,
        "request_handled",
    );

    // An admin decides too.
    ok(set_role(c, &ann, &approval, &bob, "admin").await);
    let rejected = ok(c
        .post_as(&decide(&caras_request, "reject"), &bob.access, json!({}))
        .await);
    assert_eq!(rejected["status"], "rejected");
    assert_problem(
        &c.post_as(&decide(&caras_request, "approve"), &ann.access, json!({}))
            .await,
        StatusCode::CONFLICT,
        "request_handled",
    );
    assert!(
        !members(c, &ann, &approval)
            .await
            .iter()
            .any(|(id, _)| *id == cara.user_id)
    );
    let unknown = decide(&Uuid::now_v7().to_string(), "approve");
    assert_problem(
        &c.post_as(&unknown, &ann.access, json!({})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    // A request of another group is unknown here.
    let foreign = format!("/v1/groups/{open}/requests/{dans_request}/approve");
    assert_problem(
        &c.post_as(&foreign, &ann.access, json!({})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    let pending_only = ok(c
        .get_as(&format!("{requests}?status=pending"), &ann.access)
        .await);
    assert_eq!(column(&pending_only, "id"), vec![dans_request.clone()]);
    let rejected_only = ok(c
        .get_as(&format!("{requests}?status=rejected"), &bob.access)
        .await);
    assert_eq!(column(&rejected_only, "id"), vec![caras_request]);

    let events = outbox_counts(&mesh).await;
    assert_eq!(count(&events, "group_join_requested"), 3, "{events:?}");
    assert_eq!(
        count(&events, "group_join_request_handled"),
        2,
        "{events:?}"
    );
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitations_depend_on_the_inviters_role_and_the_policy() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("Ann").await;
    let (_, bob) = c.user("Bob").await;
    let (_, cara) = c.user("Cara").await;
    let (_, dan) = c.user("Dan").await;
    let (_, eve) = c.user("Eve").await;

    let approval = create_group(c, &ann, "approval", 10).await;
    // A pending request is settled when an admin invites the user in.
    let waiting = ok(join(c, &dan, &approval).await)["request"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let by_owner = ok(invite(c, &ann, &approval, &bob).await);
    assert_eq!(by_owner["outcome"], "joined");
    assert_eq!(by_owner["member"]["user_id"], bob.user_id.as_str());
    // A plain member's invitation into an approval group waits for a manager.
    let by_member = ok(invite(c, &bob, &approval, &cara).await);
    assert_eq!(by_member["outcome"], "pending");
    assert_eq!(by_member["request"]["inviter_id"], bob.user_id.as_str());
    assert_problem(
        &invite(c, &bob, &approval, &cara).await,
        StatusCode::CONFLICT,
        "duplicate_request",
    );
    let request = by_member["request"]["id"].as_str().unwrap();
    ok(c.post_as(
        &format!("/v1/groups/{approval}/requests/{request}/approve"),
        &ann.access,
        json!({}),
    )
    .await);
    ok(invite(c, &ann, &approval, &dan).await);
    let settled = ok(c
        .get_as(
            &format!("/v1/groups/{approval}/requests?status=approved"),
            &ann.access,
        )
        .await);
    assert!(column(&settled, "id").contains(&waiting));
    let everyone: Vec<String> = members(c, &bob, &approval)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        everyone,
        vec![
            ann.user_id.clone(),
            bob.user_id.clone(),
            cara.user_id.clone(),
            dan.user_id.clone()
        ]
    );

    assert_problem(
        &invite(c, &ann, &approval, &bob).await,
        StatusCode::CONFLICT,
        "already_member",
    );
    assert_problem(
        &invite(c, &eve, &approval, &bob).await,
        StatusCode::FORBIDDEN,
        "not_member",
    );
    assert_problem(
        &invite(c, &ann, &approval, &ann).await,
        StatusCode::BAD_REQUEST,
        "self_target",
    );
    let ghost = c
        .post_as(
            &format!("/v1/groups/{approval}/invite"),
            &ann.access,
            json!({ "user_id": Uuid::now_v7() }),
        )
        .await;
    assert_problem(&ghost, StatusCode::NOT_FOUND, "not_found");
    let nowhere = c
        .post_as(
            &format!("/v1/groups/{}/invite", Uuid::now_v7()),
            &ann.access,
            json!({ "user_id": bob.user_id }),
        )
        .await;
    assert_problem(&nowhere, StatusCode::NOT_FOUND, "not_found");

    let closed = create_group(c, &ann, "invite_only", 10).await;
    ok(invite(c, &ann, &closed, &bob).await);
    assert_problem(
        &invite(c, &bob, &closed, &cara).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    ok(set_role(c, &ann, &closed, &bob, "admin").await);
    assert_eq!(
        ok(invite(c, &bob, &closed, &cara).await)["outcome"],
        "joined"
    );

    let open = create_group(c, &ann, "open", 10).await;
    join_open(c, &bob, &open).await;
    assert_eq!(ok(invite(c, &bob, &open, &eve).await)["outcome"], "joined");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_group_admits_nobody() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("Ann").await;
    let (_, bob) = c.user("Bob").await;
    let (_, cara) = c.user("Cara").await;

    let open = create_group(c, &ann, "open", 2).await;
    join_open(c, &bob, &open).await;
    assert_problem(
        &join(c, &cara, &open).await,
        StatusCode::CONFLICT,
        "group_full",
    );
    assert_problem(
        &invite(c, &ann, &open, &cara).await,
        StatusCode::CONFLICT,
        "group_full",
    );
    // Room again after someone leaves.
    ok(
        c.post_as(&format!("/v1/groups/{open}/leave"), &bob.access, json!({}))
            .await,
    );
    join_open(c, &cara, &open).await;
    assert_eq!(
        ok(c.get_as(&format!("/v1/groups/{open}"), &ann.access).await)["member_count"],
        2
    );

    let approval = create_group(c, &ann, "approval", 2).await;
    let bobs = ok(join(c, &bob, &approval).await)["request"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let caras = ok(join(c, &cara, &approval).await)["request"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(c.post_as(
        &format!("/v1/groups/{approval}/requests/{bobs}/approve"),
        &ann.access,
        json!({}),
    )
    .await);
    let full = c
        .post_as(
            &format!("/v1/groups/{approval}/requests/{caras}/approve"),
            &ann.access,
            json!({}),
        )
        .await;
    assert_problem(&full, StatusCode::CONFLICT, "group_full");
    // The refused approval left the request pending.
    let pending = ok(c
        .get_as(
            &format!("/v1/groups/{approval}/requests?status=pending"),
            &ann.access,
        )
        .await);
    assert_eq!(column(&pending, "id"), vec![caras]);
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_leave_are_kicked_promoted_muted_and_ownership_moves() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("Ann").await;
    let (_, bob) = c.user("Bob").await;
    let (_, cara) = c.user("Cara").await;
    let (_, dan) = c.user("Dan").await;
    let (_, eve) = c.user("Eve").await;
    let group = create_group(c, &ann, "open", 10).await;
    for who in [&bob, &cara, &dan] {
        join_open(c, who, &group).await;
    }

    // Members list: members only, in join order, paged.
    let page = ok(c
        .get_as(&format!("/v1/groups/{group}/members?limit=3"), &bob.access)
        .await);
    assert_eq!(
        column(&page, "user_id"),
        vec![
            ann.user_id.clone(),
            bob.user_id.clone(),
            cara.user_id.clone()
        ]
    );
    assert_eq!(column(&page, "role"), vec!["owner", "member", "member"]);
    let cursor = page["next_cursor"].as_str().expect("a next page");
    let rest = ok(c
        .get_as(
            &format!("/v1/groups/{group}/members?limit=3&cursor={cursor}"),
            &bob.access,
        )
        .await);
    assert_eq!(column(&rest, "user_id"), vec![dan.user_id.clone()]);
    assert_problem(
        &c.get_as(&format!("/v1/groups/{group}/members"), &eve.access)
            .await,
        StatusCode::FORBIDDEN,
        "not_member",
    );
    let unknown = c
        .get_as(
            &format!("/v1/groups/{}/members", Uuid::now_v7()),
            &eve.access,
        )
        .await;
    assert_problem(&unknown, StatusCode::NOT_FOUND, "not_found");

    assert_problem(
        &leave(c, &ann, &group).await,
        StatusCode::CONFLICT,
        "owner_must_transfer",
    );
    assert_problem(
        &leave(c, &eve, &group).await,
        StatusCode::FORBIDDEN,
        "not_member",
    );

    // Roles: only the owner sets them, and never to owner.
    assert_problem(
        &kick(c, &bob, &group, &cara).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let promoted = ok(set_role(c, &ann, &group, &bob, "admin").await);
    assert_eq!(promoted["role"], "admin");
    assert_problem(
        &set_role(c, &bob, &group, &cara, "admin").await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_problem(
        &set_role(c, &eve, &group, &cara, "admin").await,
        StatusCode::FORBIDDEN,
        "not_member",
    );
    assert_problem(
        &set_role(c, &ann, &group, &cara, "owner").await,
        StatusCode::BAD_REQUEST,
        "validation_failed",
    );
    assert_problem(
        &set_role(c, &ann, &group, &ann, "member").await,
        StatusCode::BAD_REQUEST,
        "self_target",
    );
    assert_problem(
        &set_role(c, &ann, &group, &eve, "admin").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let bad_role = put_as(
        c,
        &format!("/v1/groups/{group}/members/{}/role", cara.user_id),
        &ann.access,
        json!({ "role": "king" }),
    )
    .await;
    assert_eq!(bad_role.0, StatusCode::BAD_REQUEST, "{}", bad_role.1);
    ok(set_role(c, &ann, &group, &cara, "admin").await);

    // Kicks: admins kick plain members, the owner kicks anyone, nobody kicks the owner.
    assert_problem(
        &kick(c, &bob, &group, &ann).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_problem(
        &kick(c, &bob, &group, &cara).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_problem(
        &kick(c, &bob, &group, &bob).await,
        StatusCode::BAD_REQUEST,
        "self_target",
    );
    assert_problem(
        &kick(c, &bob, &group, &eve).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_problem(
        &kick(c, &eve, &group, &dan).await,
        StatusCode::FORBIDDEN,
        "not_member",
    );
    ok(kick(c, &bob, &group, &dan).await);
    assert_problem(
        &c.get_as(&format!("/v1/groups/{group}/members"), &dan.access)
            .await,
        StatusCode::FORBIDDEN,
        "not_member",
    );
    assert!(
        !members(c, &ann, &group)
            .await
            .iter()
            .any(|(id, _)| *id == dan.user_id)
    );
    assert_problem(
        &kick(c, &bob, &group, &dan).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    ok(set_role(c, &ann, &group, &cara, "member").await);
    ok(kick(c, &ann, &group, &cara).await);
    assert_eq!(
        ok(c.get_as(&format!("/v1/groups/{group}"), &ann.access).await)["member_count"],
        2
    );

    // Mutes: managers mute those below them, for a bounded time.
    join_open(c, &cara, &group).await;
    let muted = ok(mute(
        c,
        &bob,
        &group,
        &cara,
        json!({ "muted": true, "duration_secs": 3600 }),
    )
    .await);
    assert!(muted["muted_until"].is_string(), "{muted}");
    let listed = ok(c
        .get_as(&format!("/v1/groups/{group}/members"), &cara.access)
        .await);
    let caras = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user_id"] == cara.user_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(caras["muted_until"], muted["muted_until"]);
    // Refused mutes: (actor, target, status, code).
    let refusals = [
        (&bob, &ann, StatusCode::FORBIDDEN, "forbidden"),
        (&cara, &bob, StatusCode::FORBIDDEN, "forbidden"),
        (&eve, &cara, StatusCode::FORBIDDEN, "not_member"),
        (&ann, &ann, StatusCode::BAD_REQUEST, "self_target"),
        (&ann, &eve, StatusCode::NOT_FOUND, "not_found"),
    ];
    for (actor, target, status, code) in refusals {
        let answer = mute(
            c,
            actor,
            &group,
            target,
            json!({ "muted": true, "duration_secs": 60 }),
        )
        .await;
        assert_problem(&answer, status, code);
    }
    for bad in [
        json!({ "muted": true }),
        json!({ "muted": true, "duration_secs": 0 }),
        json!({ "muted": true, "duration_secs": 40_000_000 }),
    ] {
        assert_problem(
            &mute(c, &ann, &group, &cara, bad).await,
            StatusCode::BAD_REQUEST,
            "validation_failed",
        );
    }
    ok(mute(
        c,
        &ann,
        &group,
        &bob,
        json!({ "muted": true, "duration_secs": 60 }),
    )
    .await);
    let unmuted = ok(mute(c, &ann, &group, &cara, json!({ "muted": false })).await);
    assert!(unmuted["muted_until"].is_null());

    // Ownership: only the owner transfers, to a member; then the old owner may leave.
    assert_problem(
        &transfer(c, &bob, &group, &cara).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_problem(
        &transfer(c, &ann, &group, &eve).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_problem(
        &transfer(c, &ann, &group, &ann).await,
        StatusCode::BAD_REQUEST,
        "self_target",
    );
    let moved = ok(transfer(c, &ann, &group, &bob).await);
    assert_eq!(
        (moved["owner_id"].as_str(), moved["my_role"].as_str()),
        (Some(bob.user_id.as_str()), Some("admin"))
    );
    let roles = members(c, &cara, &group).await;
    assert_eq!(
        roles,
        vec![
            (ann.user_id.clone(), "admin".to_owned()),
            (bob.user_id.clone(), "owner".to_owned()),
            (cara.user_id.clone(), "member".to_owned()),
        ]
    );
    // The old owner is an admin now: they cannot kick the new owner.
    assert_problem(
        &kick(c, &ann, &group, &bob).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_problem(
        &leave(c, &bob, &group).await,
        StatusCode::CONFLICT,
        "owner_must_transfer",
    );
    ok(leave(c, &ann, &group).await);
    ok(leave(c, &cara, &group).await);
    assert_problem(
        &leave(c, &cara, &group).await,
        StatusCode::FORBIDDEN,
        "not_member",
    );
    let alone = ok(c.get_as(&format!("/v1/groups/{group}"), &bob.access).await);
    assert_eq!(
        (alone["member_count"].as_u64(), alone["my_role"].as_str()),
        (Some(1), Some("owner"))
    );

    let events = outbox_counts(&mesh).await;
    assert_eq!(count(&events, "group_member_kicked"), 2, "{events:?}");
    assert_eq!(count(&events, "group_member_left"), 2, "{events:?}");
    assert_eq!(count(&events, "group_member_role_changed"), 3, "{events:?}");
    assert_eq!(count(&events, "group_member_muted"), 2, "{events:?}");
    assert_eq!(count(&events, "group_member_unmuted"), 1, "{events:?}");
    assert_eq!(
        count(&events, "group_ownership_transferred"),
        1,
        "{events:?}"
    );
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_dissolves_a_group() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("Ann").await;
    let (_, bob) = c.user("Bob").await;
    let (_, cara) = c.user("Cara").await;
    let (_, eve) = c.user("Eve").await;
    let group = create_group(c, &ann, "open", 10).await;
    join_open(c, &bob, &group).await;
    join_open(c, &cara, &group).await;
    ok(set_role(c, &ann, &group, &bob, "admin").await);
    let path = format!("/v1/groups/{group}");
    assert_eq!(ok(c.get_as(&path, &bob.access).await)["member_count"], 3);

    assert_problem(
        &delete_as(c, &path, &bob.access).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_problem(
        &delete_as(c, &path, &cara.access).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_problem(
        &delete_as(c, &path, &eve.access).await,
        StatusCode::FORBIDDEN,
        "not_member",
    );
    ok(delete_as(c, &path, &ann.access).await);
    assert_problem(
        &c.get_as(&path, &bob.access).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_problem(
        &delete_as(c, &path, &ann.access).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_problem(
        &join(c, &eve, &group).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    for who in [&ann, &bob, &cara] {
        assert!(
            ok(c.get_as("/v1/groups", &who.access).await)["items"]
                .as_array()
                .unwrap()
                .is_empty()
        );
    }
    let events = outbox_counts(&mesh).await;
    assert_eq!(count(&events, "group_dissolved"), 1, "{events:?}");
    mesh.stop().await;
}

/// Every social instance caches group profiles; a change made through one reaches the others'
/// caches through the event feed, long before the entries would age out (30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_social_instance_serves_a_changed_group_profile() {
    let mut mesh = TestMesh::spawn().await;
    mesh.start_node(&[Role::Social]).await;
    let c = &mesh.client.clone();
    let (_, ann) = c.user("Ann").await;
    let (_, bob) = c.user("Bob").await;
    let group = create_group(c, &ann, "open", 10).await;
    let path = format!("/v1/groups/{group}");
    // Requests spread over both instances (one queue group): after 20 reads each has very
    // likely cached the profile.
    for _ in 0..20 {
        assert_eq!(ok(c.get_as(&path, &bob.access).await)["name"], "open group");
    }
    ok(patch_as(c, &path, &ann.access, json!({ "name": "Renamed" })).await);
    every_read_shows(c, &path, &bob, "name", json!("Renamed")).await;
    join_open(c, &bob, &group).await;
    every_read_shows(c, &path, &bob, "member_count", json!(2)).await;
    mesh.stop().await;
}

/// Waits (at most 10 s) until 20 reads of `path` in a row show `field` = `value`.
async fn every_read_shows(c: &Client, path: &str, who: &Tokens, field: &str, value: Value) {
    poll_until(
        &format!("every instance serves {field} = {value}"),
        Duration::from_secs(10),
        || async {
            for _ in 0..20 {
                if ok(c.get_as(path, &who.access).await)[field] != value {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
}

/// The membership check other services (chat) make over NATS follows every change at once,
/// although its answers come from a cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_membership_check_over_nats_follows_changes() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("Ann").await;
    let (_, bob) = c.user("Bob").await;
    let group = create_group(c, &ann, "open", 10).await;
    let bus = mesh
        .bus_as(
            mesh_contracts::nats_permissions::NatsRole::Edge,
            "test-edge",
        )
        .await;
    let rpc = bus.rpc_client(Duration::from_secs(5));
    let rpc = &rpc;
    let request = MembershipRequest {
        group_id: group.parse().unwrap(),
        user_id: bob.user_id.parse().unwrap(),
    };
    let request = &request;
    let check = move || async move {
        rpc.call::<GetMembership>(&CallContext::internal(), request)
            .await
            .expect("membership check")
    };

    assert_eq!(
        check().await,
        Membership {
            role: None,
            muted_until: None
        }
    );
    join_open(c, &bob, &group).await;
    assert_eq!(check().await.role, Some(GroupRole::Member));
    ok(set_role(c, &ann, &group, &bob, "admin").await);
    assert_eq!(check().await.role, Some(GroupRole::Admin));
    ok(mute(
        c,
        &ann,
        &group,
        &bob,
        json!({ "muted": true, "duration_secs": 600 }),
    )
    .await);
    assert!(check().await.muted_until.is_some());
    ok(kick(c, &ann, &group, &bob).await);
    assert_eq!(
        check().await,
        Membership {
            role: None,
            muted_until: None
        }
    );
    bus.drain().await;
    mesh.stop().await;
}
