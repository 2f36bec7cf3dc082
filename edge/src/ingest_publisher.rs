//! The edge's publishing to the chat ingest partitions: the messages the edge accepts for a
//! partition while that partition's previous publish waits for JetStream's ack go out
//! together, as one ingest message of one line each, and each sender hears how its own
//! message fared.
//!
//! A partition has one publish in flight at a time, so its messages reach the stream in the
//! order they were handed over: a connection may hand over its next message before the last
//! one is published, and its messages keep their order (a failed publish refuses the messages
//! of its connections queued behind it). No task stands in between: a sender that finds its
//! partition idle publishes its message itself; one that finds a publish in flight queues its
//! message, and when that publish is answered, the first sender queued is told to publish
//! everything queued by then (up to [`MAX_LINES`] and [`MAX_BYTES`]). Under load each round
//! trip to JetStream so carries what queued during the one before, and JetStream stores,
//! acknowledges and delivers one message where it did several.
//!
//! A partition's publishes also start at least its *spacing* apart (`MESH_CHAT_INGEST_SPACING`):
//! a publish due sooner waits, gathering what is handed over meanwhile. A partition that
//! published nothing for that long publishes at once, so a quiet mesh adds no wait; a busy one
//! sends a partition at most one publish per spacing, however fast JetStream answers, which is
//! what the messages, acknowledgements and deliveries nats-server handles per stored message
//! depend on.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
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

/// What a queued sender is told.
enum Turn {
    /// Its message was published with others (or not: the error).
    Done(Outcome),
    /// The publish before is answered: it publishes what is queued, its own message first.
    Lead,
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
    /// Where its sender waits; none for the sender that publishes it.
    turn: Option<oneshot::Sender<Turn>>,
    keeper: Option<Keeper>,
}

/// One partition's publishing state.
#[derive(Default)]
struct Partition {
    /// A publish is in flight (and whoever runs it passes the turn on when it ends).
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

    /// Hands `msg_id`'s `payload` to `partition`'s publishing, behind every message handed to
    /// it before (so a connection may hand over its next message before the last one is
    /// published, and they still reach the stream in order); [`Handed::published`] publishes
    /// it or waits for the publish that carries it. A message whose connection waits for an
    /// earlier refused message to come again (its `keeper` says so) is refused here, under
    /// the partition's lock, so it cannot slip past a publish failing at that moment.
    pub fn hand(
        &self,
        bus: &Bus,
        partition: u32,
        msg_id: String,
        payload: Bytes,
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
        // Taken here, in the sender's span, so the message continues the sender's trace.
        let line = bus.chat_line(partition, msg_id, payload);
        let mut part = lock(&slot);
        if let Some(keeper) = &keeper {
            if let Some(held) = keeper.order.hold_back(&keeper.client_id) {
                return Err(held);
            }
            keeper.order.handed(&keeper.client_id);
        }
        let step = if part.publishing {
            let (turn, told) = oneshot::channel();
            part.waiting.push_back(Queued {
                line,
                turn: Some(turn),
                keeper,
            });
            Step::Queued(told)
        } else {
            part.publishing = true;
            Step::Alone(Queued {
                line,
                turn: None,
                keeper,
            })
        };
        drop(part);
        Ok(Handed {
            slot,
            partition,
            spacing: self.spacing,
            step,
        })
    }
}

/// A message handed to its partition's publishing.
pub struct Handed {
    slot: Slot,
    partition: u32,
    spacing: Duration,
    step: Step,
}

/// Where a handed message is.
enum Step {
    /// Its partition was idle: its sender publishes it, first of what queues behind it while
    /// the partition's spacing runs (alone when nothing does).
    Alone(Queued),
    /// Queued behind the publish in flight.
    Queued(oneshot::Receiver<Turn>),
    /// Its sender publishes what is queued (its own message first).
    Leading,
    /// Answered.
    Done,
}

impl Handed {
    /// Publishes the message (with what queued behind it, when told to lead) or waits for the
    /// publish that carries it: true when JetStream dropped it as a duplicate.
    pub async fn published(mut self, bus: &Bus) -> Result<bool, JetStreamError> {
        if let Step::Queued(told) = &mut self.step {
            let turn = told.await.ok();
            self.step = Step::Done;
            match turn {
                Some(Turn::Lead) => self.step = Step::Leading,
                Some(Turn::Done(outcome)) => return outcome.map_err(JetStreamError::Publish),
                None => {
                    return Err(JetStreamError::Publish(
                        "the publish carrying it was abandoned".into(),
                    ));
                }
            }
        }
        // From here on, however this ends (answered, failed, or dropped with its connection),
        // dropping `self` passes the turn on, so the partition never stays stuck behind it.
        let first = match std::mem::replace(&mut self.step, Step::Leading) {
            Step::Alone(queued) => Some(queued),
            // Told to lead: its message is first in the queue until it takes it.
            Step::Leading => None,
            Step::Queued(_) | Step::Done => return Err(left_the_queue()),
        };
        let last_taken = lock(&self.slot).last_taken;
        if let Some(due) = next_start(last_taken, self.spacing, Instant::now()) {
            tokio::time::sleep_until(due.into()).await;
        }
        let lot = {
            let mut part = lock(&self.slot);
            part.last_taken = Some(Instant::now());
            take_lot(&mut part, first)
        };
        if lot.is_empty() {
            return Err(left_the_queue());
        }
        publish_lot(bus, &self.slot, self.partition, lot)
            .await
            .map_err(JetStreamError::Publish)
    }
}

impl Drop for Handed {
    /// A sender that publishes, or was told to, passes the turn on when it ends or stops (its
    /// connection closed); one dropped while merely queued leaves its message for the next
    /// publish.
    fn drop(&mut self) {
        let passes = match &mut self.step {
            Step::Alone(_) | Step::Leading => true,
            Step::Queued(told) => matches!(told.try_recv(), Ok(Turn::Lead)),
            Step::Done => false,
        };
        if passes {
            pass_on(&mut lock(&self.slot));
        }
    }
}

/// A publishing sender found its own message gone from the queue.
fn left_the_queue() -> JetStreamError {
    JetStreamError::Publish("its message left the queue".into())
}

fn lock(slot: &Mutex<Partition>) -> MutexGuard<'_, Partition> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The publish in flight ended: the first queued sender still waiting publishes next, or the
/// partition is idle. A queued message whose sender stopped waiting goes with the next
/// publish; one whose sender cannot be told to lead (it is gone) is dropped unpublished, as
/// if it had never been sent (its client, told nothing, sends it again).
fn pass_on(part: &mut Partition) {
    while let Some(front) = part.waiting.front_mut() {
        if let Some(turn) = front.turn.take()
            && turn.send(Turn::Lead).is_ok()
        {
            return;
        }
        part.waiting.pop_front();
    }
    part.publishing = false;
}

/// When a partition's next publish may start, if not now: `spacing` after the last one took
/// its lot.
fn next_start(last_taken: Option<Instant>, spacing: Duration, now: Instant) -> Option<Instant> {
    let due = last_taken? + spacing;
    (due > now).then_some(due)
}

/// The lot a publishing sender takes: its own message (held by a sender that found the
/// partition idle, or first in the queue for one told to lead), then what is queued behind
/// it, as far as [`lot_of`] allows.
fn take_lot(part: &mut Partition, first: Option<Queued>) -> Vec<Queued> {
    let Some(first) = first.or_else(|| part.waiting.pop_front()) else {
        return Vec::new();
    };
    let (lot, left) = lot_of(first, |q| q.line.size(), || part.waiting.pop_front());
    if let Some(left) = left {
        part.waiting.push_front(left);
    }
    lot
}

/// Publishes `lot` as one ingest message and tells each queued sender of it how it went; the
/// outcome. When it failed, every connection with a message in it now waits for that message
/// to come again, and the messages of those connections still queued are refused with it
/// (under the partition's lock, before anything else is handed over), so none overtakes it.
async fn publish_lot(
    bus: &Bus,
    slot: &Mutex<Partition>,
    partition: u32,
    lot: Vec<Queued>,
) -> Outcome {
    let mut lines = Vec::with_capacity(lot.len());
    let mut answers = Vec::with_capacity(lot.len());
    for queued in lot {
        lines.push(queued.line);
        answers.push((queued.turn, queued.keeper));
    }
    CHAT_INGEST_PACKED.observe(lines.len() as f64);
    let outcome = bus
        .publish_chat_lines(partition, &lines)
        .await
        .map_err(|err| err.to_string());
    if let Err(err) = &outcome {
        tracing::warn!(error = %err, partition, messages = lines.len(), "chat ingest publish failed");
        let mut part = lock(slot);
        for keeper in answers.iter().filter_map(|(_, keeper)| keeper.as_ref()) {
            keeper.order.refused(&keeper.client_id, None);
        }
        refuse_held_back(&mut part, err);
    }
    for turn in answers.into_iter().filter_map(|(turn, _)| turn) {
        // A sender that stopped waiting (its connection closed) needs no answer.
        let _ = turn.send(Turn::Done(outcome.clone()));
    }
    outcome
}

/// After a failed publish: the queued messages of connections that now wait for an earlier
/// message to come again leave the queue, refused with the publish's error.
fn refuse_held_back(part: &mut Partition, err: &str) {
    part.waiting.retain_mut(|queued| {
        let held = queued
            .keeper
            .as_ref()
            .is_some_and(|keeper| keeper.order.hold_back(&keeper.client_id).is_some());
        if held && let Some(turn) = queued.turn.take() {
            let _ = turn.send(Turn::Done(Err(err.to_owned())));
        }
        !held
    });
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

    /// A partition whose queue holds senders `alive` (still waiting) or gone, with the
    /// receivers of those alive.
    fn queue(alive: &[bool]) -> (Partition, Vec<Option<oneshot::Receiver<Turn>>>) {
        let mut part = Partition {
            publishing: true,
            ..Partition::default()
        };
        let mut receivers = Vec::new();
        for alive in alive {
            let (turn, told) = oneshot::channel();
            receivers.push(alive.then_some(told));
            part.waiting.push_back(Queued {
                line: ChatLine::new(String::new(), Bytes::new()),
                turn: Some(turn),
                keeper: None,
            });
        }
        (part, receivers)
    }

    fn handed(slot: &Slot, step: Step) -> Handed {
        Handed {
            slot: slot.clone(),
            partition: 0,
            spacing: Duration::ZERO,
            step,
        }
    }

    #[test]
    fn a_sender_gone_after_being_told_to_lead_passes_the_turn_on() {
        // The front sender was told to lead (its turn taken), the one behind still waits.
        let (mut part, mut receivers) = queue(&[true, true]);
        let front = part.waiting.front_mut().unwrap().turn.take().unwrap();
        assert!(front.send(Turn::Lead).is_ok());
        let slot = Slot::new(Mutex::new(part));
        drop(handed(&slot, Step::Queued(receivers[0].take().unwrap())));
        assert!(
            matches!(receivers[1].as_mut().unwrap().try_recv(), Ok(Turn::Lead)),
            "the next sender leads"
        );
        assert!(lock(&slot).publishing);

        // Gone while merely waiting: nothing passes; its message goes with the next publish.
        let (part, mut receivers) = queue(&[true, true]);
        let slot = Slot::new(Mutex::new(part));
        drop(handed(&slot, Step::Queued(receivers[0].take().unwrap())));
        assert!(receivers[1].as_mut().unwrap().try_recv().is_err());
        assert_eq!(lock(&slot).waiting.len(), 2);

        // Gone before publishing alone: the partition does not stay busy behind it.
        let (part, _) = queue(&[]);
        let slot = Slot::new(Mutex::new(part));
        let alone = Queued {
            line: ChatLine::new(String::new(), Bytes::new()),
            turn: None,
            keeper: None,
        };
        drop(handed(&slot, Step::Alone(alone)));
        assert!(!lock(&slot).publishing);
    }

    /// A queued message of the connection `order`, with the receiver its sender waits on.
    fn kept(order: &Arc<SendOrder>, client_id: &str) -> (Queued, oneshot::Receiver<Turn>) {
        let (turn, told) = oneshot::channel();
        let queued = Queued {
            line: ChatLine::new(client_id.to_owned(), Bytes::new()),
            turn: Some(turn),
            keeper: Some(Keeper {
                order: order.clone(),
                client_id: client_id.to_owned(),
            }),
        };
        (queued, told)
    }

    #[test]
    fn after_a_failed_publish_the_queued_messages_behind_it_of_its_connections_are_refused() {
        let (failed, other) = (
            Arc::new(SendOrder::default()),
            Arc::new(SendOrder::default()),
        );
        let (a2, mut a2_told) = kept(&failed, "a-2");
        let (b1, mut b1_told) = kept(&other, "b-1");
        let (a3, mut a3_told) = kept(&failed, "a-3");
        let mut part = Partition {
            publishing: true,
            waiting: VecDeque::from([a2, b1, a3]),
            last_taken: None,
        };
        // The publish carrying a-1 failed: the publisher notes it, then sweeps the queue.
        failed.refused("a-1", None);
        refuse_held_back(&mut part, "timed out");
        for told in [&mut a2_told, &mut a3_told] {
            assert!(matches!(told.try_recv(), Ok(Turn::Done(Err(err))) if err == "timed out"));
        }
        assert!(
            b1_told.try_recv().is_err(),
            "another connection's message waits on"
        );
        assert_eq!(part.waiting.len(), 1);
        // Nothing of that connection is handed over after it until a-1 comes again.
        assert!(failed.hold_back("a-4").is_some());
        assert!(failed.hold_back("a-1").is_none());
    }

    #[test]
    fn the_turn_passes_to_the_first_sender_still_waiting_or_the_partition_goes_idle() {
        let (mut part, mut receivers) = queue(&[false, true, true]);
        pass_on(&mut part);
        assert!(part.publishing);
        assert_eq!(
            part.waiting.len(),
            2,
            "the gone sender's message was dropped"
        );
        assert!(matches!(
            receivers[1].as_mut().unwrap().try_recv(),
            Ok(Turn::Lead)
        ));
        assert!(
            receivers[2].as_mut().unwrap().try_recv().is_err(),
            "told nothing yet"
        );

        let (mut idle, _) = queue(&[]);
        pass_on(&mut idle);
        assert!(!idle.publishing, "nothing queued: idle");
        let (mut gone, _) = queue(&[false, false]);
        pass_on(&mut gone);
        assert!(!gone.publishing && gone.waiting.is_empty());
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
}
