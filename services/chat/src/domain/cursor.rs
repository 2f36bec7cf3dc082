//! The cursor of the conversation list: the sort key of the last row of the previous page,
//! as opaque text.

use time::OffsetDateTime;

use super::invalid;
use mesh_contracts::ServiceError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCursor {
    pub pinned: bool,
    pub updated_at: OffsetDateTime,
    pub id: String,
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

    pub fn decode(raw: &str) -> Result<Self, ServiceError> {
        let bad = || invalid("cursor", "not a cursor returned by this API");
        let mut parts = raw.splitn(3, '.');
        let pinned = match parts.next() {
            Some("0") => false,
            Some("1") => true,
            _ => return Err(bad()),
        };
        let nanos: i128 = parts.next().and_then(|n| n.parse().ok()).ok_or_else(bad)?;
        let updated_at = OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| bad())?;
        let id = parts
            .next()
            .filter(|id| !id.is_empty() && id.len() <= 80)
            .ok_or_else(bad)?;
        Ok(Self {
            pinned,
            updated_at,
            id: id.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let cursor = ListCursor {
            pinned: true,
            updated_at: OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789)
                .unwrap(),
            id: "g:0190a0b0-0000-7000-8000-000000000000".into(),
        };
        assert_eq!(ListCursor::decode(&cursor.encode()).unwrap(), cursor);
        for bad in ["", "2.1.x", "1.notanumber.x", "0.5.", "0"] {
            assert!(ListCursor::decode(bad).is_err(), "{bad}");
        }
    }
}
