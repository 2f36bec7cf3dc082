//! How far behind the durable consumers of a stream are, for the metrics sampler.

use futures::TryStreamExt;
use mesh_contracts::Stream;

use crate::Bus;

/// The backlog of one durable consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerBacklog {
    pub consumer: String,
    /// Messages no subscriber has been given yet.
    pub pending: u64,
    /// Messages given out and not yet acknowledged.
    pub ack_pending: usize,
}

impl Bus {
    /// The backlog of every durable consumer of `stream`; ephemeral consumers (watches) are
    /// left out, so the names stay a small fixed set. `None` when the stream cannot be read.
    pub async fn durable_backlogs(&self, stream: Stream) -> Option<Vec<ConsumerBacklog>> {
        let stream = self
            .jetstream
            .get_stream(self.prefix.stream(stream))
            .await
            .ok()?;
        let infos: Vec<_> = stream.consumers().try_collect().await.ok()?;
        Some(
            infos
                .into_iter()
                .filter(|info| info.config.durable_name.is_some())
                .map(|info| ConsumerBacklog {
                    consumer: info.name,
                    pending: info.num_pending,
                    ack_pending: info.num_ack_pending,
                })
                .collect(),
        )
    }
}
