//! Keeps the ingest stream to what is not stored yet: every `compact_every` the worker purges
//! the messages every partition has stored (`Bus::compact_chat_in`, which explains why that
//! is safe at any moment). Without it the stream kept a week of messages Postgres already
//! holds: 7.9 GB after a few days of benchmarks on one box.

use std::collections::HashMap;

use mesh_observability::metrics::{CHAT_INGEST_COMPACTED, CHAT_INGEST_COMPACTIONS};
use mesh_service_kit::pause;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::state::State;
use crate::store::partitions;

/// Compacts the ingest stream every `compact_every` until `stop`. Every worker does; two
/// compactions at once purge the same stored messages, which is harmless.
pub async fn run(state: State, stop: CancellationToken) {
    let every = state.config().compact_every;
    loop {
        if pause(&stop, every).await {
            return;
        }
        let outcome = match compact(&state).await {
            Ok(()) => "ok",
            Err(err) => {
                tracing::warn!(error = %err, "cannot compact the ingest stream");
                "failed"
            }
        };
        CHAT_INGEST_COMPACTIONS.with_label_values(&[outcome]).inc();
    }
}

async fn compact(state: &State) -> anyhow::Result<()> {
    let stored: HashMap<u32, (u64, Option<OffsetDateTime>)> =
        partitions::stored_through_all(state.pool())
            .await?
            .into_iter()
            .map(|(partition, seq, stream)| (partition, (seq, stream)))
            .collect();
    // A position counts only in the stream it was recorded in: one of a stream that no longer
    // exists (JetStream lost its store, the partition not claimed again yet), or of an unknown
    // one (recorded before incarnations were), would purge what is not stored from the stream
    // made since. Such a partition counts as storing nothing yet, which purges less.
    let compaction = state
        .bus()
        .compact_chat_in(|created, partition| match stored.get(&partition) {
            Some((seq, Some(stream))) if *stream == created => *seq,
            _ => 0,
        })
        .await?;
    if let Some(done) = compaction {
        CHAT_INGEST_COMPACTED.inc_by(done.purged);
        tracing::debug!(
            below = done.below,
            purged = done.purged,
            "ingest stream compacted"
        );
    }
    Ok(())
}
