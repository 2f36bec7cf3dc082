//! The cursor of the conversation list: the sort key of the last row of the previous page,
//! as opaque text.

use mesh_contracts::ServiceError;
use mesh_contracts::chat::ConversationId;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use super::invalid;

/// The earliest instant a Postgres `timestamptz` holds (4714-11-24 BC, Julian day 0): its
/// `MIN_TIMESTAMP`, in microseconds before its epoch 2000-01-01. `time` reaches further back
/// (to the year -9999), and Postgres refuses such a value with an error, not a mismatch.
const EARLIEST_STORABLE: OffsetDateTime =
    datetime!(2000-01-01 0:00 UTC).saturating_sub(Duration::microseconds(211_813_488_000_000_000));

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCursor {
    pub pinned: bool,
    pub updated_at: OffsetDateTime,
    pub id: ConversationId,
}

impl ListCursor {
    pub fn encode(&self) -> String {
        format!(
            "{}.{}.{}",
            u8::from(self.pinned),
            self.updated_at.unix_timestamp_nanos(),
            self.id
        )
    }

    /// Parses a cursor this API returned. Anything else is the caller's fault, refused here
    /// rather than by Postgres (which would make it a 500): every part must be a value the
    /// list query can bind, so a time Postgres holds and a conversation id in its canonical
    /// text (which also rules out a NUL byte, which no Postgres text may contain).
    pub fn decode(raw: &str) -> Result<Self, ServiceError> {
        let bad = || invalid("cursor", "not a cursor returned by this API");
        let mut parts = raw.splitn(3, '.');
        let pinned = match parts.next() {
            Some("0") => false,
            Some("1") => true,
            _ => return Err(bad()),
        };
        let nanos: i128 = parts.next().and_then(|n| n.parse().ok()).ok_or_else(bad)?;
        let updated_at = OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .filter(|at| *at >= EARLIEST_STORABLE)
            .ok_or_else(bad)?;
        let id = parts.next().and_then(canonical_id).ok_or_else(bad)?;
        Ok(Self {
            pinned,
            updated_at,
            id,
        })
    }
}

/// The conversation `raw` names, if `raw` is its one canonical spelling (the text the list
/// sorts by; another spelling of the same id would sort elsewhere).
fn canonical_id(raw: &str) -> Option<ConversationId> {
    ConversationId::parse(raw).filter(|id| id.to_string() == raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group() -> ConversationId {
        ConversationId::parse("g:0190a0b0-0000-7000-8000-000000000000").unwrap()
    }

    #[test]
    fn round_trips_and_refuses_garbage() {
        let cursor = ListCursor {
            pinned: true,
            updated_at: OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789)
                .unwrap(),
            id: group(),
        };
        assert_eq!(ListCursor::decode(&cursor.encode()).unwrap(), cursor);
        for bad in ["", "2.1.x", "1.notanumber.x", "0.5.", "0"] {
            assert!(ListCursor::decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refuses_what_postgres_cannot_bind() {
        let g = "g:0190a0b0-0000-7000-8000-000000000000";
        for bad in [
            // About 7500 BC: a time `time` holds and Postgres does not.
            format!("0.-300000000000000000000.{g}"),
            // One nanosecond before Postgres's earliest instant.
            format!("0.-210866803200000000001.{g}"),
            // Past what `time` holds, and past an i128.
            format!("0.999999999999999999999999999999.{g}"),
            format!("0.9999999999999999999999999999999999999999.{g}"),
            "1.0.g:\0".to_owned(),
            "1.0.\0".to_owned(),
            format!("1.0.{g}\0"),
            "1.0.x".to_owned(),
            "1.0.g:0190A0B0-0000-7000-8000-000000000000".to_owned(),
            "1.0.g:0190a0b000007000800000000000000".to_owned(),
            // A private id's users out of order.
            format!(
                "1.0.p:{}:{}",
                "0190a0b0-0000-7000-8000-000000000002", "0190a0b0-0000-7000-8000-000000000001"
            ),
        ] {
            assert!(ListCursor::decode(&bad).is_err(), "{bad:?}");
        }
        let earliest = ListCursor::decode(&format!("0.-210866803200000000000.{g}")).unwrap();
        assert_eq!(earliest.updated_at, EARLIEST_STORABLE);
        assert_eq!(EARLIEST_STORABLE, datetime!(-4713-11-24 0:00 UTC));
    }
}
