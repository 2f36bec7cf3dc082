//! Two batches of one partition in store rounds at once (#16): while a batch is held in its
//! storing transaction, the next one is queued, and its round waits for the first to be stored
//! before storing its own; a third waits until the first is done. Every message is stored once,
//! in send order, and pushed to the reader in seq order.

use std::time::Duration;

use nats_mesh::Role;

use crate::fencing::ChatProcess;
use crate::harness::{TestMesh, poll_until};
use crate::nats_server::free_port;
use crate::social_friends::befriend;
use crate::ws::Ws;

/// How long the worker holds each storing transaction open.
const HOLD_MS: u64 = 1000;
/// Messages in each wave; a wave is sent while the one before is held.
const WAVE: usize = 5;
const WAVES: usize = 4;

/// The chat worker's `mesh_chat_round_step_seconds` series for `step`: (rounds that waited at
/// most 100 ms, all rounds).
async fn step_waits(metrics_url: &str, step: &str) -> Option<(u64, u64)> {
    let text = reqwest::get(metrics_url).await.ok()?.text().await.ok()?;
    let label = format!("step=\"{step}\"");
    let value = |prefix: &str, extra: &str| {
        text.lines()
            .find(|line| line.starts_with(prefix) && line.contains(&label) && line.contains(extra))
            .and_then(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
    };
    let quick = value("mesh_chat_round_step_seconds_bucket{", "le=\"0.1\"")?;
    let all = value("mesh_chat_round_step_seconds_count{", "")?;
    Some((quick, all))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_batch_waits_for_the_one_storing_and_the_order_holds() {
    let mesh = TestMesh::spawn_roles(&[Role::Edge, Role::User, Role::Social], |s| {
        s.chat.partitions = 1
    })
    .await;
    let metrics = format!("127.0.0.1:{}", free_port());
    let _worker = ChatProcess::with_env(
        &mesh,
        &HOLD_MS.to_string(),
        &[("MESH_METRICS_ADDR", metrics.as_str())],
    );
    mesh.wait_ready().await;
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;
    let (_, bob) = c.user("bob").await;
    befriend(c, &ann, &bob).await;
    let mut sender = Ws::connect(&mesh.url, &ann.access).await;
    let mut reader = Ws::connect(&mesh.url, &bob.access).await;

    let ids: Vec<String> = (0..WAVES)
        .flat_map(|wave| (0..WAVE).map(move |i| format!("p-{wave}-{i}")))
        .collect();
    for wave in ids.chunks(WAVE) {
        for id in wave {
            sender.send_to(&bob.user_id, id, "x").await;
        }
        tokio::time::sleep(Duration::from_millis(HOLD_MS / 4)).await;
    }

    // Stored once each, gap-free, in send order.
    let mut seqs = Vec::new();
    for id in &ids {
        seqs.push(sender.stored(id).await);
    }
    let first = seqs[0];
    let expected: Vec<i64> = (first..first + ids.len() as i64).collect();
    assert_eq!(seqs, expected, "seqs in send order, gap-free");

    // Pushed to the reader once each, in seq order.
    let pushed: Vec<(String, i64)> = reader
        .drain("message", Duration::from_millis(HOLD_MS / 2))
        .await
        .into_iter()
        .map(|m| {
            let id = m["client_id"].as_str().unwrap_or_default().to_owned();
            (id, m["seq"].as_i64().unwrap_or_default())
        })
        .collect();
    let wanted: Vec<(String, i64)> = ids.iter().cloned().zip(expected).collect();
    assert_eq!(pushed, wanted, "pushes in seq order, once each");

    // Each later wave's round started while the batch before it was held, and waited for it
    // to be stored: the wait only a pipelined batch has, longer than 100 ms.
    let url = format!("http://{metrics}/metrics");
    let (quick, all) = poll_until(
        "the worker's round step metrics",
        Duration::from_secs(10),
        || async { step_waits(&url, "previous").await },
    )
    .await;
    assert!(
        all - quick >= 1,
        "some round waited for its partition's previous batch: {quick} of {all} waited at most 100 ms"
    );
    mesh.stop().await;
}
