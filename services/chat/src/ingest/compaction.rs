//! Keeps the ingest stream to what is not stored yet: every `compact_every` the worker purges
//! the messages every partition has stored (`Bus::compact_chat_in`, which explains why that
//! is safe at any moment). Without it the stream kept a week of messages Postgres already
//! holds: 7.9 GB after a few days of benchmarks on one box.

use std::collections::HashMap;

use mesh_observability::metrics::{CHAT_INGEST_COMPACTED, CHAT_INGEST_COMPACTIONS};
use mesh_service_kit::pause;
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
    let stored: HashMap<u32, u64> = partitions::stored_through_all(state.pool())
        .await?
        .into_iter()
        .collect();
    let compaction = state
        .bus()
        .compact_chat_in(|partition| stored.get(&partition).copied().unwrap_or(0))
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
