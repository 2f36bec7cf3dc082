//! Raw JetStream publish+ack: what NATS alone does with the throughput scenario's concurrency
//! (one publisher per sender, each keeping up to `window` publishes unacknowledged) into a file
//! stream of the load generator's own, with a message id per publish as the edge sets.

use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::Figure;
use crate::raw_nats::{NatsAccess, RAW_PREFIX};
use crate::tally::Tally;

/// Partitions the subjects are spread over, as the mesh spreads chat ingest.
pub const PARTITIONS: usize = 16;

pub struct Plan {
    pub publishers: usize,
    pub window: usize,
    pub seconds: f64,
    pub payload_bytes: usize,
}

pub fn stream_name() -> String {
    format!("{}_CHAT_IN", RAW_PREFIX.to_ascii_uppercase())
}

/// The raw stream, made (as the `migrate` role) if missing and emptied.
pub async fn fresh_stream(access: &NatsAccess) -> anyhow::Result<stream::Stream> {
    let admin = jetstream::new(access.connect("migrate").await?);
    let config = stream::Config {
        name: stream_name(),
        subjects: vec![format!("{RAW_PREFIX}.chat.in.*")],
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        max_age: Duration::from_secs(3600),
        ..Default::default()
    };
    admin
        .create_or_update_stream(config)
        .await
        .context("creating the raw JetStream stream (as the migrate role)")?;
    let raw = admin.get_stream(stream_name()).await?;
    raw.purge().await.context("purging the raw stream")?;
    Ok(raw)
}

/// Deletes the raw stream (best effort: the next measurement empties it anyway).
pub async fn remove_stream(access: &NatsAccess) {
    if let Ok(client) = access.connect("migrate").await {
        let _ = jetstream::new(client).delete_stream(stream_name()).await;
    }
}

pub async fn measure(access: &NatsAccess, plan: &Plan) -> anyhow::Result<Figure> {
    let raw = fresh_stream(access).await?;
    let client = access.connect("edge").await?;
    let payload = Bytes::from(vec![b'x'; plan.payload_bytes.max(1)]);
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(plan.seconds.max(1.0));
    let tasks: Vec<_> = (0..plan.publishers.max(1))
        .map(|p| {
            let js = jetstream::new(client.clone());
            let payload = payload.clone();
            let window = plan.window.max(1);
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut pending = FuturesUnordered::new();
                let mut n = 0u64;
                loop {
                    while pending.len() < window && Instant::now() < end {
                        let subject =
                            format!("{RAW_PREFIX}.chat.in.{}", (p + n as usize) % PARTITIONS);
                        let publish = jetstream::message::PublishMessage::build()
                            .message_id(format!("raw-{p}-{n}"))
                            .payload(payload.clone());
                        n += 1;
                        let sent_at = Instant::now();
                        match js.send_publish(subject, publish).await {
                            Ok(ack) => pending.push(async move { (ack.await, sent_at) }),
                            Err(err) => tally.failure(err),
                        }
                    }
                    match pending.next().await {
                        Some((Ok(_), sent_at)) => tally.success(sent_at),
                        Some((Err(err), _)) => tally.failure(err),
                        None => break,
                    }
                }
                tally
            })
        })
        .collect();
    let tally = Tally::join(tasks).await?;
    let seconds = started.elapsed().as_secs_f64();
    let _ = raw.purge().await;
    remove_stream(access).await;
    Ok(Figure::of(
        &tally,
        1,
        seconds,
        format!(
            "{} publishers × window {}, {} B payloads, file storage, message ids on",
            plan.publishers, plan.window, plan.payload_bytes
        ),
    ))
}
