//! A group's frames travel to the edges as one `push.many` message each: members connected to
//! any edge get every frame once and in order, everyone else nothing, and an unreadable
//! `push.many` message holds up nothing behind it.

use std::time::Duration;

use mesh_contracts::nats_permissions::NatsRole;
use serde_json::{Value, json};

use crate::harness::TestMesh;
use crate::social_groups::{create_group, join_open};
use crate::ws::Ws;

/// The client ids of the message frames among `frames`, in order.
fn messages(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .filter(|f| f["type"] == "message")
        .map(|f| f["client_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_frames_reach_members_on_every_edge_once_and_in_order() {
    let mut mesh = TestMesh::spawn().await;
    let other_edge = mesh.spawn_edge().await.url("");
    let c = mesh.client.clone();
    let (_, owner) = c.user("owner").await;
    let (_, amy) = c.user("amy").await;
    let (_, ben) = c.user("ben").await;
    let (_, away) = c.user("away").await;
    let (_, outsider) = c.user("outsider").await;
    let group = create_group(&c, &owner, "open", 10).await;
    for member in [&amy, &ben, &away] {
        join_open(&c, member, &group).await;
    }
    let conversation = format!("g:{group}");

    // Members on both edges (amy on both), a non-member on each.
    let mut owner_ws = Ws::connect(&mesh.url, &owner.access).await;
    let mut amy_phone = Ws::connect(&mesh.url, &amy.access).await;
    let mut amy_tablet = Ws::connect(&other_edge, &amy.access).await;
    let mut ben_ws = Ws::connect(&other_edge, &ben.access).await;
    let mut outsider_here = Ws::connect(&mesh.url, &outsider.access).await;
    let mut outsider_there = Ws::connect(&other_edge, &outsider.access).await;

    let sent: Vec<String> = (1..=5).map(|i| format!("g-{i}")).collect();
    for id in &sent {
        amy_phone.send_in(&conversation, id, id).await;
    }
    // The sender's device sees each ack before its own message.
    let frames = amy_phone.frames_until_message("g-5").await;
    for (i, id) in sent.iter().enumerate() {
        let at = |wanted: &dyn Fn(&Value) -> bool| {
            frames
                .iter()
                .position(|f| f["client_id"] == id.as_str() && wanted(f))
                .unwrap_or_else(|| panic!("{id} missing in {frames:?}"))
        };
        let stored = at(&|f| f["type"] == "ack" && f["status"] == "stored");
        assert!(stored < at(&|f| f["type"] == "message"), "{id}: {frames:?}");
        assert_eq!(frames[stored]["seq"], i + 1);
    }
    assert_eq!(messages(&frames), sent);
    // Every other device of a member, on either edge: each message once, in seq order.
    for ws in [&mut owner_ws, &mut amy_tablet, &mut ben_ws] {
        let frames = ws.frames_until_message("g-5").await;
        assert_eq!(messages(&frames), sent, "{frames:?}");
        let seqs: Vec<i64> = frames
            .iter()
            .filter(|f| f["type"] == "message")
            .map(|f| f["seq"].as_i64().unwrap())
            .collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
        let late = ws.drain("message", Duration::from_millis(300)).await;
        assert!(late.is_empty(), "delivered twice: {late:?}");
    }
    for ws in [&mut outsider_here, &mut outsider_there] {
        let leaked = ws.drain("message", Duration::from_millis(300)).await;
        assert!(leaked.is_empty(), "a non-member got {leaked:?}");
    }

    // Typing takes the same path, and skips the one typing.
    ben_ws
        .send(json!({"type": "typing", "conversation_id": conversation}))
        .await;
    for ws in [&mut owner_ws, &mut amy_tablet] {
        let typing = ws.expect_type("typing").await;
        assert_eq!(typing["user_id"], ben.user_id.as_str());
    }
    assert!(
        ben_ws
            .drain("typing", Duration::from_millis(300))
            .await
            .is_empty()
    );

    // A `push.many` message that is not one (sent with the chat worker's own login) is
    // skipped by every edge; the group's next message arrives behind it.
    let chat_login = mesh.nats_client_as(NatsRole::Chat).await;
    let subject = mesh.settings.prefix.push_many();
    for junk in [&b""[..], b"\x07not a push", b"\x01\x00\x05short"] {
        chat_login
            .publish(subject.clone(), junk.into())
            .await
            .unwrap();
    }
    chat_login.flush().await.unwrap();
    amy_phone.send_in(&conversation, "g-6", "after junk").await;
    for ws in [&mut owner_ws, &mut ben_ws, &mut amy_tablet] {
        assert_eq!(ws.message("g-6").await["body"], "after junk");
    }
    mesh.stop().await;
}
