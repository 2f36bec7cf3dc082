//! Admission by backlog: a partition whose owner stores more slowly than a client sends
//! holds new messages, then refuses them `overloaded` (with `retry_after_ms`), once its backlog
//! reaches the bound, and a client following the contract (resend the refused message and everything after
//! it, in order) still gets every message stored once, in send order. The owner's gauge of
//! unstored messages shows the backlog to operators meanwhile, and falls back to 0.

use std::time::{Duration, Instant};

use nats_mesh::Role;

use crate::chat::{Friends, friends};
use crate::fencing::ChatProcess;
use crate::harness::{TestMesh, poll_until, scraped_sum};
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
    let (_worker, metrics) =
        ChatProcess::with_metrics(&mesh, "250", &[("MESH_CHAT_BATCH_SIZE", "10")]);
    mesh.wait_ready().await;
    let Friends {
        conversation,
        ann_ws: mut ws,
        ..
    } = friends(&mesh).await;

    let mut sender = OrderedSender::new(TOTAL, WINDOW);
    let (mut most_unstored, mut scraped) = (0, Instant::now());
    while !sender.done() {
        sender.send_more(&mut ws, &conversation).await;
        if let Some(frame) = ws.next_within(Duration::from_millis(50)).await {
            sender.take(&frame);
        }
        if scraped.elapsed() > Duration::from_millis(200) {
            most_unstored = most_unstored.max(unstored(&metrics).await.unwrap_or(0));
            scraped = Instant::now();
        }
    }
    // The worker reports its backlog every 100 ms; the edges refused at the bound.
    assert!(
        most_unstored >= BOUND / 2,
        "the unstored-messages gauge showed at most {most_unstored} during a backlog that \
         reached the bound of {BOUND}"
    );
    poll_until(
        "the unstored-messages gauge back to 0",
        Duration::from_secs(10),
        || async { (unstored(&metrics).await == Some(0)).then_some(()) },
    )
    .await;
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

/// The messages the worker at `metrics` reports accepted but not stored, over its partitions;
/// `None` while it cannot be scraped or reports no partition.
async fn unstored(metrics: &str) -> Option<u64> {
    let sum = scraped_sum(metrics, "mesh_chat_unstored_messages").await?;
    Some(sum.max(0.0) as u64)
}
