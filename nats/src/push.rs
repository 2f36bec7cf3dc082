//! Pushes to connected users: core NATS on `<prefix>.push.user.<id>`, one subscription per
//! connected user on the edge that holds their connections.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use uuid::Uuid;

use crate::bus::Bus;

impl Bus {
    /// Publishes one frame (already the client's JSON text) to every connection of `user`.
    /// Nobody listening is fine: the user is offline and syncs later.
    pub async fn push(&self, user: Uuid, frame: Bytes) {
        if let Err(err) = self
            .client
            .publish(self.prefix.push_user(user), frame)
            .await
        {
            tracing::warn!(error = %err, "push publish failed");
        }
    }

    /// Everything pushed to `user`, until the returned stream is dropped.
    pub async fn subscribe_push(
        &self,
        user: Uuid,
    ) -> Result<impl Stream<Item = Bytes> + Send + Unpin + use<>, String> {
        let subscriber = self
            .client
            .subscribe(self.prefix.push_user(user))
            .await
            .map_err(|err| err.to_string())?;
        Ok(subscriber.map(|message| message.payload))
    }

    /// Sends buffered publishes to the server now.
    pub async fn flush(&self) {
        let _ = self.client.flush().await;
    }
}
