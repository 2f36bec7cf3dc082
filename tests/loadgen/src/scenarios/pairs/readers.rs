//! The readers of a pairs run: the sender's socket (acks) and the recipient's (messages).
//! Each stamps what it sees on the shared timeline.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::problems::Problems;
use crate::timeline::{Slot, Timeline};
use crate::ws::{self, Frame, Stream};

/// The rejection reasons a well-behaved client answers by sending the message again (after
/// `retry_after_ms` when given), in its original order: the mesh's push-back (`overloaded`)
/// and the connection holding later sends back behind a refused one (`service_unavailable`).
pub const RESEND_REASONS: &[&str] = &["overloaded", "service_unavailable"];
/// Most `retry_after` values kept for the report.
const RETRY_AFTER_SAMPLES: usize = 100_000;

/// Counters every reader updates.
#[derive(Default)]
pub struct Shared {
    pub stored: AtomicU64,
    /// Messages answered for good with `rejected` (not those sent again).
    pub rejected: AtomicU64,
    pub delivered: AtomicU64,
    /// Messages that got their first `accepted` ack.
    pub accepted: AtomicU64,
    /// Accepted messages that were then stored or rejected: `accepted - settled` is what the
    /// mesh has accepted but not yet stored.
    pub settled: AtomicU64,
    pub problems: Problems,
    /// Every `rejected` ack by reason, those sent again included.
    pub rejections: std::sync::Mutex<BTreeMap<String, u64>>,
    /// `retry_after*` fields of rejections and error frames: `(field, value)`.
    pub retry_after: std::sync::Mutex<Vec<(String, f64)>>,
    /// Error frames by code.
    pub error_codes: std::sync::Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    /// Keeps the `retry_after*` fields of a frame and answers the delay they ask for.
    fn note_retry_after(&self, text: &str) -> Option<Duration> {
        let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) else {
            return None;
        };
        let mut delay = None;
        let mut kept = self.retry_after.lock().expect("retry_after lock");
        for (key, value) in &map {
            let Some(number) = value.as_f64().filter(|_| key.starts_with("retry_after")) else {
                continue;
            };
            if kept.len() < RETRY_AFTER_SAMPLES {
                kept.push((key.clone(), number));
            }
            let seconds = if key.ends_with("_ms") {
                number / 1000.0
            } else {
                number
            };
            delay = Some(Duration::from_secs_f64(seconds.clamp(0.0, 60.0)));
        }
        delay
    }

    fn note_error(&self, text: &str) {
        let code = serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|v| v.get("code").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| "no code".to_owned());
        *self
            .error_codes
            .lock()
            .expect("error codes lock")
            .entry(code)
            .or_default() += 1;
        self.note_retry_after(text);
    }
}

/// A message to send again, and how long the mesh asked to wait first.
pub type Resend = (u64, Option<Duration>);

/// Most answer slots a sender at its limit waits for before it writes again.
const SLOT_REFILL: usize = 8;

/// A sender's windows: messages not yet stored (or rejected for good), and, when limited,
/// sends written but not yet answered `accepted` or `rejected`.
pub struct Permits {
    pub unstored: Semaphore,
    unanswered: Option<Semaphore>,
    /// How many answer slots a sender at its limit waits for at once (`SLOT_REFILL`, or the
    /// limit when smaller).
    refill: u32,
}

impl Permits {
    pub fn new(unstored: usize, unanswered: Option<usize>) -> Self {
        let refill = unanswered.map_or(1, |limit| limit.clamp(1, SLOT_REFILL));
        Self {
            unstored: Semaphore::new(unstored),
            unanswered: unanswered.map(Semaphore::new),
            refill: u32::try_from(refill).unwrap_or(1),
        }
    }

    /// One written send got its answer (or an error frame that answers a frame).
    fn answered(&self) {
        if let Some(unanswered) = &self.unanswered {
            unanswered.add_permits(1);
        }
    }
}

/// A sender's answer slots: the right to write one more send while its unanswered sends are
/// limited. A sender at its limit waits until several of them are answered (`SLOT_REFILL`)
/// and then writes that many, so it wakes, writes and flushes once per few answers instead of
/// once per answer: the load generator shares the CPUs with the mesh it measures. It still
/// never has more sends unanswered than the limit.
pub struct Slots<'a> {
    permits: &'a Permits,
    /// Ends every wait for a slot.
    stop: &'a CancellationToken,
    /// Slots taken from the semaphore and not yet used.
    held: u32,
}

impl<'a> Slots<'a> {
    pub fn new(permits: &'a Permits, stop: &'a CancellationToken) -> Self {
        Self {
            permits,
            stop,
            held: 0,
        }
    }

    /// Takes a slot without waiting, if one is free (always, when nothing is limited).
    pub fn try_take(&mut self) -> bool {
        let Some(unanswered) = &self.permits.unanswered else {
            return true;
        };
        if self.held > 0 {
            self.held -= 1;
            return true;
        }
        match unanswered.try_acquire() {
            Ok(permit) => {
                permit.forget();
                true
            }
            Err(_) => false,
        }
    }

    /// Waits until `refill` slots are free, takes them all and uses one; false when `stop`
    /// came first.
    pub async fn take(&mut self) -> bool {
        let Some(unanswered) = &self.permits.unanswered else {
            return true;
        };
        let refill = self.permits.refill;
        tokio::select! {
            taken = unanswered.acquire_many(refill) => match taken {
                Ok(permits) => {
                    permits.forget();
                    self.held += refill - 1;
                    true
                }
                Err(_) => false,
            },
            () = self.stop.cancelled() => false,
        }
    }
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
    permits: Arc<Permits>,
    resend: Option<mpsc::UnboundedSender<Resend>>,
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
                let was_accepted = Slot::get(&slot.accepted).is_some();
                match frame.status.as_ref() {
                    "accepted" => {
                        permits.answered();
                        if Slot::stamp(&slot.accepted, now) {
                            shared.accepted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    "stored" => {
                        Slot::stamp(&slot.stored, now);
                        if slot.stores.fetch_add(1, Ordering::Relaxed) == 0 {
                            shared.stored.fetch_add(1, Ordering::Relaxed);
                            if was_accepted {
                                shared.settled.fetch_add(1, Ordering::Relaxed);
                            }
                            permits.unstored.add_permits(1);
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
                        permits.answered();
                        let reason = frame.reason.unwrap_or_else(|| "no reason".to_owned());
                        let delay = shared.note_retry_after(&text);
                        let again = resend
                            .as_ref()
                            .filter(|_| RESEND_REASONS.contains(&reason.as_str()))
                            .is_some_and(|tx| tx.send((index, delay)).is_ok());
                        if !again && slot.rejected.fetch_add(1, Ordering::Relaxed) == 0 {
                            shared.rejected.fetch_add(1, Ordering::Relaxed);
                            if was_accepted {
                                shared.settled.fetch_add(1, Ordering::Relaxed);
                            }
                            permits.unstored.add_permits(1);
                        }
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
            "error" => {
                // A frame refused outright (flooding, malformed) gets no ack.
                permits.answered();
                shared.note_error(&text);
                shared.problems.add("error frame", || text.to_string());
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_fields_are_kept_and_give_the_delay() {
        let shared = Shared::default();
        let rejected = r#"{"type":"ack","client_id":"c1","status":"rejected","reason":"service_unavailable","retry_after_ms":250}"#;
        assert_eq!(
            shared.note_retry_after(rejected),
            Some(Duration::from_millis(250))
        );
        let in_seconds =
            r#"{"type":"error","code":"service_unavailable","message":"busy","retry_after":2}"#;
        shared.note_error(in_seconds);
        assert_eq!(shared.note_retry_after(r#"{"type":"ack"}"#), None);
        assert_eq!(
            *shared.retry_after.lock().unwrap(),
            [
                ("retry_after_ms".to_owned(), 250.0),
                ("retry_after".to_owned(), 2.0)
            ]
        );
        assert_eq!(
            shared
                .error_codes
                .lock()
                .unwrap()
                .get("service_unavailable"),
            Some(&1)
        );
    }

    /// Takes `limit` slots without waiting, and checks that one more is not free.
    fn use_up(slots: &mut Slots<'_>, limit: usize) {
        for taken in 0..limit {
            assert!(slots.try_take(), "slot {taken} of {limit}");
        }
        assert!(
            !slots.try_take(),
            "one unanswered send over the limit of {limit}"
        );
    }

    /// Answers `count` of the sender's sends.
    fn answer(permits: &Permits, count: usize) {
        for _ in 0..count {
            permits.answered();
        }
    }

    #[tokio::test]
    async fn a_sender_at_its_limit_writes_again_only_once_several_sends_are_answered() {
        let (permits, stop) = (Permits::new(1_000, Some(32)), CancellationToken::new());
        let mut slots = Slots::new(&permits, &stop);
        use_up(&mut slots, 32);
        answer(&permits, 7);
        let early = tokio::time::timeout(Duration::from_millis(50), slots.take()).await;
        assert!(early.is_err(), "woke before 8 answers");
        permits.answered();
        let woke = tokio::time::timeout(Duration::from_secs(5), slots.take()).await;
        assert_eq!(woke.ok(), Some(true));
        for _ in 0..7 {
            assert!(slots.try_take(), "the slots taken with it");
        }
        assert!(!slots.try_take(), "more than 32 unanswered");
    }

    #[tokio::test]
    async fn a_limit_below_the_refill_is_waited_for_whole_and_no_limit_never_waits() {
        let (permits, stop) = (Permits::new(1_000, Some(3)), CancellationToken::new());
        let mut slots = Slots::new(&permits, &stop);
        use_up(&mut slots, 3);
        answer(&permits, 3);
        let woke = tokio::time::timeout(Duration::from_secs(5), slots.take()).await;
        assert_eq!(woke.ok(), Some(true));
        assert!(slots.try_take() && slots.try_take());
        assert!(!slots.try_take());

        let unlimited = Permits::new(1_000, None);
        let mut slots = Slots::new(&unlimited, &stop);
        assert!((0..10_000).all(|_| slots.try_take()));

        let limited = Permits::new(1_000, Some(1));
        let mut slots = Slots::new(&limited, &stop);
        assert!(slots.try_take());
        stop.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(5), slots.take()).await;
        assert_eq!(stopped.ok(), Some(false), "a stopped wait ends");
    }
}
