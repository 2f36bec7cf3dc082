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
    let mut pushes = loop {
        match hub.bus().subscribe_push(user).await {
            Ok(pushes) => break pushes,
            Err(err) => tracing::warn!(error = %err, "cannot subscribe to pushes; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(RESUBSCRIBE_DELAY) => {}
            _ = emptied.notified() => {}
        }
        if hub.remove_if_empty(user) {
            return;
        }
    };
    // The subscription is active on the server once a round trip completed; only then may
    // connections say `ready`, or a client could miss what is pushed right after.
    hub.bus().flush().await;
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
