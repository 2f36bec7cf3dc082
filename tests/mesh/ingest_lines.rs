//! Messages an edge accepts for a partition while its previous publish waits go out as one
//! ingest message of one line each: stored once each, in each sender's order and gap-free,
//! with fewer JetStream messages than chat messages (also for one connection's burst, whose
//! sends do not wait for each other's publish); and a bad line of such an ingest message
//! is set aside alone while the lines around it are stored.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use mesh_contracts::Stream;
use mesh_contracts::chat::{ConversationId, Inbound, MessageKind};
use mesh_contracts::nats_permissions::NatsRole;
use serde_json::Value;

use crate::chat::{Friends, friends, history};
use crate::chat_contract::{dead_letters, refuse_poison_pills};
use crate::harness::{TestMesh, Tokens};
use crate::social_groups::{create_group, join_open};
use crate::ws::Ws;

/// Messages each member sends without waiting for any answer.
const EACH: usize = 25;
const MEMBERS: usize = 8;

/// How many messages the ingest stream was ever given.
async fn ingest_messages(mesh: &TestMesh) -> u64 {
    let client = mesh.nats_client_as(NatsRole::Migrate).await;
    let mut stream = async_nats::jetstream::new(client)
        .get_stream(mesh.settings.prefix.stream(Stream::ChatIn))
        .await
        .expect("the ingest stream");
    stream.info().await.expect("its state").state.last_sequence
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_accepted_together_share_an_ingest_message_and_keep_their_order() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, owner) = c.user("owner").await;
    let group = create_group(c, &owner, "open", 20).await;
    let conversation = format!("g:{group}");
    let mut members = vec![owner];
    for i in 1..MEMBERS {
        let (_, member) = c.user(&format!("member{i}")).await;
        join_open(c, &member, &group).await;
        members.push(member);
    }
    let mut sockets = Vec::new();
    for member in &members {
        sockets.push(Ws::connect(&mesh.url, &member.access).await);
    }
    let before = ingest_messages(&mesh).await;

    // Every member writes all of its messages at once; the edge publishes one connection's
    // sends one after another, so each publish finds the other members' sends waiting.
    let sent = |m: usize, i: usize| format!("m{m}-{i}");
    for (m, ws) in sockets.iter_mut().enumerate() {
        for i in 0..EACH {
            ws.send_in(&conversation, &sent(m, i), &sent(m, i)).await;
        }
    }
    let mut seqs = HashSet::new();
    for (m, ws) in sockets.iter_mut().enumerate() {
        let mut last = 0;
        for i in 0..EACH {
            let seq = ws.stored(&sent(m, i)).await;
            assert!(seq > last, "member {m}'s message {i} stored out of order");
            last = seq;
            assert!(seqs.insert(seq), "seq {seq} given twice");
        }
    }
    let total = MEMBERS * EACH;
    let expected: HashSet<i64> = (1..=total as i64).collect();
    assert_eq!(seqs, expected, "gap-free");

    let published = ingest_messages(&mesh).await - before;
    assert!(
        published < total as u64,
        "{total} messages took {published} ingest messages: none were published together"
    );

    // What members read back: each message once, each sender's in the order it sent them.
    let stored = history(c, &members[1], &conversation, 0).await;
    assert_eq!(stored.len(), total);
    for m in 0..MEMBERS {
        let mine: Vec<String> = stored
            .iter()
            .filter_map(|message| message["client_id"].as_str())
            .filter(|id| id.starts_with(&format!("m{m}-")))
            .map(str::to_owned)
            .collect();
        let wanted: Vec<String> = (0..EACH).map(|i| sent(m, i)).collect();
        assert_eq!(mine, wanted, "member {m}");
    }
    mesh.stop().await;
}

/// A partition's publishes start at least `MESH_CHAT_INGEST_SPACING` apart: what is handed
/// over sooner waits for the spacing and goes out in one publish, while a partition quiet for
/// that long publishes at once; the messages are stored in send order either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_publishes_once_per_spacing_and_at_once_when_quiet() {
    const SPACING: Duration = Duration::from_secs(2);
    const BURST: usize = 5;
    let mesh = TestMesh::spawn_with(|s| s.chat.ingest_spacing = SPACING).await;
    let Friends {
        conversation,
        ann_ws: mut ws,
        ..
    } = friends(&mesh).await;
    // Whatever becoming friends published is a spacing behind.
    tokio::time::sleep(SPACING).await;
    let before = ingest_messages(&mesh).await;

    let first_sent = Instant::now();
    send_quietly(&mut ws, &conversation, "first", SPACING).await;
    assert_eq!(ingest_messages(&mesh).await - before, 1);

    let id = |i: usize| format!("burst-{i}");
    for i in 0..BURST {
        ws.send_in(&conversation, &id(i), "burst").await;
    }
    for i in 0..BURST {
        ws.ack(&id(i), "accepted").await;
    }
    assert!(
        first_sent.elapsed() >= SPACING,
        "the burst was published {:?} after the first message, within the spacing",
        first_sent.elapsed()
    );
    assert_eq!(
        ingest_messages(&mesh).await - before,
        2,
        "the burst, handed over while the spacing ran, went out in one publish"
    );
    let mut seqs = vec![ws.stored("first").await];
    for i in 0..BURST {
        seqs.push(ws.stored(&id(i)).await);
    }
    assert!(
        seqs.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "stored gap-free in send order: {seqs:?}"
    );

    tokio::time::sleep(SPACING).await;
    send_quietly(&mut ws, &conversation, "after", SPACING).await;
    assert_eq!(ingest_messages(&mesh).await - before, 3);
    mesh.stop().await;
}

/// Sends `client_id` into a partition quiet for at least `spacing`: it is accepted without
/// waiting for the spacing.
async fn send_quietly(ws: &mut Ws, conversation: &str, client_id: &str, spacing: Duration) {
    let sent = Instant::now();
    ws.send_in(conversation, client_id, client_id).await;
    ws.ack(client_id, "accepted").await;
    assert!(
        sent.elapsed() < spacing,
        "a quiet partition kept {client_id} waiting {:?} (spacing {spacing:?})",
        sent.elapsed()
    );
}

/// One connection's burst: the edge hands each send to the publisher without waiting for the
/// one before to be published, so the burst shares publishes; the acks come in send order and
/// the messages are stored in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_s_burst_shares_publishes_and_keeps_its_order() {
    const BURST: usize = 64;
    let mesh = TestMesh::spawn().await;
    let Friends {
        conversation,
        ann_ws: mut ws,
        ..
    } = friends(&mesh).await;
    let before = ingest_messages(&mesh).await;

    let id = |i: usize| format!("b-{i:03}");
    for i in 0..BURST {
        ws.send_in(&conversation, &id(i), &format!("burst {i}"))
            .await;
    }
    let (mut accepted, mut stored) = (Vec::new(), Vec::new());
    while stored.len() < BURST {
        let frame = ws
            .next_within(std::time::Duration::from_secs(10))
            .await
            .expect("every message answered");
        if frame["type"] != "ack" {
            continue;
        }
        let client_id = frame["client_id"]
            .as_str()
            .expect("an ack names its message");
        match frame["status"].as_str() {
            Some("accepted") => accepted.push(client_id.to_owned()),
            Some("stored") => stored.push((client_id.to_owned(), frame["seq"].as_i64().unwrap())),
            _ => panic!("unexpected ack {frame}"),
        }
    }
    let in_order: Vec<String> = (0..BURST).map(id).collect();
    assert_eq!(accepted, in_order, "accepted acks in send order");
    let mut by_seq = stored.clone();
    by_seq.sort_by_key(|(_, seq)| *seq);
    let ids: Vec<&str> = by_seq.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, in_order, "stored in send order");
    assert_eq!(
        by_seq.last().map(|(_, seq)| *seq),
        Some(BURST as i64),
        "gap-free"
    );

    let published = ingest_messages(&mesh).await - before;
    assert!(
        published <= (BURST / 2) as u64,
        "one connection's {BURST} sends took {published} ingest messages"
    );
    mesh.stop().await;
}

fn inbound(conversation: &str, sender: &Tokens, client_id: &str, body: &str) -> Vec<u8> {
    serde_json::to_vec(&Inbound {
        conversation_id: conversation.to_owned(),
        sender_id: sender.user_id.parse().unwrap(),
        client_id: client_id.into(),
        kind: MessageKind::Text,
        body: body.into(),
        accepted_at_ms: 0,
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_line_is_set_aside_alone_and_the_lines_around_it_are_stored() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let Friends {
        ann,
        bob,
        conversation,
        mut ann_ws,
    } = friends(&mesh).await;
    refuse_poison_pills(&mesh).await;

    // One ingest message of five lines, as an edge publishes what it accepted together.
    let lines = [
        inbound(&conversation, &ann, "l1", "first"),
        b"{\"not\": \"a message".to_vec(),
        inbound(&conversation, &ann, "l3", "poison pill"),
        inbound(&conversation, &ann, "l4", "fourth"),
        inbound(&conversation, &ann, "l1", "first, resent"),
    ];
    let partition = ConversationId::parse(&conversation)
        .unwrap()
        .partition(mesh.settings.chat.partitions);
    let edge = mesh.bus_as(NatsRole::Edge, "test-lines").await;
    let lines: Vec<_> = lines
        .into_iter()
        .enumerate()
        .map(|(i, line)| edge.chat_line(partition, format!("line-{i}"), line.into()))
        .collect();
    edge.publish_chat_lines(partition, &lines)
        .await
        .expect("ingest publish");

    assert_eq!(ann_ws.stored("l1").await, 1);
    assert_eq!(ann_ws.ack("l3", "rejected").await["reason"], "unstorable");
    assert_eq!(ann_ws.stored("l4").await, 2);
    // The resend of l1 in the same ingest message is answered with the first one's seq.
    assert_eq!(ann_ws.stored("l1").await, 1);
    let bodies: Vec<Value> = history(c, &bob, &conversation, 0)
        .await
        .iter()
        .map(|m| m["body"].clone())
        .collect();
    assert_eq!(bodies, ["first", "fourth"]);

    let letters = dead_letters(&mesh).await;
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert_eq!(letters[0].0, "{\"not\": \"a message", "the bad line alone");
    assert!(letters[0].1.starts_with("unreadable"), "{letters:?}");
    let poison = inbound(&conversation, &ann, "l3", "poison pill");
    assert_eq!(letters[1].0.as_bytes(), poison, "the unstorable line alone");
    assert!(letters[1].1.starts_with("unstorable"), "{letters:?}");

    // The partition flows on.
    ann_ws.send_to(&bob.user_id, "after", "after").await;
    assert_eq!(ann_ws.stored("after").await, 3);
    mesh.stop().await;
}
