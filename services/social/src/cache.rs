//! In-process caches of hot reads: a user's friend set, a group's profile and its members.
//! Bounded in size and lifetime; every local write invalidates the entries it changes after it
//! commits, and a read that began before an invalidation is never served once it returned.
//!
//! Only reads that tolerate a short staleness use them (authorizing reads, other services'
//! checks); every write decides on rows read inside its own transaction.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mesh_contracts::ServiceError;
use mesh_contracts::social::GroupRole;
use mesh_observability::metrics::CACHE_LOOKUPS;
use mesh_service_kit::Fault;
use moka::future::{Cache, CacheBuilder};
use moka::ops::compute::Op;
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
    friends: Guarded<FriendSet>,
    members: Guarded<MemberMap>,
    /// Group profiles (name, icon, member count, ...); a group that does not exist is not kept.
    groups: Guarded<Arc<GroupRow>>,
}

fn record(cache: &str, fresh: bool) {
    let result = if fresh { "miss" } else { "hit" };
    CACHE_LOOKUPS.with_label_values(&[cache, result]).inc();
}

impl Caches {
    pub fn new(config: &SocialConfig) -> Self {
        let friends = Cache::builder()
            .max_capacity(config.cache_capacity)
            .weigher(|_, set: &Stamped<FriendSet>| weight(set.value.len()))
            .time_to_live(config.cache_ttl);
        let members = Cache::builder()
            .max_capacity(config.cache_capacity)
            .weigher(|_, map: &Stamped<MemberMap>| weight(map.value.len()))
            .time_to_live(config.cache_ttl);
        let groups = Cache::builder()
            .max_capacity(config.cache_capacity)
            .time_to_live(config.cache_ttl);
        Self {
            friends: Guarded::new("social_friends", friends),
            members: Guarded::new("social_group_members", members),
            groups: Guarded::new("social_groups", groups),
        }
    }

    /// The ids of `user`'s friends.
    pub async fn friends_of(&self, pool: &PgPool, user: Uuid) -> Result<FriendSet, Fault> {
        let set = self
            .friends
            .get_or_load(user, || async {
                let ids = store::friends::friend_ids(pool, user)
                    .await
                    .map_err(mesh_service_kit::db_error)?;
                Ok(Some(Arc::new(ids.into_iter().collect::<HashSet<_>>())))
            })
            .await?;
        Ok(set.unwrap_or_default())
    }

    /// Forgets the friend sets of `users` (after a friendship was created or removed).
    pub async fn invalidate_friends(&self, users: &[Uuid]) {
        for user in users {
            self.friends.invalidate(*user).await;
        }
    }

    /// The members of `group` with their roles (empty for a group that does not exist).
    pub async fn members_of(&self, pool: &PgPool, group: Uuid) -> Result<MemberMap, Fault> {
        let map = self
            .members
            .get_or_load(group, || async {
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
                Ok(Some(Arc::new(map)))
            })
            .await?;
        Ok(map.unwrap_or_default())
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
        let row = self
            .groups
            .get_or_load(group, || async {
                let row = store::groups::by_id(pool, group)
                    .await
                    .map_err(mesh_service_kit::db_error)?;
                Ok(row.map(Arc::new))
            })
            .await?;
        Ok(row)
    }

    /// Forgets the profile and members of `group` (after it changed, anyone joined, left, or
    /// changed role or mute, or it was dissolved).
    pub async fn invalidate_group(&self, group: Uuid) {
        self.members.invalidate(group).await;
        self.groups.invalidate(group).await;
    }

    /// Forgets every entry of every cache: what the invalidation feed does when it opens, as
    /// it may have missed events while it was closed and cannot tell which entries they hit.
    pub fn clear(&self) {
        self.friends.clear();
        self.members.clear();
        self.groups.clear();
    }
}

/// Entries weigh the ids they hold, plus one for the entry itself.
fn weight(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX).saturating_add(1)
}

/// Generations kept per cache: an invalidation bumps its key's, so it also makes the reads of
/// the keys sharing that counter (about 1/1024 of them) read again, which costs a query each
/// and is never wrong.
const STRIPES: usize = 1024;
/// How often a lookup tries the cache before reading without it, when invalidations keep
/// overtaking the reads it finds there.
const ATTEMPTS: usize = 3;

/// A loaded value with the generation of its key when its read began.
#[derive(Clone)]
struct Stamped<V> {
    generation: u64,
    value: V,
}

/// Why a load put nothing in the cache.
#[derive(Debug, Clone)]
enum Unloaded {
    /// The row did not exist when a read that began at this generation looked (not cached:
    /// it may be created any time).
    Absent(u64),
    Failed(ServiceError),
}

/// A Moka cache of reads that an invalidation always wins against.
///
/// Concurrent misses of a key share one read (Moka's `or_try_insert_with`), which a write may
/// commit during. Invalidating then finds no entry to remove, and the read, inserted after,
/// would hold what the write changed until the TTL. So every key has a generation, bumped by
/// each invalidation (`clear` bumps them all), and every entry the generation of its key when
/// its read began. A lookup serves an entry only if it was read no earlier than the lookup
/// began (its generation is not older than the key's when the lookup started): what a caller
/// gets reflects every write whose invalidation returned before it asked. Entries read before
/// the latest invalidation are removed when found; a lookup that keeps finding them reads
/// without the cache.
#[derive(Clone)]
struct Guarded<V> {
    name: &'static str,
    cache: Cache<Uuid, Stamped<V>>,
    generations: Arc<Generations>,
}

/// Per-key generations: a counter per stripe of keys plus one for the whole cache.
struct Generations {
    hasher: RandomState,
    stripes: Box<[AtomicU64]>,
    epoch: AtomicU64,
}

impl Generations {
    fn new() -> Self {
        Self {
            hasher: RandomState::new(),
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            epoch: AtomicU64::new(0),
        }
    }

    fn stripe(&self, key: Uuid) -> &AtomicU64 {
        // Only spread over the stripes: truncating the hash on a 32-bit target is fine.
        let index = self.hasher.hash_one(key) as usize % self.stripes.len();
        &self.stripes[index]
    }

    /// The generation of `key` now; it never decreases.
    fn of(&self, key: Uuid) -> u64 {
        self.epoch
            .load(Ordering::SeqCst)
            .wrapping_add(self.stripe(key).load(Ordering::SeqCst))
    }

    fn bump(&self, key: Uuid) {
        self.stripe(key).fetch_add(1, Ordering::SeqCst);
    }

    fn bump_all(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

impl<V: Clone + Send + Sync + 'static> Guarded<V> {
    fn new(
        name: &'static str,
        builder: CacheBuilder<Uuid, Stamped<V>, Cache<Uuid, Stamped<V>>>,
    ) -> Self {
        Self {
            name,
            cache: builder.build(),
            generations: Arc::new(Generations::new()),
        }
    }

    /// The value of `key`, from the cache or read by `load` (`None`: no such row, not cached).
    async fn get_or_load<F, Fut>(&self, key: Uuid, load: F) -> Result<Option<V>, ServiceError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Option<V>, ServiceError>>,
    {
        let asked = self.generations.of(key);
        for _ in 0..ATTEMPTS {
            let read = self.stamped(key, load());
            let entry = match self.cache.entry(key).or_try_insert_with(read).await {
                Ok(entry) => entry,
                // An absence read before the lookup began is as stale as a row: read again.
                Err(unloaded) if matches!(*unloaded, Unloaded::Absent(read) if read < asked) => {
                    continue;
                }
                Err(unloaded) => {
                    record(self.name, true);
                    return match &*unloaded {
                        Unloaded::Absent(_) => Ok(None),
                        Unloaded::Failed(err) => Err(err.clone()),
                    };
                }
            };
            let fresh = entry.is_fresh();
            let stamped = entry.into_value();
            if stamped.generation != self.generations.of(key) {
                // An invalidation came after this read began: it must not stay.
                self.forget_older(key).await;
            }
            if stamped.generation >= asked {
                record(self.name, fresh);
                return Ok(Some(stamped.value));
            }
        }
        record(self.name, true);
        load().await
    }

    /// `load`'s value stamped with the generation of `key` before it started reading.
    async fn stamped(
        &self,
        key: Uuid,
        load: impl Future<Output = Result<Option<V>, ServiceError>>,
    ) -> Result<Stamped<V>, Unloaded> {
        let generation = self.generations.of(key);
        match load.await {
            Ok(Some(value)) => Ok(Stamped { generation, value }),
            Ok(None) => Err(Unloaded::Absent(generation)),
            Err(err) => Err(Unloaded::Failed(err)),
        }
    }

    /// Removes `key`'s entry if an invalidation came after its read began (and keeps one
    /// that replaced it, read since).
    async fn forget_older(&self, key: Uuid) {
        let generations = &self.generations;
        self.cache
            .entry(key)
            .and_compute_with(|entry| async move {
                match entry {
                    Some(entry) if entry.value().generation < generations.of(key) => Op::Remove,
                    _ => Op::Nop,
                }
            })
            .await;
    }

    /// Forgets `key`, and makes any read of it already under way unfit to serve.
    async fn invalidate(&self, key: Uuid) {
        self.generations.bump(key);
        self.cache.invalidate(&key).await;
    }

    /// Forgets every key, and makes every read under way unfit to serve.
    fn clear(&self) {
        self.generations.bump_all();
        self.cache.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::*;

    fn guarded() -> Guarded<u32> {
        Guarded::new("test", Cache::builder().max_capacity(100))
    }

    /// Counts its reads; answers `value`.
    async fn read(reads: &AtomicUsize, value: u32) -> Result<Option<u32>, ServiceError> {
        reads.fetch_add(1, Ordering::SeqCst);
        Ok(Some(value))
    }

    /// A read that began before an invalidation (a kick committing while the roster was being
    /// read) is answered to whoever asked before it, but neither kept nor served to a lookup
    /// that began after the invalidation: that one reads again. Once with `invalidate` (a
    /// local write or an event), once with `clear` (the feed reopening).
    /// Lets every other task run until it waits: the clock is paused, so a sleep ends only
    /// once nothing else can make progress (the spawned lookup then waits on the shared read).
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_overtaken_by_an_invalidation_is_not_kept() {
        for by_clear in [false, true] {
            let cache = guarded();
            let key = Uuid::now_v7();
            let (started, read_started) = oneshot::channel::<()>();
            let (finish, release) = oneshot::channel::<()>();
            let (started, release) = (
                std::sync::Mutex::new(Some(started)),
                std::sync::Mutex::new(Some(release)),
            );
            let slow = {
                let cache = cache.clone();
                tokio::spawn(async move {
                    cache
                        .get_or_load(key, || async {
                            let started = started.lock().unwrap().take();
                            let release = release.lock().unwrap().take();
                            started.unwrap().send(()).unwrap();
                            release.unwrap().await.unwrap();
                            Ok(Some(1))
                        })
                        .await
                })
            };
            read_started.await.unwrap();
            if by_clear {
                cache.clear();
            } else {
                cache.invalidate(key).await;
            }
            // A lookup that begins now may join the read under way; it must not get its value.
            let reads = AtomicUsize::new(0);
            let joined = {
                let cache = cache.clone();
                tokio::spawn(async move {
                    let reads = AtomicUsize::new(0);
                    let value = cache.get_or_load(key, || read(&reads, 2)).await;
                    (value, reads.load(Ordering::SeqCst))
                })
            };
            settle().await;
            finish.send(()).unwrap();
            assert_eq!(
                slow.await.unwrap(),
                Ok(Some(1)),
                "its own caller gets the read"
            );
            let (value, joined_reads) = joined.await.unwrap();
            assert_eq!(value, Ok(Some(2)), "a later lookup read again");
            assert_eq!(joined_reads, 1);
            assert_eq!(
                cache.get_or_load(key, || read(&reads, 3)).await,
                Ok(Some(2)),
                "the fresh read is kept"
            );
            assert_eq!(reads.load(Ordering::SeqCst), 0);
            assert!(
                cache.cache.get(&key).await.is_some_and(|s| s.value == 2),
                "the stale read is not cached"
            );
        }
    }

    /// The same for a row that did not exist when a shared read looked (a group created
    /// meanwhile): a lookup that began after the invalidation does not take that absence.
    #[tokio::test(start_paused = true)]
    async fn an_absence_read_before_an_invalidation_is_read_again() {
        let cache = guarded();
        let key = Uuid::now_v7();
        let (finish, release) = oneshot::channel::<()>();
        let release = std::sync::Mutex::new(Some(release));
        let slow = {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get_or_load(key, || async {
                        let release = release.lock().unwrap().take();
                        release.unwrap().await.unwrap();
                        Ok(None)
                    })
                    .await
            })
        };
        settle().await;
        cache.invalidate(key).await;
        let joined = {
            let cache = cache.clone();
            tokio::spawn(async move {
                let reads = AtomicUsize::new(0);
                cache.get_or_load(key, || read(&reads, 5)).await
            })
        };
        settle().await;
        finish.send(()).unwrap();
        assert_eq!(slow.await.unwrap(), Ok(None));
        assert_eq!(joined.await.unwrap(), Ok(Some(5)));
    }

    /// Without invalidations, concurrent lookups share one read and later ones hit the cache;
    /// rows that do not exist and failures are not kept.
    #[tokio::test]
    async fn reads_are_shared_and_kept_but_absences_and_failures_are_not() {
        let cache = guarded();
        let key = Uuid::now_v7();
        let reads = AtomicUsize::new(0);
        let (a, b) = tokio::join!(
            cache.get_or_load(key, || read(&reads, 7)),
            cache.get_or_load(key, || read(&reads, 8)),
        );
        assert_eq!(a, b);
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        assert_eq!(cache.get_or_load(key, || read(&reads, 9)).await, a);
        assert_eq!(reads.load(Ordering::SeqCst), 1);

        let other = Uuid::now_v7();
        assert_eq!(
            cache.get_or_load(other, || async { Ok(None) }).await,
            Ok(None)
        );
        let failed = ServiceError::new(mesh_contracts::ErrorCode::Internal, "down");
        let answer = cache
            .get_or_load(other, || async { Err(failed.clone()) })
            .await;
        assert_eq!(answer, Err(failed.clone()));
        assert_eq!(
            cache.get_or_load(other, || read(&reads, 4)).await,
            Ok(Some(4))
        );
    }

    #[tokio::test]
    async fn clear_forgets_every_cache() {
        let caches = Caches::new(&SocialConfig::new(std::time::Duration::from_secs(1)));
        let (user, group) = (Uuid::now_v7(), Uuid::now_v7());
        let now = OffsetDateTime::now_utc();
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
        let set = FriendSet::default();
        let map = MemberMap::default();
        let row = Arc::new(row);
        let friends = caches
            .friends
            .get_or_load(user, || async { Ok(Some(set.clone())) });
        let members = caches
            .members
            .get_or_load(group, || async { Ok(Some(map.clone())) });
        let groups = caches
            .groups
            .get_or_load(group, || async { Ok(Some(row.clone())) });
        assert!(friends.await.is_ok() && members.await.is_ok() && groups.await.is_ok());
        caches.clear();
        assert!(caches.friends.cache.get(&user).await.is_none());
        assert!(caches.members.cache.get(&group).await.is_none());
        assert!(caches.groups.cache.get(&group).await.is_none());
    }

    #[test]
    fn weights_grow_with_size_and_saturate() {
        assert_eq!(weight(0), 1);
        assert_eq!(weight(9), 10);
        assert_eq!(weight(usize::MAX), u32::MAX);
    }
}
