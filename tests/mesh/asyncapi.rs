//! The AsyncAPI document at `/asyncapi.json` describes every frame the server really sends and
//! the frames clients send: each one seen in a session that produces all of them validates.

use std::collections::BTreeSet;

use mesh_contracts::asyncapi::frame_schema;
use mesh_contracts::chat::{ClientFrame, ServerFrame};
use serde_json::{Value, json};

use crate::chat::private_id;
use crate::harness::TestMesh;
use crate::social_friends::{befriend, ok, send_request};
use crate::ws::Ws;

/// The `type` of every server frame the document lists.
fn documented_types(doc: &Value) -> BTreeSet<String> {
    doc["components"]["schemas"]["ServerFrame"]["oneOf"]
        .as_array()
        .expect("ServerFrame is one of its variants")
        .iter()
        .map(|v| {
            v["properties"]["type"]["const"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_frame_validates_against_the_published_document() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let doc = ok(c.get("/asyncapi.json").await);
    assert_eq!(doc["asyncapi"], "3.0.0");
    assert_eq!(doc["channels"]["websocket"]["address"], "/v1/ws");
    let closes: Vec<u64> = doc["channels"]["websocket"]["x-close-codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["code"].as_u64().unwrap())
        .collect();
    for code in [1009, 4000, 4001, 4008, 4401] {
        assert!(closes.contains(&code), "close code {code} undocumented");
    }
    let server = jsonschema::validator_for(&frame_schema::<ServerFrame>(&doc)).unwrap();
    let client = jsonschema::validator_for(&frame_schema::<ClientFrame>(&doc)).unwrap();

    let (_, ann) = c.user("ann").await;
    let (_, bob) = c.user("bob").await;
    let (_, cid) = c.user("cid").await;
    befriend(c, &ann, &bob).await;
    let conversation = private_id(&ann, &bob);
    let mut seen: Vec<Value> = Vec::new();
    let mut sent: Vec<Value> = Vec::new();

    let (mut ann_ws, ready) = Ws::connect_ready(&mesh.url, &ann.access).await;
    seen.push(ready);
    let mut bob_ws = Ws::connect(&mesh.url, &bob.access).await;
    seen.push(ann_ws.expect_type("presence").await);

    let frames = [
        json!({"type": "send", "client_id": "a1", "to": bob.user_id, "body": "hi", "kind": "text"}),
        json!({"type": "typing", "conversation_id": conversation}),
        json!({"type": "ping", "nonce": "n"}),
        json!({"type": "sync", "conversation_id": conversation, "after_seq": 0, "limit": 10}),
        json!({"type": "send", "client_id": "a2", "to": cid.user_id, "body": "stranger"}),
        json!({"type": "read", "conversation_id": "not-a-conversation", "seq": 1}),
    ];
    ann_ws.send(frames[0].clone()).await;
    seen.push(ann_ws.ack("a1", "accepted").await);
    seen.push(ann_ws.ack("a1", "stored").await);
    let message = bob_ws.message("a1").await;
    seen.push(message.clone());
    ann_ws.send(frames[1].clone()).await;
    seen.push(bob_ws.expect_type("typing").await);
    ann_ws.send(frames[2].clone()).await;
    seen.push(ann_ws.expect_type("pong").await);
    ann_ws.send(frames[3].clone()).await;
    seen.push(ann_ws.expect_type("sync").await);
    ann_ws.send(frames[4].clone()).await;
    seen.push(ann_ws.ack("a2", "rejected").await);
    ann_ws.send(frames[5].clone()).await;
    seen.push(ann_ws.expect_type("error").await);
    sent.extend(frames);
    let read = json!({"type": "read", "conversation_id": conversation, "seq": 1});
    bob_ws.send(read.clone()).await;
    sent.push(read);
    seen.push(ann_ws.expect_type("read").await);
    let id = message["id"].as_str().unwrap();
    let recall = c
        .post_as(
            &format!("/v1/conversations/{conversation}/messages/{id}/recall"),
            &ann.access,
            json!({}),
        )
        .await;
    assert!(recall.0.is_success(), "{recall:?}");
    seen.push(bob_ws.expect_type("recall").await);
    send_request(c, &cid, &ann, "hello").await;
    seen.push(ann_ws.expect_type("notification").await);
    ok(c.post_as("/v1/auth/logout", &ann.access, json!({})).await);
    seen.push(ann_ws.expect_type("session_revoked").await);
    sent.push(json!({"type": "auth", "token": "x.y.z"}));

    let mut types = BTreeSet::new();
    for frame in &seen {
        let errors: Vec<String> = server.iter_errors(frame).map(|e| e.to_string()).collect();
        assert!(
            errors.is_empty(),
            "{frame} does not match the document: {errors:?}"
        );
        let kind = frame["type"].as_str().unwrap().to_owned();
        if kind == "ack" && frame["status"] == "rejected" {
            types.insert("ack_rejected".to_owned());
        }
        types.insert(kind);
    }
    // Every frame type the document lists was seen (a new one fails here until exercised),
    // and rejections too.
    let mut expected = documented_types(&doc);
    assert!(expected.len() >= 12, "{expected:?}");
    expected.insert("ack_rejected".to_owned());
    assert_eq!(types, expected, "a server frame type was not exercised");
    for frame in &sent {
        assert!(
            client.is_valid(frame),
            "client frame {frame} does not match"
        );
    }
    // The document rejects what the server would never send.
    assert!(!server.is_valid(&json!({"type": "made_up"})));
    assert!(!server.is_valid(&json!({"type": "ack", "client_id": "x", "status": "lost"})));
    mesh.stop().await;
}
