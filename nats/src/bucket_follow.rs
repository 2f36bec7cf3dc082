//! Following a bucket: every entry it holds, then each change as it is written, told to the
//! follower's owner one at a time. The watch is re-opened whenever it breaks, or when it falls
//! silent while the bucket moved on (a watch whose consumer lived on a NATS node that died can
//! stall without ending), and the owner hears when a (re-)opened watch has caught up with what
//! the bucket held, so that it can trust its copy only from then on.
//!
//! Opening a watch creates a consumer, which the cluster places on one of the bucket's nodes,
//! drawn at random; a node killed a moment ago still counts as one for minutes (until the
//! cluster gives up on it), and an open placed there is never answered. So an open that goes
//! unanswered for a moment is joined by another, placed anew, and the first answer wins.

use std::time::Duration;

use async_nats::jetstream::kv::{Operation, Store};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use mesh_contracts::Bucket;
use mesh_observability::outage::Outage;
use mesh_observability::{outage_failed, outage_over};
use tokio::sync::watch;

use crate::bus::Bus;

/// How long opening a watch may take before it is abandoned (and tried again).
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an open goes unanswered before another starts alongside it (a healthy cluster
/// answers within milliseconds): within `OPEN_TIMEOUT`, at most five are in flight.
const OPEN_HEDGE: Duration = Duration::from_secs(1);
/// How long `newest_revision` waits for the server's answer.
const REVISION_TIMEOUT: Duration = Duration::from_secs(1);
/// How long after a broken watch to try again.
const RETRY_DELAY: Duration = Duration::from_millis(500);
/// How often a live watch is compared with the bucket's newest revision.
const STALL_CHECK: Duration = Duration::from_secs(2);
/// Checks in a row that find the watch behind before it is re-opened (a write in flight is
/// behind for one check at most).
const STALL_TICKS: u32 = 2;

/// One entry a watch delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketEntry {
    pub key: String,
    /// Empty for a deleted or purged key.
    pub value: Bytes,
    pub revision: u64,
    /// False when the key was deleted or purged.
    pub present: bool,
}

/// What a follower tells its owner, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Followed {
    /// A watch opened; the entries that follow replay the bucket, then bring each change.
    Opened,
    /// An entry: replayed, or written since.
    Entry(BucketEntry),
    /// The watch delivered everything the bucket held when it opened (or the bucket was
    /// empty): from now on the owner's copy lags the bucket only by the time a write takes to
    /// reach it.
    CaughtUp,
    /// The watch broke or stalled; another opens shortly and replays the bucket again.
    Lost,
}

/// A bucket to follow (created by `ensure_topology`).
#[derive(Clone)]
pub struct BucketFollower {
    store: Store,
    jetstream: async_nats::jetstream::Context,
    /// The bucket's underlying stream (`KV_<bucket>`).
    stream: String,
}

impl Bus {
    /// Opens `bucket` for following.
    pub async fn bucket_follower(
        &self,
        bucket: Bucket,
    ) -> Result<BucketFollower, crate::ConnectError> {
        let name = self.prefix.bucket(bucket);
        let store = self
            .jetstream
            .get_key_value(&name)
            .await
            .map_err(|err| crate::ConnectError::Topology(format!("bucket {name}: {err}")))?;
        Ok(BucketFollower {
            store,
            jetstream: self.jetstream.clone(),
            stream: self.prefix.bucket_stream(bucket),
        })
    }
}

/// Whether one check finds a watch behind: it delivered nothing since the previous check
/// (it was at `before` then and is at `seen` now) while the bucket holds a newer revision, or
/// while the server cannot say what it holds. A watch still replaying the bucket moves on, so
/// it is never counted however large the bucket. A watch whose consumer lived on a node that
/// went away fails like the server does, so an unanswered check counts; a healthy watch on a
/// server that is merely down is re-opened and waits for it.
fn falls_behind(newest: Option<u64>, seen: u64, before: u64) -> bool {
    seen == before && newest.is_none_or(|n| n > seen)
}

/// Whether a watch that reached revision `seen` holds everything of a bucket whose newest
/// revision is `newest` (0: the bucket holds nothing).
fn caught_up(newest: Option<u64>, seen: u64) -> bool {
    newest.is_some_and(|n| n <= seen)
}

impl BucketFollower {
    /// Follows the bucket until `stop` flips, telling `owner` what happens.
    pub async fn follow(&self, mut stop: watch::Receiver<bool>, mut owner: impl FnMut(Followed)) {
        let mut outage = Outage::default();
        loop {
            // Without NATS, opening waits out its timeout: a follower told to stop stops now.
            let opened = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                opened = self.open() => opened,
            };
            match opened {
                Ok(stream) => {
                    outage_over!(outage, stream = %self.stream, "bucket watch open again");
                    owner(Followed::Opened);
                    let mut stream = std::pin::pin!(stream);
                    let mut seen = 0u64;
                    let mut seen_at_check = seen;
                    let mut behind = 0u32;
                    let mut current = false;
                    let newest = tokio::select! {
                        _ = stop.wait_for(|s| *s) => return,
                        newest = self.newest_revision() => newest,
                    };
                    if caught_up(newest, seen) {
                        current = true;
                        owner(Followed::CaughtUp);
                    }
                    let mut check = tokio::time::interval_at(
                        tokio::time::Instant::now() + STALL_CHECK,
                        STALL_CHECK,
                    );
                    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        let due = tokio::select! {
                            _ = stop.wait_for(|s| *s) => return,
                            next = stream.next() => match next {
                                Some((entry, last)) => {
                                    seen = seen.max(entry.revision);
                                    owner(Followed::Entry(entry));
                                    if last && !current {
                                        current = true;
                                        owner(Followed::CaughtUp);
                                    }
                                    false
                                }
                                None => break,
                            },
                            _ = check.tick() => true,
                        };
                        if due {
                            let newest = tokio::select! {
                                _ = stop.wait_for(|s| *s) => return,
                                newest = self.newest_revision() => newest,
                            };
                            behind = if falls_behind(newest, seen, seen_at_check) {
                                behind + 1
                            } else {
                                0
                            };
                            seen_at_check = seen;
                            tracing::debug!(stream = %self.stream, seen, ?newest, behind, "bucket watch checked");
                            if !current && caught_up(newest, seen) {
                                current = true;
                                owner(Followed::CaughtUp);
                            }
                            if behind >= STALL_TICKS {
                                tracing::warn!(stream = %self.stream, seen, ?newest, "bucket watch stalled");
                                break;
                            }
                        }
                    }
                    owner(Followed::Lost);
                    outage_failed!(outage, stream = %self.stream, "bucket watch ended; re-opening");
                }
                Err(err) => {
                    outage_failed!(outage, stream = %self.stream, error = %err, "cannot watch a bucket; retrying");
                }
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(RETRY_DELAY) => {}
            }
        }
    }

    /// Every entry of the bucket, then each change, each with whether it was the last of the
    /// replay; the stream ends when the watch breaks. Opening creates a consumer, and while
    /// NATS fails over that request can go unanswered for good (the consumer was placed on a
    /// node that is gone): every `OPEN_HEDGE` without an answer another attempt joins the ones
    /// in flight, the first watch opened is kept (the consumers of the others, which nobody
    /// listens to, are removed by the server once inactive), and opening fails after
    /// `OPEN_TIMEOUT` without one, or as soon as every attempt was refused.
    async fn open(
        &self,
    ) -> Result<impl futures::Stream<Item = (BucketEntry, bool)> + Send + use<>, String> {
        let mut attempts = FuturesUnordered::new();
        attempts.push(self.store.watch_with_history(">"));
        let mut hedge =
            tokio::time::interval_at(tokio::time::Instant::now() + OPEN_HEDGE, OPEN_HEDGE);
        hedge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let deadline = tokio::time::sleep(OPEN_TIMEOUT);
        let mut deadline = std::pin::pin!(deadline);
        let watch = loop {
            tokio::select! {
                Some(opened) = attempts.next() => match opened {
                    Ok(watch) => break watch,
                    Err(err) if attempts.is_empty() => return Err(err.to_string()),
                    Err(err) => tracing::debug!(
                        stream = %self.stream, error = %err,
                        "an attempt to watch a bucket failed; others are in flight"
                    ),
                },
                _ = hedge.tick() => {
                    tracing::debug!(
                        stream = %self.stream, in_flight = attempts.len(),
                        "opening a watch goes unanswered; another attempt joins"
                    );
                    attempts.push(self.store.watch_with_history(">"));
                }
                () = &mut deadline => return Err(format!("no answer within {OPEN_TIMEOUT:?}")),
            }
        };
        Ok(watch
            .take_while(|entry| std::future::ready(entry.is_ok()))
            .filter_map(|entry| async move {
                let entry = entry.ok()?;
                let present = entry.operation == Operation::Put;
                Some((
                    BucketEntry {
                        key: entry.key,
                        value: if present { entry.value } else { Bytes::new() },
                        revision: entry.revision,
                        present,
                    },
                    entry.delta == 0,
                ))
            }))
    }

    /// The newest revision the bucket holds, asked of the server now; `Some(0)` when it holds
    /// nothing (every entry expired), `None` when the server cannot say.
    async fn newest_revision(&self) -> Option<u64> {
        // One request (the stream's info comes with the handle), bounded: a check that waits
        // for a server that went away must not keep the watch unread for the request timeout.
        let stream =
            tokio::time::timeout(REVISION_TIMEOUT, self.jetstream.get_stream(&self.stream))
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
}

#[cfg(test)]
mod tests {
    use super::{caught_up, falls_behind};

    #[test]
    fn a_watch_is_behind_when_it_stood_still_while_the_bucket_moved_on_or_cannot_say() {
        assert!(!falls_behind(Some(7), 7, 7), "caught up");
        assert!(!falls_behind(Some(0), 0, 0), "an empty bucket");
        assert!(falls_behind(Some(8), 7, 7), "stood still below the newest");
        assert!(falls_behind(None, 7, 7), "an unanswered check counts");
        assert!(
            !falls_behind(Some(900_000), 40_000, 10_000),
            "a watch replaying a large bucket moved on since the last check"
        );
        assert!(
            !falls_behind(None, 8, 7),
            "moved on, whatever the server says"
        );
    }

    #[test]
    fn a_watch_is_current_once_it_reached_the_newest_revision() {
        assert!(caught_up(Some(0), 0), "an empty bucket");
        assert!(caught_up(Some(7), 7));
        assert!(caught_up(Some(7), 9), "entries written since the check");
        assert!(!caught_up(Some(8), 7), "still replaying");
        assert!(!caught_up(None, 7), "the server cannot say");
    }
}
