//! A user's presence as this edge reports it: the `PRESENCE` key `<user id>` (this edge's id
//! and the time, refreshed every heartbeat while the user has connections here) and the chat
//! service's `presence_changed` call, which records last-seen and tells friends.
//!
//! Each user's reports run one after another in background tasks, so an `offline` can never
//! overtake the `online` before it, and the forwarder never waits on NATS for them. A report's
//! task is detached and frees itself when done; what the next report waits on is a small
//! [`Reported`] flag, not the task's handle (a finished task's memory lives as long as its
//! handle, which would cost every connected user a kilobyte or two).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use mesh_contracts::chat::{PresenceChange, PresenceChanged};
use mesh_nats::{CallContext, KvBucket, RpcClient};
use tokio::sync::Notify;
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

/// Whether one report finished; any number may wait for it.
#[derive(Debug, Default)]
pub struct Reported {
    done: AtomicBool,
    notify: Notify,
}

impl Reported {
    fn finish(&self) {
        self.done.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    pub fn is_finished(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Resolves once the report finished (at once if it has).
    pub async fn wait(&self) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        // Registered before the flag is read, so a `finish` in between still wakes it.
        notified.as_mut().enable();
        if self.is_finished() {
            return;
        }
        notified.await;
    }
}

/// Marks a report finished when its task ends, whichever way.
struct FinishOnDrop(Arc<Reported>);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// The presence reports of one user on this edge.
pub struct PresenceReporter {
    deps: Arc<PresenceDeps>,
    user: Uuid,
    session: Uuid,
    /// The latest report; the next one waits for it.
    last: Option<Arc<Reported>>,
}

impl PresenceReporter {
    pub fn new(deps: Arc<PresenceDeps>, user: Uuid, session: Uuid) -> Self {
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

    /// The user's last connection here closed; what it answers finishes once reported.
    pub fn offline(&mut self) -> Arc<Reported> {
        self.chain(Step::Offline);
        self.last.take().expect("just chained")
    }

    fn chain(&mut self, step: Step) {
        // A finished report needs no waiting for; dropping it here frees it sooner.
        let previous = self.last.take().filter(|last| !last.is_finished());
        let deps = self.deps.clone();
        let (user, session) = (self.user, self.session);
        let reported = Arc::new(Reported::default());
        self.last = Some(reported.clone());
        // Detached: the task's memory goes as soon as it ends. The flag is set however it
        // ends (even unwinding), so the next report never waits for nothing.
        tokio::spawn(async move {
            let _finish = FinishOnDrop(reported);
            if let Some(previous) = previous {
                previous.wait().await;
            }
            report(&deps, user, session, step).await;
        });
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

    #[tokio::test]
    async fn a_report_is_awaited_by_whoever_waits_before_or_after_it_finishes() {
        let reported = Arc::new(Reported::default());
        let early = tokio::spawn({
            let reported = reported.clone();
            async move { reported.wait().await }
        });
        tokio::task::yield_now().await;
        assert!(!reported.is_finished());
        reported.finish();
        early.await.unwrap();
        // A waiter that comes after the report finished does not wait.
        tokio::time::timeout(std::time::Duration::from_secs(5), reported.wait())
            .await
            .expect("a finished report is not waited for");
    }

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
