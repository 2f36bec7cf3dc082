//! Last-seen times written in shared batches. When an edge restarts or a network heals,
//! thousands of users reconnect within seconds and each connection reports presence; one
//! upsert and commit per report took a pooled connection each and timed out by the thousand
//! (19,212 `database unavailable` answers while 50,000 sockets opened in the bench). Here every
//! report waits for a batch instead: the writer takes whatever reports are waiting (up to
//! [`MOST`]), stores them in one statement, and answers each once it committed.

use std::sync::Arc;

use mesh_service_kit::Fault;
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::store::presence;

/// Reports stored in one statement at most.
pub const MOST: usize = 1000;

type Done = oneshot::Sender<Result<(), Arc<sqlx::Error>>>;

/// A handle on the writer task; the task ends once every handle is gone.
#[derive(Clone)]
pub struct LastSeenWriter {
    reports: mpsc::Sender<(Uuid, OffsetDateTime, Done)>,
}

impl LastSeenWriter {
    pub fn start(pool: PgPool) -> Self {
        let (reports, waiting) = mpsc::channel(4 * MOST);
        tokio::spawn(write(pool, waiting));
        Self { reports }
    }

    /// Records that `user` was connected at `at`; resolves once a batch holding it committed.
    pub async fn touch(&self, user: Uuid, at: OffsetDateTime) -> Result<(), Fault> {
        let (done, stored) = oneshot::channel();
        self.reports
            .send((user, at, done))
            .await
            .map_err(|_| Fault::internal("the last-seen writer stopped"))?;
        match stored.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(Fault::shared(&err)),
            Err(_) => Err(Fault::internal("the last-seen writer stopped")),
        }
    }
}

async fn write(pool: PgPool, mut waiting: mpsc::Receiver<(Uuid, OffsetDateTime, Done)>) {
    let mut batch = Vec::with_capacity(MOST);
    while waiting.recv_many(&mut batch, MOST).await > 0 {
        let (users, times) = latest(batch.iter().map(|(user, at, _)| (*user, *at)));
        let stored = presence::touch_all(&pool, &users, &times).await;
        if let Err(err) = &stored {
            tracing::warn!(error = %err, reports = batch.len(), "last-seen times not stored");
        }
        let stored = stored.map_err(Arc::new);
        for (_, _, done) in batch.drain(..) {
            let _ = done.send(stored.clone());
        }
    }
}

/// Each user once, with their latest time, ordered by user (an upsert may touch a row only
/// once, and batches of several workers lock rows in the same order).
fn latest(
    reports: impl Iterator<Item = (Uuid, OffsetDateTime)>,
) -> (Vec<Uuid>, Vec<OffsetDateTime>) {
    let mut by_user = std::collections::BTreeMap::new();
    for (user, at) in reports {
        by_user
            .entry(user)
            .and_modify(|latest: &mut OffsetDateTime| *latest = (*latest).max(at))
            .or_insert(at);
    }
    by_user.into_iter().unzip()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    #[test]
    fn a_batch_names_each_user_once_with_their_latest_time_in_order() {
        let (a, b) = (Uuid::from_u128(2), Uuid::from_u128(1));
        let t = OffsetDateTime::UNIX_EPOCH;
        let reports = [
            (a, t + Duration::seconds(5)),
            (b, t + Duration::seconds(1)),
            (a, t + Duration::seconds(9)),
            (a, t + Duration::seconds(7)),
        ];
        let (users, times) = latest(reports.into_iter());
        assert_eq!(users, vec![b, a]);
        assert_eq!(
            times,
            vec![t + Duration::seconds(1), t + Duration::seconds(9)]
        );
    }
}
