//! Chat end to end over real WebSockets: private and group messages across users and devices,
//! ordering, resends, gap fill, read state, refusals, recall and delete-for-me, and pages of
//! large messages that still fit one reply.

use std::collections::HashSet;
use std::time::Duration;

use mesh_contracts::chat::MAX_BODY_BYTES;
use nats_mesh::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::postgres::PgQueryResult;
use sqlx::{Connection, PgConnection};

use crate::chat_contract::redeliver;
use crate::fencing::ChatProcess;
use crate::harness::{
    Client, TestMesh, Tokens, assert_problem, poll_until, scraped_sum, scraped_sum_with,
};
use crate::quotas::item;
use crate::social_friends::{befriend, block, column, delete_as, ok, patch_as};
use crate::social_groups::{create_group, join_open, mute};
use crate::ws::Ws;

/// The private conversation id of two users.
pub fn private_id(a: &Tokens, b: &Tokens) -> String {
    let (lo, hi) = if a.user_id < b.user_id {
        (&a.user_id, &b.user_id)
    } else {
        (&b.user_id, &a.user_id)
    };
    format!("p:{lo}:{hi}")
}

/// Two friends, Ann and Bob, their private conversation, and Ann's socket: where most chat
/// tests start.
pub struct Friends {
    pub ann: Tokens,
    pub bob: Tokens,
    pub conversation: String,
    pub ann_ws: Ws,
}

pub async fn friends(mesh: &TestMesh) -> Friends {
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;
    let (_, bob) = c.user("bob").await;
    befriend(c, &ann, &bob).await;
    let conversation = private_id(&ann, &bob);
    let ann_ws = Ws::connect(&mesh.url, &ann.access).await;
    Friends {
        ann,
        bob,
        conversation,
        ann_ws,
    }
}

/// History of a conversation as `who` reads it, oldest first, from `after` on.
pub async fn history(c: &Client, who: &Tokens, conversation: &str, after: i64) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = after;
    loop {
        let page = ok(c
            .get_as(
                &format!("/v1/conversations/{conversation}/messages?after_seq={after}&limit=200"),
                &who.access,
            )
            .await);
        let items = page["items"].as_array().unwrap().clone();
        if let Some(last) = items.last() {
            after = last["seq"].as_i64().unwrap();
        }
        out.extend(items);
        if page["has_more"] != true {
            return out;
        }
    }
}

/// The caller's entry for `conversation` in their conversation list.
async fn listed(c: &Client, who: &Tokens, conversation: &str) -> Value {
    let page = ok(c.get_as("/v1/conversations?limit=100", &who.access).await);
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["id"] == conversation)
        .cloned()
        .unwrap_or_else(|| panic!("{conversation} not listed in {page}"))
}

/// Where `until_rejected` sends: to a user, or into a conversation.
enum Target<'a> {
    User(&'a str),
    Conversation(&'a str),
}

/// Sends messages with fresh client ids until one is rejected, as happens once chat has
/// projected the change from social's events (milliseconds after it); returns the reason.
async fn until_rejected(ws: &mut Ws, target: Target<'_>) -> String {
    for attempt in 0..40 {
        let id = format!("probe-{attempt}");
        match target {
            Target::User(to) => ws.send_to(to, &id, "probe").await,
            Target::Conversation(c) => ws.send_in(c, &id, "probe").await,
        }
        let ack = ws
            .expect("a final ack", |f| {
                f["type"] == "ack" && f["client_id"] == id.as_str() && f["status"] != "accepted"
            })
            .await;
        if ack["status"] == "rejected" {
            return ack["reason"].as_str().unwrap().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("never rejected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn friends_chat_privately_on_every_device() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;
    let (_, bob) = c.user("bob").await;
    befriend(c, &ann, &bob).await;
    let ann_laptop = c.login(&c_phone(c, &ann).await).await;

    let mut ann_phone_ws = Ws::connect(&mesh.url, &ann.access).await;
    let mut ann_laptop_ws = Ws::connect(&mesh.url, &ann_laptop.access).await;
    let mut bob_ws = Ws::connect(&mesh.url, &bob.access).await;

    ann_phone_ws
        .send_to(&bob.user_id, "hello-1", "hi bob")
        .await;
    let accepted = ann_phone_ws.ack("hello-1", "accepted").await;
    let conversation = private_id(&ann, &bob);
    assert_eq!(accepted["conversation_id"], conversation.as_str());
    assert_eq!(ann_phone_ws.stored("hello-1").await, 1);

    let received = bob_ws.message("hello-1").await;
    assert_eq!(received["body"], "hi bob");
    assert_eq!(received["seq"], 1);
    assert_eq!(received["sender_id"], ann.user_id.as_str());
    assert_eq!(received["conversation_id"], conversation.as_str());
    // The sender's other device sees the message too, and the stored ack.
    let mirrored = ann_laptop_ws.message("hello-1").await;
    assert_eq!(mirrored["id"], received["id"]);
    assert_eq!(ann_laptop_ws.stored("hello-1").await, 1);

    // Each of the sender's devices gets the stored ack, then the message: two frames (they
    // travel in one push).
    ann_phone_ws.send_to(&bob.user_id, "hello-2", "again").await;
    for ws in [&mut ann_phone_ws, &mut ann_laptop_ws] {
        let frames = ws.frames_until_message("hello-2").await;
        let stored = frames
            .iter()
            .position(|f| {
                f["type"] == "ack" && f["status"] == "stored" && f["client_id"] == "hello-2"
            })
            .unwrap_or_else(|| panic!("no stored ack before the message: {frames:?}"));
        assert_eq!(frames[stored]["seq"], 2);
        assert_eq!(frames.last().unwrap()["seq"], 2);
    }
    assert_eq!(bob_ws.message("hello-2").await["seq"], 2);

    bob_ws.send_to(&ann.user_id, "reply-1", "hi ann").await;
    assert_eq!(bob_ws.stored("reply-1").await, 3);
    assert_eq!(ann_phone_ws.message("reply-1").await["seq"], 3);

    // Both read the same gap-free history.
    for who in [&ann, &bob] {
        let seqs: Vec<i64> = history(c, who, &conversation, 0)
            .await
            .iter()
            .map(|m| m["seq"].as_i64().unwrap())
            .collect();
        assert_eq!(seqs, vec![1, 2, 3]);
    }
    let bobs = listed(c, &bob, &conversation).await;
    assert_eq!(bobs["peer_id"], ann.user_id.as_str());
    assert_eq!(bobs["last_seq"], 3);
    // Sending reads: bob's reply (seq 3) moved his read position past everything before it,
    // while ann's own messages (seqs 1, 2) count as read for her and bob's reply does not.
    assert_eq!(bobs["read_seq"], 3);
    assert_eq!(bobs["unread"], 0);
    assert_eq!(bobs["last_message"]["body"], "hi ann");
    let anns = listed(c, &ann, &conversation).await;
    assert_eq!(
        (anns["read_seq"].as_i64(), anns["unread"].as_i64()),
        (Some(2), Some(1))
    );
    mesh.stop().await;
}

/// The phone `who` registered with, read back from their profile.
async fn c_phone(c: &Client, who: &Tokens) -> String {
    let me = ok(c.get_as("/v1/users/me", &who.access).await);
    me["phone"]
        .as_str()
        .expect("profile has a phone")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_stored_in_send_order_and_resends_are_stored_once() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;
    let (_, bob) = c.user("bob").await;
    befriend(c, &ann, &bob).await;
    let mut ann_ws = Ws::connect(&mesh.url, &ann.access).await;
    let mut bob_ws = Ws::connect(&mesh.url, &bob.access).await;

    const BURST: usize = 150;
    for i in 0..BURST {
        ann_ws
            .send_to(&bob.user_id, &format!("m-{i}"), &format!("body {i}"))
            .await;
        // Every tenth message is resent at once with the same client id.
        if i % 10 == 0 {
            ann_ws
                .send_to(&bob.user_id, &format!("m-{i}"), &format!("body {i}"))
                .await;
        }
    }
    for i in 0..BURST {
        assert_eq!(
            ann_ws.stored(&format!("m-{i}")).await,
            i as i64 + 1,
            "m-{i}"
        );
    }
    let mut received = Vec::new();
    while received.len() < BURST {
        let frame = bob_ws.expect_type("message").await;
        received.push(frame);
    }
    let order: Vec<String> = received
        .iter()
        .map(|m| m["client_id"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (0..BURST).map(|i| format!("m-{i}")).collect();
    assert_eq!(order, expected, "delivered in send order");
    assert!(
        bob_ws
            .drain("message", Duration::from_millis(300))
            .await
            .is_empty(),
        "no message is delivered twice"
    );
    let stored = history(c, &bob, &private_id(&ann, &bob), 0).await;
    let seqs: Vec<i64> = stored.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=BURST as i64).collect::<Vec<_>>());
    let bodies: Vec<&str> = stored.iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(bodies[0], "body 0");
    assert_eq!(bodies[BURST - 1], format!("body {}", BURST - 1));
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_after_the_jetstream_window_is_still_stored_once() {
    let mesh = TestMesh::spawn_with(|s| s.chat.dedup_window = Duration::from_millis(500)).await;
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;
    let (_, bob) = c.user("bob").await;
    befriend(c, &ann, &bob).await;
    let mut ann_ws = Ws::connect(&mesh.url, &ann.access).await;
    ann_ws.send_to(&bob.user_id, "once", "only once").await;
    let first = ann_ws.ack("once", "stored").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Past JetStream's window the resend reaches the worker, which recognises it.
    ann_ws.send_to(&bob.user_id, "once", "only once").await;
    ann_ws.ack("once", "accepted").await;
    let again = ann_ws.ack("once", "stored").await;
    assert_eq!(again["seq"], first["seq"]);
    assert_eq!(again["message_id"], first["message_id"]);
    // Within the window JetStream drops it, and the edge answers from the store.
    ann_ws.send_to(&bob.user_id, "twice", "b").await;
    let stored = ann_ws.ack("twice", "stored").await;
    ann_ws.send_to(&bob.user_id, "twice", "b").await;
    let answered = ann_ws.ack("twice", "stored").await;
    assert_eq!(answered["message_id"], stored["message_id"]);
    let all = history(c, &ann, &private_id(&ann, &bob), 0).await;
    assert_eq!(all.len(), 2, "{all:?}");
    // The store first tries a round as if it held no resend; finding one, it takes the round
    // again from the start, so what the first try charged is not kept.
    let usage = ok(c.get_as("/v1/users/me/usage", &ann.access).await);
    assert_eq!(item(&usage, "messages_per_day").0, 2, "{usage}");
    mesh.stop().await;
}

/// A mesh whose chat worker runs in a process of its own, and that worker's metrics URL.
async fn with_a_chat_process() -> (TestMesh, ChatProcess, String) {
    let roles = &[Role::Edge, Role::User, Role::Social, Role::Outbox];
    let mesh = TestMesh::spawn_roles(roles, |_| {}).await;
    let (worker, metrics) = ChatProcess::with_metrics(&mesh, "0", &[]);
    mesh.wait_ready().await;
    (mesh, worker, metrics)
}

/// A resend that gets past JetStream's duplicate check (a redelivery under another message id,
/// as after the window) costs its round one attempt more, which operators see counted: the
/// round, first stored as if it held no resend, is taken again with its resends looked up.
/// Rounds of new messages are stored at the first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_past_the_duplicate_check_takes_its_round_again_once() {
    let (mesh, _worker, metrics) = with_a_chat_process().await;
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;
    let (_, bob) = c.user("bob").await;
    befriend(c, &ann, &bob).await;
    let mut ann_ws = Ws::connect(&mesh.url, &ann.access).await;
    for client_id in ["first", "second"] {
        ann_ws.send_to(&bob.user_id, client_id, "new").await;
        ann_ws.ack(client_id, "stored").await;
    }
    let retakes = || scraped_sum(&metrics, "mesh_chat_store_retakes_total");
    assert!(
        scraped_sum(&metrics, "mesh_chat_partitions_owned")
            .await
            .is_some(),
        "the worker's metrics are read"
    );
    assert_eq!(retakes().await, None, "new messages are stored at once");

    redeliver(
        &mesh,
        &private_id(&ann, &bob),
        ann.user_id.parse().unwrap(),
        "first",
        "new",
        "redelivery-of-first",
    )
    .await;
    let again = ann_ws.ack("first", "stored").await;
    assert_eq!(again["seq"], 1, "{again}");
    assert_eq!(retakes().await, Some(1.0), "one round taken again");
    let stored = history(c, &ann, &private_id(&ann, &bob), 0).await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    mesh.stop().await;
}

/// A round of private conversations is written while social is asked who may post, and
/// commits only if social allowed every poster. A message social refuses is never stored,
/// the others are, and operators see the round taken again after social's answer
/// (`refused`); an allowed round is stored at the first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_stored_ahead_of_socials_answer_keeps_only_what_social_allows() {
    let (mesh, _worker, metrics) = with_a_chat_process().await;
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;
    let (_, bob) = c.user("bob").await;
    let (_, cy) = c.user("cy").await;
    befriend(c, &ann, &bob).await;
    befriend(c, &ann, &cy).await;
    let mut ann_ws = Ws::connect(&mesh.url, &ann.access).await;
    ann_ws.send_to(&bob.user_id, "allowed", "hello bob").await;
    assert_eq!(ann_ws.stored("allowed").await, 1);
    let retakes = |reason: &'static str| {
        let label = format!("reason=\"{reason}\"");
        let url = metrics.clone();
        async move { scraped_sum_with(&url, "mesh_chat_store_retakes_total", &label).await }
    };
    assert!(
        scraped_sum(&metrics, "mesh_chat_partitions_owned")
            .await
            .is_some(),
        "the worker's metrics are read"
    );
    let stored_ahead = scraped_sum_with(
        &metrics,
        "mesh_chat_round_step_seconds_count",
        "step=\"store_ahead\"",
    );
    assert!(
        stored_ahead.await.is_some_and(|rounds| rounds >= 1.0),
        "the round was stored ahead of social's answer"
    );
    assert_eq!(
        scraped_sum(&metrics, "mesh_chat_store_retakes_total").await,
        None,
        "an allowed round commits at once"
    );

    block(c, &bob, &ann).await;
    ann_ws
        .send_to(&bob.user_id, "blocked", "still there?")
        .await;
    ann_ws.send_to(&cy.user_id, "friend", "hello cy").await;
    assert_eq!(ann_ws.ack("blocked", "rejected").await["reason"], "blocked");
    assert_eq!(ann_ws.stored("friend").await, 1);
    assert_eq!(
        retakes("refused").await,
        Some(1.0),
        "the round holding the refused message was taken again once"
    );
    let with_bob = history(c, &ann, &private_id(&ann, &bob), 0).await;
    let ids: Vec<&str> = with_bob
        .iter()
        .map(|m| m["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["allowed"], "nothing refused is stored");
    let usage = ok(c.get_as("/v1/users/me/usage", &ann.access).await);
    assert_eq!(
        item(&usage, "messages_per_day").0,
        2,
        "the refused message is not charged: {usage}"
    );
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_device_fills_its_gap_with_sync() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;
    let (_, bob) = c.user("bob").await;
    befriend(c, &ann, &bob).await;
    let conversation = private_id(&ann, &bob);
    let mut ann_ws = Ws::connect(&mesh.url, &ann.access).await;
    let mut bob_ws = Ws::connect(&mesh.url, &bob.access).await;
    ann_ws.send_to(&bob.user_id, "seen", "before the gap").await;
    assert_eq!(bob_ws.message("seen").await["seq"], 1);
    bob_ws.close().await;

    for i in 0..30 {
        ann_ws
            .send_to(&bob.user_id, &format!("gap-{i}"), "while away")
            .await;
    }
    ann_ws.stored("gap-29").await;

    let mut bob_ws = Ws::connect(&mesh.url, &bob.access).await;
    bob_ws
        .send(json!({"type": "sync", "conversation_id": conversation, "after_seq": 1, "limit": 20}))
        .await;
    let first = bob_ws.expect_type("sync").await;
    assert_eq!(first["has_more"], true);
    let seqs: Vec<i64> = first["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, (2..=21).collect::<Vec<_>>());
    bob_ws
        .send(json!({"type": "sync", "conversation_id": conversation, "after_seq": 21}))
        .await;
    let rest = bob_ws.expect_type("sync").await;
    assert_eq!(rest["has_more"], false);
    assert_eq!(rest["messages"].as_array().unwrap().len(), 10);
    assert_eq!(rest["messages"][9]["client_id"], "gap-29");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_moves_forward_only_and_tells_the_other_side() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;
    let (_, bob) = c.user("bob").await;
    befriend(c, &ann, &bob).await;
    let conversation = private_id(&ann, &bob);
    let mut ann_ws = Ws::connect(&mesh.url, &ann.access).await;
    let mut bob_ws = Ws::connect(&mesh.url, &bob.access).await;
    for i in 0..5 {
        ann_ws
            .send_to(&bob.user_id, &format!("r-{i}"), "read me")
            .await;
    }
    ann_ws.stored("r-4").await;
    assert_eq!(listed(c, &bob, &conversation).await["unread"], 5);

    // Over the socket: read up to 3; ann gets the receipt.
    bob_ws
        .send(json!({"type": "read", "conversation_id": conversation, "seq": 3}))
        .await;
    let receipt = ann_ws.expect_type("read").await;
    assert_eq!(receipt["user_id"], bob.user_id.as_str());
    assert_eq!(receipt["read_seq"], 3);
    let bobs = listed(c, &bob, &conversation).await;
    assert_eq!(
        (bobs["read_seq"].as_i64(), bobs["unread"].as_i64()),
        (Some(3), Some(2))
    );

    // Over REST: going back changes nothing; going past the end stops at the last message.
    let path = format!("/v1/conversations/{conversation}/read");
    let back = ok(c.post_as(&path, &bob.access, json!({"seq": 1})).await);
    assert_eq!(
        (back["read_seq"].as_i64(), back["unread"].as_i64()),
        (Some(3), Some(2))
    );
    let past = ok(c.post_as(&path, &bob.access, json!({"seq": 99})).await);
    assert_eq!(
        (past["read_seq"].as_i64(), past["unread"].as_i64()),
        (Some(5), Some(0))
    );
    assert_eq!(ann_ws.expect_type("read").await["read_seq"], 5);
    let (status, body) = c.post_as(&path, &bob.access, json!({"seq": -1})).await;
    assert_problem(
        &(status, body.clone()),
        StatusCode::BAD_REQUEST,
        "validation_failed",
    );

    // A stranger may not read or mark anything in this conversation.
    let (_, eve) = c.user("eve").await;
    let (status, body) = c.post_as(&path, &eve.access, json!({"seq": 1})).await;
    assert_problem(&(status, body.clone()), StatusCode::FORBIDDEN, "not_member");
    let (status, body) = c
        .get_as(
            &format!("/v1/conversations/{conversation}/messages"),
            &eve.access,
        )
        .await;
    assert_problem(&(status, body.clone()), StatusCode::FORBIDDEN, "not_member");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_messages_reach_every_member_and_refusals_say_why() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, owner) = c.user("owner").await;
    let (_, amy) = c.user("amy").await;
    let (_, ben) = c.user("ben").await;
    let (_, out) = c.user("outsider").await;
    let group = create_group(c, &owner, "open", 10).await;
    join_open(c, &amy, &group).await;
    join_open(c, &ben, &group).await;
    let conversation = format!("g:{group}");

    let mut owner_ws = Ws::connect(&mesh.url, &owner.access).await;
    let mut amy_ws = Ws::connect(&mesh.url, &amy.access).await;
    let mut ben_ws = Ws::connect(&mesh.url, &ben.access).await;
    let mut out_ws = Ws::connect(&mesh.url, &out.access).await;

    amy_ws.send_in(&conversation, "g-1", "hello group").await;
    assert_eq!(amy_ws.stored("g-1").await, 1);
    for ws in [&mut owner_ws, &mut ben_ws, &mut amy_ws] {
        assert_eq!(ws.message("g-1").await["body"], "hello group");
    }
    assert_eq!(history(c, &ben, &conversation, 0).await.len(), 1);
    let listed_for_ben = listed(c, &ben, &conversation).await;
    assert_eq!(listed_for_ben["group_id"], group.as_str());
    assert_eq!(listed_for_ben["unread"], 1);

    // Not a member.
    out_ws.send_in(&conversation, "x-1", "let me in").await;
    assert_eq!(out_ws.ack("x-1", "rejected").await["reason"], "not_member");
    // Muted.
    ok(mute(
        c,
        &owner,
        &group,
        &ben,
        json!({"muted": true, "duration_secs": 600}),
    )
    .await);
    let reason = until_rejected(&mut ben_ws, Target::Conversation(&conversation)).await;
    assert_eq!(reason, "muted");
    // Unknown group.
    let ghost = format!("g:{}", uuid::Uuid::now_v7());
    amy_ws.send_in(&ghost, "u-1", "anyone?").await;
    assert_eq!(
        amy_ws.ack("u-1", "rejected").await["reason"],
        "unknown_conversation"
    );
    // Malformed conversation, too large, and an empty client id are refused by the edge.
    amy_ws.send_in("nonsense", "u-2", "x").await;
    assert_eq!(
        amy_ws.ack("u-2", "rejected").await["reason"],
        "unknown_conversation"
    );
    amy_ws
        .send_in(&conversation, "big-1", &"x".repeat(16 * 1024 + 1))
        .await;
    assert_eq!(
        amy_ws.ack("big-1", "rejected").await["reason"],
        "message_too_large"
    );
    // Nothing refused was stored or delivered (messages ben sent before the mute applied
    // are from ben).
    let stored = history(c, &owner, &conversation, 0).await;
    assert!(
        stored[1..]
            .iter()
            .all(|m| m["sender_id"] == ben.user_id.as_str()),
        "{stored:?}"
    );
    let late = owner_ws.drain("message", Duration::from_millis(300)).await;
    assert!(
        late.iter().all(|m| m["sender_id"] == ben.user_id.as_str()),
        "{late:?}"
    );
    let (status, body) = c
        .get_as(
            &format!("/v1/conversations/{conversation}/messages"),
            &out.access,
        )
        .await;
    assert_problem(&(status, body.clone()), StatusCode::FORBIDDEN, "not_member");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_messages_need_a_friendship_without_a_block() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;
    let (_, bob) = c.user("bob").await;
    let mut ann_ws = Ws::connect(&mesh.url, &ann.access).await;
    ann_ws.send_to(&bob.user_id, "early", "hi stranger").await;
    assert_eq!(
        ann_ws.ack("early", "rejected").await["reason"],
        "not_friends"
    );
    ann_ws
        .send_to(&ann.user_id, "me", "talking to myself")
        .await;
    assert_eq!(ann_ws.ack("me", "rejected").await["reason"], "self_target");

    // A just-accepted friend can message at once.
    befriend(c, &ann, &bob).await;
    ann_ws.send_to(&bob.user_id, "now", "friends now").await;
    assert_eq!(ann_ws.stored("now").await, 1);

    let (status, _) = c
        .post_as(
            &format!("/v1/blocks/{}", ann.user_id),
            &bob.access,
            json!({}),
        )
        .await;
    assert!(status.is_success(), "block: {status}");
    // The block applies as soon as chat has projected it.
    let reason = until_rejected(&mut ann_ws, Target::User(&bob.user_id)).await;
    assert_eq!(reason, "blocked");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_sends_recalls_deletes_and_settings() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;
    let (_, bob) = c.user("bob").await;
    befriend(c, &ann, &bob).await;
    let conversation = private_id(&ann, &bob);
    let mut bob_ws = Ws::connect(&mesh.url, &bob.access).await;

    let (status, ack) = c
        .post_as(
            "/v1/messages",
            &ann.access,
            json!({"client_id": "rest-1", "to": bob.user_id, "body": "over http"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{ack}");
    assert_eq!(ack["status"], "accepted");
    assert_eq!(ack["conversation_id"], conversation.as_str());
    let message = bob_ws.message("rest-1").await;
    let (status, body) = c
        .post_as(
            "/v1/messages",
            &ann.access,
            json!({"client_id": "rest-2", "conversation_id": conversation, "body": ""}),
        )
        .await;
    assert_problem(
        &(status, body.clone()),
        StatusCode::BAD_REQUEST,
        "validation_failed",
    );
    let (status, body) = c
        .post_as(
            "/v1/messages",
            &ann.access,
            json!({"client_id": "rest-3", "to": bob.user_id, "body": "y".repeat(20_000)}),
        )
        .await;
    assert!(status.is_client_error(), "{status} {body}");

    // Only the sender recalls; everyone is told; history keeps the seq without the body.
    let message_id = message["id"].as_str().unwrap();
    let recall = format!("/v1/conversations/{conversation}/messages/{message_id}/recall");
    let (status, body) = c.post_as(&recall, &bob.access, json!({})).await;
    assert_problem(&(status, body.clone()), StatusCode::FORBIDDEN, "forbidden");
    let (status, _) = c.post_as(&recall, &ann.access, json!({})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let recalled = bob_ws.expect_type("recall").await;
    assert_eq!(recalled["message_id"], message_id);
    let seen = history(c, &bob, &conversation, 0).await;
    assert_eq!(seen[0]["recalled"], true);
    assert_eq!(seen[0]["body"], "");

    // Delete for me hides it from bob only.
    let mut ann_ws = Ws::connect(&mesh.url, &ann.access).await;
    ann_ws.send_to(&bob.user_id, "keep", "delete me").await;
    let kept = ann_ws.ack("keep", "stored").await;
    let kept_id = kept["message_id"].as_str().unwrap();
    let (status, _) = delete_as(
        c,
        &format!("/v1/conversations/{conversation}/messages/{kept_id}"),
        &bob.access,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let bobs = history(c, &bob, &conversation, 1).await;
    assert_eq!(
        (bobs[0]["deleted"].as_bool(), bobs[0]["body"].as_str()),
        (Some(true), Some(""))
    );
    let anns = history(c, &ann, &conversation, 1).await;
    assert_eq!(anns[0]["body"], "delete me");

    // Settings: pin and mute show in the list; hiding drops it until a new message.
    let settings = format!("/v1/conversations/{conversation}/settings");
    let set = ok(patch_as(
        c,
        &settings,
        &bob.access,
        json!({"pinned": true, "muted": true}),
    )
    .await);
    assert_eq!(
        (set["pinned"].as_bool(), set["muted"].as_bool()),
        (Some(true), Some(true))
    );
    let entry = listed(c, &bob, &conversation).await;
    assert_eq!(
        (entry["pinned"].as_bool(), entry["muted"].as_bool()),
        (Some(true), Some(true))
    );
    ok(patch_as(c, &settings, &bob.access, json!({"hidden": true})).await);
    let page = ok(c.get_as("/v1/conversations", &bob.access).await);
    assert!(page["items"].as_array().unwrap().is_empty(), "{page}");
    ann_ws.send_to(&bob.user_id, "back", "I am back").await;
    ann_ws.stored("back").await;
    assert_eq!(
        listed(c, &bob, &conversation).await["last_message"]["client_id"],
        "back"
    );
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_both_ways_and_the_list_pages_by_recency() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;
    let mut ann_ws = Ws::connect(&mesh.url, &ann.access).await;
    let mut conversations = Vec::new();
    for name in ["b", "c", "d"] {
        let (_, friend) = c.user(name).await;
        befriend(c, &ann, &friend).await;
        ann_ws
            .send_to(&friend.user_id, &format!("to-{name}"), name)
            .await;
        ann_ws.stored(&format!("to-{name}")).await;
        conversations.push((private_id(&ann, &friend), friend));
    }
    let (newest, friend) = &conversations[2];
    for i in 0..9 {
        ann_ws
            .send_to(&friend.user_id, &format!("more-{i}"), "x")
            .await;
    }
    ann_ws.stored("more-8").await;

    // Latest first, then older, by before_seq.
    let latest = ok(c
        .get_as(
            &format!("/v1/conversations/{newest}/messages?limit=4"),
            &ann.access,
        )
        .await);
    let seqs = |page: &Value| -> Vec<i64> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(seqs(&latest), vec![10, 9, 8, 7]);
    assert_eq!(
        (latest["has_more"].as_bool(), latest["last_seq"].as_i64()),
        (Some(true), Some(10))
    );
    let older = ok(c
        .get_as(
            &format!("/v1/conversations/{newest}/messages?before_seq=7&limit=10"),
            &ann.access,
        )
        .await);
    assert_eq!(seqs(&older), vec![6, 5, 4, 3, 2, 1]);
    assert_eq!(older["has_more"], false);
    let (status, body) = c
        .get_as(
            &format!("/v1/conversations/{newest}/messages?limit=500"),
            &ann.access,
        )
        .await;
    assert_problem(
        &(status, body.clone()),
        StatusCode::BAD_REQUEST,
        "validation_failed",
    );
    let (status, body) = c
        .get_as("/v1/conversations/not-a-conversation/messages", &ann.access)
        .await;
    assert_problem(
        &(status, body.clone()),
        StatusCode::NOT_FOUND,
        "unknown_conversation",
    );

    // The list pages by recency with a cursor.
    let first = ok(c.get_as("/v1/conversations?limit=2", &ann.access).await);
    let ids = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        ids(&first),
        vec![conversations[2].0.clone(), conversations[1].0.clone()]
    );
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let second = ok(c
        .get_as(
            &format!("/v1/conversations?limit=2&cursor={cursor}"),
            &ann.access,
        )
        .await);
    assert_eq!(ids(&second), vec![conversations[0].0.clone()]);
    assert!(second["next_cursor"].is_null());
    let all: HashSet<String> = ids(&first).into_iter().chain(ids(&second)).collect();
    assert_eq!(all.len(), 3);
    mesh.stop().await;
}

/// The largest body a message may have, of the character JSON escapes: 16 KiB that are
/// 32 KiB once encoded.
fn heavy_body() -> String {
    "\"".repeat(MAX_BODY_BYTES)
}

/// A mesh whose edge takes request bodies of up to 64 KiB, its default (the tests' 16 KiB
/// refuses a heavy body, escaped to 32 KiB in the request).
async fn roomy_mesh() -> TestMesh {
    TestMesh::spawn_with(|settings| settings.max_body_bytes = 64 * 1024).await
}

/// Posts a heavy message as `who` over REST to `target` (`to` or `conversation_id`).
async fn post_heavy(c: &Client, who: &Tokens, target: Value, client_id: &str) {
    let mut body = json!({"client_id": client_id, "body": heavy_body()});
    let fields = body.as_object_mut().unwrap();
    fields.extend(target.as_object().unwrap().clone());
    let (status, ack) = c.post_as("/v1/messages", &who.access, body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{ack}");
}

/// Waits until `count` messages of `sender` are stored.
async fn wait_stored(mesh: &TestMesh, sender: &Tokens, count: i64) {
    let db = sqlx::PgPool::connect(mesh.database_url())
        .await
        .expect("connect to the test database");
    poll_until("the heavy messages stored", Duration::from_secs(60), || {
        let db = db.clone();
        let sender = sender.user_id.clone();
        async move {
            let stored: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM chat.messages WHERE sender_id = $1::text::uuid",
            )
            .bind(sender)
            .fetch_one(&db)
            .await
            .expect("count the stored messages");
            (stored >= count).then_some(())
        }
    })
    .await;
}

/// A page over REST, which must answer (a reply over NATS's 1 MiB `max_payload` is never
/// delivered: the edge times out) and fit in 1 MiB.
async fn fitting_page(c: &Client, who: &Tokens, path: &str) -> Value {
    let (status, page) = c.get_as(path, &who.access).await;
    assert_eq!(status, StatusCode::OK, "{path}: {page}");
    let size = serde_json::to_vec(&page).unwrap().len();
    assert!(size < 1024 * 1024, "{path}: a page of {size} bytes");
    page
}

/// The seqs of a page's messages (`items` over REST, `messages` in a `sync` frame).
fn page_seqs(messages: &Value) -> Vec<i64> {
    messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let body = m["body"].as_str().unwrap();
            assert_eq!(body.len(), MAX_BODY_BYTES, "a whole body");
            m["seq"].as_i64().unwrap()
        })
        .collect()
}

/// A page of history is one NATS reply, which the server refuses over 1 MiB: 50 messages of
/// 16 KiB bodies that escape to 32 KiB come in pages that fit whatever the limit, each saying
/// more follow, and following them reads every message once and in order: forwards and
/// backwards over REST, and over the WebSocket's `sync` as the web console asks for it (limit
/// 100). Before pages had a byte budget, each of these requests timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_of_large_messages_comes_in_pages_that_fit_one_reply() {
    const COUNT: i64 = 50;
    let mesh = roomy_mesh().await;
    let c = &mesh.client;
    let Friends {
        ann,
        bob,
        conversation,
        ..
    } = friends(&mesh).await;
    for i in 0..COUNT {
        post_heavy(c, &ann, json!({"to": bob.user_id}), &format!("big-{i}")).await;
    }
    wait_stored(&mesh, &ann, COUNT).await;
    let messages = format!("/v1/conversations/{conversation}/messages");

    // Forwards, as a client filling a gap reads.
    let (mut seen, mut after, mut pages) = (Vec::new(), 0, 0);
    loop {
        let page = fitting_page(c, &bob, &format!("{messages}?after_seq={after}&limit=100")).await;
        let seqs = page_seqs(&page["items"]);
        assert!(!seqs.is_empty(), "an empty page after {after}: {page}");
        assert_eq!(page["last_seq"], COUNT);
        after = *seqs.last().unwrap();
        seen.extend(seqs);
        pages += 1;
        if page["has_more"] != true {
            break;
        }
        assert!(pages < COUNT, "pages never end");
    }
    assert_eq!(seen, (1..=COUNT).collect::<Vec<_>>());
    assert!(pages >= 3, "{COUNT} heavy messages in {pages} pages");

    // Backwards from the latest, as a client opening the conversation reads.
    let (mut seen, mut query) = (Vec::new(), "limit=200".to_owned());
    loop {
        let page = fitting_page(c, &bob, &format!("{messages}?{query}")).await;
        let seqs = page_seqs(&page["items"]);
        assert!(!seqs.is_empty(), "an empty page at {query}: {page}");
        query = format!("before_seq={}&limit=200", seqs.last().unwrap());
        seen.extend(seqs);
        if page["has_more"] != true {
            break;
        }
        assert!(seen.len() <= COUNT as usize, "pages never end");
    }
    assert_eq!(seen, (1..=COUNT).rev().collect::<Vec<_>>());

    // Over the WebSocket: sync frames, followed while `has_more`.
    let mut bob_ws = Ws::connect(&mesh.url, &bob.access).await;
    let (mut seen, mut after) = (Vec::new(), 0);
    loop {
        bob_ws
            .send(json!({
                "type": "sync", "conversation_id": conversation, "after_seq": after, "limit": 100
            }))
            .await;
        let frame = bob_ws.expect_type("sync").await;
        let seqs = page_seqs(&frame["messages"]);
        assert!(!seqs.is_empty(), "an empty sync after {after}");
        after = *seqs.last().unwrap();
        seen.extend(seqs);
        if frame["has_more"] != true {
            break;
        }
        assert!(seen.len() <= COUNT as usize, "sync never ends");
    }
    assert_eq!(seen, (1..=COUNT).collect::<Vec<_>>());
    mesh.stop().await;
}

/// The conversation list carries each conversation's last message whole, so it pages by bytes
/// too: 40 conversations whose last messages are heavy list in pages that fit (each before
/// pages had a byte budget timed out), and following `next_cursor` lists each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_of_large_last_messages_comes_in_pages_that_fit_one_reply() {
    const GROUPS: i64 = 40;
    let mesh = roomy_mesh().await;
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;
    let mut expected = HashSet::new();
    for i in 0..GROUPS {
        let conversation = format!("g:{}", create_group(c, &ann, "open", 10).await);
        post_heavy(
            c,
            &ann,
            json!({"conversation_id": conversation}),
            &format!("big-{i}"),
        )
        .await;
        expected.insert(conversation);
    }
    wait_stored(&mesh, &ann, GROUPS).await;

    let (mut listed, mut cursor, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/v1/conversations?limit=100&cursor={cursor}"),
            None => "/v1/conversations?limit=100".to_owned(),
        };
        let page = fitting_page(c, &ann, &path).await;
        let items = page["items"].as_array().unwrap();
        assert!(!items.is_empty(), "an empty page at {path}: {page}");
        for item in items {
            let body = item["last_message"]["body"].as_str().unwrap();
            assert_eq!(body.len(), MAX_BODY_BYTES, "a whole body");
            listed.push(item["id"].as_str().unwrap().to_owned());
        }
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(pages < GROUPS, "pages never end");
    }
    assert!(pages >= 2, "{GROUPS} heavy conversations in {pages} pages");
    assert_eq!(
        listed.len(),
        GROUPS as usize,
        "each listed once: {listed:?}"
    );
    assert_eq!(listed.into_iter().collect::<HashSet<_>>(), expected);
    mesh.stop().await;
}

/// How often social has answered `group_roster` for this mesh (its RPC server's counter; the
/// test process shares one registry, the subject names the mesh's prefix).
async fn roster_calls(mesh: &TestMesh) -> f64 {
    let subject = format!(
        "subject=\"{}.social.group_roster\"",
        mesh.settings.prefix.as_str()
    );
    mesh.metrics_text()
        .await
        .lines()
        .filter(|line| line.starts_with("mesh_rpc_server_requests_total{"))
        .filter(|line| line.contains(&subject))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A request about a group asks social for its roster once (a 5,000-member roster is some
/// 430 KB of JSON), and every decision of the request comes from that answer: a message's
/// store round (may post, whose inbox rows, who receives), a typing frame (may read, may post,
/// who receives), a read and a page of history each cost one roster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_request_asks_social_for_the_roster_once() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;
    let (_, bob) = c.user("bob").await;
    let (_, cat) = c.user("cat").await;
    let group = create_group(c, &ann, "open", 10).await;
    join_open(c, &bob, &group).await;
    let conversation = format!("g:{group}");
    let mut ann_ws = Ws::connect(&mesh.url, &ann.access).await;
    let mut bob_ws = Ws::connect(&mesh.url, &bob.access).await;
    ann_ws.send_in(&conversation, "hello", "hello").await;
    ann_ws.stored("hello").await;
    bob_ws.message("hello").await;

    // A message in a group the worker has written inbox rows for, and a message from a
    // member who joined since (the roster changed, so its inbox rows are written again): the
    // round that stores each asks for the roster once.
    for (sender, id) in [(&mut ann_ws, "again"), (&mut bob_ws, "joined")] {
        if id == "joined" {
            join_open(c, &cat, &group).await;
        }
        let before = roster_calls(&mesh).await;
        sender.send_in(&conversation, id, id).await;
        sender.stored(id).await;
        assert_eq!(
            roster_calls(&mesh).await - before,
            1.0,
            "rosters per stored message ({id})"
        );
    }
    ann_ws.message("joined").await;
    let cat_inbox = ok(c.get_as("/v1/conversations", &cat.access).await);
    assert!(
        column(&cat_inbox, "id").contains(&conversation),
        "the new member's inbox lists the group: {cat_inbox}"
    );

    let before = roster_calls(&mesh).await;
    ann_ws
        .send(json!({"type": "typing", "conversation_id": conversation}))
        .await;
    let typing = bob_ws.expect_type("typing").await;
    assert_eq!(typing["user_id"], ann.user_id.as_str());
    assert_eq!(
        roster_calls(&mesh).await - before,
        1.0,
        "rosters per typing frame"
    );

    let before = roster_calls(&mesh).await;
    let read = format!("/v1/conversations/{conversation}/read");
    ok(c.post_as(&read, &bob.access, json!({"seq": 1})).await);
    assert_eq!(roster_calls(&mesh).await - before, 1.0, "rosters per read");

    let before = roster_calls(&mesh).await;
    let page = ok(c
        .get_as(
            &format!("/v1/conversations/{conversation}/messages"),
            &bob.access,
        )
        .await);
    assert_eq!(page["items"][0]["client_id"], "joined", "newest first");
    assert_eq!(roster_calls(&mesh).await - before, 1.0, "rosters per page");
    mesh.stop().await;
}

/// A forged list cursor is the caller's fault: one whose time Postgres cannot store, whose id
/// holds a NUL byte or is no conversation id, or whose numbers overflow, is a 400 (the
/// database would have refused it with a 500).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_conversation_cursor_is_refused_as_bad_input() {
    let mesh = TestMesh::spawn().await;
    let (_, ann) = mesh.client.user("ann").await;
    let group = "g:0190a0b0-0000-7000-8000-000000000000";
    for cursor in [
        // About 7500 BC: `time` holds it, Postgres (from 4714 BC) does not.
        format!("0.-300000000000000000000.{group}"),
        "1.1700000000000000000.%00".to_owned(),
        "1.1700000000000000000.g:%00".to_owned(),
        "1.1700000000000000000.not-a-conversation".to_owned(),
        "1.1700000000000000000.g:0190A0B0-0000-7000-8000-000000000000".to_owned(),
        format!("0.999999999999999999999999999999999999999999.{group}"),
        format!("2.1700000000000000000.{group}"),
    ] {
        let answer = mesh
            .client
            .get_as(&format!("/v1/conversations?cursor={cursor}"), &ann.access)
            .await;
        assert_problem(&answer, StatusCode::BAD_REQUEST, "validation_failed");
    }
    // The earliest time Postgres holds is still a cursor.
    let earliest = ok(mesh
        .client
        .get_as(
            &format!("/v1/conversations?cursor=1.-210866803200000000000.{group}"),
            &ann.access,
        )
        .await);
    assert!(earliest["items"].is_array(), "{earliest}");
    mesh.stop().await;
}

/// Every column of `chat.messages` has the statistics target 10 (migration 0007), so that
/// autovacuum's ANALYZE of a large table samples 3,000 rows, not 30,000 (long enough to hold up
/// store rounds). The sample follows the largest target, so one column added later at the
/// default would undo it: this fails then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_column_is_analyzed_from_a_small_sample() {
    let mesh = TestMesh::spawn().await;
    let db = sqlx::PgPool::connect(mesh.database_url())
        .await
        .expect("connect to the test database");
    let targets: Vec<(String, i32)> = sqlx::query_as(
        "SELECT attname::text, COALESCE(attstattarget::int, -1) FROM pg_attribute \
         WHERE attrelid = 'chat.messages'::regclass AND attnum > 0 AND NOT attisdropped",
    )
    .fetch_all(&db)
    .await
    .expect("read the columns' statistics targets");
    assert!(targets.len() >= 10, "{targets:?}");
    for (column, target) in targets {
        assert_eq!(target, 10, "chat.messages.{column}");
    }
}

/// Each message names a conversation that exists (migration 0008 checks it once per statement,
/// where a foreign key checked it once per row): writing a message into a conversation that
/// does not exist, moving one there, and deleting or renaming a conversation that still has
/// messages all fail with `foreign_key_violation`, and truncating the conversations alone
/// fails; a conversation without messages can go, and so can both tables truncated together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_keeps_its_conversation() {
    let mesh = TestMesh::spawn().await;
    let mut db = crate::events::db(&mesh).await;
    let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let kept = format!("p:{a}:{b}");
    let missing = format!("p:{b}:{a}");
    let refused = |result: Result<PgQueryResult, sqlx::Error>, what: &str| {
        let err = result.expect_err(what);
        let code = err.as_database_error().and_then(|db| db.code());
        assert_eq!(code.as_deref(), Some("23503"), "{what}: {err}");
    };

    refused(
        insert_message(&mut db, &missing, a).await,
        "a message into a conversation that does not exist",
    );
    create_conversation(&mut db, &kept).await;
    insert_message(&mut db, &kept, a)
        .await
        .expect("a message into a conversation that exists");
    refused(
        sqlx::query("UPDATE chat.messages SET conversation_id = $2 WHERE conversation_id = $1")
            .bind(&kept)
            .bind(&missing)
            .execute(&mut db)
            .await,
        "moving a message to a conversation that does not exist",
    );
    refused(
        sqlx::query("DELETE FROM chat.conversations WHERE id = $1")
            .bind(&kept)
            .execute(&mut db)
            .await,
        "deleting a conversation that has a message",
    );
    refused(
        sqlx::query("UPDATE chat.conversations SET id = $2 WHERE id = $1")
            .bind(&kept)
            .bind(&missing)
            .execute(&mut db)
            .await,
        "renaming a conversation that has a message",
    );
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM chat.messages WHERE conversation_id = $1")
            .bind(&kept)
            .fetch_one(&mut db)
            .await
            .expect("count the conversation's messages");
    assert_eq!(stored, 1, "the refused statements changed nothing");
    // A TRUNCATE fires no row trigger; the inbox's foreign key still refuses one that would
    // leave the messages (and the inboxes) behind.
    rolled_back(&mut db, "TRUNCATE chat.conversations")
        .await
        .expect_err("truncating the conversations but not their messages");
    // Both in one command, as the foreign key allowed.
    rolled_back(
        &mut db,
        "TRUNCATE chat.messages, chat.conversations CASCADE",
    )
    .await
    .expect("truncating the messages with their conversations");

    let empty = format!("p:{a}:{}", uuid::Uuid::now_v7());
    create_conversation(&mut db, &empty).await;
    let deleted = sqlx::query("DELETE FROM chat.conversations WHERE id = $1")
        .bind(&empty)
        .execute(&mut db)
        .await
        .expect("a conversation without messages can be deleted");
    assert_eq!(deleted.rows_affected(), 1);
    mesh.stop().await;
}

async fn create_conversation(db: &mut PgConnection, id: &str) {
    sqlx::query("INSERT INTO chat.conversations (id, kind) VALUES ($1, 'private')")
        .bind(id)
        .execute(db)
        .await
        .expect("create a conversation");
}

/// Writes the conversation's first message, as `sender`, straight into `chat.messages`.
async fn insert_message(
    db: &mut PgConnection,
    conversation: &str,
    sender: uuid::Uuid,
) -> Result<PgQueryResult, sqlx::Error> {
    sqlx::query(
        "INSERT INTO chat.messages (conversation_id, seq, id, sender_id, client_id, kind, body) \
         VALUES ($1, 1, $2, $3, $4, 'text', 'hello')",
    )
    .bind(conversation)
    .bind(uuid::Uuid::now_v7())
    .bind(sender)
    .bind(uuid::Uuid::now_v7().to_string())
    .execute(db)
    .await
}

/// Runs `sql` in a transaction that is then rolled back, so the mesh under test keeps its data.
async fn rolled_back(
    db: &mut PgConnection,
    sql: &'static str,
) -> Result<PgQueryResult, sqlx::Error> {
    let mut tx = db.begin().await.expect("begin");
    let result = sqlx::query(sql).execute(&mut *tx).await;
    tx.rollback().await.expect("roll back");
    result
}
