//! Caps on open realtime connections (WebSocket and SSE) per user and per client address: a
//! slot is taken at the handshake and given back when the connection's slot is dropped. A
//! WebSocket that authenticates with its first frame takes its address's place at the handshake
//! and its user's once the frame names them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mesh_contracts::client_address::limit_key;
use mesh_observability::metrics::RATE_LIMITED;

/// Open connections by user and by address.
#[derive(Clone)]
pub struct ConnectionLimits {
    per_user: usize,
    per_ip: usize,
    open: Arc<Mutex<Counts>>,
}

#[derive(Default)]
struct Counts {
    users: HashMap<String, usize>,
    ips: HashMap<String, usize>,
}

/// Which cap a refused connection hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionCap {
    User(usize),
    Ip(usize),
}

impl ConnectionCap {
    /// The 429 answered to a handshake over a cap.
    pub fn problem(self) -> crate::problem::ApiError {
        let detail = match self {
            ConnectionCap::User(n) => format!("this user already has {n} open connections"),
            ConnectionCap::Ip(n) => format!("this address already has {n} open connections"),
        };
        crate::problem::ApiError::new(mesh_contracts::ErrorCode::RateLimited, detail)
    }
}

/// One open connection's place; dropping it frees the place.
pub struct ConnectionSlot {
    open: Arc<Mutex<Counts>>,
    per_user: usize,
    /// `None` until the connection's user is known (`attach`).
    user: Option<String>,
    ip: String,
}

fn release(map: &mut HashMap<String, usize>, key: &str) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl ConnectionLimits {
    pub fn new(per_user: usize, per_ip: usize) -> Self {
        Self {
            per_user,
            per_ip,
            open: Arc::default(),
        }
    }

    /// Takes a place for a connection of `user` from `ip` (an IPv6 client counted by its /64,
    /// `limit_key`), unless a cap is reached.
    pub fn open(&self, user: &str, ip: &str) -> Result<ConnectionSlot, ConnectionCap> {
        let ip = &limit_key(ip);
        let mut counts = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let by_user = counts.users.get(user).copied().unwrap_or(0);
        let by_ip = counts.ips.get(ip).copied().unwrap_or(0);
        let refused = if by_user >= self.per_user {
            Some(("connections_user", ConnectionCap::User(self.per_user)))
        } else if by_ip >= self.per_ip {
            Some(("connections_ip", ConnectionCap::Ip(self.per_ip)))
        } else {
            None
        };
        if let Some((limit, cap)) = refused {
            RATE_LIMITED.with_label_values(&[limit]).inc();
            return Err(cap);
        }
        *counts.users.entry(user.to_owned()).or_default() += 1;
        *counts.ips.entry(ip.to_owned()).or_default() += 1;
        Ok(ConnectionSlot {
            open: self.open.clone(),
            per_user: self.per_user,
            user: Some(user.to_owned()),
            ip: ip.to_owned(),
        })
    }

    /// Takes a place for a connection from `ip` whose user is not known yet (a WebSocket
    /// waiting for its `auth` frame): it counts under the address's cap at once, and under its
    /// user's when `attach` names them.
    pub fn open_anonymous(&self, ip: &str) -> Result<ConnectionSlot, ConnectionCap> {
        let ip = limit_key(ip);
        let mut counts = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if counts.ips.get(&ip).copied().unwrap_or(0) >= self.per_ip {
            RATE_LIMITED.with_label_values(&["connections_ip"]).inc();
            return Err(ConnectionCap::Ip(self.per_ip));
        }
        *counts.ips.entry(ip.clone()).or_default() += 1;
        Ok(ConnectionSlot {
            open: self.open.clone(),
            per_user: self.per_user,
            user: None,
            ip,
        })
    }
}

impl ConnectionSlot {
    /// Counts this connection under `user`'s cap too, unless they are at it (the place keeps
    /// counting under its address's until dropped). A slot that already has its user keeps it.
    pub fn attach(&mut self, user: &str) -> Result<(), ConnectionCap> {
        if self.user.is_some() {
            return Ok(());
        }
        let mut counts = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if counts.users.get(user).copied().unwrap_or(0) >= self.per_user {
            RATE_LIMITED.with_label_values(&["connections_user"]).inc();
            return Err(ConnectionCap::User(self.per_user));
        }
        *counts.users.entry(user.to_owned()).or_default() += 1;
        drop(counts);
        self.user = Some(user.to_owned());
        Ok(())
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut counts = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(user) = &self.user {
            release(&mut counts.users, user);
        }
        release(&mut counts.ips, &self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_capped_and_given_back() {
        let limits = ConnectionLimits::new(2, 3);
        let a1 = limits.open("ann", "1.1.1.1").unwrap();
        let _a2 = limits.open("ann", "1.1.1.1").unwrap();
        assert_eq!(
            limits.open("ann", "2.2.2.2").err(),
            Some(ConnectionCap::User(2))
        );
        let _b1 = limits.open("bob", "1.1.1.1").unwrap();
        assert_eq!(
            limits.open("cy", "1.1.1.1").err(),
            Some(ConnectionCap::Ip(3))
        );
        drop(a1);
        assert!(limits.open("ann", "2.2.2.2").is_ok());
    }

    #[test]
    fn anonymous_places_count_under_the_address_then_the_user_they_name() {
        let limits = ConnectionLimits::new(1, 2);
        let mut pending = limits.open_anonymous("1.1.1.1").unwrap();
        let _other = limits.open_anonymous("1.1.1.1").unwrap();
        assert_eq!(
            limits.open_anonymous("1.1.1.1").err(),
            Some(ConnectionCap::Ip(2)),
            "sockets not yet authenticated fill the address's cap"
        );
        assert_eq!(
            limits.open("ann", "1.1.1.1").err(),
            Some(ConnectionCap::Ip(2))
        );
        pending.attach("ann").unwrap();
        assert_eq!(
            limits.open("ann", "2.2.2.2").err(),
            Some(ConnectionCap::User(1)),
            "an attached place counts under its user"
        );
        let mut late = limits.open_anonymous("3.3.3.3").unwrap();
        assert_eq!(late.attach("ann").err(), Some(ConnectionCap::User(1)));
        drop(late);
        drop(pending);
        assert!(
            limits.open("ann", "1.1.1.1").is_ok(),
            "both places given back"
        );
        assert!(limits.open_anonymous("3.3.3.3").is_ok());
    }

    #[test]
    fn the_addresses_of_one_ipv6_64_share_the_cap() {
        let limits = ConnectionLimits::new(10, 2);
        let _a = limits.open("ann", "2001:db8::1").unwrap();
        let b = limits.open("bob", "2001:db8::2").unwrap();
        assert_eq!(
            limits.open("cy", "2001:db8::3").err(),
            Some(ConnectionCap::Ip(2))
        );
        assert!(limits.open("cy", "2001:db8:0:1::3").is_ok(), "another /64");
        drop(b);
        assert!(
            limits.open("cy", "2001:db8::3").is_ok(),
            "a place given back"
        );
    }
}
