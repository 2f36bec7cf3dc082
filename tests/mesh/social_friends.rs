//! Friend requests, friends and blocks end to end: every operation, every refusal, the
//! outbox rows each change writes, and races between concurrent accepts and crossing requests.

use std::collections::HashMap;
use std::time::Duration;

use mesh_contracts::social::{
    CheckFriendship, CheckFriendshipRequest, CheckFriendships, CheckFriendshipsRequest,
    FriendshipCheck, MAX_FRIENDSHIP_CHECKS,
};
use mesh_nats::CallContext;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Connection;
use uuid::Uuid;

use crate::harness::{Answer, Client, TestMesh, Tokens, assert_problem};

pub async fn put_as(c: &Client, path: &str, token: &str, body: Value) -> Answer {
    c.send(Method::PUT, path, Some(token), Some(&body)).await
}

pub async fn patch_as(c: &Client, path: &str, token: &str, body: Value) -> Answer {
    c.send(Method::PATCH, path, Some(token), Some(&body)).await
}

pub async fn delete_as(c: &Client, path: &str, token: &str) -> Answer {
    c.send(Method::DELETE, path, Some(token), None).await
}

/// Asserts a 200 and returns the body.
#[track_caller]
pub fn ok(answer: Answer) -> Value {
    let (status, body) = answer;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Rows of the social outbox by event type.
pub async fn outbox_counts(mesh: &TestMesh) -> HashMap<String, i64> {
    let mut conn = sqlx::PgConnection::connect(mesh.database_url())
        .await
        .expect("connect to the test database");
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT event_type, count(*) FROM social.outbox GROUP BY event_type")
            .fetch_all(&mut conn)
            .await
            .expect("read the outbox");
    rows.into_iter().collect()
}

/// How many rows of the social outbox have `event_type`.
pub fn count(counts: &HashMap<String, i64>, event_type: &str) -> i64 {
    counts.get(event_type).copied().unwrap_or(0)
}

/// The `field` of every item of a page.
pub fn column(page: &Value, field: &str) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("a page: {page}"))
        .iter()
        .map(|item| item[field].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Sends a friend request from `a` to `b`; returns the request.
pub async fn send_request(c: &Client, a: &Tokens, b: &Tokens, message: &str) -> Value {
    let (status, body) = c
        .post_as(
            "/v1/friend-requests",
            &a.access,
            json!({ "user_id": b.user_id, "message": message }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["became_friends"], false);
    body["request"].clone()
}

/// Makes `a` and `b` friends.
pub async fn befriend(c: &Client, a: &Tokens, b: &Tokens) {
    let request = send_request(c, a, b, "hi").await;
    let id = request["id"].as_str().unwrap();
    ok(c.post_as(
        &format!("/v1/friend-requests/{id}/accept"),
        &b.access,
        json!({}),
    )
    .await);
}

/// `blocker` blocks `blocked`.
pub async fn block(c: &Client, blocker: &Tokens, blocked: &Tokens) {
    let path = format!("/v1/blocks/{}", blocked.user_id);
    let (status, body) = c.post_as(&path, &blocker.access, json!({})).await;
    assert!(status.is_success(), "block: {status} {body}");
}

async fn friends_of(c: &Client, who: &Tokens) -> Vec<String> {
    column(
        &ok(c.get_as("/v1/friends?limit=100", &who.access).await),
        "user_id",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_sent_listed_and_accepted_into_a_friendship() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("Ann").await;
    let (_, bob) = c.user("Bob").await;

    let request = send_request(c, &ann, &bob, "  hello Bob  ").await;
    assert_eq!(request["status"], "pending");
    assert_eq!(request["message"], "hello Bob");
    assert_eq!(request["from_user_id"], ann.user_id.as_str());
    assert_eq!(request["to_user_id"], bob.user_id.as_str());
    assert!(request["handled_at"].is_null());
    let id = request["id"].as_str().unwrap().to_owned();

    let incoming = ok(c
        .get_as("/v1/friend-requests?direction=incoming", &bob.access)
        .await);
    assert_eq!(column(&incoming, "id"), vec![id.clone()]);
    let incoming_default = ok(c.get_as("/v1/friend-requests", &bob.access).await);
    assert_eq!(column(&incoming_default, "id"), vec![id.clone()]);
    let outgoing = ok(c
        .get_as(
            "/v1/friend-requests?direction=outgoing&status=pending",
            &ann.access,
        )
        .await);
    assert_eq!(column(&outgoing, "id"), vec![id.clone()]);
    let none = ok(c
        .get_as(
            "/v1/friend-requests?direction=outgoing&status=accepted",
            &ann.access,
        )
        .await);
    assert_eq!(none["items"], json!([]));
    // Ann received nothing, Bob sent nothing.
    assert_eq!(
        ok(
            c.get_as("/v1/friend-requests?direction=incoming", &ann.access)
                .await
        )["items"],
        json!([])
    );
    assert_eq!(
        ok(
            c.get_as("/v1/friend-requests?direction=outgoing", &bob.access)
                .await
        )["items"],
        json!([])
    );

    // At most one pending request per pair.
    let again = c
        .post_as(
            "/v1/friend-requests",
            &ann.access,
            json!({ "user_id": bob.user_id }),
        )
        .await;
    assert_problem(&again, StatusCode::CONFLICT, "duplicate_request");

    let accepted = ok(c
        .post_as(
            &format!("/v1/friend-requests/{id}/accept"),
            &bob.access,
            json!({}),
        )
        .await);
    assert_eq!(accepted["status"], "accepted");
    assert!(accepted["handled_at"].is_string());
    assert_eq!(friends_of(c, &ann).await, vec![bob.user_id.clone()]);
    assert_eq!(friends_of(c, &bob).await, vec![ann.user_id.clone()]);
    let friend = &ok(c.get_as("/v1/friends", &ann.access).await)["items"][0];
    assert!(
        friend["remark"].is_null() && friend["since"].is_string(),
        "{friend}"
    );

    // Handling a handled request is a clear 409, whoever tries and however.
    for (action, who) in [("accept", &bob), ("reject", &bob), ("cancel", &ann)] {
        let twice = c
            .post_as(
                &format!("/v1/friend-requests/{id}/{action}"),
                &who.access,
                json!({}),
            )
            .await;
        assert_problem(&twice, StatusCode::CONFLICT, "request_handled");
    }
    let friends_again = c
        .post_as(
            "/v1/friend-requests",
            &bob.access,
            json!({ "user_id": ann.user_id }),
        )
        .await;
    assert_problem(&friends_again, StatusCode::CONFLICT, "already_friends");
    let accepted_list = ok(c
        .get_as(
            "/v1/friend-requests?direction=incoming&status=accepted",
            &bob.access,
        )
        .await);
    assert_eq!(column(&accepted_list, "status"), vec!["accepted"]);

    let events = outbox_counts(&mesh).await;
    assert_eq!(count(&events, "friend_request_created"), 1, "{events:?}");
    assert_eq!(count(&events, "friend_request_handled"), 1, "{events:?}");
    assert_eq!(count(&events, "friendship_created"), 1, "{events:?}");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_addressee_accepts_or_rejects_and_only_the_sender_cancels() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("Ann").await;
    let (_, bob) = c.user("Bob").await;
    let (_, cara) = c.user("Cara").await;

    let id = send_request(c, &ann, &bob, "").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = |action: &str| format!("/v1/friend-requests/{id}/{action}");
    assert_problem(
        &c.post_as(&path("accept"), &ann.access, json!({})).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_problem(
        &c.post_as(&path("reject"), &ann.access, json!({})).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_problem(
        &c.post_as(&path("cancel"), &bob.access, json!({})).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    // A stranger does not learn that the request exists.
    for action in ["accept", "reject", "cancel"] {
        assert_problem(
            &c.post_as(&path(action), &cara.access, json!({})).await,
            StatusCode::NOT_FOUND,
            "not_found",
        );
    }
    let unknown = format!("/v1/friend-requests/{}/accept", Uuid::now_v7());
    assert_problem(
        &c.post_as(&unknown, &bob.access, json!({})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let malformed = c
        .post_as(
            "/v1/friend-requests/not-a-uuid/accept",
            &bob.access,
            json!({}),
        )
        .await;
    assert_eq!(malformed.0, StatusCode::BAD_REQUEST, "{}", malformed.1);

    let rejected = ok(c.post_as(&path("reject"), &bob.access, json!({})).await);
    assert_eq!(rejected["status"], "rejected");
    assert_problem(
        &c.post_as(&path("cancel"), &ann.access, json!({})).await,
        StatusCode::CONFLICT,
        "request_handled",
    );
    assert!(friends_of(c, &ann).await.is_empty());

    // After a rejection Ann may ask again, and may withdraw that request.
    let second = send_request(c, &ann, &bob, "please").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cancelled = ok(c
        .post_as(
            &format!("/v1/friend-requests/{second}/cancel"),
            &ann.access,
            json!({}),
        )
        .await);
    assert_eq!(cancelled["status"], "cancelled");
    let late = c
        .post_as(
            &format!("/v1/friend-requests/{second}/accept"),
            &bob.access,
            json!({}),
        )
        .await;
    assert_problem(&late, StatusCode::CONFLICT, "request_handled");
    assert!(friends_of(c, &bob).await.is_empty());

    let rejected_in = ok(c
        .get_as(
            "/v1/friend-requests?direction=incoming&status=rejected",
            &bob.access,
        )
        .await);
    assert_eq!(column(&rejected_in, "id"), vec![id.clone()]);
    let cancelled_out = ok(c
        .get_as(
            "/v1/friend-requests?direction=outgoing&status=cancelled",
            &ann.access,
        )
        .await);
    assert_eq!(column(&cancelled_out, "id"), vec![second.clone()]);
    let all_out = ok(c
        .get_as("/v1/friend-requests?direction=outgoing", &ann.access)
        .await);
    assert_eq!(column(&all_out, "id"), vec![id, second]);

    let events = outbox_counts(&mesh).await;
    assert_eq!(count(&events, "friend_request_created"), 2, "{events:?}");
    assert_eq!(count(&events, "friend_request_handled"), 2, "{events:?}");
    assert_eq!(count(&events, "friendship_created"), 0, "{events:?}");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_someone_who_already_asked_you_makes_you_friends() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("Ann").await;
    let (_, bob) = c.user("Bob").await;
    let theirs = send_request(c, &bob, &ann, "hi Ann").await;

    let (status, outcome) = c
        .post_as(
            "/v1/friend-requests",
            &ann.access,
            json!({ "user_id": bob.user_id, "message": "hi" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert_eq!(outcome["became_friends"], true);
    assert_eq!(outcome["request"]["id"], theirs["id"]);
    assert_eq!(outcome["request"]["status"], "accepted");
    assert_eq!(friends_of(c, &ann).await, vec![bob.user_id.clone()]);
    assert_eq!(friends_of(c, &bob).await, vec![ann.user_id.clone()]);
    // No second request was stored.
    assert_eq!(
        ok(
            c.get_as("/v1/friend-requests?direction=outgoing", &ann.access)
                .await
        )["items"],
        json!([])
    );
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_to_yourself_unknown_users_and_bad_input_are_refused() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("Ann").await;
    let (_, bob) = c.user("Bob").await;

    let to_self = c
        .post_as(
            "/v1/friend-requests",
            &ann.access,
            json!({ "user_id": ann.user_id }),
        )
        .await;
    assert_problem(&to_self, StatusCode::BAD_REQUEST, "self_target");
    let unknown = c
        .post_as(
            "/v1/friend-requests",
            &ann.access,
            json!({ "user_id": Uuid::now_v7() }),
        )
        .await;
    assert_problem(&unknown, StatusCode::NOT_FOUND, "not_found");
    let long = "x".repeat(201);
    let too_long = c
        .post_as(
            "/v1/friend-requests",
            &ann.access,
            json!({ "user_id": bob.user_id, "message": long }),
        )
        .await;
    assert_problem(&too_long, StatusCode::BAD_REQUEST, "validation_failed");
    let control = c
        .post_as(
            "/v1/friend-requests",
            &ann.access,
            json!({ "user_id": bob.user_id, "message": "a\u{0007}b" }),
        )
        .await;
    assert_problem(&control, StatusCode::BAD_REQUEST, "validation_failed");
    let not_a_user = c
        .post_as(
            "/v1/friend-requests",
            &ann.access,
            json!({ "user_id": "bob" }),
        )
        .await;
    assert_eq!(not_a_user.0, StatusCode::BAD_REQUEST, "{}", not_a_user.1);
    let anonymous = c
        .post("/v1/friend-requests", json!({ "user_id": bob.user_id }))
        .await;
    assert_problem(&anonymous, StatusCode::UNAUTHORIZED, "unauthorized");
    let bad_direction = c
        .get_as("/v1/friend-requests?direction=sideways", &ann.access)
        .await;
    assert_eq!(
        bad_direction.0,
        StatusCode::BAD_REQUEST,
        "{}",
        bad_direction.1
    );

    for query in ["limit=0", "limit=101", "cursor=nope"] {
        for path in ["/v1/friend-requests", "/v1/friends", "/v1/blocks"] {
            let answer = c.get_as(&format!("{path}?{query}"), &ann.access).await;
            assert_problem(&answer, StatusCode::BAD_REQUEST, "validation_failed");
        }
    }
    // Nothing above changed any state.
    assert!(outbox_counts(&mesh).await.is_empty());
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_accepts_of_one_request_create_exactly_one_friendship() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("Ann").await;
    let (_, bob) = c.user("Bob").await;
    let id = send_request(c, &ann, &bob, "race").await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let path = format!("/v1/friend-requests/{id}/accept");
    let attempts = (0..8).map(|_| c.post_as(&path, &bob.access, json!({})));
    let answers = futures::future::join_all(attempts).await;
    let won = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert_eq!(won, 1, "{answers:?}");
    for answer in answers.iter().filter(|(s, _)| *s != StatusCode::OK) {
        assert_problem(answer, StatusCode::CONFLICT, "request_handled");
    }
    assert_eq!(friends_of(c, &ann).await, vec![bob.user_id.clone()]);
    assert_eq!(friends_of(c, &bob).await, vec![ann.user_id.clone()]);
    let events = outbox_counts(&mesh).await;
    assert_eq!(count(&events, "friendship_created"), 1, "{events:?}");
    assert_eq!(count(&events, "friend_request_handled"), 1, "{events:?}");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossing_concurrent_requests_end_in_one_friendship() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("Ann").await;
    let (_, bob) = c.user("Bob").await;

    let (a, b) = tokio::join!(
        c.post_as(
            "/v1/friend-requests",
            &ann.access,
            json!({ "user_id": bob.user_id })
        ),
        c.post_as(
            "/v1/friend-requests",
            &bob.access,
            json!({ "user_id": ann.user_id })
        ),
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::CREATED],
        "{a:?} {b:?}"
    );
    assert_eq!(friends_of(c, &ann).await, vec![bob.user_id.clone()]);
    assert_eq!(count(&outbox_counts(&mesh).await, "friendship_created"), 1);
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn friends_are_paged_have_remarks_and_can_be_removed() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("Ann").await;
    let mut others = Vec::new();
    for name in ["Bob", "Cara", "Dan"] {
        let (_, other) = c.user(name).await;
        befriend(c, &ann, &other).await;
        others.push(other);
    }
    let (_, stranger) = c.user("Eve").await;
    let expected: Vec<String> = others.iter().map(|o| o.user_id.clone()).collect();

    let first = ok(c.get_as("/v1/friends?limit=2", &ann.access).await);
    assert_eq!(column(&first, "user_id"), expected[..2]);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let second = ok(c
        .get_as(&format!("/v1/friends?limit=2&cursor={cursor}"), &ann.access)
        .await);
    assert_eq!(column(&second, "user_id"), expected[2..]);
    assert!(second["next_cursor"].is_null());

    let bob = &others[0];
    let remark_path = format!("/v1/friends/{}/remark", bob.user_id);
    let set = ok(put_as(c, &remark_path, &ann.access, json!({ "remark": " Bobby " })).await);
    assert_eq!(
        (set["user_id"].as_str(), set["remark"].as_str()),
        (Some(bob.user_id.as_str()), Some("Bobby"))
    );
    let listed = ok(c.get_as("/v1/friends?limit=1", &ann.access).await);
    assert_eq!(listed["items"][0]["remark"], "Bobby");
    // Remarks are private: Bob's view of Ann has none.
    assert!(ok(c.get_as("/v1/friends", &bob.access).await)["items"][0]["remark"].is_null());
    let too_long = put_as(
        c,
        &remark_path,
        &ann.access,
        json!({ "remark": "r".repeat(33) }),
    )
    .await;
    assert_problem(&too_long, StatusCode::BAD_REQUEST, "validation_failed");
    let multiline = put_as(c, &remark_path, &ann.access, json!({ "remark": "a\nb" })).await;
    assert_problem(&multiline, StatusCode::BAD_REQUEST, "validation_failed");
    let cleared = ok(put_as(c, &remark_path, &ann.access, json!({ "remark": "" })).await);
    assert!(cleared["remark"].is_null());
    let not_friend = put_as(
        c,
        &format!("/v1/friends/{}/remark", stranger.user_id),
        &ann.access,
        json!({ "remark": "x" }),
    )
    .await;
    assert_problem(&not_friend, StatusCode::NOT_FOUND, "not_found");

    ok(delete_as(c, &format!("/v1/friends/{}", bob.user_id), &ann.access).await);
    assert_eq!(friends_of(c, &ann).await, expected[1..]);
    assert!(
        friends_of(c, bob).await.is_empty(),
        "removal ends both directions"
    );
    let again = delete_as(c, &format!("/v1/friends/{}", bob.user_id), &ann.access).await;
    assert_problem(&again, StatusCode::NOT_FOUND, "not_found");
    let yourself = delete_as(c, &format!("/v1/friends/{}", ann.user_id), &ann.access).await;
    assert_problem(&yourself, StatusCode::BAD_REQUEST, "self_target");
    // Once removed, they may become friends again.
    befriend(c, bob, &ann).await;
    assert!(friends_of(c, bob).await.contains(&ann.user_id));

    let events = outbox_counts(&mesh).await;
    assert_eq!(count(&events, "friendship_created"), 4, "{events:?}");
    assert_eq!(count(&events, "friendship_removed"), 1, "{events:?}");
    assert_eq!(count(&events, "friend_remark_set"), 2, "{events:?}");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_end_friendships_and_stop_requests_until_lifted() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("Ann").await;
    let (_, bob) = c.user("Bob").await;
    let (_, cara) = c.user("Cara").await;
    befriend(c, &ann, &bob).await;
    let caras = send_request(c, &cara, &ann, "hi").await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let block = ok(c
        .post_as(
            &format!("/v1/blocks/{}", bob.user_id),
            &ann.access,
            json!({}),
        )
        .await);
    assert_eq!(block["user_id"], bob.user_id.as_str());
    assert!(friends_of(c, &ann).await.is_empty() && friends_of(c, &bob).await.is_empty());
    // Requests stop in both directions.
    let from_blocked = c
        .post_as(
            "/v1/friend-requests",
            &bob.access,
            json!({ "user_id": ann.user_id }),
        )
        .await;
    assert_problem(&from_blocked, StatusCode::FORBIDDEN, "blocked");
    let from_blocker = c
        .post_as(
            "/v1/friend-requests",
            &ann.access,
            json!({ "user_id": bob.user_id }),
        )
        .await;
    assert_problem(&from_blocker, StatusCode::FORBIDDEN, "blocked");
    // Blocking twice keeps the first block.
    let twice = ok(c
        .post_as(
            &format!("/v1/blocks/{}", bob.user_id),
            &ann.access,
            json!({}),
        )
        .await);
    assert_eq!(twice["created_at"], block["created_at"]);

    // Blocking someone with a pending request to you rejects it.
    ok(c.post_as(
        &format!("/v1/blocks/{}", cara.user_id),
        &ann.access,
        json!({}),
    )
    .await);
    let caras_out = ok(c
        .get_as("/v1/friend-requests?direction=outgoing", &cara.access)
        .await);
    assert_eq!(column(&caras_out, "id"), vec![caras.clone()]);
    assert_eq!(column(&caras_out, "status"), vec!["rejected"]);
    let late = c
        .post_as(
            &format!("/v1/friend-requests/{caras}/accept"),
            &ann.access,
            json!({}),
        )
        .await;
    assert_problem(&late, StatusCode::CONFLICT, "request_handled");

    let blocks = ok(c.get_as("/v1/blocks", &ann.access).await);
    assert_eq!(
        column(&blocks, "user_id"),
        vec![bob.user_id.clone(), cara.user_id.clone()]
    );
    let page = ok(c.get_as("/v1/blocks?limit=1", &ann.access).await);
    assert_eq!(column(&page, "user_id"), vec![bob.user_id.clone()]);
    let cursor = page["next_cursor"].as_str().expect("a next page");
    let rest = ok(c
        .get_as(&format!("/v1/blocks?limit=1&cursor={cursor}"), &ann.access)
        .await);
    assert_eq!(column(&rest, "user_id"), vec![cara.user_id.clone()]);
    assert!(
        ok(c.get_as("/v1/blocks", &bob.access).await)["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    let yourself = c
        .post_as(
            &format!("/v1/blocks/{}", ann.user_id),
            &ann.access,
            json!({}),
        )
        .await;
    assert_problem(&yourself, StatusCode::BAD_REQUEST, "self_target");
    let unknown = c
        .post_as(
            &format!("/v1/blocks/{}", Uuid::now_v7()),
            &ann.access,
            json!({}),
        )
        .await;
    assert_problem(&unknown, StatusCode::NOT_FOUND, "not_found");
    // Only the blocker lifts a block.
    let not_theirs = delete_as(c, &format!("/v1/blocks/{}", ann.user_id), &bob.access).await;
    assert_problem(&not_theirs, StatusCode::NOT_FOUND, "not_found");

    ok(delete_as(c, &format!("/v1/blocks/{}", bob.user_id), &ann.access).await);
    let again = delete_as(c, &format!("/v1/blocks/{}", bob.user_id), &ann.access).await;
    assert_problem(&again, StatusCode::NOT_FOUND, "not_found");
    // The friendship does not come back, but requests flow again.
    assert!(friends_of(c, &ann).await.is_empty());
    send_request(c, &bob, &ann, "friends again?").await;

    let events = outbox_counts(&mesh).await;
    assert_eq!(count(&events, "user_blocked"), 2, "{events:?}");
    assert_eq!(count(&events, "user_unblocked"), 1, "{events:?}");
    assert_eq!(count(&events, "friendship_removed"), 1, "{events:?}");
    // Ann's accept of Bob's request, and the block that rejected Cara's.
    assert_eq!(count(&events, "friend_request_handled"), 2, "{events:?}");
    mesh.stop().await;
}

/// The check other services (chat) make over NATS follows every change at once, although its
/// answers come from a cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_friendship_check_over_nats_follows_changes() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("Ann").await;
    let (_, bob) = c.user("Bob").await;
    let bus = mesh
        .bus_as(
            mesh_contracts::nats_permissions::NatsRole::Chat,
            "test-chat",
        )
        .await;
    let rpc = bus.rpc_client(Duration::from_secs(5));
    let ann_id: Uuid = ann.user_id.parse().unwrap();
    let bob_id: Uuid = bob.user_id.parse().unwrap();
    let rpc = &rpc;
    let check = move || async move {
        rpc.call::<CheckFriendship>(
            &CallContext::internal(),
            &CheckFriendshipRequest {
                user_id: ann_id,
                other_id: bob_id,
            },
        )
        .await
        .expect("check friendship")
    };

    assert_eq!(
        check().await,
        FriendshipCheck {
            friends: false,
            blocked: false
        }
    );
    befriend(c, &ann, &bob).await;
    assert_eq!(
        check().await,
        FriendshipCheck {
            friends: true,
            blocked: false
        }
    );
    ok(delete_as(c, &format!("/v1/friends/{}", ann.user_id), &bob.access).await);
    assert_eq!(
        check().await,
        FriendshipCheck {
            friends: false,
            blocked: false
        }
    );
    befriend(c, &bob, &ann).await;
    assert_eq!(
        check().await,
        FriendshipCheck {
            friends: true,
            blocked: false
        }
    );
    ok(c.post_as(
        &format!("/v1/blocks/{}", ann.user_id),
        &bob.access,
        json!({}),
    )
    .await);
    assert_eq!(
        check().await,
        FriendshipCheck {
            friends: false,
            blocked: true
        }
    );

    // A user may ask about themselves but not about others.
    let someone = CallContext::internal().with_user(bob_id, Uuid::now_v7());
    let refused = rpc
        .call::<CheckFriendship>(
            &someone,
            &CheckFriendshipRequest {
                user_id: ann_id,
                other_id: bob_id,
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(refused, mesh_nats::RpcError::Service(ref e) if e.code.as_str() == "forbidden"),
        "{refused}"
    );

    // Many pairs in one call answer each pair, in the order asked, as the single check does.
    let (_, cid) = c.user("Cid").await;
    let cid_id: Uuid = cid.user_id.parse().unwrap();
    befriend(c, &ann, &cid).await;
    let pair = |user_id, other_id| CheckFriendshipRequest { user_id, other_id };
    let many = |pairs: Vec<CheckFriendshipRequest>, ctx: CallContext| async move {
        rpc.call::<CheckFriendships>(&ctx, &CheckFriendshipsRequest { pairs })
            .await
    };
    let answered = many(
        vec![
            pair(ann_id, bob_id),
            pair(cid_id, ann_id),
            pair(bob_id, cid_id),
            pair(ann_id, cid_id),
        ],
        CallContext::internal(),
    )
    .await
    .expect("check friendships");
    let facts = |friends, blocked| FriendshipCheck { friends, blocked };
    assert_eq!(
        answered.checks,
        vec![
            facts(false, true),
            facts(true, false),
            facts(false, false),
            facts(true, false)
        ]
    );
    // Every pair must be about the caller, and a call has a bounded number of pairs.
    let refused = many(vec![pair(bob_id, ann_id), pair(ann_id, cid_id)], someone)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, mesh_nats::RpcError::Service(ref e) if e.code.as_str() == "forbidden"),
        "{refused}"
    );
    let too_many = vec![pair(ann_id, bob_id); MAX_FRIENDSHIP_CHECKS + 1];
    let refused = many(too_many, CallContext::internal()).await.unwrap_err();
    assert!(
        matches!(refused, mesh_nats::RpcError::Service(ref e) if e.code.as_str() == "validation_failed"),
        "{refused}"
    );
    bus.drain().await;
    mesh.stop().await;
}
