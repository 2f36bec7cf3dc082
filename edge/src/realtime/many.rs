//! The edge's one subscription to pushes addressed to many users (`push.many`, a group's
//! messages): each message's frame goes to those of its users connected to this edge.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::watch;
use uuid::Uuid;

use super::hub::Hub;

/// Hands every push to many users to the hub until `stop` turns true or the subscription
/// ends (the NATS connection closed for good; each user's forwarder then closes its sockets).
pub async fn follow(
    hub: Hub,
    mut pushes: impl Stream<Item = (Vec<Uuid>, Bytes)> + Unpin,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            pushed = pushes.next() => match pushed {
                Some((users, frame)) => hub.fan_out_many(&users, &frame),
                None => {
                    tracing::error!("the subscription to pushes for many users ended");
                    return;
                }
            },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
