//! One task per user connected to this edge: holds the user's push subscription, hands every
//! pushed frame to each of the user's connections, and reports the user's presence.
//!
//! When the last connection goes, the task waits [`OFFLINE_GRACE`]: a connection that comes
//! back within it (a reload, a reconnect over a flaky network) joins the same task as if
//! nothing happened, and friends are told nothing. Once the user stayed away that long, the
//! task reports them offline and, if no connection came back meanwhile, removes the user's
//! slot and ends (dropping the subscription). Because the slot outlives the grace and that
//! report, a reconnecting user joins the same task and presence reports of one user never
//! overlap.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{Notify, watch};
use tokio::time::{MissedTickBehavior, Sleep};
use uuid::Uuid;

use super::close::CloseReason;
use super::hub::Hub;
use super::presence::{PresenceReporter, Reported};

/// Pause between attempts to subscribe while NATS refuses.
const RESUBSCRIBE_DELAY: Duration = Duration::from_secs(1);
/// How long a user whose last connection here closed still counts as online. Each offline
/// and online report makes the chat service record last-seen and push a presence frame to
/// every friend, so a client reconnecting in a loop would flood them; within the grace a
/// returning connection cancels the offline report (and no second online report follows).
/// The `PRESENCE` key is not refreshed meanwhile, so another edge the user moved to owns it
/// and the late offline report leaves it alone; unrefreshed it still outlives the grace
/// (`PRESENCE_TTL`, 60 s, against a heartbeat of at most 30 s). Shutdown reports at once.
const OFFLINE_GRACE: Duration = Duration::from_secs(5);

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
    // Set while the user's last connection is gone, until the grace runs out (boxed: most
    // users are never in it, and the task stays small).
    let mut grace: Option<Pin<Box<Sleep>>> = None;
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
            _ = heartbeat.tick(), if leaving.is_none() && grace.is_none() => presence.refresh(),
            _ = emptied.notified(), if leaving.is_none() => {
                if hub.is_empty(user) {
                    if hub.is_stopping() {
                        grace = None;
                        leaving = Some(presence.offline());
                    } else {
                        // Counted from the latest departure: a connection that came back and
                        // went again starts it over.
                        grace = Some(Box::pin(tokio::time::sleep(OFFLINE_GRACE)));
                    }
                }
            }
            () = async { grace.as_mut().expect("guarded").await }, if grace.is_some() => {
                grace = None;
                // A connection that came back meanwhile cancels the report.
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
