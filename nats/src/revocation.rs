//! Session revocations in the `REVOKED` bucket: written by the user service, watched by edges.

use std::time::Duration;

use async_nats::jetstream::kv::{Operation, Store};
use futures::{Stream, StreamExt};
use mesh_contracts::Bucket;
use uuid::Uuid;

use crate::bus::Bus;

/// One revoked session and its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    pub session_id: Uuid,
    pub user_id: Uuid,
}

/// The revocation bucket of one prefix.
#[derive(Clone)]
pub struct Revocations {
    store: Store,
    jetstream: async_nats::jetstream::Context,
    /// The bucket's underlying stream (`KV_<bucket>`).
    stream: String,
}

/// What a watch delivered: the bucket revision it reached, and the revocation if the entry was
/// one (deletes and purges only move the revision).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watched {
    pub revision: u64,
    pub revocation: Option<Revocation>,
}

impl Bus {
    /// Opens the revocation bucket (created by `ensure_topology`).
    pub async fn revocations(&self) -> Result<Revocations, crate::ConnectError> {
        let name = self.prefix.bucket(Bucket::Revoked);
        let store = self
            .jetstream
            .get_key_value(&name)
            .await
            .map_err(|err| crate::ConnectError::Topology(format!("bucket {name}: {err}")))?;
        Ok(Revocations {
            store,
            jetstream: self.jetstream.clone(),
            stream: self.prefix.bucket_stream(Bucket::Revoked),
        })
    }
}

impl Revocations {
    /// Records that `session_id` is revoked; every edge watching refuses its tokens.
    pub async fn revoke(&self, revocation: Revocation) -> Result<(), String> {
        self.store
            .put(
                revocation.session_id.to_string(),
                revocation.user_id.to_string().into(),
            )
            .await
            .map(|_| ())
            .map_err(|err| err.to_string())
    }

    /// Every revocation in the bucket, then each new one as it is written, each with the
    /// revision it reached.
    ///
    /// The stream ends when the watch breaks (for example the server went away for long);
    /// callers loop, calling `watch` again, and re-receive the whole set. Opening fails after
    /// `OPEN_TIMEOUT` without an answer.
    pub async fn watch(&self) -> Result<impl Stream<Item = Watched> + Send + use<>, String> {
        // Opening creates a consumer; while NATS fails over that request can go unanswered
        // for good, and an unbounded wait would leave the edge without revocations.
        let watch = tokio::time::timeout(Self::OPEN_TIMEOUT, self.store.watch_with_history(">"))
            .await
            .map_err(|_| format!("no answer within {:?}", Self::OPEN_TIMEOUT))?
            .map_err(|err| err.to_string())?;
        Ok(watch
            .take_while(|entry| std::future::ready(entry.is_ok()))
            .filter_map(|entry| async move {
                let entry = entry.ok()?;
                let revocation = (entry.operation == Operation::Put)
                    .then(|| {
                        let session_id = Uuid::parse_str(&entry.key).ok()?;
                        let user_id = std::str::from_utf8(&entry.value)
                            .ok()
                            .and_then(|v| Uuid::parse_str(v).ok())?;
                        Some(Revocation {
                            session_id,
                            user_id,
                        })
                    })
                    .flatten();
                Some(Watched {
                    revision: entry.revision,
                    revocation,
                })
            }))
    }

    /// The newest revision the bucket holds, asked of the server now; `Some(0)` when it holds
    /// nothing (every entry expired), `None` when the server cannot say.
    pub async fn newest_revision(&self) -> Option<u64> {
        // One request (the stream's info comes with the handle), bounded: a check that waits
        // for a server that went away must not keep the watch unread for the request timeout.
        let stream = tokio::time::timeout(
            Self::REVISION_TIMEOUT,
            self.jetstream.get_stream(&self.stream),
        )
        .await
        .ok()?
        .ok()?;
        let state = &stream.cached_info().state;
        Some(if state.messages == 0 {
            0
        } else {
            state.last_sequence
        })
    }

    /// How long opening a watch may take before it is abandoned (and tried again).
    pub const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

    /// How long `newest_revision` waits for the server's answer.
    pub const REVISION_TIMEOUT: Duration = Duration::from_secs(1);

    /// How long after a broken watch to try again.
    pub const RETRY_DELAY: Duration = Duration::from_millis(500);
}
