//! The exact chat contract: poison messages never block a partition, and what each member sees
//! (read positions, former members, rights of every frame, consistent pages, previews,
//! timestamps, restrictions that bite at once, the backlog gauge).

use std::time::Duration;

use bytes::Bytes;
use mesh_contracts::chat::{ConversationId, Inbound, MessageKind};
use mesh_contracts::nats_permissions::NatsRole;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::chat::{history, private_id};
use crate::events::db;
use crate::harness::{TestMesh, Tokens, assert_problem, wait_until};
use crate::social_friends::{befriend, delete_as, ok, patch_as};
use crate::social_groups::{create_group, join_open, kick};
use crate::ws::Ws;

/// Publishes `payload` straight onto the ingest partition of `conversation`, the way any client
/// on the bus could, without the edge.
pub async fn publish_raw(mesh: &TestMesh, conversation: &str, msg_id: &str, payload: Vec<u8>) {
    let partitions = mesh.settings.chat.partitions;
    let partition = ConversationId::parse(conversation)
        .expect("a conversation id")
        .partition(partitions);
    // With the edge's login: only the edge may publish to the ingest stream.
    mesh.bus_as(NatsRole::Edge, "test-poison")
        .await
        .publish_chat(partition, msg_id, Bytes::from(payload))
        .await
        .expect("ingest publish");
}

/// Publishes a text message of `sender`'s again, under message id `msg_id` and past the edge:
/// a redelivery that JetStream's duplicate check does not catch (another message id, the
/// same message), as after its window.
pub async fn redeliver(
    mesh: &TestMesh,
    conversation_id: &str,
    sender: Uuid,
    client_id: &str,
    body: &str,
    msg_id: &str,
) {
    let message = Inbound {
        conversation_id: conversation_id.to_owned(),
        sender_id: sender,
        client_id: client_id.into(),
        kind: MessageKind::Text,
        body: body.into(),
        accepted_at_ms: 0,
    };
    publish_raw(
        mesh,
        conversation_id,
        msg_id,
        serde_json::to_vec(&message).expect("a message"),
    )
    .await;
}

/// Makes the database refuse a message whose body is "poison pill" (a constraint an operator
/// could add): a message that passes every check of the mesh and still cannot be stored.
pub async fn refuse_poison_pills(mesh: &TestMesh) {
    sqlx::query("ALTER TABLE chat.messages ADD CONSTRAINT no_poison CHECK (body <> 'poison pill')")
        .execute(&mut db(mesh).await)
        .await
        .expect("add a constraint");
}

/// The ingest dead letters (payload, error), oldest first.
pub async fn dead_letters(mesh: &TestMesh) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT payload, error FROM chat.dead_letters WHERE consumer = 'ingest' ORDER BY created_at",
    )
    .fetch_all(&mut db(mesh).await)
    .await
    .expect("dead letters")
}

fn uuid(who: &Tokens) -> Uuid {
    who.user_id.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_set_aside_and_the_partition_flows_on() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;
    let (_, bob) = c.user("bob").await;
    befriend(c, &ann, &bob).await;
    let conversation = private_id(&ann, &bob);
    let mut ann_ws = Ws::connect(&mesh.url, &ann.access).await;

    // 1. A NUL is refused at the edge, over REST and over the socket.
    let answer = c
        .post_as(
            "/v1/messages",
            &ann.access,
            json!({"client_id": "n1", "to": bob.user_id, "body": "nul\u{0}inside"}),
        )
        .await;
    assert_problem(&answer, StatusCode::BAD_REQUEST, "invalid_text");
    ann_ws.send_to(&bob.user_id, "n2", "bell\u{7}").await;
    let refused = ann_ws.ack("n2", "rejected").await;
    assert_eq!(refused["reason"], "invalid_text");

    // 2. The same published straight to the ingest subject: the worker refuses it itself and
    //    answers the sender; the next message of the partition is stored.
    let nul = Inbound {
        conversation_id: conversation.clone(),
        sender_id: uuid(&ann),
        client_id: "n3".into(),
        kind: MessageKind::Text,
        body: "nul\u{0}inside".into(),
        accepted_at_ms: 0,
    };
    publish_raw(
        &mesh,
        &conversation,
        &nul.msg_id(),
        serde_json::to_vec(&nul).unwrap(),
    )
    .await;
    assert_eq!(ann_ws.ack("n3", "rejected").await["reason"], "invalid_text");

    // 3. Unreadable bytes on the ingest subject become a dead letter, not a stall.
    publish_raw(
        &mesh,
        &conversation,
        "garbage-1",
        b"{\"not\": \"a message\0".to_vec(),
    )
    .await;
    ann_ws
        .send_to(&bob.user_id, "after-garbage", "still flowing")
        .await;
    assert_eq!(ann_ws.stored("after-garbage").await, 1);

    // 4. A body that passes every check but that the database refuses (a constraint the
    //    operator added): that message alone is set aside, the rest of its batch is stored in
    //    order, and later messages flow on.
    refuse_poison_pills(&mesh).await;
    for (id, body) in [("b1", "before"), ("b2", "poison pill"), ("b3", "after")] {
        ann_ws.send_to(&bob.user_id, id, body).await;
    }
    assert_eq!(ann_ws.ack("b2", "rejected").await["reason"], "unstorable");
    assert_eq!(ann_ws.stored("b1").await, 2);
    assert_eq!(ann_ws.stored("b3").await, 3);
    ann_ws.send_to(&bob.user_id, "later", "later").await;
    assert_eq!(ann_ws.stored("later").await, 4);
    let bodies: Vec<Value> = history(c, &bob, &conversation, 0)
        .await
        .iter()
        .map(|m| m["body"].clone())
        .collect();
    assert_eq!(bodies, ["still flowing", "before", "after", "later"]);

    let letters = dead_letters(&mesh).await;
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert!(letters[0].0.contains("not") && letters[0].1.starts_with("unreadable"));
    assert!(letters[1].0.contains("poison pill") && letters[1].1.starts_with("unstorable"));
    let metrics = mesh.metrics_text().await;
    for reason in ["unreadable", "unstorable"] {
        let line = format!("mesh_chat_dead_letters_total{{reason=\"{reason}\"}}");
        assert!(
            metrics.lines().any(|l| l.starts_with(&line)),
            "{line} missing"
        );
    }
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn former_members_keep_what_they_saw_and_nothing_after() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, owner) = c.user("owner").await;
    let (_, bob) = c.user("bob").await;
    let group = create_group(c, &owner, "open", 10).await;
    join_open(c, &bob, &group).await;
    let conversation = format!("g:{group}");
    let mut owner_ws = Ws::connect(&mesh.url, &owner.access).await;
    owner_ws
        .send_in(&conversation, "g1", "while bob is in")
        .await;
    assert_eq!(owner_ws.stored("g1").await, 1);
    let status = kick(c, &owner, &group, &bob).await.0;
    assert_eq!(status, StatusCode::OK);
    owner_ws
        .send_in(&conversation, "g2", "after bob left")
        .await;
    assert_eq!(owner_ws.stored("g2").await, 2);

    // Bob's list keeps the group as it was when he left, and stops following it.
    let entry = |page: Value| {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == conversation.as_str())
            .cloned()
    };
    wait_until("bob's entry frozen at his removal", || async {
        let page = ok(c.get_as("/v1/conversations", &bob.access).await);
        entry(page).is_some_and(|e| e["last_seq"] == 1)
    })
    .await;
    owner_ws.send_in(&conversation, "g3", "still after").await;
    assert_eq!(owner_ws.stored("g3").await, 3);
    let bobs = entry(ok(c.get_as("/v1/conversations", &bob.access).await)).unwrap();
    assert_eq!(bobs["last_seq"], 1);
    assert_eq!(bobs["unread"], 1);
    assert_eq!(bobs["last_message"]["body"], "while bob is in");

    // History up to his removal, nothing after it.
    let page = ok(c
        .get_as(
            &format!("/v1/conversations/{conversation}/messages?after_seq=0"),
            &bob.access,
        )
        .await);
    assert_eq!(page["last_seq"], 1);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["body"], "while bob is in");

    // He can mark it read and hide it; it stays hidden as the group moves on.
    let read = ok(c
        .post_as(
            &format!("/v1/conversations/{conversation}/read"),
            &bob.access,
            json!({"seq": 99}),
        )
        .await);
    assert_eq!(read["read_seq"], 1);
    let hidden = ok(patch_as(
        c,
        &format!("/v1/conversations/{conversation}/settings"),
        &bob.access,
        json!({"hidden": true}),
    )
    .await);
    assert_eq!(hidden["hidden"], true);
    owner_ws.send_in(&conversation, "g4", "more").await;
    owner_ws.stored("g4").await;
    let page = ok(c.get_as("/v1/conversations", &bob.access).await);
    assert!(entry(page.clone()).is_none(), "{page}");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_and_receipts_need_the_right_to_post() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;
    let (_, bob) = c.user("bob").await;
    let (_, eve) = c.user("eve").await;
    befriend(c, &ann, &bob).await;
    let with_bob = private_id(&ann, &bob);
    let mut ann_ws = Ws::connect(&mesh.url, &ann.access).await;
    let mut bob_ws = Ws::connect(&mesh.url, &bob.access).await;
    for i in 0..2 {
        ann_ws.send_to(&bob.user_id, &format!("r{i}"), "hi").await;
    }
    ann_ws.stored("r1").await;

    // A stranger's typing is refused and never reaches ann.
    let mut eve_ws = Ws::connect(&mesh.url, &eve.access).await;
    let with_eve = private_id(&ann, &eve);
    eve_ws
        .send(json!({"type": "typing", "conversation_id": with_eve}))
        .await;
    let error = eve_ws.expect_type("error").await;
    assert_eq!(error["code"], "not_friends");

    // Bob is blocked by ann: his typing is refused, and his read receipt reaches only his own
    // devices, not ann.
    ok(c.post_as(
        &format!("/v1/blocks/{}", bob.user_id),
        &ann.access,
        json!({}),
    )
    .await);
    bob_ws
        .send(json!({"type": "typing", "conversation_id": with_bob}))
        .await;
    assert_eq!(bob_ws.expect_type("error").await["code"], "blocked");
    let read = ok(c
        .post_as(
            &format!("/v1/conversations/{with_bob}/read"),
            &bob.access,
            json!({"seq": 2}),
        )
        .await);
    assert_eq!(read["read_seq"], 2);
    assert_eq!(bob_ws.expect_type("read").await["read_seq"], 2);
    let seen = ann_ws.drain("read", Duration::from_millis(800)).await;
    assert!(
        seen.is_empty(),
        "a blocked user's receipt reached ann: {seen:?}"
    );
    let typing = ann_ws.drain("typing", Duration::from_millis(200)).await;
    assert!(typing.is_empty(), "typing reached ann: {typing:?}");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restrictions_bite_as_soon_as_they_are_answered() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;
    let (_, bob) = c.user("bob").await;
    let (_, cid) = c.user("cid").await;
    befriend(c, &ann, &bob).await;
    befriend(c, &ann, &cid).await;
    let mut bob_ws = Ws::connect(&mesh.url, &bob.access).await;
    let mut cid_ws = Ws::connect(&mesh.url, &cid.access).await;
    bob_ws.send_to(&ann.user_id, "warm", "hi").await;
    bob_ws.stored("warm").await;

    // Ann blocks bob and unfriends cid; every message sent after those answers is refused.
    ok(c.post_as(
        &format!("/v1/blocks/{}", bob.user_id),
        &ann.access,
        json!({}),
    )
    .await);
    let unfriended = delete_as(c, &format!("/v1/friends/{}", cid.user_id), &ann.access).await;
    assert!(unfriended.0.is_success(), "{unfriended:?}");
    for i in 0..4 {
        bob_ws
            .send_to(&ann.user_id, &format!("b{i}"), "after the block")
            .await;
        cid_ws
            .send_to(&ann.user_id, &format!("c{i}"), "after unfriending")
            .await;
    }
    for i in 0..4 {
        assert_eq!(
            bob_ws.ack(&format!("b{i}"), "rejected").await["reason"],
            "blocked"
        );
        assert_eq!(
            cid_ws.ack(&format!("c{i}"), "rejected").await["reason"],
            "not_friends"
        );
    }

    // In a group: a kick answered, then the kicked member's message is refused.
    let group = create_group(c, &ann, "open", 10).await;
    join_open(c, &bob, &group).await;
    let conversation = format!("g:{group}");
    kick(c, &ann, &group, &bob).await;
    bob_ws.send_in(&conversation, "k1", "after the kick").await;
    assert_eq!(bob_ws.ack("k1", "rejected").await["reason"], "not_member");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_previews_and_timestamps_agree() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;
    let (_, bob) = c.user("bob").await;
    befriend(c, &ann, &bob).await;
    let conversation = private_id(&ann, &bob);
    let mut ann_ws = Ws::connect(&mesh.url, &ann.access).await;
    let mut bob_ws = Ws::connect(&mesh.url, &bob.access).await;

    // One representation of `sent_at`: the pushed frame equals the stored row.
    ann_ws.send_to(&bob.user_id, "t1", "when?").await;
    let mut pushed = bob_ws.message("t1").await;
    let stored = history(c, &bob, &conversation, 0).await;
    assert_eq!(pushed["sent_at"], stored[0]["sent_at"]);
    pushed.as_object_mut().unwrap().remove("type");
    assert_eq!(pushed, stored[0]);

    // Delete-for-me blanks the list preview too.
    let id = pushed["id"].as_str().unwrap();
    let deleted = delete_as(
        c,
        &format!("/v1/conversations/{conversation}/messages/{id}"),
        &bob.access,
    )
    .await;
    assert!(deleted.0.is_success(), "{deleted:?}");
    let page = ok(c.get_as("/v1/conversations?limit=150", &bob.access).await);
    let preview = &page["items"][0]["last_message"];
    assert_eq!(preview["deleted"], true, "{page}");
    assert_eq!(preview["body"], "");
    // ... but not for ann, who did not delete it.
    let anns = ok(c.get_as("/v1/conversations?limit=200", &ann.access).await);
    assert_eq!(anns["items"][0]["last_message"]["body"], "when?");
    let too_big = c.get_as("/v1/conversations?limit=201", &ann.access).await;
    assert_problem(&too_big, StatusCode::BAD_REQUEST, "validation_failed");

    // A page never stops short of the last_seq it reports, while messages flow.
    let sender = tokio::spawn(async move {
        for i in 0..150 {
            ann_ws.send_to(&bob.user_id, &format!("f{i}"), "flow").await;
        }
        ann_ws.stored("f149").await;
    });
    let path = format!("/v1/conversations/{conversation}/messages?after_seq=0&limit=200");
    while !sender.is_finished() {
        let page = ok(c.get_as(&path, &bob.access).await);
        let items = page["items"].as_array().unwrap();
        let newest = items.last().map_or(0, |m| m["seq"].as_i64().unwrap());
        assert_eq!(page["has_more"], false);
        assert_eq!(
            newest,
            page["last_seq"].as_i64().unwrap(),
            "a page short of its last_seq"
        );
    }
    sender.await.unwrap();
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_gauge_shows_owned_partitions_without_traffic() {
    // Seven partitions: no other test mesh in this process owns partitions 4-6, so their series
    // can only come from this mesh's owners, reporting on their own clock with no traffic.
    let mesh = TestMesh::spawn_with(|s| s.chat.partitions = 7).await;
    let c = &mesh.client;
    wait_until("every owned partition reports its backlog", || async {
        let text = c.metrics_text().await;
        (4..7).all(|p| {
            let pending =
                format!("mesh_chat_consumer_pending{{partition=\"{p}\",state=\"pending\"}}");
            // The backlog the edges admit by, in chat messages: none unstored, so 0.
            let unstored = format!("mesh_chat_unstored_messages{{partition=\"{p}\"}} 0");
            text.lines().any(|l| l.starts_with(&pending)) && text.lines().any(|l| l == unstored)
        })
    })
    .await;
    mesh.stop().await;
}
