//! Usage quotas through the API (issue #15): plans and overrides set by a holder of
//! `quotas:write`, usage charged once per stored effect (a resend is free), the `>=` check
//! holding under 50 concurrent sends, and 429 `quota_exceeded` / `rejected` acks over the limit.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use mesh_contracts::chat::ConversationId;

use crate::chat_contract::redeliver;
use crate::harness::{Client, TestMesh, Tokens, assert_problem};
use crate::rbac::{root, user_with_role};
use crate::social_friends::ok;
use crate::ws::Ws;

async fn set_quota(c: &Client, admin: &Tokens, user: &str, setting: Value) -> (StatusCode, Value) {
    c.send(
        Method::PUT,
        &format!("/v1/admin/users/{user}/quota"),
        Some(&admin.access),
        Some(&setting),
    )
    .await
}

/// `used` and `limit` of `metric` in a usage document.
pub fn item(usage: &Value, metric: &str) -> (u64, u64) {
    let found = usage["items"]
        .as_array()
        .unwrap_or_else(|| panic!("items in {usage}"))
        .iter()
        .find(|i| i["metric"] == metric)
        .unwrap_or_else(|| panic!("{metric} in {usage}"));
    (
        found["used"].as_u64().unwrap(),
        found["limit"].as_u64().unwrap(),
    )
}

/// Waits for the final ack (`stored` or `rejected`) of `client_id`.
async fn final_ack(ws: &mut Ws, client_id: &str) -> Value {
    ws.expect(&format!("final ack of {client_id}"), |f| {
        f["type"] == "ack"
            && f["client_id"] == client_id
            && (f["status"] == "stored" || f["status"] == "rejected")
    })
    .await
}

/// At limit - 1, 50 concurrent sends (to conversations spread over every partition) store
/// exactly one; the rest are `rejected` with `quota_exceeded`. Resending a stored message is
/// answered `stored` and charges nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_sends_at_limit_minus_one_store_exactly_one() {
    let mesh = TestMesh::spawn_with(|s| s.chat.open_private = true).await;
    let c = &mesh.client;
    let root = root(c).await;
    let (ann, ann_tokens) = c.user("Ann").await;
    let ann_id = ann["id"].as_str().unwrap();
    let (status, usage) = set_quota(
        c,
        &root,
        ann_id,
        json!({"plan": "free", "overrides": {"messages_per_day": 5}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{usage}");
    assert_eq!(item(&usage, "messages_per_day"), (0, 5));

    let mut ws = Ws::connect(&mesh.url, &ann_tokens.access).await;
    let peer = Uuid::now_v7().to_string();
    for i in 0..4 {
        ws.send_to(&peer, &format!("warm-{i}"), "hello").await;
        ws.stored(&format!("warm-{i}")).await;
    }
    let peers: Vec<String> = (0..50).map(|_| Uuid::now_v7().to_string()).collect();
    for (i, to) in peers.iter().enumerate() {
        ws.send_to(to, &format!("race-{i}"), "one of many").await;
    }
    let mut stored = 0;
    for i in 0..50 {
        let ack = final_ack(&mut ws, &format!("race-{i}")).await;
        if ack["status"] == "stored" {
            stored += 1;
        } else {
            assert_eq!(ack["reason"], "quota_exceeded", "{ack}");
        }
    }
    assert_eq!(stored, 1, "exactly one send fits under the limit");

    // A resend of a stored message is answered from the store and charged nothing; a new
    // message is refused.
    ws.send_to(&peer, "warm-0", "hello").await;
    ws.stored("warm-0").await;
    ws.send_to(&peer, "late", "no room").await;
    let late = final_ack(&mut ws, "late").await;
    assert_eq!(late["status"], "rejected", "{late}");
    assert_eq!(late["reason"], "quota_exceeded");
    // A redelivery past JetStream's duplicate check (another message id, the same message)
    // reaches the store, which finds the stored row: answered `stored`, charged nothing.
    let conversation =
        ConversationId::private(ann_id.parse().unwrap(), peer.parse().unwrap()).to_string();
    redeliver(
        &mesh,
        &conversation,
        ann_id.parse().unwrap(),
        "warm-1",
        "hello",
        "redelivery-of-warm-1",
    )
    .await;
    let again = final_ack(&mut ws, "warm-1").await;
    assert_eq!(again["status"], "stored", "{again}");
    let mine = ok(c.get_as("/v1/users/me/usage", &ann_tokens.access).await);
    assert_eq!(mine["plan"], "free");
    assert_eq!(item(&mine, "messages_per_day"), (5, 5));

    // Raising the limit lets the same user send again.
    ok(set_quota(
        c,
        &root,
        ann_id,
        json!({"plan": "pro", "overrides": {"messages_per_day": 6}}),
    )
    .await);
    ws.send_to(&peer, "after-raise", "room again").await;
    ws.stored("after-raise").await;
    ws.close().await;
    mesh.stop().await;
}

/// Friend requests per day, groups owned and group size are refused with 429 over the limit;
/// a user reads their own usage, a holder of `quotas:read` anyone's, others are forbidden.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn social_quotas_and_who_sees_usage() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let root = root(c).await;
    let (ann, ann_tokens) = c.user("Ann").await;
    let ann_id = ann["id"].as_str().unwrap();
    let (bob, _) = c.user("Bob").await;
    let (cid, _) = c.user("Cid").await;
    let moderator = user_with_role(c, &root, "Mo", "moderator").await;

    // Defaults: the free plan, nothing used.
    let mine = ok(c.get_as("/v1/users/me/usage", &ann_tokens.access).await);
    assert_eq!(mine["plan"], "free");
    assert_eq!(item(&mine, "friend_requests_per_day"), (0, 1_000));
    assert_eq!(item(&mine, "groups_owned"), (0, 100));

    // Only `quotas:write` sets quotas; only `quotas:read` reads others' usage.
    let setting = json!({"plan": "free", "overrides": {"friend_requests_per_day": 1, "groups_owned": 1, "group_size": 10}});
    for who in [&ann_tokens, &moderator] {
        assert_problem(
            &set_quota(c, who, ann_id, setting.clone()).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        );
        assert_problem(
            &c.get_as(&format!("/v1/admin/users/{ann_id}/usage"), &who.access)
                .await,
            StatusCode::FORBIDDEN,
            "forbidden",
        );
    }
    assert_problem(
        &set_quota(c, &root, ann_id, json!({"plan": "platinum"})).await,
        StatusCode::BAD_REQUEST,
        "validation_failed",
    );
    ok(set_quota(c, &root, ann_id, setting).await);

    let request = |to: &Value| {
        c.post_as(
            "/v1/friend-requests",
            &ann_tokens.access,
            json!({"user_id": to["id"]}),
        )
    };
    let (status, body) = request(&bob).await;
    assert!(status.is_success(), "{status} {body}");
    // A retry of the same request is a duplicate, not a second charge.
    assert_problem(
        &request(&bob).await,
        StatusCode::CONFLICT,
        "duplicate_request",
    );
    assert_problem(
        &request(&cid).await,
        StatusCode::TOO_MANY_REQUESTS,
        "quota_exceeded",
    );

    let group = |max: u32| {
        c.post_as(
            "/v1/groups",
            &ann_tokens.access,
            json!({"name": "G", "join_policy": "open", "max_members": max}),
        )
    };
    assert_problem(
        &group(11).await,
        StatusCode::TOO_MANY_REQUESTS,
        "quota_exceeded",
    );
    let (status, body) = group(10).await;
    assert!(status.is_success(), "{status} {body}");
    assert_problem(
        &group(5).await,
        StatusCode::TOO_MANY_REQUESTS,
        "quota_exceeded",
    );

    let seen = ok(c
        .get_as(&format!("/v1/admin/users/{ann_id}/usage"), &root.access)
        .await);
    assert_eq!(item(&seen, "friend_requests_per_day"), (1, 1));
    assert_eq!(item(&seen, "groups_owned"), (1, 1));
    assert_eq!(item(&seen, "group_size"), (1, 10));
    assert_eq!(seen["overrides"]["groups_owned"], 1);
    mesh.stop().await;
}
