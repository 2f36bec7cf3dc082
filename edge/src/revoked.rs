//! The in-memory set of revoked sessions, fed by a watch on the `REVOKED` bucket so that a
//! logout on any edge is refused on every edge within moments, and that session's open
//! connections are told (through the listener given at construction).

use std::sync::Arc;
use std::time::Duration;

use mesh_nats::{BucketFollower, Followed, Revocation};
use mesh_observability::metrics::{REVOCATION_WATCH_OPEN, REVOKED_SESSIONS};
use moka::sync::Cache;
use tokio::sync::watch;
use uuid::Uuid;

/// Upper bound on remembered revocations; beyond it the oldest are evicted (their tokens are
/// about to expire anyway, since entries live little longer than an access token).
const CAPACITY: u64 = 1_000_000;

/// Called with every revocation the watch delivers (again after a re-opened watch).
pub type RevocationListener = Arc<dyn Fn(Revocation) + Send + Sync>;

#[derive(Clone)]
pub struct RevokedSessions {
    sessions: Cache<Uuid, Uuid>,
    listener: RevocationListener,
}

impl RevokedSessions {
    /// Remembers each revocation as long as the `REVOKED` bucket does, until every token of
    /// the session has stopped being accepted (`revocation_ttl`).
    pub fn new(access_ttl: Duration, listener: RevocationListener) -> Self {
        Self {
            sessions: Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(crate::token::revocation_ttl(access_ttl))
                .build(),
            listener,
        }
    }

    pub fn contains(&self, session_id: &Uuid) -> bool {
        self.sessions.contains_key(session_id)
    }

    /// Remembers the revocation first and only then tells the listener, so a connection that
    /// registers after the listener ran finds the session in the set when it checks.
    fn insert(&self, revocation: Revocation) {
        self.sessions
            .insert(revocation.session_id, revocation.user_id);
        REVOKED_SESSIONS.set(i64::try_from(self.sessions.entry_count()).unwrap_or(i64::MAX));
        (self.listener)(revocation);
    }

    /// Follows the bucket until `stop` flips (re-opening the watch whenever it breaks or
    /// stalls, and receiving the whole set again each time).
    pub async fn follow(self, revocations: BucketFollower, stop: watch::Receiver<bool>) {
        revocations
            .follow(stop, |followed| match followed {
                Followed::Opened => {
                    REVOCATION_WATCH_OPEN.set(1);
                    tracing::debug!("revocation watch open");
                }
                Followed::Entry(entry) => {
                    tracing::debug!(revision = entry.revision, "revocation watched");
                    if let Some(revocation) = Revocation::from_entry(&entry) {
                        self.insert(revocation);
                    }
                }
                Followed::CaughtUp => {}
                Followed::Lost => REVOCATION_WATCH_OPEN.set(0),
            })
            .await;
    }
}
