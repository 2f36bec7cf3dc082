//! The edge's publishing to the chat ingest partitions: the messages the edge accepts for a
//! partition while that partition's previous publish waits for JetStream's ack go out
//! together, as one ingest message of one line each, and each sender hears how its own
//! message fared.
//!
//! A partition has one publish in flight at a time, so its messages reach the stream in the
//! order they were handed over: a connection may hand over its next message before the last
//! one is published, and its messages keep their order (a failed publish refuses the messages
//! of its connections queued behind it). While a partition has messages to publish, a task of
//! the edge's own (its *leader*) publishes them: what queued during one round trip to JetStream
//! goes out with the next (up to [`MAX_LINES`] and [`MAX_BYTES`]), so under load JetStream
//! stores, acknowledges and delivers one message where it did several. The leader ends when
//! the queue is empty, and the next message handed over starts another. Senders only wait for
//! their own answer: a sender that stops waiting (its connection closed) or is not polled for
//! a while (its connection is busy writing) holds up nobody else's message.
//!
//! A partition's publishes also start at least its *spacing* apart (`MESH_CHAT_INGEST_SPACING`):
//! a publish due sooner waits, gathering what is handed over meanwhile. A partition that
//! published nothing for that long publishes at once, so a quiet mesh adds no wait; a busy one
//! sends a partition at most one publish per spacing, however fast JetStream answers, which is
//! what the messages, acknowledgements and deliveries nats-server handles per stored message
//! depend on.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use mesh_contracts::ErrorCode;
use mesh_nats::{Bus, ChatLine, JetStreamError};
use mesh_observability::metrics::CHAT_INGEST_PACKED;
use tokio::sync::oneshot;

use crate::rejection::Rejection;
use crate::send_order::SendOrder;

/// The most messages one ingest message carries.
pub const MAX_LINES: usize = 64;
/// The most payload bytes one ingest message carries (far below NATS's `max_payload`); a
/// message that would go past it waits for the next publish.
pub const MAX_BYTES: usize = 128 * 1024;

/// How a publish fared: true when JetStream recognised the message as a duplicate (only a
/// message published alone carries a message id it can recognise).
type Outcome = Result<bool, String>;

/// Where a partition's leader sends an ingest message of `lines` (the bus; a stand-in in
/// tests).
pub trait Publish: Clone + Send + Sync + 'static {
    fn publish(&self, partition: u32, lines: Vec<ChatLine>)
    -> impl Future<Output = Outcome> + Send;
}

impl Publish for Bus {
    async fn publish(&self, partition: u32, lines: Vec<ChatLine>) -> Outcome {
        self.publish_chat_lines(partition, &lines)
            .await
            .map_err(|err| err.to_string())
    }
}

/// The connection a message came from keeps its sends in order: its [`SendOrder`] and the
/// message's client id.
pub struct Keeper {
    pub order: Arc<SendOrder>,
    pub client_id: String,
}

/// A message waiting for its partition's next publish.
struct Queued {
    line: ChatLine,
    /// Where its sender waits for the outcome (gone when the sender stopped waiting).
    answer: oneshot::Sender<Outcome>,
    keeper: Option<Keeper>,
}

/// One partition's publishing state.
#[derive(Default)]
struct Partition {
    /// A leader runs (and publishes whatever is queued until nothing is).
    publishing: bool,
    /// Messages for the next publish, in the order they were handed over.
    waiting: VecDeque<Queued>,
    /// When the last publish took its lot: the next one starts a spacing after it.
    last_taken: Option<Instant>,
}

type Slot = Arc<Mutex<Partition>>;

/// The edge's publishing state, one per partition.
pub struct IngestPublisher {
    partitions: Vec<Slot>,
    /// The least time between the starts of two publishes of one partition.
    spacing: Duration,
}

impl IngestPublisher {
    pub fn new(partitions: u32, spacing: Duration) -> Self {
        Self {
            partitions: (0..partitions).map(|_| Slot::default()).collect(),
            spacing,
        }
    }

    /// Hands `line` to `partition`'s publishing, behind every message handed to
    /// it before (so a connection may hand over its next message before the last one is
    /// published, and they still reach the stream in order), and starts the partition's
    /// leader if none runs; [`Handed::published`] waits for the publish that carries it. A
    /// message whose connection waits for an earlier refused message to come again (its
    /// `keeper` says so) is refused here, under the partition's lock, so it cannot slip past a
    /// publish failing at that moment.
    pub fn hand(
        &self,
        publisher: &impl Publish,
        partition: u32,
        line: ChatLine,
        keeper: Option<Keeper>,
    ) -> Result<Handed, Rejection> {
        let slot = usize::try_from(partition)
            .ok()
            .and_then(|index| self.partitions.get(index))
            .ok_or_else(|| {
                Rejection::new(
                    ErrorCode::ServiceUnavailable,
                    "no such ingest partition",
                    None,
                )
            })?
            .clone();
        let (answer, told) = oneshot::channel();
        let mut part = lock(&slot);
        if let Some(keeper) = &keeper {
            if let Some(held) = keeper.order.hold_back(&keeper.client_id) {
                return Err(held);
            }
            keeper.order.handed(&keeper.client_id);
        }
        part.waiting.push_back(Queued {
            line,
            answer,
            keeper,
        });
        let start = !std::mem::replace(&mut part.publishing, true);
        drop(part);
        if start {
            tokio::spawn(lead(publisher.clone(), slot, partition, self.spacing));
        }
        Ok(Handed { told })
    }
}

/// A message handed to its partition's publishing.
pub struct Handed {
    told: oneshot::Receiver<Outcome>,
}

impl Handed {
    /// Waits for the publish that carries the message: true when JetStream dropped it as a
    /// duplicate. Dropping it before then leaves the message to be published all the same.
    pub async fn published(self) -> Result<bool, JetStreamError> {
        match self.told.await {
            Ok(outcome) => outcome.map_err(JetStreamError::Publish),
            Err(_) => Err(JetStreamError::Publish(
                "the partition's publisher stopped before publishing it".into(),
            )),
        }
    }
}

fn lock(slot: &Mutex<Partition>) -> MutexGuard<'_, Partition> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A partition's leader: publishes what is queued, one lot at a time and at least the spacing
/// apart, until the queue is empty.
async fn lead(publisher: impl Publish, slot: Slot, partition: u32, spacing: Duration) {
    let mut leading = Leading {
        slot: &slot,
        finished: false,
    };
    loop {
        let last_taken = lock(&slot).last_taken;
        if let Some(due) = next_start(last_taken, spacing, Instant::now()) {
            tokio::time::sleep_until(due.into()).await;
        }
        let lot = {
            let mut part = lock(&slot);
            let lot = take_lot(&mut part);
            if lot.is_empty() {
                // Under the lock the next sender takes: it finds no leader and starts one.
                part.publishing = false;
                leading.finished = true;
                return;
            }
            part.last_taken = Some(Instant::now());
            lot
        };
        publish_lot(&publisher, &slot, partition, lot).await;
    }
}

/// A leader that ends without finishing (its task dropped with the runtime, or a panic)
/// leaves its partition idle and its queued messages refused, so the next message handed over
/// starts a new leader instead of waiting behind one that is gone.
struct Leading<'a> {
    slot: &'a Mutex<Partition>,
    finished: bool,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let mut part = lock(self.slot);
            part.publishing = false;
            refuse_all(&mut part, "the partition's publisher stopped");
        }
    }
}

/// When a partition's next publish may start, if not now: `spacing` after the last one took
/// its lot.
fn next_start(last_taken: Option<Instant>, spacing: Duration, now: Instant) -> Option<Instant> {
    let due = last_taken? + spacing;
    (due > now).then_some(due)
}

/// The lot a leader takes: the oldest queued messages, as far as [`lot_of`] allows.
fn take_lot(part: &mut Partition) -> Vec<Queued> {
    let Some(first) = part.waiting.pop_front() else {
        return Vec::new();
    };
    let (lot, left) = lot_of(first, |q| q.line.size(), || part.waiting.pop_front());
    if let Some(left) = left {
        part.waiting.push_front(left);
    }
    lot
}

/// Publishes `lot` as one ingest message and tells each sender of it how it went. When it
/// failed, every connection with a message in it now waits for that message to come again,
/// and the messages of those connections still queued are refused with it (under the
/// partition's lock, before anything else is handed over), so none overtakes it.
async fn publish_lot(
    publisher: &impl Publish,
    slot: &Mutex<Partition>,
    partition: u32,
    lot: Vec<Queued>,
) {
    let mut lines = Vec::with_capacity(lot.len());
    let mut answers = Vec::with_capacity(lot.len());
    for queued in lot {
        lines.push(queued.line);
        answers.push((queued.answer, queued.keeper));
    }
    CHAT_INGEST_PACKED.observe(lines.len() as f64);
    let count = lines.len();
    let outcome = publisher.publish(partition, lines).await;
    if let Err(err) = &outcome {
        tracing::warn!(error = %err, partition, messages = count, "chat ingest publish failed");
        let mut part = lock(slot);
        for keeper in answers.iter().filter_map(|(_, keeper)| keeper.as_ref()) {
            keeper.order.refused(&keeper.client_id, None);
        }
        refuse_held_back(&mut part, err);
    }
    for (answer, _) in answers {
        // A sender that stopped waiting (its connection closed) needs no answer.
        let _ = answer.send(outcome.clone());
    }
}

/// After a failed publish: the queued messages of connections that now wait for an earlier
/// message to come again leave the queue, refused with the publish's error.
fn refuse_held_back(part: &mut Partition, err: &str) {
    let waiting = std::mem::take(&mut part.waiting);
    for queued in waiting {
        let held = queued
            .keeper
            .as_ref()
            .is_some_and(|keeper| keeper.order.hold_back(&keeper.client_id).is_some());
        if held {
            let _ = queued.answer.send(Err(err.to_owned()));
        } else {
            part.waiting.push_back(queued);
        }
    }
}

/// Every queued message leaves the queue refused with `err` (and its connection waits for it
/// to come again).
fn refuse_all(part: &mut Partition, err: &str) {
    for queued in part.waiting.drain(..) {
        if let Some(keeper) = &queued.keeper {
            keeper.order.refused(&keeper.client_id, None);
        }
        let _ = queued.answer.send(Err(err.to_owned()));
    }
}

/// The messages one publish carries: `first`, then what `next` has ready, up to [`MAX_LINES`]
/// and [`MAX_BYTES`] (`size` of each, plus a newline between two); a message that would go
/// past the bytes is left for the next publish.
fn lot_of<T>(
    first: T,
    size: impl Fn(&T) -> usize,
    mut next: impl FnMut() -> Option<T>,
) -> (Vec<T>, Option<T>) {
    let mut bytes = size(&first);
    let mut lot = vec![first];
    while lot.len() < MAX_LINES {
        let Some(queued) = next() else { break };
        let with = bytes + 1 + size(&queued);
        if with > MAX_BYTES {
            return (lot, Some(queued));
        }
        bytes = with;
        lot.push(queued);
    }
    (lot, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::sync::Semaphore;
    use tokio::time::timeout;

    fn lot(first: usize, ready: &[usize]) -> (Vec<usize>, Option<usize>, usize) {
        let mut ready = ready.iter().copied();
        let (lot, left) = lot_of(first, |size| *size, || ready.next());
        (lot, left, ready.count())
    }

    #[test]
    fn a_publish_takes_what_is_ready_in_order() {
        assert_eq!(
            lot(10, &[]),
            (vec![10], None, 0),
            "alone when nothing waits"
        );
        assert_eq!(lot(10, &[20, 30]), (vec![10, 20, 30], None, 0));
    }

    #[test]
    fn a_publish_stops_at_the_line_limit_and_leaves_the_rest_queued() {
        let ready = vec![1; MAX_LINES + 5];
        let (taken, left, still_queued) = lot(1, &ready);
        assert_eq!(taken.len(), MAX_LINES);
        assert_eq!(left, None);
        assert_eq!(
            still_queued, 6,
            "nothing past the limit is taken from the queue"
        );
    }

    #[test]
    fn a_message_past_the_byte_limit_waits_for_the_next_publish() {
        let half = MAX_BYTES / 2;
        let (taken, left, still_queued) = lot(half, &[half - 1, 5, 7]);
        assert_eq!(
            taken,
            vec![half, half - 1],
            "exactly at the limit with the newline"
        );
        assert_eq!(left, Some(5), "carried to the next publish, not lost");
        assert_eq!(still_queued, 1);
        let (taken, left, _) = lot(MAX_BYTES + 10, &[1]);
        assert_eq!(
            (taken, left),
            (vec![MAX_BYTES + 10], Some(1)),
            "a big one goes alone"
        );
    }

    #[test]
    fn a_publish_starts_a_spacing_after_the_last_one_took_its_lot() {
        let spacing = Duration::from_millis(4);
        let last = Instant::now();
        assert_eq!(
            next_start(None, spacing, last),
            None,
            "a partition that never published publishes at once"
        );
        assert_eq!(
            next_start(Some(last), spacing, last + Duration::from_millis(1)),
            Some(last + spacing),
            "one due sooner waits for the spacing"
        );
        assert_eq!(
            next_start(Some(last), spacing, last + spacing),
            None,
            "one quiet for the spacing publishes at once"
        );
        assert_eq!(
            next_start(Some(last), Duration::ZERO, last),
            None,
            "no spacing never waits"
        );
    }

    /// A stand-in for JetStream: records each publish's message ids, lets a publish through
    /// only when the test adds a permit, and fails publishes while `failing`.
    #[derive(Clone)]
    struct Stream {
        lots: Arc<Mutex<Vec<Vec<String>>>>,
        gate: Arc<Semaphore>,
        failing: Arc<AtomicBool>,
    }

    impl Stream {
        fn new(open: bool) -> Self {
            Self {
                lots: Arc::default(),
                gate: Arc::new(Semaphore::new(if open {
                    Semaphore::MAX_PERMITS
                } else {
                    0
                })),
                failing: Arc::default(),
            }
        }

        fn lots(&self) -> Vec<Vec<String>> {
            self.lots.lock().unwrap().clone()
        }

        fn published(&self) -> Vec<String> {
            self.lots().concat()
        }
    }

    impl Publish for Stream {
        async fn publish(&self, _partition: u32, lines: Vec<ChatLine>) -> Outcome {
            self.gate.acquire().await.expect("gate open").forget();
            if self.failing.load(Ordering::SeqCst) {
                return Err("timed out".into());
            }
            let ids = lines.iter().map(|line| line.msg_id().to_owned()).collect();
            self.lots.lock().unwrap().push(ids);
            Ok(false)
        }
    }

    fn line(id: &str) -> ChatLine {
        ChatLine::new(id.to_owned(), Bytes::from_static(b"{}"))
    }

    fn keeper(order: &Arc<SendOrder>, client_id: &str) -> Option<Keeper> {
        Some(Keeper {
            order: order.clone(),
            client_id: client_id.to_owned(),
        })
    }

    const PATIENCE: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_sender_that_is_never_polled_holds_up_nobody() {
        let stream = Stream::new(true);
        let publisher = IngestPublisher::new(1, Duration::ZERO);
        // The first sender hands its message over and is then never polled (its connection
        // is busy writing): the partition still publishes.
        let stalled = publisher.hand(&stream, 0, line("a-1"), None).unwrap();
        let other = publisher.hand(&stream, 0, line("b-1"), None).unwrap();
        let answer = timeout(PATIENCE, other.published()).await;
        assert!(matches!(answer, Ok(Ok(false))), "{answer:?}");
        assert_eq!(
            stream.published(),
            ["a-1", "b-1"],
            "in the order handed over"
        );
        assert!(matches!(stalled.published().await, Ok(false)));
    }

    #[tokio::test]
    async fn a_sender_gone_mid_publish_fails_nobody_else_and_its_message_still_goes() {
        let stream = Stream::new(false);
        let publisher = IngestPublisher::new(1, Duration::ZERO);
        let first = publisher.hand(&stream, 0, line("a-1"), None).unwrap();
        tokio::task::yield_now().await;
        // The leader's publish of a-1 waits for JetStream; two more queue behind it, and the
        // senders of a-1 and b-1 go away (their connections closed).
        let gone = publisher.hand(&stream, 0, line("b-1"), None).unwrap();
        let waiting = publisher.hand(&stream, 0, line("c-1"), None).unwrap();
        drop(first);
        drop(gone);
        stream.gate.add_permits(Semaphore::MAX_PERMITS);
        let answer = timeout(PATIENCE, waiting.published()).await;
        assert!(matches!(answer, Ok(Ok(false))), "{answer:?}");
        assert_eq!(stream.published(), ["a-1", "b-1", "c-1"]);
        assert_eq!(
            stream.lots(),
            [
                vec!["a-1".to_owned()],
                vec!["b-1".to_owned(), "c-1".to_owned()]
            ],
            "what queued during a publish goes out with the next"
        );
    }

    #[tokio::test]
    async fn the_leader_ends_with_the_queue_and_the_next_message_starts_another() {
        let stream = Stream::new(true);
        let publisher = IngestPublisher::new(2, Duration::ZERO);
        for round in 0..3 {
            let id = format!("m-{round}");
            let handed = publisher.hand(&stream, 1, line(&id), None).unwrap();
            assert!(matches!(
                timeout(PATIENCE, handed.published()).await,
                Ok(Ok(false))
            ));
            // Once the queue is empty the leader ends and leaves the partition idle.
            timeout(PATIENCE, async {
                while lock(&publisher.partitions[1]).publishing {
                    tokio::task::yield_now().await;
                }
            })
            .await
            .expect("the partition goes idle");
        }
        assert_eq!(stream.published(), ["m-0", "m-1", "m-2"]);
        assert!(
            publisher.hand(&stream, 2, line("x"), None).is_err(),
            "no partition 2"
        );
    }

    #[tokio::test]
    async fn after_a_failed_publish_the_queued_messages_behind_it_of_its_connections_are_refused() {
        let stream = Stream::new(false);
        let publisher = IngestPublisher::new(1, Duration::ZERO);
        let (failed, other) = (
            Arc::new(SendOrder::default()),
            Arc::new(SendOrder::default()),
        );
        let a1 = publisher
            .hand(&stream, 0, line("a-1"), keeper(&failed, "a-1"))
            .unwrap();
        tokio::task::yield_now().await;
        let a2 = publisher
            .hand(&stream, 0, line("a-2"), keeper(&failed, "a-2"))
            .unwrap();
        let b1 = publisher
            .hand(&stream, 0, line("b-1"), keeper(&other, "b-1"))
            .unwrap();
        let a3 = publisher
            .hand(&stream, 0, line("a-3"), keeper(&failed, "a-3"))
            .unwrap();
        // The publish carrying a-1 fails; the ones after it go through.
        stream.failing.store(true, Ordering::SeqCst);
        stream.gate.add_permits(1);
        let answer = timeout(PATIENCE, a1.published()).await.expect("answered");
        assert!(matches!(&answer, Err(JetStreamError::Publish(err)) if err == "timed out"));
        for held in [a2, a3] {
            let answer = timeout(PATIENCE, held.published()).await.expect("answered");
            assert!(matches!(&answer, Err(JetStreamError::Publish(err)) if err == "timed out"));
        }
        stream.failing.store(false, Ordering::SeqCst);
        stream.gate.add_permits(Semaphore::MAX_PERMITS);
        let answer = timeout(PATIENCE, b1.published()).await;
        assert!(
            matches!(answer, Ok(Ok(false))),
            "another connection's message goes on: {answer:?}"
        );
        assert_eq!(stream.published(), ["b-1"]);
        // Nothing of that connection is handed over after it until a-1 comes again.
        let refused = publisher.hand(&stream, 0, line("a-4"), keeper(&failed, "a-4"));
        assert!(refused.is_err());
        assert!(
            publisher
                .hand(&stream, 0, line("a-1"), keeper(&failed, "a-1"))
                .is_ok()
        );
    }

    #[test]
    fn a_leader_that_stops_leaves_its_partition_idle_and_its_queue_refused() {
        let stream = Stream::new(false);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let publisher = IngestPublisher::new(1, Duration::ZERO);
        let order = Arc::new(SendOrder::default());
        let (first, queued) = runtime.block_on(async {
            let first = publisher.hand(&stream, 0, line("a-1"), None).unwrap();
            tokio::task::yield_now().await;
            let queued = publisher
                .hand(&stream, 0, line("b-1"), keeper(&order, "b-1"))
                .unwrap();
            (first, queued)
        });
        // The runtime goes away with the leader's task in the middle of its publish.
        drop(runtime);
        assert!(!lock(&publisher.partitions[0]).publishing);
        let after = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let answers = after.block_on(async { (queued.published().await, first.published().await) });
        assert!(matches!(answers.0, Err(JetStreamError::Publish(_))));
        assert!(matches!(answers.1, Err(JetStreamError::Publish(_))));
        assert!(
            order.hold_back("b-2").is_some(),
            "b-1 must come again first"
        );
    }
}
