//! Which incarnation of the ingest stream and of the lease bucket a partition's recorded state
//! refers to, and what a claim makes of a record of another one (pure: decided under the
//! partition's row lock by `store::partitions::claim`).
//!
//! A partition's row (`chat.partitions`) records its owner's epoch, a revision of the
//! `<P>_LEASES` bucket, and how far the `<P>_CHAT_IN` stream is stored, a sequence of that
//! stream. Both mean something only in the stream and bucket they came from: when JetStream
//! loses its store (a NATS rebuilt without its volumes) and `mesh migrate` makes them again,
//! revisions and sequences start again at 1. So the row also records which stream and bucket
//! it refers to, by their creation times.
//!
//! Why creation times: JetStream sets a stream's `created` when it makes the stream and keeps
//! it with the stream (restarts, leader elections and `mesh migrate`'s config updates leave it
//! alone), and a stream made again under the same name, or on a server that lost its store,
//! gets a new one. No configuration carries it, so a stream made again from a saved
//! configuration (or by a tool that copies metadata) cannot look like the old one, as an id of
//! ours written into the stream's metadata could, and nothing has to keep such an id across
//! `mesh migrate`'s updates. A comparison of positions alone (a recorded sequence beyond the
//! stream's last) only sees the loss until the new stream grows past the old position. Only
//! equality of creation times is used, never their order, so a rebuilt server whose clock is
//! behind the old one's still counts as another incarnation. (A stream restored from a backup
//! may come back with a new creation time: its partitions then read it again from the start,
//! which the store answers as resends, never storing anything twice.)

use time::OffsetDateTime;

/// Which ingest stream and which lease bucket a record refers to: their creation times (to
/// the microsecond, as Postgres keeps them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incarnation {
    /// When `<P>_CHAT_IN` was created: the recorded `stream_seq` is one of its sequences.
    pub stream: OffsetDateTime,
    /// When the `<P>_LEASES` bucket's stream was created: the recorded epoch is one of its
    /// revisions.
    pub leases: OffsetDateTime,
}

/// JetStream as a claim finds it, read while the claim holds the partition's row lock (so no
/// owner records anything meanwhile).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Present {
    pub incarnation: Incarnation,
    /// The ingest stream's last sequence: every position recorded in it is at most this.
    pub stream_last: u64,
    /// The lease bucket's newest revision: every epoch it issued is at most this.
    pub leases_last: u64,
}

/// A partition's row as the claim found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    pub epoch: u64,
    pub stream_seq: u64,
    /// `None`: unknown, a row written before incarnations were recorded (or by a worker of
    /// that release during a rolling upgrade), or the claim's own placeholder for a partition
    /// never claimed (epoch 0, nothing stored).
    pub incarnation: Option<Incarnation>,
}

/// What a new owner claims with: its lease's revision, and when the lease bucket it took the
/// lease in was created (read before the lease was taken).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bid {
    pub epoch: u64,
    pub leases: OffsetDateTime,
}

/// Why a claim takes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stale {
    /// An owner with a later epoch of the same bucket claimed the partition already.
    LaterOwner,
    /// The lease was taken in a bucket that no longer exists: its revision is no epoch of
    /// the current one.
    LeaseGone,
}

/// What a claim does with the partition's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The row refers to the current stream and bucket: resume after its `stream_seq`.
    Keep,
    /// The row's incarnation is unknown and nothing shows it refers to another stream or
    /// bucket: record the current ones and resume after its `stream_seq`, as before.
    Adopt,
    /// The row refers to a stream or a bucket that no longer exists. Its epoch is no
    /// revision of the current bucket, so it is replaced without comparing;
    /// `keep_position`: the stream is still the one the row refers to (only the bucket was
    /// made again), so its `stream_seq` stays; otherwise the partition resumes from the
    /// stream's start.
    Reset { keep_position: bool },
    /// The claim takes nothing.
    Stale(Stale),
}

impl Decision {
    /// Where the new owner resumes: the stream sequence the row keeps (0: the whole stream).
    pub fn resume_after(self, recorded: &Recorded) -> u64 {
        match self {
            Decision::Keep
            | Decision::Adopt
            | Decision::Reset {
                keep_position: true,
            } => recorded.stream_seq,
            Decision::Reset {
                keep_position: false,
            }
            | Decision::Stale(_) => 0,
        }
    }
}

/// What a claim by `bid` makes of `recorded`, with JetStream as `present` (read under the row
/// lock).
///
/// - A bid whose lease bucket is not the current one (or whose epoch the current bucket never
///   issued) is stale: its lease is gone with its bucket.
/// - A known incarnation: with the same bucket, a later recorded epoch is a later owner
///   (stale), as before incarnations were recorded; with the same stream, the recorded
///   position stays. A bucket or stream that differs no longer exists (the present ones were
///   read under the row lock, after the row was written), so the row is reset: the epoch is
///   taken without comparing, and the position is dropped with its stream.
/// - An unknown incarnation (a row of the release before): it is lost when it cannot belong to
///   the present stream and bucket, with a position beyond the stream's last sequence or an
///   epoch beyond the bucket's newest revision (both only grow); then it is reset whole.
///   Otherwise a later recorded epoch is a later owner (stale) and an earlier one is adopted
///   with its position. (A loss from before the upgrade whose new stream and bucket already
///   grew past the recorded position and epoch cannot be told apart; the release before had
///   then resumed at that position already.)
pub fn decide(recorded: &Recorded, bid: Bid, present: &Present) -> Decision {
    if bid.leases != present.incarnation.leases || bid.epoch > present.leases_last {
        return Decision::Stale(Stale::LeaseGone);
    }
    match recorded.incarnation {
        Some(was) => {
            let same_bucket = was.leases == present.incarnation.leases;
            let same_stream = was.stream == present.incarnation.stream;
            if same_bucket && recorded.epoch > bid.epoch {
                Decision::Stale(Stale::LaterOwner)
            } else if same_bucket && same_stream {
                Decision::Keep
            } else {
                Decision::Reset {
                    keep_position: same_stream,
                }
            }
        }
        None => {
            let lost =
                recorded.stream_seq > present.stream_last || recorded.epoch > present.leases_last;
            if lost {
                Decision::Reset {
                    keep_position: false,
                }
            } else if recorded.epoch > bid.epoch {
                Decision::Stale(Stale::LaterOwner)
            } else {
                Decision::Adopt
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    const OLD: Incarnation = Incarnation {
        stream: datetime!(2026-01-01 00:00:00.000001 UTC),
        leases: datetime!(2026-01-01 00:00:00.000002 UTC),
    };
    const NEW: Incarnation = Incarnation {
        stream: datetime!(2026-06-01 00:00:00 UTC),
        leases: datetime!(2026-06-01 00:00:00.5 UTC),
    };

    /// JetStream made anew: both young, a few revisions and sequences.
    fn rebuilt() -> Present {
        Present {
            incarnation: NEW,
            stream_last: 12,
            leases_last: 40,
        }
    }

    fn record(epoch: u64, stream_seq: u64, incarnation: Option<Incarnation>) -> Recorded {
        Recorded {
            epoch,
            stream_seq,
            incarnation,
        }
    }

    fn bid(epoch: u64, leases: OffsetDateTime) -> Bid {
        Bid { epoch, leases }
    }

    #[test]
    fn the_same_stream_and_bucket_keep_the_epoch_check_of_before() {
        let present = Present {
            incarnation: OLD,
            stream_last: 9_000,
            leases_last: 50_000,
        };
        let row = record(40_000, 8_000, Some(OLD));
        assert_eq!(
            decide(&row, bid(45_000, OLD.leases), &present),
            Decision::Keep
        );
        assert_eq!(Decision::Keep.resume_after(&row), 8_000);
        assert_eq!(
            decide(&row, bid(40_000, OLD.leases), &present),
            Decision::Keep,
            "the same epoch is not a later owner"
        );
        assert_eq!(
            decide(&row, bid(39_999, OLD.leases), &present),
            Decision::Stale(Stale::LaterOwner)
        );
    }

    #[test]
    fn a_lost_stream_and_bucket_reset_the_row_instead_of_refusing_every_owner() {
        // Before: epoch 40,000 > 7 refused every new owner as stale, for good.
        let row = record(40_000, 8_000, Some(OLD));
        let decision = decide(&row, bid(7, NEW.leases), &rebuilt());
        assert_eq!(
            decision,
            Decision::Reset {
                keep_position: false
            }
        );
        assert_eq!(
            decision.resume_after(&row),
            0,
            "the old position is dropped"
        );
    }

    #[test]
    fn a_lost_stream_alone_drops_the_position_but_keeps_the_epoch_check() {
        let present = Present {
            incarnation: Incarnation {
                stream: NEW.stream,
                leases: OLD.leases,
            },
            stream_last: 3,
            leases_last: 50_000,
        };
        let row = record(40_000, 8_000, Some(OLD));
        let decision = decide(&row, bid(45_000, OLD.leases), &present);
        assert_eq!(
            decision,
            Decision::Reset {
                keep_position: false
            }
        );
        assert_eq!(decision.resume_after(&row), 0);
        assert_eq!(
            decide(&row, bid(30_000, OLD.leases), &present),
            Decision::Stale(Stale::LaterOwner),
            "the bucket is the same: a later epoch is still a later owner"
        );
    }

    #[test]
    fn a_lost_bucket_alone_keeps_the_position() {
        let present = Present {
            incarnation: Incarnation {
                stream: OLD.stream,
                leases: NEW.leases,
            },
            stream_last: 9_000,
            leases_last: 40,
        };
        let row = record(40_000, 8_000, Some(OLD));
        let decision = decide(&row, bid(7, NEW.leases), &present);
        assert_eq!(
            decision,
            Decision::Reset {
                keep_position: true
            }
        );
        assert_eq!(decision.resume_after(&row), 8_000);
    }

    #[test]
    fn a_lease_of_a_bucket_that_is_gone_claims_nothing() {
        // A stale owner of the old bucket (high epoch) after the row was reset...
        let reset = record(7, 0, Some(NEW));
        assert_eq!(
            decide(&reset, bid(40_001, OLD.leases), &rebuilt()),
            Decision::Stale(Stale::LeaseGone)
        );
        // ...or before: it never takes the row back to the old stream.
        let row = record(40_000, 8_000, Some(OLD));
        assert_eq!(
            decide(&row, bid(40_001, OLD.leases), &rebuilt()),
            Decision::Stale(Stale::LeaseGone)
        );
        // A revision the current bucket never issued cannot be one of its leases.
        assert_eq!(
            decide(&reset, bid(41, NEW.leases), &rebuilt()),
            Decision::Stale(Stale::LeaseGone)
        );
        // Resetting is the first claim's, later ones compare epochs again.
        assert_eq!(
            decide(&reset, bid(9, NEW.leases), &rebuilt()),
            Decision::Keep
        );
        assert_eq!(
            decide(&record(9, 4, Some(NEW)), bid(8, NEW.leases), &rebuilt()),
            Decision::Stale(Stale::LaterOwner)
        );
    }

    #[test]
    fn an_unknown_incarnation_that_fits_is_adopted_as_before() {
        let present = Present {
            incarnation: OLD,
            stream_last: 9_000,
            leases_last: 50_000,
        };
        let row = record(40_000, 8_000, None);
        assert_eq!(
            decide(&row, bid(45_000, OLD.leases), &present),
            Decision::Adopt
        );
        assert_eq!(Decision::Adopt.resume_after(&row), 8_000);
        assert_eq!(
            decide(&row, bid(39_000, OLD.leases), &present),
            Decision::Stale(Stale::LaterOwner),
            "an epoch the current bucket issued, later than the bid's: a later owner"
        );
        // The claim's placeholder for a partition never claimed.
        let placeholder = record(0, 0, None);
        assert_eq!(
            decide(&placeholder, bid(1, OLD.leases), &present),
            Decision::Adopt
        );
        assert_eq!(Decision::Adopt.resume_after(&placeholder), 0);
    }

    #[test]
    fn an_unknown_incarnation_that_cannot_fit_is_lost() {
        // A position beyond the stream's last sequence belongs to another stream.
        let beyond_stream = record(5, 8_000, None);
        assert_eq!(
            decide(&beyond_stream, bid(7, NEW.leases), &rebuilt()),
            Decision::Reset {
                keep_position: false
            }
        );
        // An epoch beyond every revision of the bucket came from another bucket: lost, not a
        // later owner, even where the position would fit.
        let beyond_bucket = record(40_000, 10, None);
        let decision = decide(&beyond_bucket, bid(7, NEW.leases), &rebuilt());
        assert_eq!(
            decision,
            Decision::Reset {
                keep_position: false
            }
        );
        assert_eq!(decision.resume_after(&beyond_bucket), 0);
    }
}
