//! Per-message timestamps shared by every task of a run: the sender stamps `sent`, the
//! sender's reader stamps `accepted` and `stored`, recipients stamp `delivered`. A message is
//! found by the number inside its client id, so no lock or map sits on the hot path.

use std::io::{self, Write};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

const CHUNK_BITS: u32 = 16;
const CHUNK_LEN: usize = 1 << CHUNK_BITS;
/// 1024 chunks of 65,536 slots: room for 67 million messages per run.
const CHUNKS: usize = 1024;

/// One message's moments, in microseconds since the timeline started; 0 means "not yet".
#[derive(Default)]
pub struct Slot {
    pub sent: AtomicU32,
    /// The latest attempt: the first send, or the last time it was sent again after a
    /// rejection (overwritten, unlike the other moments).
    pub attempted: AtomicU32,
    pub accepted: AtomicU32,
    pub stored: AtomicU32,
    /// First delivery to a recipient (not the sender's own copy).
    pub delivered: AtomicU32,
    /// How many `stored` acks arrived (more than one is a duplicate).
    pub stores: AtomicU32,
    /// How many `message` frames recipients got for it.
    pub deliveries: AtomicU32,
    pub rejected: AtomicU32,
}

impl Slot {
    /// Records `at` unless the moment was already recorded; true when this call recorded it.
    pub fn stamp(moment: &AtomicU32, at: u32) -> bool {
        moment
            .compare_exchange(0, at.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// Records `at`, replacing an earlier moment.
    pub fn set(moment: &AtomicU32, at: u32) {
        moment.store(at.max(1), Ordering::Relaxed);
    }

    pub fn get(moment: &AtomicU32) -> Option<u32> {
        Some(moment.load(Ordering::Relaxed)).filter(|t| *t != 0)
    }
}

pub struct Timeline {
    start: Instant,
    /// The wall clock at `start`, so a timeline can be laid beside other processes' logs.
    started_at: SystemTime,
    /// Tag of this run inside every client id, so ids never repeat between runs.
    run: String,
    next: AtomicU64,
    chunks: Box<[OnceLock<Box<[Slot]>>]>,
}

impl Timeline {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            started_at: SystemTime::now(),
            run: format!("{:08x}", rand::random::<u32>()),
            next: AtomicU64::new(0),
            chunks: (0..CHUNKS).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Microseconds since the timeline started.
    pub fn now(&self) -> u32 {
        self.at(Instant::now())
    }

    pub fn at(&self, instant: Instant) -> u32 {
        u32::try_from(instant.saturating_duration_since(self.start).as_micros()).unwrap_or(u32::MAX)
    }

    /// A new message: its index and client id.
    pub fn allocate(&self) -> (u64, String) {
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        (index, self.client_id(index))
    }

    /// The client id of message `index` (to send it again).
    pub fn client_id(&self, index: u64) -> String {
        format!("lg{}-{index}", self.run)
    }

    /// How many messages were allocated.
    pub fn allocated(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }

    /// The index inside a client id of this run; `None` for anyone else's.
    pub fn index_of(&self, client_id: &str) -> Option<u64> {
        let rest = client_id
            .strip_prefix("lg")?
            .strip_prefix(self.run.as_str())?;
        let index: u64 = rest.strip_prefix('-')?.parse().ok()?;
        (index < self.allocated()).then_some(index)
    }

    pub fn slot(&self, index: u64) -> &Slot {
        let chunk = usize::try_from(index >> CHUNK_BITS).expect("index fits usize");
        assert!(
            chunk < CHUNKS,
            "more than {} messages in one run",
            CHUNKS * CHUNK_LEN
        );
        let slots =
            self.chunks[chunk].get_or_init(|| (0..CHUNK_LEN).map(|_| Slot::default()).collect());
        &slots[usize::try_from(index).expect("index fits usize") & (CHUNK_LEN - 1)]
    }

    /// Every allocated slot, in order.
    pub fn slots(&self) -> impl Iterator<Item = &Slot> {
        (0..self.allocated()).map(|i| self.slot(i))
    }

    /// Writes every message's moments as CSV, one line per message in the order they were
    /// allocated, in microseconds since the timeline started (0: never happened). A first
    /// comment line gives that start as Unix microseconds, to line the moments up with other
    /// processes' logs (e.g. nats-server's `GODEBUG=gctrace=1` lines).
    pub fn write_csv(&self, mut out: impl Write) -> io::Result<()> {
        let started = self
            .started_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros();
        writeln!(
            out,
            "# timeline started at {started} us since the Unix epoch"
        )?;
        writeln!(out, "sent_us,accepted_us,stored_us,delivered_us")?;
        let moment = |m: &AtomicU32| m.load(Ordering::Relaxed);
        for slot in self.slots() {
            writeln!(
                out,
                "{},{},{},{}",
                moment(&slot.sent),
                moment(&slot.accepted),
                moment(&slot.stored),
                moment(&slot.delivered)
            )?;
        }
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csv_has_a_line_per_message_with_its_moments() {
        let timeline = Timeline::new();
        let (first, _) = timeline.allocate();
        timeline.allocate();
        let slot = timeline.slot(first);
        for (moment, at) in [
            (&slot.sent, 10),
            (&slot.accepted, 20),
            (&slot.stored, 30),
            (&slot.delivered, 45),
        ] {
            Slot::stamp(moment, at);
        }
        let mut out = Vec::new();
        timeline.write_csv(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("# timeline started at "), "{text}");
        assert_eq!(
            &lines[1..],
            [
                "sent_us,accepted_us,stored_us,delivered_us",
                "10,20,30,45",
                "0,0,0,0"
            ]
        );
    }

    #[test]
    fn client_ids_lead_back_to_their_slot() {
        let timeline = Timeline::new();
        let (first, id) = timeline.allocate();
        let (second, _) = timeline.allocate();
        assert_eq!((first, second), (0, 1));
        assert_eq!(timeline.index_of(&id), Some(0));
        assert_eq!(
            timeline.index_of(&id.replace("-0", "-7")),
            None,
            "not allocated"
        );
        assert_eq!(Timeline::new().index_of(&id), None, "another run's id");
        assert_eq!(timeline.index_of("someone-else"), None);
        let far = timeline.slot(200_000);
        assert!(Slot::stamp(&far.sent, 5));
        assert!(!Slot::stamp(&far.sent, 9));
        assert_eq!(timeline.index_of(&timeline.client_id(1)), Some(1));
        assert_eq!(Slot::get(&far.sent), Some(5), "the first stamp wins");
        assert_eq!(Slot::get(&far.stored), None);
    }
}
