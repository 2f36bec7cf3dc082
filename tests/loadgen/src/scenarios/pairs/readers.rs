//! The readers of a pairs run: the sender's socket (acks) and the recipient's (messages).
//! Each stamps what it sees on the shared timeline.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::problems::Problems;
use crate::timeline::{Slot, Timeline};
use crate::ws::{self, Frame, Stream};

/// Counters every reader updates.
#[derive(Default)]
pub struct Shared {
    pub stored: AtomicU64,
    pub rejected: AtomicU64,
    pub delivered: AtomicU64,
    pub problems: Problems,
    pub rejections: std::sync::Mutex<BTreeMap<String, u64>>,
}

/// What a sender's reader saw: the conversation and every `(seq, message index)` stored.
#[derive(Default)]
pub struct StoredLog {
    pub conversations: Vec<String>,
    pub stored: Vec<(i64, u64)>,
}

/// Reads the sender's socket: `accepted`, `stored` and `rejected` acks.
pub async fn read_acks(
    mut stream: Stream,
    timeline: Arc<Timeline>,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    stop: CancellationToken,
) -> StoredLog {
    let mut log = StoredLog::default();
    while let Some(text) = ws::next_text(&mut stream, &stop, &shared.problems, "sender").await {
        let Ok(frame) = Frame::parse(&text) else {
            shared
                .problems
                .add("undecodable frame", || text.to_string());
            continue;
        };
        match frame.kind.as_ref() {
            "ack" => {
                let Some(index) = timeline.index_of(&frame.client_id) else {
                    continue;
                };
                let slot = timeline.slot(index);
                let now = timeline.now();
                match frame.status.as_ref() {
                    "accepted" => Slot::stamp(&slot.accepted, now),
                    "stored" => {
                        Slot::stamp(&slot.stored, now);
                        if slot.stores.fetch_add(1, Ordering::Relaxed) == 0 {
                            shared.stored.fetch_add(1, Ordering::Relaxed);
                            permits.add_permits(1);
                        }
                        if !log
                            .conversations
                            .contains(&frame.conversation_id.to_string())
                        {
                            log.conversations.push(frame.conversation_id.to_string());
                        }
                        match frame.seq {
                            Some(seq) => log.stored.push((seq, index)),
                            None => shared
                                .problems
                                .add("stored ack without seq", || text.to_string()),
                        }
                    }
                    "rejected" => {
                        if slot.rejected.fetch_add(1, Ordering::Relaxed) == 0 {
                            shared.rejected.fetch_add(1, Ordering::Relaxed);
                            permits.add_permits(1);
                        }
                        let reason = frame.reason.unwrap_or_else(|| "no reason".to_owned());
                        *shared
                            .rejections
                            .lock()
                            .expect("rejections lock")
                            .entry(reason)
                            .or_default() += 1;
                    }
                    other => shared
                        .problems
                        .add("ack with an unknown status", || format!("{other}: {text}")),
                }
            }
            "error" => shared.problems.add("error frame", || text.to_string()),
            _ => {}
        }
    }
    log
}

/// Reads a recipient's socket: every `message` frame of this run. Answers how often a seq
/// did not follow the previous one.
pub async fn read_deliveries(
    mut stream: Stream,
    timeline: Arc<Timeline>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> u64 {
    let mut last_seq: Option<i64> = None;
    let mut out_of_order = 0;
    while let Some(text) = ws::next_text(&mut stream, &stop, &shared.problems, "recipient").await {
        let Ok(frame) = Frame::parse(&text) else {
            shared
                .problems
                .add("undecodable frame", || text.to_string());
            continue;
        };
        match frame.kind.as_ref() {
            "message" => {
                let Some(index) = timeline.index_of(&frame.client_id) else {
                    continue;
                };
                let slot = timeline.slot(index);
                Slot::stamp(&slot.delivered, timeline.now());
                if slot.deliveries.fetch_add(1, Ordering::Relaxed) == 0 {
                    shared.delivered.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(seq) = frame.seq {
                    if let Some(last) = last_seq
                        && seq != last + 1
                    {
                        out_of_order += 1;
                        shared.problems.add("recipient saw a seq out of order", || {
                            format!("{} after {last} in {}", seq, frame.conversation_id)
                        });
                    }
                    last_seq = Some(seq);
                }
            }
            "error" => shared.problems.add("error frame", || text.to_string()),
            _ => {}
        }
    }
    out_of_order
}
