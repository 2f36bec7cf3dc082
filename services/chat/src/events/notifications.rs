//! Turns social's events into `notification` frames for the users they concern (which ones is
//! `domain::notices`). Each event notifies once: it is recorded as processed in the same
//! transaction, committed after the push (a crash in between may push it twice, never lose it).

use mesh_contracts::Consumer;
use mesh_contracts::chat::ServerFrame;
use mesh_contracts::events::{EventEnvelope, SocialEvent};
use mesh_service_kit::events::{HandlerError, first_time};
use uuid::Uuid;

use crate::domain::notices::{Audience, notices};
use crate::state::State;
use crate::store::SCHEMA;

pub const CONSUMER: Consumer = Consumer::ChatNotifications;

pub async fn push(state: State, envelope: EventEnvelope) -> Result<(), HandlerError> {
    let event: SocialEvent = envelope.event()?;
    let notices = notices(event);
    if notices.is_empty() {
        return Ok(());
    }
    let mut frames = Vec::with_capacity(notices.len());
    for notice in notices {
        let to = recipients(&state, notice.to).await?;
        frames.push((to, ServerFrame::Notification(notice.notification)));
    }
    let mut tx = state.pool().begin().await?;
    if !first_time(&mut tx, SCHEMA, &CONSUMER.name(), envelope.id).await? {
        return Ok(());
    }
    for (to, frame) in &frames {
        state.pusher().send(to, None, frame).await;
    }
    tx.commit().await?;
    Ok(())
}

/// The users an audience names now; a group's managers are asked of social.
async fn recipients(state: &State, audience: Audience) -> Result<Vec<Uuid>, HandlerError> {
    Ok(match audience {
        Audience::Users(users) => users,
        Audience::Managers { group_id, except } => state
            .membership()
            .managers(group_id)
            .await
            .map_err(|err| HandlerError::from_service("group managers", &err))?
            .into_iter()
            .filter(|u| Some(*u) != except)
            .collect(),
    })
}
