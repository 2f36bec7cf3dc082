//! Pushes to connected users: core NATS on `<prefix>.push.user.<id>`, one subscription per
//! connected user on the edge that holds their connections; and `<prefix>.push.many`, one
//! message naming many users, which every edge subscribes to once.

use async_nats::HeaderMap;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use mesh_contracts::push_many;
use tracing::Instrument;
use uuid::Uuid;

use crate::bus::Bus;

impl Bus {
    /// Publishes one frame (already the client's JSON text) to every connection of `user`.
    /// Nobody listening is fine: the user is offline and syncs later.
    /// Inside a trace, the publish is a PRODUCER span whose context travels in the headers.
    pub async fn push(&self, user: Uuid, frame: Bytes) {
        let subject = self.prefix.push_user(user);
        let span = crate::trace::producer_span(&subject, crate::trace::Orphan::Untraced);
        let mut headers = HeaderMap::new();
        crate::trace::inject(&span, &mut headers);
        let sent = self
            .client
            .publish_with_headers(subject, headers, frame)
            .instrument(span.clone())
            .await;
        if let Err(err) = sent {
            mesh_observability::spans::fail(&span, "push publish failed");
            tracing::warn!(error = %err, "push publish failed");
        }
    }

    /// Publishes one frame to every connection of each of `users`: one PRODUCER span for the
    /// whole fan-out (its context in every publish's headers), not one per recipient, so a
    /// message to a large group costs one publish per member and nothing more.
    pub async fn push_to(&self, users: &[Uuid], frame: Bytes) {
        if users.is_empty() {
            return;
        }
        let subject = self.prefix.push_user_any();
        let span = crate::trace::producer_span(&subject, crate::trace::Orphan::Untraced);
        span.record("messaging.batch.message_count", users.len());
        let mut headers = HeaderMap::new();
        crate::trace::inject(&span, &mut headers);
        let mut failed = None;
        for user in users {
            let sent = self
                .client
                .publish_with_headers(self.prefix.push_user(*user), headers.clone(), frame.clone())
                .await;
            if let Err(err) = sent {
                failed = Some(err);
            }
        }
        if let Some(err) = failed {
            mesh_observability::spans::fail(&span, "push publish failed");
            tracing::warn!(error = %err, "push publish failed");
        }
    }

    /// Publishes one frame for all of `users` in one message (one per
    /// [`push_many::MAX_USERS`]) that every edge receives; each edge hands it to the users it
    /// holds. Cheaper than [`Bus::push_to`] for a group: one publish, not one per member.
    pub async fn push_many(&self, users: &[Uuid], frame: &[u8]) {
        let subject = self.prefix.push_many();
        let span = crate::trace::producer_span(&subject, crate::trace::Orphan::Untraced);
        span.record("messaging.batch.message_count", users.len());
        let mut headers = HeaderMap::new();
        crate::trace::inject(&span, &mut headers);
        for payload in push_many::encode(users, frame) {
            let sent = self
                .client
                .publish_with_headers(subject.clone(), headers.clone(), payload.into())
                .await;
            if let Err(err) = sent {
                mesh_observability::spans::fail(&span, "push publish failed");
                tracing::warn!(error = %err, "push publish failed");
            }
        }
    }

    /// Every push to many users (`push.many`), as the users and the frame (a slice of the
    /// message, not a copy), until the returned stream is dropped. A message that is not a
    /// `push.many` layout is logged and skipped.
    pub async fn subscribe_push_many(
        &self,
    ) -> Result<impl Stream<Item = (Vec<Uuid>, Bytes)> + Send + Unpin + use<>, String> {
        let subscriber = self
            .client
            .subscribe(self.prefix.push_many())
            .await
            .map_err(|err| err.to_string())?;
        Ok(subscriber.filter_map(|message| {
            crate::trace::received(message.subject.as_str(), message.headers.as_ref());
            let decoded = match push_many::decode(&message.payload) {
                Ok(push) => Some((push.users, message.payload.slice_ref(push.frame))),
                Err(err) => {
                    tracing::warn!(error = %err, "unreadable push to many users skipped");
                    None
                }
            };
            std::future::ready(decoded)
        }))
    }

    /// Everything pushed to `user`, until the returned stream is dropped. A push that belongs
    /// to a trace leaves a `receive` span there as it arrives.
    pub async fn subscribe_push(
        &self,
        user: Uuid,
    ) -> Result<impl Stream<Item = Bytes> + Send + Unpin + use<>, String> {
        let subscriber = self
            .client
            .subscribe(self.prefix.push_user(user))
            .await
            .map_err(|err| err.to_string())?;
        Ok(subscriber.map(|message| {
            crate::trace::received(message.subject.as_str(), message.headers.as_ref());
            message.payload
        }))
    }

    /// Sends buffered publishes to the server now.
    pub async fn flush(&self) {
        let _ = self.client.flush().await;
    }
}
