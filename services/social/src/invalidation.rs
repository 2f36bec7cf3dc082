//! Keeps this instance's caches honest about writes made on other instances: every social
//! event (relayed by the outbox role) invalidates the friend sets, group profiles and member
//! lists it touches.
//! Each instance watches the social events as they are published (`Bus::event_watch`, a plain
//! subscription: no JetStream consumer, so this role has no rights on the `EVENTS` stream).
//! Whatever is published while the watch is closed, or while the NATS connection is down, is
//! never delivered: the watch ends when the connection was lost, and each time one opens the
//! caches start over.

use std::time::Duration;

use mesh_contracts::Service;
use mesh_contracts::events::{EventEnvelope, SocialEvent};
use mesh_observability::outage::Outage;
use mesh_observability::{outage_failed, outage_over};
use tokio_util::sync::CancellationToken;

use crate::handlers::State;

/// Follows new social events until `stop`, reopening the watch when it ends.
pub async fn run(state: State, stop: CancellationToken) {
    let mut outage = Outage::default();
    loop {
        // Without NATS, opening waits out its timeout: told to stop, stop now.
        let Some(opened) = stop
            .run_until_cancelled(state.bus().event_watch(&[Service::Social]))
            .await
        else {
            return;
        };
        match opened {
            Ok(mut watch) => {
                outage_over!(outage, "invalidation feed open again");
                // Every open, the first too: requests are served (and fill the caches) before
                // the feed first opens, and events of that time are not delivered either.
                state.caches().clear();
                loop {
                    let next = tokio::select! {
                        _ = stop.cancelled() => return,
                        next = watch.next() => next,
                    };
                    match next {
                        Some(Ok(delivery)) => {
                            if let Ok(envelope) = serde_json::from_slice(&delivery.payload) {
                                apply(&state, &envelope).await;
                            }
                        }
                        Some(Err(err)) => {
                            outage_failed!(outage, error = %err, "invalidation feed ended");
                            break;
                        }
                        None => break,
                    }
                }
            }
            Err(err) => {
                outage_failed!(outage, error = %err, "cannot open the invalidation feed");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn apply(state: &State, envelope: &EventEnvelope) {
    let Ok(event) = envelope.event::<SocialEvent>() else {
        return;
    };
    let caches = state.caches();
    match event {
        SocialEvent::FriendshipCreated { user_ids, .. }
        | SocialEvent::FriendshipRemoved { user_ids, .. } => {
            caches.invalidate_friends(&user_ids).await;
        }
        SocialEvent::UserBlocked {
            blocker_id,
            blocked_id,
        }
        | SocialEvent::UserUnblocked {
            blocker_id,
            blocked_id,
        } => caches.invalidate_friends(&[blocker_id, blocked_id]).await,
        SocialEvent::GroupMemberJoined { group_id, .. }
        | SocialEvent::GroupMemberLeft { group_id, .. }
        | SocialEvent::GroupMemberKicked { group_id, .. }
        | SocialEvent::GroupMemberRoleChanged { group_id, .. }
        | SocialEvent::GroupMemberMuted { group_id, .. }
        | SocialEvent::GroupMemberUnmuted { group_id, .. }
        | SocialEvent::GroupOwnershipTransferred { group_id, .. }
        | SocialEvent::GroupDissolved { group_id, .. } => caches.invalidate_group(group_id).await,
        SocialEvent::GroupUpdated { group, .. } => caches.invalidate_group(group.id).await,
        SocialEvent::FriendRequestCreated { .. }
        | SocialEvent::FriendRequestHandled { .. }
        | SocialEvent::FriendRemarkSet { .. }
        | SocialEvent::GroupCreated { .. }
        | SocialEvent::GroupJoinRequested { .. }
        | SocialEvent::GroupJoinRequestHandled { .. }
        | SocialEvent::Unknown => {}
    }
}
