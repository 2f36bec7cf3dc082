//! Admission by backlog: a partition whose owner stores more slowly than a client sends
//! holds new messages, then refuses them `overloaded` (with `retry_after_ms`), once its backlog
//! reaches the bound, and a client following the contract (resend the refused message and everything after
//! it, in order) still gets every message stored once, in send order.

use std::time::Duration;

use nats_mesh::Role;

use crate::chat::{Friends, friends};
use crate::fencing::ChatProcess;
use crate::harness::TestMesh;
use crate::ordered_sender::OrderedSender;

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
    let Friends {
        conversation,
        ann_ws: mut ws,
        ..
    } = friends(&mesh).await;

    let mut sender = OrderedSender::new(TOTAL, WINDOW);
    while !sender.done() {
        sender.send_more(&mut ws, &conversation).await;
        if let Some(frame) = ws.next_within(Duration::from_millis(50)).await {
            sender.take(&frame);
        }
    }
    assert!(
        sender.overloaded > 0,
        "the bound of {BOUND} never refused anything"
    );
    assert!(
        sender.unavailable > 0,
        "later sends were not held back behind the refused one"
    );
    // Stored once each, gap-free, in send order.
    sender.assert_stored_in_order();
}
