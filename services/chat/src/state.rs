//! What the RPC handlers, the partition owners and the event consumers of one chat worker share:
//! its pool, bus, settings, membership, pusher, presence bucket, last-seen writer and
//! identity. Cheap to clone.

use std::sync::Arc;

use mesh_contracts::Bucket;
use mesh_nats::{Bus, KvBucket};
use sqlx::PgPool;
use uuid::Uuid;

use crate::ChatDeps;
use crate::config::ChatConfig;
use crate::last_seen::LastSeenWriter;
use crate::membership::Membership;
use crate::push::Pusher;
use crate::rosters::RosterSync;

#[derive(Clone)]
pub struct State(Arc<Inner>);

pub struct Inner {
    pub(crate) pool: PgPool,
    pub(crate) bus: Bus,
    pub(crate) config: ChatConfig,
    pub(crate) membership: Membership,
    pub(crate) pusher: Pusher,
    pub(crate) presence: KvBucket,
    /// Presence reports' last-seen times, stored in shared batches.
    pub(crate) last_seen: LastSeenWriter,
    pub(crate) worker_id: Uuid,
    /// Which group rosters already have their inbox rows (partition owners only).
    pub(crate) rosters: RosterSync,
    /// The most bytes of items one page of a reply carries (`domain::page::budget` of the
    /// server's `max_payload`).
    pub(crate) page_bytes: usize,
}

impl std::ops::Deref for State {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl State {
    pub async fn new(deps: ChatDeps, config: ChatConfig) -> anyhow::Result<Self> {
        let presence = deps.bus.bucket(Bucket::Presence).await?;
        Ok(Self(Arc::new(Inner {
            membership: Membership::new(deps.bus.rpc_client(config.rpc_timeout), deps.pool.clone()),
            pusher: Pusher::new(deps.bus.clone()),
            presence,
            last_seen: LastSeenWriter::start(deps.pool.clone()),
            worker_id: Uuid::new_v4(),
            rosters: RosterSync::default(),
            page_bytes: crate::domain::page::budget(deps.bus.max_payload()),
            pool: deps.pool,
            bus: deps.bus,
            config,
        })))
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn config(&self) -> &ChatConfig {
        &self.config
    }

    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    pub fn pusher(&self) -> &Pusher {
        &self.pusher
    }

    pub fn worker_id(&self) -> Uuid {
        self.worker_id
    }

    /// The most bytes of items one page of a reply carries.
    pub fn page_bytes(&self) -> usize {
        self.page_bytes
    }
}
