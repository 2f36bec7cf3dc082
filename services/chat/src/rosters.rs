//! Which group rosters this worker has written inbox rows for, by a fingerprint of the member
//! list, so a batch to a group writes them only when the roster changed since.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use mesh_contracts::chat::ConversationId;
use moka::future::Cache;
use uuid::Uuid;

/// How many groups' fingerprints a worker keeps, and for how long.
const CAPACITY: u64 = 100_000;
const KEEP: Duration = Duration::from_secs(600);

pub struct RosterSync {
    synced: Cache<Uuid, u64>,
}

impl Default for RosterSync {
    fn default() -> Self {
        Self {
            synced: Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(KEEP)
                .build(),
        }
    }
}

impl RosterSync {
    /// The members of each group of `audiences` (a batch's groups, with who receives each)
    /// whose inbox rows this worker has not written for the group's current roster.
    pub async fn to_sync(
        &self,
        audiences: &HashMap<ConversationId, Arc<[Uuid]>>,
    ) -> HashMap<ConversationId, Vec<Uuid>> {
        let mut out = HashMap::new();
        for (conversation, ids) in audiences {
            let ConversationId::Group(group) = conversation else {
                continue;
            };
            if self.synced.get(group).await != Some(fingerprint(ids)) {
                out.insert(*conversation, ids.to_vec());
            }
        }
        out
    }

    /// Remembers that the inbox rows of these rosters exist now.
    pub async fn synced(&self, members: &HashMap<ConversationId, Vec<Uuid>>) {
        for (conversation, ids) in members {
            if let ConversationId::Group(group) = conversation {
                self.synced.insert(*group, fingerprint(ids)).await;
            }
        }
    }
}

fn fingerprint(ids: &[Uuid]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    ids.hash(&mut hasher);
    hasher.finish()
}
