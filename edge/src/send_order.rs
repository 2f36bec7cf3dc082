//! The order of one connection's sends across a transient refusal: nothing a connection sends
//! after a refused message overtakes it.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use mesh_contracts::ErrorCode;
use mesh_contracts::chat::SendAck;

use crate::rejection::Rejection;

/// Keeps one connection's sends in order across a transient refusal: after a message is
/// rejected `service_unavailable` or `overloaded`, every later message of the connection is
/// rejected `service_unavailable` until that message (same `client_id`) is sent again. A
/// client that resends its rejected messages in their original order, as the client contract
/// says, so gets them stored in that order: nothing sent after the refused message can
/// overtake it. The held-back refusals ask for the same `retry_after` as the refusal they wait
/// behind, so a client that honours each one sends them again after that one, not before.
///
/// A connection has several sends handed to the ingest publisher at once, so a failed publish
/// is noted here by the publisher itself, under its partition's lock, before anything else is
/// handed to that partition (see `IngestPublisher`): a later message of the connection is then
/// either still queued (and refused with it) or held back.
#[derive(Debug, Default)]
pub struct SendOrder {
    /// The refused message everything else waits for.
    awaited: Mutex<Option<Awaited>>,
}

#[derive(Debug)]
struct Awaited {
    client_id: String,
    retry_after: Option<Duration>,
}

impl SendOrder {
    /// A rejection for `client_id` while an earlier refused message was not sent again.
    pub fn hold_back(&self, client_id: &str) -> Option<Rejection> {
        self.awaited()
            .as_ref()
            .filter(|awaited| awaited.client_id != client_id)
            .map(|awaited| Rejection {
                retry_after: awaited.retry_after,
                ..Rejection::new(
                    ErrorCode::ServiceUnavailable,
                    "an earlier message was not accepted; send it again first",
                    None,
                )
            })
    }

    /// `client_id` was handed to its partition's publisher: when it is the message the others
    /// waited for, they wait no more (a failed publish of it is `refused` again).
    pub fn handed(&self, client_id: &str) {
        let mut awaited = self.awaited();
        if awaited
            .as_ref()
            .is_some_and(|awaited| awaited.client_id == client_id)
        {
            *awaited = None;
        }
    }

    /// `client_id` was refused for a passing reason: later messages wait for it, unless an
    /// earlier refused message is still awaited.
    pub fn refused(&self, client_id: &str, retry_after: Option<Duration>) {
        self.awaited().get_or_insert_with(|| Awaited {
            client_id: client_id.to_owned(),
            retry_after,
        });
    }

    /// Notes how the send of `client_id` ended.
    pub fn settle(&self, client_id: &str, result: &Result<SendAck, Rejection>) {
        match result {
            Err(rejection) if rejection.code.is_transient() => {
                self.refused(client_id, rejection.retry_after);
            }
            _ => self.handed(client_id),
        }
    }

    fn awaited(&self) -> MutexGuard<'_, Option<Awaited>> {
        self.awaited.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission;

    fn overloaded() -> Result<SendAck, Rejection> {
        Err(Rejection {
            retry_after: Some(admission::RETRY_AFTER),
            ..Rejection::new(ErrorCode::Overloaded, "full", None)
        })
    }

    #[test]
    fn sends_held_back_ask_for_the_wait_of_the_refusal_they_wait_behind() {
        let order = SendOrder::default();
        order.settle("m-1", &overloaded());
        let held = order.hold_back("m-2").expect("m-2 waits for m-1");
        assert_eq!(held.code, ErrorCode::ServiceUnavailable);
        let ack = held.ack("m-2".into());
        assert_eq!(
            ack.retry_after_ms,
            Some(admission::RETRY_AFTER.as_millis() as u64)
        );
        // A later refusal does not replace the message everything waits for.
        order.settle("m-2", &overloaded());
        assert!(
            order.hold_back("m-1").is_none(),
            "m-1 itself may come again"
        );
        order.settle("m-1", &Ok(SendAck::accepted("m-1".into(), "p:x".into())));
        // Held back behind a refusal that named no wait, the client hears none either.
        let down = Err(Rejection::new(ErrorCode::ServiceUnavailable, "down", None));
        order.settle("m-3", &down);
        assert_eq!(
            order
                .hold_back("m-4")
                .unwrap()
                .ack("m-4".into())
                .retry_after_ms,
            None
        );
    }

    #[test]
    fn after_a_transient_refusal_nothing_overtakes_the_refused_message() {
        let order = SendOrder::default();
        let accepted = |id: &str| Ok(SendAck::accepted(id.to_owned(), "p:a:b".to_owned()));
        let unavailable = Err(Rejection::new(ErrorCode::ServiceUnavailable, "down", None));
        order.settle("m1", &accepted("m1"));
        assert!(order.hold_back("m2").is_none());
        order.settle("m2", &unavailable);
        let held = order.hold_back("m3").expect("m3 waits for m2");
        assert_eq!(held.code, ErrorCode::ServiceUnavailable);
        order.settle("m3", &Err(held));
        assert!(order.hold_back("m2").is_none(), "m2 may be sent again");
        order.settle("m2", &unavailable);
        assert!(order.hold_back("m3").is_some(), "m2 refused again");
        order.settle("m2", &accepted("m2"));
        assert!(order.hold_back("m3").is_none());
    }

    #[test]
    fn a_resent_message_handed_over_lets_the_next_ones_through_until_its_publish_fails() {
        let order = SendOrder::default();
        order.refused("m2", None);
        assert!(order.hold_back("m3").is_some());
        // m2 sent again and handed to the publisher: m3 may follow it at once.
        order.handed("m2");
        assert!(order.hold_back("m3").is_none());
        // Handing over another message does not end a wait for a different one.
        order.refused("m2", None);
        order.handed("m3");
        assert!(order.hold_back("m4").is_some());
        // m2's publish failed again: everything after it waits once more.
        order.handed("m2");
        order.refused("m2", None);
        assert!(order.hold_back("m3").is_some());
    }
}
