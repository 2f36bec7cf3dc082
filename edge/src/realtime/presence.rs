//! A user's presence as this edge reports it: the `PRESENCE` key `<user id>` (this edge's id
//! and the time, refreshed every heartbeat while the user has connections here) and the chat
//! service's `presence_changed` call, which records last-seen and tells friends.
//!
//! Each user's reports run one after another in background tasks, so an `offline` can never
//! overtake the `online` before it, and the forwarder never waits on NATS for them.

use bytes::Bytes;
use mesh_contracts::chat::{PresenceChange, PresenceChanged};
use mesh_nats::{CallContext, KvBucket, RpcClient};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::clock::unix_millis;

/// What presence reports need, shared by every user's reporter.
pub struct PresenceDeps {
    pub bucket: KvBucket,
    pub rpc: RpcClient,
    /// This edge instance, written into the keys it owns.
    pub edge_id: Uuid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Online,
    Refresh,
    Offline,
}

/// The presence reports of one user on this edge.
pub struct PresenceReporter {
    deps: std::sync::Arc<PresenceDeps>,
    user: Uuid,
    session: Uuid,
    /// The latest report; the next one waits for it.
    last: Option<JoinHandle<()>>,
}

impl PresenceReporter {
    pub fn new(deps: std::sync::Arc<PresenceDeps>, user: Uuid, session: Uuid) -> Self {
        Self {
            deps,
            user,
            session,
            last: None,
        }
    }

    /// The user's first connection here opened (or one came back while going offline).
    pub fn online(&mut self) {
        self.chain(Step::Online);
    }

    /// Keeps the key alive; skipped while the previous report is still running.
    pub fn refresh(&mut self) {
        if self.last.as_ref().is_some_and(|last| !last.is_finished()) {
            return;
        }
        self.chain(Step::Refresh);
    }

    /// The user's last connection here closed; the handle resolves once reported.
    pub fn offline(&mut self) -> JoinHandle<()> {
        self.chain(Step::Offline);
        self.last.take().expect("just chained")
    }

    fn chain(&mut self, step: Step) {
        let previous = self.last.take();
        let deps = self.deps.clone();
        let (user, session) = (self.user, self.session);
        self.last = Some(tokio::spawn(async move {
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            report(&deps, user, session, step).await;
        }));
    }
}

async fn report(deps: &PresenceDeps, user: Uuid, session: Uuid, step: Step) {
    let key = user.to_string();
    let stored = match step {
        Step::Online | Step::Refresh => deps
            .bucket
            .put(&key, presence_value(deps.edge_id, unix_millis()))
            .await
            .map(|_| ()),
        Step::Offline => release(deps, &key).await,
    };
    if let Err(err) = stored {
        tracing::debug!(error = %err, ?step, "presence key not updated");
    }
    if step == Step::Refresh {
        return;
    }
    let ctx = CallContext::internal().with_user(user, session);
    let change = PresenceChange {
        online: step == Step::Online,
    };
    if let Err(err) = deps.rpc.call::<PresenceChanged>(&ctx, &change).await {
        tracing::debug!(error = %err, ?step, "presence change not reported to chat");
    }
}

/// Deletes the key only while it still names this edge (the user may be connected through
/// another edge that wrote it since), and only at the revision read.
async fn release(deps: &PresenceDeps, key: &str) -> Result<(), mesh_nats::KvError> {
    let Some(entry) = deps.bucket.get(key).await? else {
        return Ok(());
    };
    if edge_of(&entry.value) != Some(deps.edge_id) {
        return Ok(());
    }
    match deps.bucket.delete_if(key, entry.revision).await {
        Err(mesh_nats::KvError::Conflict) => Ok(()),
        other => other,
    }
}

/// `{"edge": "<edge id>", "at": <unix ms>}`.
fn presence_value(edge_id: Uuid, at_ms: i64) -> Bytes {
    Bytes::from(serde_json::json!({ "edge": edge_id, "at": at_ms }).to_string())
}

fn edge_of(value: &[u8]) -> Option<Uuid> {
    let value: serde_json::Value = serde_json::from_slice(value).ok()?;
    Uuid::try_parse(value["edge"].as_str()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_name_their_edge() {
        let edge = Uuid::now_v7();
        let value = presence_value(edge, 1_700_000_000_000);
        let json: serde_json::Value = serde_json::from_slice(&value).unwrap();
        assert_eq!(json["at"], 1_700_000_000_000_i64);
        assert_eq!(edge_of(&value), Some(edge));
        assert_eq!(edge_of(b"{}"), None);
        assert_eq!(edge_of(b"garbage"), None);
    }
}
