//! What a caller may do, decided at the edge: the roles in the caller's token (those the
//! account still holds) plus its direct grants, each role's permissions from a Moka cache of
//! role -> permissions. Entries are filled from the user service (`get_access`) and dropped
//! when a user event says a role or a user's grants changed, on every edge (each watches the
//! user events itself, with a plain subscription: `Bus::event_watch`); a TTL bounds staleness
//! should an event be missed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mesh_contracts::Service;
use mesh_contracts::events::{EventEnvelope, UserEvent};
use mesh_contracts::permissions::Permission;
use mesh_contracts::rbac::{Access, AccessRequest, GetAccess};
use mesh_nats::{Bus, CallContext, RpcClient};
use mesh_observability::outage::Outage;
use mesh_observability::{outage_failed, outage_over};
use moka::sync::Cache;
use tokio::sync::watch;
use uuid::Uuid;

use crate::caller::Caller;
use crate::problem::ApiError;

/// Longest an entry is trusted without an event (a missed event heals within this).
const TTL: Duration = Duration::from_secs(60);
/// Bounds on cached roles and users.
const MAX_ROLES: u64 = 10_000;
const MAX_USERS: u64 = 100_000;

/// What one account holds now, apart from its roles' permissions.
#[derive(Debug)]
struct UserGrants {
    roles: Vec<String>,
    direct: Vec<Permission>,
    disabled: bool,
}

/// The edge's cache of roles' permissions and users' grants.
#[derive(Clone)]
pub struct PermissionCache {
    roles: Cache<String, Arc<Vec<Permission>>>,
    users: Cache<Uuid, Arc<UserGrants>>,
    /// Bumped by every invalidation, so a fill that raced one is not stored.
    generation: Arc<AtomicU64>,
}

impl Default for PermissionCache {
    fn default() -> Self {
        Self {
            roles: Cache::builder()
                .max_capacity(MAX_ROLES)
                .time_to_live(TTL)
                .build(),
            users: Cache::builder()
                .max_capacity(MAX_USERS)
                .time_to_live(TTL)
                .build(),
            generation: Arc::default(),
        }
    }
}

impl PermissionCache {
    /// Every permission `caller` holds now.
    pub async fn held(
        &self,
        rpc: &RpcClient,
        ctx: &CallContext,
        caller: &Caller,
    ) -> Result<Vec<Permission>, ApiError> {
        let missing: Vec<String> = caller
            .roles
            .iter()
            .filter(|r| !self.roles.contains_key(*r))
            .cloned()
            .collect();
        let (user, fresh) = match self.users.get(&caller.user_id) {
            Some(user) if missing.is_empty() => (user, Vec::new()),
            _ => self.fill(rpc, ctx, caller.user_id, missing).await?,
        };
        if user.disabled {
            return Ok(Vec::new());
        }
        let mut held = user.direct.clone();
        for role in caller.roles.iter().filter(|r| user.roles.contains(r)) {
            let perms = fresh
                .iter()
                .find(|(name, _)| name == role)
                .map(|(_, perms)| perms.clone())
                .or_else(|| self.roles.get(role));
            held.extend(perms.iter().flat_map(|p| p.iter().cloned()));
        }
        Ok(held)
    }

    /// Asks the user service about `user_id` and the `roles` not cached; stores the answer
    /// unless an invalidation arrived meanwhile (then it serves this request only).
    async fn fill(
        &self,
        rpc: &RpcClient,
        ctx: &CallContext,
        user_id: Uuid,
        roles: Vec<String>,
    ) -> Result<(Arc<UserGrants>, Vec<(String, Arc<Vec<Permission>>)>), ApiError> {
        let generation = self.generation.load(Ordering::Acquire);
        let request = AccessRequest {
            user_id,
            roles: roles.clone(),
        };
        let access: Access = rpc.call::<GetAccess>(ctx, &request).await?;
        let user = Arc::new(UserGrants {
            roles: access.roles,
            direct: parse_all(&access.direct),
            disabled: access.disabled,
        });
        let fresh: Vec<(String, Arc<Vec<Permission>>)> = roles
            .into_iter()
            .map(|name| {
                let perms = access
                    .role_permissions
                    .iter()
                    .find(|r| r.name == name)
                    .map(|r| parse_all(&r.permissions))
                    .unwrap_or_default();
                (name, Arc::new(perms))
            })
            .collect();
        if self.generation.load(Ordering::Acquire) == generation {
            for (name, perms) in &fresh {
                self.roles.insert(name.clone(), perms.clone());
            }
            self.users.insert(user_id, user.clone());
        }
        Ok((user, fresh))
    }

    /// Drops what `event` makes stale.
    fn apply(&self, event: &UserEvent) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        match event {
            UserEvent::RoleDefined { name, .. } | UserEvent::RoleDeleted { name, .. } => {
                self.roles.invalidate(name);
            }
            UserEvent::RolesChanged { user_id, .. }
            | UserEvent::PermissionsChanged { user_id, .. }
            | UserEvent::UserDisabled { user_id, .. }
            | UserEvent::UserEnabled { user_id, .. } => self.users.invalidate(user_id),
            UserEvent::UserRegistered { .. }
            | UserEvent::ProfileUpdated { .. }
            | UserEvent::Unknown => {}
        }
    }

    /// Follows the user events until `stop` flips, reopening the watch when it ends. A watch
    /// ends when the NATS connection was lost since it opened, and then may have missed events,
    /// so the caches start over each time one opens.
    pub async fn follow(self, bus: Bus, mut stop: watch::Receiver<bool>) {
        let mut outage = Outage::default();
        loop {
            // Without NATS, opening waits out its timeout: told to stop, stop now.
            let opened = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                opened = bus.event_watch(&[Service::User]) => opened,
            };
            match opened {
                Ok(mut events) => {
                    outage_over!(outage, "permission feed open again");
                    self.clear();
                    loop {
                        let next = tokio::select! {
                            _ = stop.wait_for(|s| *s) => return,
                            next = events.next() => next,
                        };
                        match next {
                            Some(Ok(delivery)) => {
                                let event =
                                    serde_json::from_slice::<EventEnvelope>(&delivery.payload)
                                        .ok()
                                        .and_then(|envelope| envelope.event::<UserEvent>().ok());
                                if let Some(event) = event {
                                    self.apply(&event);
                                }
                            }
                            Some(Err(err)) => {
                                outage_failed!(outage, error = %err, "permission feed ended");
                                break;
                            }
                            None => break,
                        }
                    }
                }
                Err(err) => {
                    outage_failed!(outage, error = %err, "cannot open the permission feed");
                }
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.roles.invalidate_all();
        self.users.invalidate_all();
    }
}

fn parse_all(raw: &[String]) -> Vec<Permission> {
    raw.iter()
        .filter_map(|p| Permission::parse(p).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(roles: &[&str]) -> Arc<UserGrants> {
        Arc::new(UserGrants {
            roles: roles.iter().map(|r| r.to_string()).collect(),
            direct: vec![],
            disabled: false,
        })
    }

    #[test]
    fn events_drop_exactly_what_they_make_stale() {
        let cache = PermissionCache::default();
        let (ann, bob) = (Uuid::from_u128(1), Uuid::from_u128(2));
        cache.users.insert(ann, grants(&["user"]));
        cache.users.insert(bob, grants(&["user"]));
        cache.roles.insert("support".into(), Arc::new(vec![]));
        cache.roles.insert("admin".into(), Arc::new(vec![]));
        let before = cache.generation.load(Ordering::Acquire);
        cache.apply(&UserEvent::RoleDefined {
            name: "support".into(),
            permissions: vec![],
            by: ann,
        });
        assert!(!cache.roles.contains_key("support"));
        assert!(cache.roles.contains_key("admin"));
        cache.apply(&UserEvent::PermissionsChanged {
            user_id: ann,
            permissions: vec![],
            by: bob,
        });
        assert!(!cache.users.contains_key(&ann));
        assert!(cache.users.contains_key(&bob));
        assert!(cache.generation.load(Ordering::Acquire) > before);
    }
}
