//! The ingest stream holds only what is not stored yet: chat workers purge what every partition
//! has stored (`Bus::compact_chat_in`), and never a message a partition still has to store.

use std::time::Duration;

use bytes::Bytes;
use mesh_contracts::Stream;
use mesh_contracts::nats_permissions::NatsRole;
use nats_mesh::Role;

use crate::chat::history;
use crate::chat::private_id;
use crate::harness::{TestMesh, poll_until};
use crate::social_friends::befriend;
use crate::ws::Ws;

/// The ingest stream, read with the migrate login.
async fn ingest_stream(mesh: &TestMesh) -> async_nats::jetstream::stream::Stream {
    let client = mesh.nats_client_as(NatsRole::Migrate).await;
    async_nats::jetstream::new(client)
        .get_stream(mesh.settings.prefix.stream(Stream::ChatIn))
        .await
        .expect("the ingest stream")
}

/// Its message count, first and last sequence now.
async fn state(stream: &async_nats::jetstream::stream::Stream) -> (u64, u64, u64) {
    let state = stream.get_info().await.expect("its state").state;
    (state.messages, state.first_sequence, state.last_sequence)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_messages_leave_the_ingest_stream() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;
    let (_, bob) = c.user("bob").await;
    befriend(c, &ann, &bob).await;
    let mut ws = Ws::connect(&mesh.url, &ann.access).await;
    for i in 0..40 {
        ws.send_to(&bob.user_id, &format!("m-{i}"), "hello").await;
    }
    for i in 0..40 {
        ws.stored(&format!("m-{i}")).await;
    }
    // Compaction runs every 250 ms in the tests: the stream keeps only its last message, the
    // table keeps them all.
    let stream = ingest_stream(&mesh).await;
    let (_, first, last) = poll_until(
        "the ingest stream compacted",
        Duration::from_secs(10),
        || async {
            let now = state(&stream).await;
            (now.0 == 1).then_some(now)
        },
    )
    .await;
    // The first message goes alone (its partition was idle); the others share publishes.
    assert!(last >= 2, "the messages went through the stream");
    assert_eq!(first, last, "every message but the last was purged");
    let stored = history(c, &bob, &private_id(&ann, &bob), 0).await;
    assert_eq!(stored.len(), 40, "every message is still in Postgres");
    let metrics = mesh.metrics_text().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("mesh_chat_ingest_compacted_total ") && !l.ends_with(" 0")),
        "compaction is counted"
    );
    assert!(
        metrics.lines().any(|l| {
            l.starts_with("mesh_chat_ingest_compactions_total{outcome=\"ok\"} ")
                && !l.ends_with(" 0")
        }),
        "successful compactions are counted"
    );
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_every_message_a_partition_has_not_stored() {
    // No chat worker: nothing stores or compacts but the test.
    let mesh = TestMesh::spawn_roles(&[Role::Edge, Role::User, Role::Social], |_| {}).await;
    let edge = mesh.bus_as(NatsRole::Edge, "test-ingest").await;
    let chat = mesh.bus_as(NatsRole::Chat, "test-compaction").await;
    let stream = ingest_stream(&mesh).await;
    let publish = |partition: u32, id: String| {
        let edge = edge.clone();
        async move {
            edge.publish_chat(partition, &id, Bytes::from_static(b"{}"))
                .await
                .expect("accepted");
        }
    };
    let compact = |stored: [u64; 2]| {
        let chat = chat.clone();
        async move {
            chat.compact_chat_in(|_, p| stored.get(p as usize).copied().unwrap_or(0))
                .await
                .expect("compaction")
        }
    };
    // A stream never written is left alone: nats-server reads a purge below sequence 1 as no
    // bound at all, which would purge a first message published meanwhile.
    assert_eq!(compact([0, 0]).await, None, "an empty stream is not purged");
    // Sequences 1-5 on partition 0, 6-8 on partition 1.
    for i in 0..5 {
        publish(0, format!("p0-{i}")).await;
    }
    for i in 0..3 {
        publish(1, format!("p1-{i}")).await;
    }
    assert_eq!(
        compact([0, 0]).await,
        None,
        "nothing stored, nothing purged"
    );
    assert_eq!(state(&stream).await, (8, 1, 8));
    // Positions are asked of the stream the compaction reads: its creation time comes along,
    // so one recorded in another stream of the same name (made again since) is not used.
    let created = chat
        .stream_mark(Stream::ChatIn)
        .await
        .expect("the ingest stream")
        .created;
    let asked = std::sync::Mutex::new(Vec::new());
    let compacted = chat
        .compact_chat_in(|at, _| {
            asked.lock().expect("not poisoned").push(at);
            if at == created { 0 } else { 8 }
        })
        .await
        .expect("compaction");
    assert_eq!(compacted, None, "a position of another stream purged");
    let asked = asked.into_inner().expect("not poisoned");
    assert!(
        !asked.is_empty() && asked.iter().all(|at| *at == created),
        "asked for {asked:?}, not the stream's {created}"
    );

    // Partition 0 stored through 3: only 1-3 may go.
    let done = compact([3, 0]).await.expect("a purge");
    assert_eq!((done.below, done.purged), (4, 3));
    assert_eq!(state(&stream).await, (5, 4, 8));

    // Partition 0 stored all; partition 1's first message (6) is not stored: 4 and 5 go.
    let done = compact([5, 0]).await.expect("a purge");
    assert_eq!((done.below, done.purged), (6, 2));

    // Partition 1 stored through 7: 6 and 7 go, 8 stays.
    let done = compact([5, 7]).await.expect("a purge");
    assert_eq!((done.below, done.purged), (8, 2));
    assert_eq!(state(&stream).await, (1, 8, 8));
    assert_eq!(compact([5, 7]).await, None, "nothing more is stored");

    // A partition that never stored anything (3) holds its message back, even when the
    // others stored everything; an older stored position (a stale reading) purges nothing.
    publish(3, "p3-0".into()).await;
    let done = compact([5, 8]).await.expect("a purge");
    assert_eq!((done.below, done.purged), (9, 1));
    assert_eq!(state(&stream).await, (1, 9, 9));
    assert_eq!(
        compact([2, 1]).await,
        None,
        "a stale position purges nothing"
    );
    assert_eq!(state(&stream).await, (1, 9, 9));
    // Every partition stored everything: the last message stays all the same (see
    // `compact_chat_in`: a purge past it empties the whole store, racing the next publish).
    assert_eq!(compact([9, 9]).await, None, "the last message stays");
    assert_eq!(state(&stream).await, (1, 9, 9));
    mesh.stop().await;
}

/// Compaction running flat out while messages are published and read back, as an owner
/// would: every message published is read, none purged before it was. The purges race the
/// publishes on purpose: an empty stream at first, everything read by the time compaction
/// looks (its purge then reaches the stream's end) most of the time after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_racing_publishes_loses_nothing() {
    use std::collections::BTreeSet;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
    use futures::StreamExt;

    const MESSAGES: u64 = 1_500;
    let mesh = TestMesh::spawn_roles(&[Role::Edge, Role::User, Role::Social], |_| {}).await;
    let chat = mesh.bus_as(NatsRole::Chat, "test-compaction").await;
    let jetstream = async_nats::jetstream::new(mesh.nats_client_as(NatsRole::Edge).await);
    let stream = ingest_stream(&mesh).await;
    let subject = mesh.settings.prefix.chat_in(0);

    // The owner: reads partition 0 in order and counts each message stored once read.
    let consumer = stream
        .create_consumer(pull::Config {
            ack_policy: AckPolicy::None,
            deliver_policy: DeliverPolicy::All,
            filter_subject: subject.clone(),
            ..Default::default()
        })
        .await
        .expect("a consumer");
    let stored = Arc::new(AtomicU64::new(0));
    let mut messages = consumer.messages().await.expect("its messages");
    let reader = tokio::spawn({
        let stored = stored.clone();
        async move {
            let mut read = BTreeSet::new();
            while (read.len() as u64) < MESSAGES {
                let next = tokio::time::timeout(Duration::from_secs(5), messages.next()).await;
                let Ok(Some(Ok(message))) = next else { break };
                let seq = message.info().expect("a JetStream message").stream_sequence;
                read.insert(seq);
                stored.store(seq, Ordering::SeqCst);
            }
            read
        }
    });
    let publishing = Arc::new(AtomicBool::new(true));
    let compactor = tokio::spawn({
        let (stored, publishing) = (stored.clone(), publishing.clone());
        async move {
            let mut purges = 0;
            while publishing.load(Ordering::SeqCst) {
                let through = stored.load(Ordering::SeqCst);
                if chat
                    .compact_chat_in(|_, _| through)
                    .await
                    .expect("compaction")
                    .is_some()
                {
                    purges += 1;
                }
            }
            purges
        }
    });
    let mut published = BTreeSet::new();
    for i in 0..MESSAGES {
        let ack = jetstream
            .publish(subject.clone(), Bytes::from(format!("{i}")))
            .await
            .expect("sent")
            .await
            .expect("acknowledged");
        published.insert(ack.sequence);
        if i % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    publishing.store(false, Ordering::SeqCst);
    let purges = compactor.await.expect("the compactor");
    let read = reader.await.expect("the reader");
    let lost: Vec<&u64> = published.difference(&read).collect();
    assert!(lost.is_empty(), "purged before they were read: {lost:?}");
    assert!(purges > 0, "compaction purged while messages came in");
    mesh.stop().await;
}
