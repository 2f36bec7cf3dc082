//! One task per user connected to this edge: holds the user's push subscription, hands every
//! pushed frame to each of the user's connections, and reports the user's presence.
//!
//! When the last connection goes, the task reports the user offline and, if no connection came
//! back meanwhile, removes the user's slot and ends (dropping the subscription). Because the
//! slot outlives that report, a reconnecting user joins the same task and presence reports of
//! one user never overlap.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{Notify, watch};
use tokio::time::MissedTickBehavior;
use uuid::Uuid;

use super::close::CloseReason;
use super::hub::Hub;
use super::presence::{PresenceReporter, Reported};

/// Pause between attempts to subscribe while NATS refuses.
const RESUBSCRIBE_DELAY: Duration = Duration::from_secs(1);

pub async fn run(
    hub: Hub,
    user: Uuid,
    session: Uuid,
    emptied: Arc<Notify>,
    subscribed: watch::Sender<bool>,
) {
    // Boxed: it runs once, and inline it would size the task for its whole life.
    let Some(mut pushes) = Box::pin(subscribe(&hub, user, &emptied)).await else {
        return;
    };
    subscribed.send_replace(true);

    let mut presence = PresenceReporter::new(hub.presence(), user, session);
    presence.online();
    let mut heartbeat = tokio::time::interval(hub.heartbeat());
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    heartbeat.reset();
    // Set while the user is being reported offline.
    let mut leaving: Option<Arc<Reported>> = None;
    let mut subscribed_open = true;
    loop {
        tokio::select! {
            pushed = pushes.next(), if subscribed_open => match pushed {
                Some(frame) => hub.fan_out(user, &frame),
                None => {
                    // Only when the NATS connection is closed for good.
                    subscribed_open = false;
                    subscribed.send_replace(false);
                    hub.kick_user(user, CloseReason::Error);
                }
            },
            _ = heartbeat.tick(), if leaving.is_none() => presence.refresh(),
            _ = emptied.notified(), if leaving.is_none() => {
                if hub.is_empty(user) {
                    leaving = Some(presence.offline());
                }
            }
            () = async { leaving.as_ref().expect("guarded").wait().await }, if leaving.is_some() => {
                leaving = None;
                if hub.remove_if_empty(user) {
                    return;
                }
                presence.online();
            }
        }
    }
}
/// Subscribes to the user's pushes, retrying while NATS refuses; `None` when the user's
/// connections all went meanwhile (the slot is removed then).
async fn subscribe(
    hub: &Hub,
    user: Uuid,
    emptied: &Notify,
) -> Option<impl futures::Stream<Item = bytes::Bytes> + Send + Unpin + use<>> {
    let pushes = loop {
        match hub.bus().subscribe_push(user).await {
            Ok(pushes) => break pushes,
            Err(err) => tracing::warn!(error = %err, "cannot subscribe to pushes; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(RESUBSCRIBE_DELAY) => {}
            _ = emptied.notified() => {}
        }
        if hub.remove_if_empty(user) {
            return None;
        }
    };
    // The subscription is written to the server before connections say `ready` (the flush
    // empties the client's buffer; async-nats 0.51 sends no ping for it, so this is not a
    // round trip): a client that answers `ready` with a request reaches the server after it.
    hub.bus().flush().await;
    Some(pushes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connected user costs one forwarder task for as long as it stays: the
    /// subscribing, which runs once, is boxed so the task holds only what forwarding needs
    /// (464 bytes, against 712 inline). A guard against inlining it again, not a tight fit.
    #[test]
    fn a_forwarder_task_holds_only_what_forwarding_needs() {
        fn future_size<A, B, C, D, E, F: Future>(_f: impl FnOnce(A, B, C, D, E) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let size = future_size(
            |hub: Hub, user: Uuid, session: Uuid, emptied: Arc<Notify>, subscribed| {
                run(hub, user, session, emptied, subscribed)
            },
        );
        assert!(size <= 600, "a forwarder task is {size} bytes");
    }
}
