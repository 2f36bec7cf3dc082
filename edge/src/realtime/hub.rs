//! The registry of this edge's realtime connections, by user.
//!
//! A user's first connection opens a slot with one forwarder task (push subscription, fan-out,
//! presence); the forwarder removes the slot once the last connection is gone. The hub ends
//! connections it cannot serve by kicking them: a full queue (slow consumer), a revoked
//! session, shutdown. The slot also holds what the user's connections here share: the
//! typing-indicator allowance.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use mesh_contracts::chat::{ConversationId, push_frames};
use mesh_nats::{Bus, Revocation};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use uuid::Uuid;

use super::close::CloseReason;
use super::forwarder;
use super::kick::Kick;
use super::presence::PresenceDeps;
use super::push_queue::PushQueue;
use super::ws::typing::TypingLimiter;

/// What the hub needs besides NATS.
pub struct HubSettings {
    /// Frames queued per connection before it is a slow consumer.
    pub send_queue: usize,
    /// How often presence keys are refreshed.
    pub heartbeat: Duration,
}

/// A cloneable handle on the registry.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Mutex<Registry>,
    bus: Bus,
    presence: Arc<PresenceDeps>,
    settings: HubSettings,
    next_id: AtomicU64,
    /// Woken when the last slot goes away (shutdown waits for it).
    idle: Notify,
    stopping: watch::Sender<bool>,
}

#[derive(Default)]
struct Registry {
    users: HashMap<Uuid, Slot>,
    closed: bool,
}

/// One user's connections on this edge.
struct Slot {
    conns: Vec<Arc<Conn>>,
    /// Tells the forwarder the slot emptied.
    emptied: Arc<Notify>,
    /// True once the push subscription is active.
    subscribed: watch::Receiver<bool>,
    /// The typing indicators all of the user's sockets here may send.
    typing: TypingLimiter,
}

/// What the hub keeps of one connection.
struct Conn {
    id: u64,
    /// The session whose token the connection holds (a refreshing `auth` may change it).
    session: Mutex<Uuid>,
    /// Frames pushed to the user, as the client's JSON text, waiting for this connection.
    queue: PushQueue,
    kick: Arc<Kick>,
}

/// The edge is shutting down and takes no new connections.
#[derive(Debug)]
pub struct HubClosed;

/// A connection's place in the hub; dropping it unregisters the connection.
pub struct Registration {
    hub: Hub,
    user: Uuid,
    conn: Arc<Conn>,
    subscribed: watch::Receiver<bool>,
}

impl Hub {
    pub fn new(bus: Bus, presence: PresenceDeps, settings: HubSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                registry: Mutex::default(),
                bus,
                presence: Arc::new(presence),
                settings,
                next_id: AtomicU64::new(1),
                idle: Notify::new(),
                stopping: watch::Sender::new(false),
            }),
        }
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock leaves the map consistent (every change is one call).
        self.inner
            .registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a connection of `user` holding a token of `session`.
    pub fn register(&self, user: Uuid, session: Uuid) -> Result<Registration, HubClosed> {
        let conn = Arc::new(Conn {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            session: Mutex::new(session),
            queue: PushQueue::new(self.inner.settings.send_queue),
            kick: Arc::default(),
        });
        let mut registry = self.registry();
        if registry.closed {
            return Err(HubClosed);
        }
        let slot = registry
            .users
            .entry(user)
            .or_insert_with(|| self.open_slot(user, session));
        slot.conns.push(conn.clone());
        let subscribed = slot.subscribed.clone();
        drop(registry);
        Ok(Registration {
            hub: self.clone(),
            user,
            conn,
            subscribed,
        })
    }

    fn open_slot(&self, user: Uuid, session: Uuid) -> Slot {
        let emptied = Arc::new(Notify::new());
        let (subscribed_tx, subscribed) = watch::channel(false);
        tokio::spawn(forwarder::run(
            self.clone(),
            user,
            session,
            emptied.clone(),
            subscribed_tx,
        ));
        Slot {
            conns: Vec::new(),
            emptied,
            subscribed,
            typing: TypingLimiter::default(),
        }
    }

    fn unregister(&self, user: Uuid, id: u64) {
        let mut registry = self.registry();
        if let Some(slot) = registry.users.get_mut(&user) {
            let before = slot.conns.len();
            slot.conns.retain(|conn| conn.id != id);
            if before > 0 && slot.conns.is_empty() {
                slot.emptied.notify_one();
            }
        }
    }

    /// Kicks (and forgets) the user's connections that `drop` selects.
    fn kick_where(&self, user: Uuid, reason: CloseReason, drop: impl Fn(&Conn) -> bool) {
        let mut registry = self.registry();
        if let Some(slot) = registry.users.get_mut(&user) {
            kick_from(slot, reason, drop);
        }
    }

    /// Hands the frames of a push to every connection of `user`; a connection whose queue is
    /// full is kicked as a slow consumer.
    pub(super) fn fan_out(&self, user: Uuid, push: &Bytes) {
        if let Some(slot) = self.registry().users.get_mut(&user) {
            hand_over(slot, push);
        }
    }

    /// [`Hub::fan_out`] for each of `users` this edge holds, under one lock; the others are
    /// connected elsewhere or not at all.
    pub(super) fn fan_out_many(&self, users: &[Uuid], push: &Bytes) {
        let mut registry = self.registry();
        for user in users {
            if let Some(slot) = registry.users.get_mut(user) {
                hand_over(slot, push);
            }
        }
    }

    /// Kicks every connection of `user` (its push subscription ended).
    pub(super) fn kick_user(&self, user: Uuid, reason: CloseReason) {
        self.kick_where(user, reason, |_| true);
    }

    /// Whether `user` may send a typing indicator for `conversation` at `now` (recorded when
    /// so); false without a slot (the connection is being closed).
    fn allow_typing(&self, user: Uuid, conversation: ConversationId, now: Instant) -> bool {
        self.registry()
            .users
            .get_mut(&user)
            .is_some_and(|slot| slot.typing.allow(conversation, now))
    }

    pub(super) fn is_empty(&self, user: Uuid) -> bool {
        self.registry()
            .users
            .get(&user)
            .is_none_or(|slot| slot.conns.is_empty())
    }

    /// Removes the user's slot if it has no connections; true when removed.
    pub(super) fn remove_if_empty(&self, user: Uuid) -> bool {
        let mut registry = self.registry();
        if !registry
            .users
            .get(&user)
            .is_some_and(|s| s.conns.is_empty())
        {
            return false;
        }
        registry.users.remove(&user);
        if registry.users.is_empty() {
            self.inner.idle.notify_waiters();
        }
        true
    }

    pub(super) fn bus(&self) -> &Bus {
        &self.inner.bus
    }

    pub(super) fn presence(&self) -> Arc<PresenceDeps> {
        self.inner.presence.clone()
    }

    pub(super) fn heartbeat(&self) -> Duration {
        self.inner.settings.heartbeat
    }

    /// True once the edge began shutting down.
    pub(super) fn is_stopping(&self) -> bool {
        *self.inner.stopping.borrow()
    }

    /// Ends the connections of a revoked session.
    pub fn session_revoked(&self, revocation: Revocation) {
        self.kick_where(revocation.user_id, CloseReason::SessionRevoked, |conn| {
            *lock(&conn.session) == revocation.session_id
        });
    }

    /// Resolves once the edge began shutting down.
    pub async fn stopping(&self) {
        let mut stopping = self.inner.stopping.subscribe();
        let _ = stopping.wait_for(|s| *s).await;
    }

    /// Refuses new connections and kicks every open one (they close with 1001).
    pub fn shutdown(&self) {
        self.inner.stopping.send_replace(true);
        let mut registry = self.registry();
        registry.closed = true;
        for slot in registry.users.values_mut() {
            let leaving = slot.conns.is_empty();
            kick_from(slot, CloseReason::Shutdown, |_| true);
            // A user whose last connection closed shortly before waits out the offline grace;
            // woken, the forwarder reports them offline now.
            if leaving {
                slot.emptied.notify_one();
            }
        }
    }

    /// Waits until every forwarder finished (presence released), at most `limit`.
    pub async fn wait_idle(&self, limit: Duration) {
        let idle = async {
            loop {
                let notified = self.inner.idle.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.registry().users.is_empty() {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(limit, idle).await.is_err() {
            tracing::warn!("realtime connections still closing at shutdown");
        }
    }
}

/// Queues the frames of `push` (`mesh_contracts::chat::push_frames`, slices of it: no copy,
/// no allocation) on every connection of `slot`, kicking those whose queue is full.
fn hand_over(slot: &mut Slot, push: &Bytes) {
    let before = slot.conns.len();
    slot.conns.retain(|conn| {
        let queued = push_frames(push).all(|frame| conn.queue.try_push(push.slice_ref(frame)));
        if !queued {
            conn.kick.kick(CloseReason::SlowConsumer);
        }
        queued
    });
    if before > 0 && slot.conns.is_empty() {
        slot.emptied.notify_one();
    }
}

fn kick_from(slot: &mut Slot, reason: CloseReason, drop: impl Fn(&Conn) -> bool) {
    let before = slot.conns.len();
    slot.conns.retain(|conn| {
        if drop(conn) {
            conn.kick.kick(reason);
            false
        } else {
            true
        }
    });
    if before > 0 && slot.conns.is_empty() {
        slot.emptied.notify_one();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Registration {
    /// Waits until pushes to the user reach this edge, at most `limit`; false if they don't.
    pub async fn wait_subscribed(&mut self, limit: Duration) -> bool {
        let subscribed = self.subscribed.wait_for(|s| *s);
        matches!(tokio::time::timeout(limit, subscribed).await, Ok(Ok(_)))
    }

    /// Frames pushed to the user, as the client's JSON text, waiting for this connection.
    pub fn frames(&self) -> &PushQueue {
        &self.conn.queue
    }

    /// The connection's kick signal, to wait on alongside its frames.
    pub fn kick(&self) -> Arc<Kick> {
        self.conn.kick.clone()
    }

    /// Whether the user may send a typing indicator for `conversation` now: at most one per
    /// conversation and interval for all the user's sockets on this edge.
    pub fn allow_typing(&self, conversation: ConversationId, now: Instant) -> bool {
        self.hub.allow_typing(self.user, conversation, now)
    }

    /// The connection now holds a token of `session`.
    pub fn rebind(&self, session: Uuid) {
        *lock(&self.conn.session) = session;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.unregister(self.user, self.conn.id);
    }
}
