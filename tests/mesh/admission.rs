//! Admission by backlog: a partition whose owner stores more slowly than a client sends
//! holds new messages, then refuses them `overloaded` (with `retry_after_ms`), once its backlog
//! reaches the bound, and a client following the contract (resend the refused message and everything after
//! it, in order) still gets every message stored once, in send order.

use std::collections::HashMap;
use std::time::Duration;

use nats_mesh::Role;
use tokio::time::Instant;

use crate::chat::private_id;
use crate::fencing::ChatProcess;
use crate::harness::TestMesh;
use crate::social_friends::befriend;
use crate::ws::Ws;

/// Most unstored messages per partition in this test.
const BOUND: u64 = 40;
/// Messages the client sends.
const TOTAL: usize = 400;
/// Messages the client keeps sent but not stored.
const WINDOW: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlogged_partition_refuses_overloaded_and_resends_are_stored_once_in_order() {
    let roles = &[Role::Edge, Role::User, Role::Social, Role::Outbox];
    let mesh = TestMesh::spawn_roles(roles, |s| s.chat.max_unstored = BOUND).await;
    // Every storing transaction of this worker stays open 250 ms and takes at most 10
    // messages, or the one ingest message it reads first when that holds more (an edge packs
    // at most 32 sends of one connection into one): it stores far more slowly than the client
    // sends (a window of 150), so the backlog stays over the bound for longer than an edge
    // holds a send. The backlog counts what JetStream already delivered into the worker's
    // feed, not only what is still in the stream.
    let _worker = ChatProcess::with_env(&mesh, "250", &[("MESH_CHAT_BATCH_SIZE", "10")]);
    mesh.wait_ready().await;
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;
    let (_, bob) = c.user("bob").await;
    befriend(c, &ann, &bob).await;
    let conversation = private_id(&ann, &bob);
    let mut ws = Ws::connect(&mesh.url, &ann.access).await;

    let id = |i: usize| format!("m-{i:04}");
    let index = |client_id: &str| client_id[2..].parse::<usize>().expect("our client id");
    let mut stored: HashMap<usize, i64> = HashMap::new();
    let (mut next, mut overloaded, mut held_back) = (0, 0, 0);
    let mut resume_at = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(120);
    while stored.len() < TOTAL {
        assert!(
            Instant::now() < deadline,
            "only {} of {TOTAL} stored",
            stored.len()
        );
        let lowest_unstored = (0..TOTAL)
            .find(|i| !stored.contains_key(i))
            .unwrap_or(TOTAL);
        while Instant::now() >= resume_at && next < TOTAL && next < lowest_unstored + WINDOW {
            ws.send_in(&conversation, &id(next), &format!("body {next}"))
                .await;
            next += 1;
        }
        let Some(frame) = ws.next_within(Duration::from_millis(50)).await else {
            continue;
        };
        if frame["type"] != "ack" {
            continue;
        }
        let i = index(
            frame["client_id"]
                .as_str()
                .expect("an ack names its message"),
        );
        match (frame["status"].as_str(), frame["reason"].as_str()) {
            (Some("stored"), _) => {
                let seq = frame["seq"].as_i64().expect("a stored ack has a seq");
                assert_eq!(*stored.entry(i).or_insert(seq), seq, "{i} stored twice");
            }
            (Some("rejected"), Some(reason @ ("overloaded" | "service_unavailable"))) => {
                if reason == "overloaded" {
                    overloaded += 1;
                    let wait = frame["retry_after_ms"]
                        .as_u64()
                        .expect("when to send again");
                    assert!(wait > 0, "{frame}");
                    resume_at = Instant::now() + Duration::from_millis(wait);
                } else {
                    held_back += 1;
                }
                // The contract: resend the refused message, then everything after it, in order.
                next = next.min(i);
            }
            (Some("accepted"), _) => {}
            _ => panic!("unexpected ack {frame}"),
        }
    }
    assert!(
        overloaded > 0,
        "the bound of {BOUND} never refused anything"
    );
    assert!(
        held_back > 0,
        "later sends were not held back behind the refused one"
    );
    // Stored once each, gap-free, in send order.
    let seqs: Vec<i64> = (0..TOTAL).map(|i| stored[&i]).collect();
    let first = seqs[0];
    let expected: Vec<i64> = (first..first + TOTAL as i64).collect();
    assert_eq!(seqs, expected, "stored out of send order or with gaps");
}
