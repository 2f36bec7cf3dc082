//! In-process caches of hot reads: a user's friend set, a group's profile and its members.
//! Bounded in size and lifetime; every local write invalidates the entries it changes after it
//! commits.
//!
//! Only reads that tolerate a short staleness use them (authorizing reads, other services'
//! checks); every write decides on rows read inside its own transaction.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use mesh_contracts::ServiceError;
use mesh_contracts::social::GroupRole;
use mesh_observability::metrics::CACHE_LOOKUPS;
use mesh_service_kit::Fault;
use moka::future::Cache;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::SocialConfig;
use crate::store;
use crate::store::groups::GroupRow;

/// What the cache keeps of one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachedMember {
    pub role: GroupRole,
    pub muted_until: Option<OffsetDateTime>,
}

pub type FriendSet = Arc<HashSet<Uuid>>;
pub type MemberMap = Arc<HashMap<Uuid, CachedMember>>;

#[derive(Clone)]
pub struct Caches {
    friends: Cache<Uuid, FriendSet>,
    members: Cache<Uuid, MemberMap>,
    /// Group profiles (name, icon, member count, ...); a group that does not exist is not kept.
    groups: Cache<Uuid, Arc<GroupRow>>,
}

fn record(cache: &str, fresh: bool) {
    let result = if fresh { "miss" } else { "hit" };
    CACHE_LOOKUPS.with_label_values(&[cache, result]).inc();
}

impl Caches {
    pub fn new(config: &SocialConfig) -> Self {
        let friends = Cache::builder()
            .max_capacity(config.cache_capacity)
            .weigher(|_, set: &FriendSet| weight(set.len()))
            .time_to_live(config.cache_ttl)
            .build();
        let members = Cache::builder()
            .max_capacity(config.cache_capacity)
            .weigher(|_, map: &MemberMap| weight(map.len()))
            .time_to_live(config.cache_ttl)
            .build();
        let groups = Cache::builder()
            .max_capacity(config.cache_capacity)
            .time_to_live(config.cache_ttl)
            .build();
        Self {
            friends,
            members,
            groups,
        }
    }

    /// The ids of `user`'s friends.
    pub async fn friends_of(&self, pool: &PgPool, user: Uuid) -> Result<FriendSet, Fault> {
        let entry = self
            .friends
            .entry(user)
            .or_try_insert_with(async {
                let ids = store::friends::friend_ids(pool, user)
                    .await
                    .map_err(mesh_service_kit::db_error)?;
                Ok::<_, ServiceError>(Arc::new(ids.into_iter().collect::<HashSet<_>>()))
            })
            .await
            .map_err(|err| (*err).clone())?;
        record("social_friends", entry.is_fresh());
        Ok(entry.into_value())
    }

    /// Forgets the friend sets of `users` (after a friendship was created or removed).
    pub async fn invalidate_friends(&self, users: &[Uuid]) {
        for user in users {
            self.friends.invalidate(user).await;
        }
    }

    /// The members of `group` with their roles (empty for a group that does not exist).
    pub async fn members_of(&self, pool: &PgPool, group: Uuid) -> Result<MemberMap, Fault> {
        let entry = self
            .members
            .entry(group)
            .or_try_insert_with(async {
                let rows = store::members::all(pool, group)
                    .await
                    .map_err(mesh_service_kit::db_error)?;
                let map = rows
                    .iter()
                    .map(|row| {
                        let member = CachedMember {
                            role: row.role(),
                            muted_until: row.muted_until,
                        };
                        (row.user_id, member)
                    })
                    .collect::<HashMap<_, _>>();
                Ok::<_, ServiceError>(Arc::new(map))
            })
            .await
            .map_err(|err| (*err).clone())?;
        record("social_group_members", entry.is_fresh());
        Ok(entry.into_value())
    }

    /// `user`'s role in `group`, if they are a member.
    pub async fn role_in(
        &self,
        pool: &PgPool,
        group: Uuid,
        user: Uuid,
    ) -> Result<Option<GroupRole>, ServiceError> {
        Ok(self
            .members_of(pool, group)
            .await?
            .get(&user)
            .map(|m| m.role))
    }

    /// The profile of `group`, if it exists.
    pub async fn group(&self, pool: &PgPool, group: Uuid) -> Result<Option<Arc<GroupRow>>, Fault> {
        if let Some(row) = self.groups.get(&group).await {
            record("social_groups", false);
            return Ok(Some(row));
        }
        record("social_groups", true);
        let Some(row) = store::groups::by_id(pool, group).await? else {
            return Ok(None);
        };
        let row = Arc::new(row);
        self.groups.insert(group, Arc::clone(&row)).await;
        Ok(Some(row))
    }

    /// Forgets the profile and members of `group` (after it changed, anyone joined, left, or
    /// changed role or mute, or it was dissolved).
    pub async fn invalidate_group(&self, group: Uuid) {
        self.members.invalidate(&group).await;
        self.groups.invalidate(&group).await;
    }
    /// Forgets every entry of every cache: what the invalidation feed does when it opens, as
    /// it may have missed events while it was closed and cannot tell which entries they hit.
    pub fn clear(&self) {
        self.friends.invalidate_all();
        self.members.invalidate_all();
        self.groups.invalidate_all();
    }
}

/// Entries weigh the ids they hold, plus one for the entry itself.
fn weight(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX).saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn clear_forgets_every_cache() {
        let caches = Caches::new(&SocialConfig::new(std::time::Duration::from_secs(1)));
        let (user, group) = (Uuid::now_v7(), Uuid::now_v7());
        let now = OffsetDateTime::now_utc();
        caches.friends.insert(user, FriendSet::default()).await;
        caches.members.insert(group, MemberMap::default()).await;
        let row = GroupRow {
            id: group,
            name: "g".into(),
            icon: None,
            announcement: None,
            join_policy: "open".into(),
            max_members: 10,
            member_count: 1,
            owner_id: user,
            created_at: now,
            updated_at: now,
        };
        caches.groups.insert(group, Arc::new(row)).await;
        caches.clear();
        assert!(caches.friends.get(&user).await.is_none());
        assert!(caches.members.get(&group).await.is_none());
        assert!(caches.groups.get(&group).await.is_none());
    }

    #[test]
    fn weights_grow_with_size_and_saturate() {
        assert_eq!(weight(0), 1);
        assert_eq!(weight(9), 10);
        assert_eq!(weight(usize::MAX), u32::MAX);
    }
}
