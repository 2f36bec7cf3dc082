//! The in-memory set of revoked sessions, fed by a watch on the `REVOKED` bucket so that a
//! logout on any edge is refused on every edge within moments, and that session's open
//! connections are told (through the listener given at construction).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use mesh_nats::{Revocation, Revocations};
use mesh_observability::metrics::{REVOCATION_WATCH_OPEN, REVOKED_SESSIONS};
use moka::sync::Cache;
use tokio::sync::watch;

/// How often a live watch is compared with the bucket's newest revision.
const STALL_CHECK: std::time::Duration = std::time::Duration::from_secs(2);
/// Checks in a row that find the watch behind before it is re-opened (a write in flight is
/// behind for one check at most).
const STALL_TICKS: u32 = 2;
use uuid::Uuid;

/// Whether one check finds a watch behind: it delivered nothing since the previous check
/// (it was at `before` then and is at `seen` now) while the bucket holds a newer revision, or
/// while the server cannot say what it holds. A watch still replaying the bucket moves on, so
/// it is never counted however large the bucket. A watch whose consumer lived on a node that
/// went away fails like the server does, so an unanswered check counts; a healthy watch on a
/// server that is merely down is re-opened and waits for it.
fn falls_behind(newest: Option<u64>, seen: u64, before: u64) -> bool {
    seen == before && newest.is_none_or(|n| n > seen)
}

/// Upper bound on remembered revocations; beyond it the oldest are evicted (their tokens are
/// about to expire anyway, since entries live no longer than an access token).
const CAPACITY: u64 = 1_000_000;

/// Called with every revocation the watch delivers (again after a re-opened watch).
pub type RevocationListener = Arc<dyn Fn(Revocation) + Send + Sync>;

#[derive(Clone)]
pub struct RevokedSessions {
    sessions: Cache<Uuid, Uuid>,
    listener: RevocationListener,
}

impl RevokedSessions {
    pub fn new(access_ttl: Duration, listener: RevocationListener) -> Self {
        Self {
            sessions: Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(access_ttl)
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

    /// Follows the bucket until `stop` flips, re-opening the watch whenever it breaks, or when
    /// it falls silent while the bucket moved on (a watch whose consumer lived on a NATS node
    /// that died can stall without ending).
    pub async fn follow(self, revocations: Revocations, mut stop: watch::Receiver<bool>) {
        loop {
            match revocations.watch().await {
                Ok(stream) => {
                    REVOCATION_WATCH_OPEN.set(1);
                    tracing::debug!("revocation watch open");
                    let mut stream = std::pin::pin!(stream);
                    let mut seen = 0u64;
                    let mut seen_at_check = seen;
                    let mut behind = 0u32;
                    let mut check = tokio::time::interval_at(
                        tokio::time::Instant::now() + STALL_CHECK,
                        STALL_CHECK,
                    );
                    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        let due = tokio::select! {
                            _ = stop.wait_for(|s| *s) => return,
                            next = stream.next() => match next {
                                Some(watched) => {
                                    tracing::debug!(revision = watched.revision, "revocation watched");
                                    seen = seen.max(watched.revision);
                                    if let Some(revocation) = watched.revocation {
                                        self.insert(revocation);
                                    }
                                    false
                                }
                                None => break,
                            },
                            _ = check.tick() => true,
                        };
                        if due {
                            let newest = revocations.newest_revision().await;
                            behind = if falls_behind(newest, seen, seen_at_check) {
                                behind + 1
                            } else {
                                0
                            };
                            seen_at_check = seen;
                            tracing::debug!(seen, ?newest, behind, "revocation watch checked");
                            if behind >= STALL_TICKS {
                                tracing::warn!(seen, ?newest, "revocation watch stalled");
                                break;
                            }
                        }
                    }
                    REVOCATION_WATCH_OPEN.set(0);
                    tracing::warn!("revocation watch ended; re-opening");
                }
                Err(err) => tracing::warn!(error = %err, "cannot watch revocations; retrying"),
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(Revocations::RETRY_DELAY) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::falls_behind;

    #[test]
    fn a_watch_is_behind_when_it_stood_still_while_the_bucket_moved_on_or_cannot_say() {
        assert!(!falls_behind(Some(7), 7, 7), "caught up");
        assert!(!falls_behind(Some(0), 0, 0), "an empty bucket");
        assert!(falls_behind(Some(8), 7, 7), "stood still below the newest");
        assert!(falls_behind(None, 7, 7), "an unanswered check counts");
        assert!(
            !falls_behind(Some(900_000), 40_000, 10_000),
            "a watch replaying a large bucket moved on since the last check"
        );
        assert!(
            !falls_behind(None, 8, 7),
            "moved on, whatever the server says"
        );
    }
}
