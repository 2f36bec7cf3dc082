//! Domain events as they travel on `<prefix>.evt.<service>.<event>`: one envelope, versioned,
//! around the event's own payload, and the typed events of each service.
//!
//! A service's events are one enum tagged by `type` ([`SocialEvent`], [`UserEvent`]). The tag
//! is the event's type name (the outbox row's `event_type`, the envelope's `event_type` and the
//! last token of its subject); the variant's other fields are the payload. [`encode`] splits a
//! typed event into those two halves for the outbox, and [`EventEnvelope::event`] puts them
//! back together for a consumer, so writer and readers share one definition.

mod social;
mod user;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::rpc::Service;

pub use social::{FriendshipEnd, SocialEvent};
pub use user::UserEvent;

/// The version of the envelope and of every event's payload shape. Adding a variant or an
/// optional field keeps it; renaming or removing a field, or changing its meaning, bumps it.
/// A reader refuses envelopes newer than its own version rather than misreading them.
pub const EVENT_VERSION: u32 = 1;

/// The field of a typed event that names its type.
const TAG: &str = "type";

/// What the outbox relay publishes for each outbox row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// The outbox row id; also the `Nats-Msg-Id`, and what consumers remember.
    pub id: Uuid,
    pub service: String,
    pub event_type: String,
    pub version: u32,
    /// The entity the event is about (a user, a group, a request).
    pub aggregate: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    pub payload: serde_json::Value,
}

/// The events one service writes to its outbox: an enum with `#[serde(tag = "type")]` whose
/// variants serialize to JSON objects.
pub trait DomainEvent: Serialize + DeserializeOwned {
    /// The service that writes them (the envelope's `service`).
    const SERVICE: Service;
}

/// Splits an event into its type name and its payload, as the outbox stores them.
pub fn encode<E: DomainEvent>(event: &E) -> Result<(String, Value), serde_json::Error> {
    let Value::Object(mut payload) = serde_json::to_value(event)? else {
        return Err(serde_json::Error::custom(
            "an event serializes to an object",
        ));
    };
    let Some(Value::String(event_type)) = payload.remove(TAG) else {
        return Err(serde_json::Error::custom("an event carries its type"));
    };
    Ok((event_type, Value::Object(payload)))
}

impl EventEnvelope {
    /// Reads the typed event. `Err` when the envelope is of another service, newer than this
    /// build, or a known type whose payload does not fit (a poison event); a type this build
    /// does not know reads as the enum's `Unknown`.
    pub fn event<E: DomainEvent>(&self) -> Result<E, serde_json::Error> {
        if self.service != E::SERVICE.as_str() {
            return Err(serde_json::Error::custom(format!(
                "a {} event read as one of {}",
                self.service,
                E::SERVICE.as_str()
            )));
        }
        if self.version > EVENT_VERSION {
            return Err(serde_json::Error::custom(format!(
                "event version {} is newer than {EVENT_VERSION}",
                self.version
            )));
        }
        let Value::Object(fields) = &self.payload else {
            return Err(serde_json::Error::custom("the payload is not an object"));
        };
        let mut tagged = Map::with_capacity(fields.len() + 1);
        tagged.insert(TAG.to_owned(), Value::String(self.event_type.clone()));
        tagged.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
        serde_json::from_value(Value::Object(tagged))
    }
}

/// Shared by the round-trip tests of each service's events.
#[cfg(test)]
pub(crate) mod round_trip {
    use super::*;

    /// The envelope the relay would publish for `event`.
    pub fn envelope<E: DomainEvent>(event: &E) -> EventEnvelope {
        let (event_type, payload) = encode(event).expect("events encode");
        EventEnvelope {
            id: Uuid::now_v7(),
            service: E::SERVICE.as_str().to_owned(),
            event_type,
            version: EVENT_VERSION,
            aggregate: Uuid::now_v7(),
            occurred_at: OffsetDateTime::now_utc(),
            payload,
        }
    }

    /// Encodes `event`, checks its type name is a subject token, reads it back from its
    /// envelope and returns the type name.
    pub fn check<E: DomainEvent + PartialEq + std::fmt::Debug>(event: &E) -> String {
        let sent = envelope(event);
        assert!(
            sent.event_type
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_'),
            "{} is not a subject token",
            sent.event_type
        );
        assert!(
            !sent.payload.as_object().unwrap().contains_key(TAG),
            "the type is not repeated in the payload"
        );
        let wire = serde_json::to_vec(&sent).unwrap();
        let received: EventEnvelope = serde_json::from_slice(&wire).unwrap();
        assert_eq!(&received.event::<E>().unwrap(), event);
        sent.event_type
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn envelope(service: &str, event_type: &str, payload: Value) -> EventEnvelope {
        EventEnvelope {
            id: Uuid::now_v7(),
            service: service.into(),
            event_type: event_type.into(),
            version: EVENT_VERSION,
            aggregate: Uuid::now_v7(),
            occurred_at: OffsetDateTime::now_utc(),
            payload,
        }
    }

    #[test]
    fn a_known_event_with_a_foreign_payload_is_an_error() {
        let foreign = envelope("social", "friendship_created", json!({ "x": 1 }));
        assert!(foreign.event::<SocialEvent>().is_err());
        let not_an_object = envelope("social", "group_member_kicked", json!([]));
        assert!(not_an_object.event::<SocialEvent>().is_err());
    }

    #[test]
    fn an_unknown_type_reads_as_unknown() {
        let newer = envelope("social", "group_renamed_twice", json!({ "anything": true }));
        assert_eq!(newer.event::<SocialEvent>().unwrap(), SocialEvent::Unknown);
        assert!(
            encode(&SocialEvent::Unknown).is_err(),
            "Unknown is never written"
        );
    }

    #[test]
    fn another_services_or_a_newer_envelope_is_refused() {
        let unknown = envelope("user", "user_enabled", json!({}));
        assert!(unknown.event::<SocialEvent>().is_err());
        let mut newer = envelope("user", "user_enabled", json!({}));
        newer.version = EVENT_VERSION + 1;
        assert!(newer.event::<UserEvent>().is_err());
    }

    #[test]
    fn payloads_written_before_typed_events_still_read() {
        let (a, b, g) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let joined = envelope(
            "social",
            "group_member_joined",
            json!({ "group_id": g, "user_id": a, "role": "owner" }),
        );
        assert!(matches!(
            joined.event::<SocialEvent>().unwrap(),
            SocialEvent::GroupMemberJoined {
                invited_by: None,
                ..
            }
        ));
        let unmuted = envelope(
            "social",
            "group_member_unmuted",
            json!({ "group_id": g, "user_id": a, "muted_until": null, "by": b }),
        );
        assert!(matches!(
            unmuted.event::<SocialEvent>().unwrap(),
            SocialEvent::GroupMemberUnmuted { by, .. } if by == b
        ));
    }
}
