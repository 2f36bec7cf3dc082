//! Chat under faults: a worker killed mid-stream loses nothing that was accepted, and another
//! worker takes its partitions over; a connection's pipelined sends keep their order across a
//! NATS outage.

use std::collections::HashMap;
use std::time::Duration;

use mesh_contracts::nats_permissions::NatsRole;
use nats_mesh::Role;

use tokio::time::Instant;

use crate::chat::{Friends, friends, history, private_id};
use crate::faults::PrivateNats;
use crate::harness::TestMesh;
use crate::ordered_sender::OrderedSender;
use crate::social_friends::befriend;
use crate::ws::Ws;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_chat_worker_loses_nothing_accepted() {
    let mut mesh = TestMesh::spawn_roles(&[Role::Edge, Role::User, Role::Social], |_| {}).await;
    let first = mesh.start_node(&[Role::Chat]).await;
    mesh.wait_ready().await;
    let c = mesh.client.clone();
    // Several conversations so that messages spread over the partitions.
    let (_, ann) = c.user("ann").await;
    let mut friends = Vec::new();
    for name in ["b", "c", "d", "e"] {
        let (_, friend) = c.user(name).await;
        befriend(&c, &ann, &friend).await;
        friends.push(friend);
    }
    let mut ann_ws = Ws::connect(&mesh.url, &ann.access).await;
    const PER_FRIEND: usize = 60;
    let send = |i: usize| (i % friends.len(), format!("k-{i}"));

    // The first third is stored by the first worker alone.
    let total = PER_FRIEND * friends.len();
    for i in 0..total / 3 {
        let (f, id) = send(i);
        ann_ws
            .send_to(&friends[f].user_id, &id, &format!("body {i}"))
            .await;
    }
    let (_, last) = send(total / 3 - 1);
    ann_ws.stored(&last).await;

    // A second worker joins; then the first dies mid-stream without handing anything back.
    mesh.start_node(&[Role::Chat]).await;
    for i in total / 3..total {
        let (f, id) = send(i);
        ann_ws
            .send_to(&friends[f].user_id, &id, &format!("body {i}"))
            .await;
        if i == total / 2 {
            mesh.kill_node(first);
        }
    }
    for i in 0..total {
        ann_ws.ack(&send(i).1, "accepted").await;
    }
    // The second worker may still be starting when the first dies: until it answers, reads
    // are refused (503), which is not what this test is about.
    mesh.wait_ready().await;
    // Every accepted message is stored once, in send order per conversation.
    let mut expected: HashMap<usize, Vec<String>> = HashMap::new();
    for i in 0..total {
        let (f, id) = send(i);
        expected.entry(f).or_default().push(id);
    }
    // History is served by the chat service: wait until the second worker answers it.
    mesh.wait_ready().await;
    for (f, friend) in friends.iter().enumerate() {
        let conversation = private_id(&ann, friend);
        crate::harness::wait_until("every message stored", || async {
            history(&c, &ann, &conversation, 0).await.len() >= PER_FRIEND
        })
        .await;
        let stored = history(&c, &ann, &conversation, 0).await;
        let ids: Vec<String> = stored
            .iter()
            .map(|m| m["client_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids, expected[&f], "conversation with friend {f}");
        let seqs: Vec<i64> = stored.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
        assert_eq!(seqs, (1..=PER_FRIEND as i64).collect::<Vec<_>>());
    }
    mesh.stop().await;
}

/// The ingest stream records how many partitions its messages are routed over, so a mesh
/// configured for another count cannot strand accepted messages in partitions nobody owns:
/// `mesh migrate` refuses to change it, and so does every role that binds the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_partition_count_is_refused_before_anything_is_accepted() {
    let mesh = TestMesh::spawn().await;
    let mut other = mesh.settings.clone();
    other.chat.partitions = mesh.settings.chat.partitions * 2;
    let expected = format!("MESH_CHAT_PARTITIONS={}", mesh.settings.chat.partitions);

    let migrated = nats_mesh::roles::migrate_nats(&other).await;
    let refused = migrated
        .expect_err("migrate with another count")
        .to_string();
    assert!(refused.contains(&expected), "{refused}");
    for role in [NatsRole::Edge, NatsRole::Chat] {
        let bound = nats_mesh::roles::connect_bus(&other, role, "test-other-count").await;
        let Err(refused) = bound else {
            panic!("{role:?} started with another count");
        };
        let refused = refused.to_string();
        assert!(refused.contains(&expected), "{role:?}: {refused}");
    }
    // Roles that do not touch the ingest stream do not care, and the same count still binds.
    nats_mesh::roles::connect_bus(&other, NatsRole::User, "test-user")
        .await
        .expect("the user role binds whatever the count");
    nats_mesh::roles::connect_bus(&mesh.settings, NatsRole::Edge, "test-same-count")
        .await
        .expect("the same count binds");
    nats_mesh::roles::migrate_nats(&mesh.settings)
        .await
        .expect("migrate with the same count");
    mesh.stop().await;
}

/// A connection hands several sends to the ingest publisher at once; when NATS goes away under
/// them, the publishes that fail take the connection's later sends with them (refused, or held
/// back until the refused one comes again), so a client that resends as the contract says
/// (the refused message first, then the later ones, in order; and what stays unanswered, after
/// a while) gets every message stored once, in send order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_sends_keep_their_order_across_a_nats_outage() {
    const TOTAL: usize = 240;
    const WINDOW: usize = 48;
    let mut nats = PrivateNats::start().await;
    let url = nats.url();
    let mesh = TestMesh::spawn_with(|s| s.nats_url = url).await;
    let c = mesh.client.clone();
    let Friends {
        bob,
        conversation,
        ann_ws: mut ws,
        ..
    } = friends(&mesh).await;

    let mut sender = OrderedSender::new(TOTAL, WINDOW);
    let mut outage = Outage::Before;
    let mut progress = Instant::now();
    while !sender.done() {
        match outage {
            Outage::Before if sender.stored() >= TOTAL / 4 => {
                nats.kill().await;
                outage = Outage::During;
            }
            // Back once a publish under the connection failed (a publish waits 5 s for its
            // ack) and the client heard of it.
            Outage::During if sender.unavailable > 0 => {
                nats.run().await;
                outage = Outage::After;
            }
            _ => {}
        }
        if progress.elapsed() > Duration::from_secs(8) {
            // Nothing stored for a while: what was sent may have been lost with the server.
            sender.resend_unanswered();
            progress = Instant::now();
        }
        sender.send_more(&mut ws, &conversation).await;
        if let Some(frame) = ws.next_within(Duration::from_millis(50)).await
            && sender.take(&frame)
        {
            progress = Instant::now();
        }
    }
    assert_eq!(
        outage,
        Outage::After,
        "NATS went away and came back while the messages were sent"
    );
    assert!(
        sender.unavailable > 0,
        "the outage refused nothing: no publish failed under the connection"
    );
    // Stored once each, gap-free, in send order: by the acks and by what the store serves.
    let in_order = sender.assert_stored_in_order();
    let history = history(&c, &bob, &conversation, 0).await;
    let ids: Vec<String> = history
        .iter()
        .map(|m| m["client_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, in_order);
    mesh.stop().await;
    drop(nats);
}

/// Where the NATS outage of a test stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outage {
    Before,
    During,
    After,
}
