//! Rate limits of the edge: token buckets per client address and per user, by route class
//! (`auth`, `write`, `read`), per user for chat sends, per WebSocket connection and per user
//! (all the user's sockets on this edge) for frames, and a cap on open realtime connections
//! per user and per address. Buckets live in this edge (each edge enforces its own share); a
//! refused HTTP request is a 429 problem with `Retry-After`, and every limited response
//! carries `RateLimit-Policy` and `RateLimit` (IETF httpapi rate-limit headers draft).

mod connections;
mod quota;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mesh_contracts::ErrorCode;
use mesh_contracts::client_address::limit_key;
use mesh_observability::metrics::RATE_LIMITED;
use moka::sync::Cache;
use poem::http::{HeaderValue, Method};
use poem::{IntoResponse, Response};
use uuid::Uuid;

pub use connections::{ConnectionLimits, ConnectionSlot};
pub use quota::{Quota, Taken, TokenBucket};

use crate::problem::ApiError;

/// Keys (clients) remembered per limit; the least recently seen are forgotten first.
const MAX_CLIENTS: u64 = 200_000;

/// Every configurable limit.
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// Register, login and refresh, per client address.
    pub auth_per_ip: Quota,
    /// Other mutating requests, per client address and per user.
    pub write_per_ip: Quota,
    pub write_per_user: Quota,
    /// Reads, per client address and per user.
    pub read_per_ip: Quota,
    pub read_per_user: Quota,
    /// Chat messages (REST and WebSocket), per user.
    pub chat_sends_per_user: Quota,
    /// Client frames of one WebSocket.
    pub ws_frames: Quota,
    /// Client frames of all of one user's WebSockets on this edge together (so opening more
    /// sockets does not multiply a user's frames).
    pub ws_frames_per_user: Quota,
    /// Frames refused in a row after which a WebSocket is closed (4029).
    pub ws_flood_close_after: u32,
    /// Open WebSocket and SSE connections per user and per client address.
    pub connections_per_user: usize,
    pub connections_per_ip: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        let minute = Duration::from_secs(60);
        Self {
            auth_per_ip: Quota::new(30, minute),
            write_per_ip: Quota::new(600, minute),
            write_per_user: Quota::new(120, minute),
            read_per_ip: Quota::new(1200, minute),
            read_per_user: Quota::new(600, minute),
            chat_sends_per_user: Quota::new(30, Duration::from_secs(10)),
            ws_frames: Quota::new(100, Duration::from_secs(10)),
            ws_frames_per_user: Self::ws_frames_per_user_for(Quota::new(
                100,
                Duration::from_secs(10),
            )),
            ws_flood_close_after: 20,
            connections_per_user: 10,
            connections_per_ip: 200,
        }
    }
}

impl RateLimitConfig {
    /// The per-user frame budget that goes with a per-socket one when none is set: two
    /// sockets' worth (a user's phone and laptop both busy, not ten sockets' worth), so a
    /// deployment that lifts the socket's budget lifts the user's with it.
    pub fn ws_frames_per_user_for(ws_frames: Quota) -> Quota {
        Quota::new(ws_frames.burst.saturating_mul(2), ws_frames.period)
    }
}

/// The route classes of HTTP limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    Auth,
    Write,
    Read,
}

impl RouteClass {
    /// The class of a request; `None` for the probes and metrics, which are never limited.
    /// Every other path is, routes of the API or not: a request no route serves costs the
    /// edge as much as one that fails validation.
    pub fn of(method: &Method, path: &str) -> Option<Self> {
        if matches!(path, "/healthz" | "/readyz" | "/metrics") {
            return None;
        }
        if matches!(
            path,
            "/v1/auth/register" | "/v1/auth/login" | "/v1/auth/refresh"
        ) {
            return Some(RouteClass::Auth);
        }
        match *method {
            Method::GET | Method::HEAD | Method::OPTIONS => Some(RouteClass::Read),
            _ => Some(RouteClass::Write),
        }
    }
}

/// One named limit: a quota and the buckets of the clients under it.
pub struct Limit {
    name: &'static str,
    quota: Quota,
    buckets: Cache<String, Arc<Mutex<TokenBucket>>>,
}

/// A bucket's answer under a named limit.
#[derive(Debug, Clone, Copy)]
pub struct Verdict {
    pub limit: &'static str,
    pub quota: Quota,
    pub taken: Taken,
}

impl Limit {
    pub fn new(name: &'static str, quota: Quota) -> Self {
        Self {
            name,
            quota,
            // A bucket idle for a whole period is full again: forgetting it changes nothing.
            buckets: Cache::builder()
                .max_capacity(MAX_CLIENTS)
                .time_to_idle(quota.period)
                .build(),
        }
    }

    /// Takes a token from `client`'s bucket; refusals are counted.
    pub fn take(&self, client: &str) -> Verdict {
        let now = Instant::now();
        // By reference: the key is copied only when the client's bucket is made.
        let bucket = self.buckets.get_with_by_ref(client, || {
            Arc::new(Mutex::new(TokenBucket::full(&self.quota, now)))
        });
        let taken = bucket
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take(&self.quota, now);
        if !taken.allowed {
            RATE_LIMITED.with_label_values(&[self.name]).inc();
        }
        Verdict {
            limit: self.name,
            quota: self.quota,
            taken,
        }
    }
}

/// Every limit of this edge.
pub struct RateLimits {
    pub config: RateLimitConfig,
    auth_ip: Limit,
    write_ip: Limit,
    write_user: Limit,
    read_ip: Limit,
    read_user: Limit,
    chat_sends: Limit,
    ws_frames_user: Limit,
    pub connections: ConnectionLimits,
}

impl RateLimits {
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            auth_ip: Limit::new("auth_ip", config.auth_per_ip),
            write_ip: Limit::new("write_ip", config.write_per_ip),
            write_user: Limit::new("write_user", config.write_per_user),
            read_ip: Limit::new("read_ip", config.read_per_ip),
            read_user: Limit::new("read_user", config.read_per_user),
            chat_sends: Limit::new("chat_sends", config.chat_sends_per_user),
            ws_frames_user: Limit::new("ws_frames_user", config.ws_frames_per_user),
            connections: ConnectionLimits::new(
                config.connections_per_user,
                config.connections_per_ip,
            ),
            config,
        }
    }

    /// Checks an HTTP request of `class` from `ip` (and `user`, when authenticated). Answers
    /// the tightest verdict: the refusing one, else the one with the fewest tokens left. An
    /// IPv6 client is counted by its /64 (`limit_key`), so rotating addresses does not help.
    pub fn check_http(&self, class: RouteClass, ip: &str, user: Option<&str>) -> Verdict {
        let (by_ip, by_user) = match class {
            RouteClass::Auth => (&self.auth_ip, None),
            RouteClass::Write => (&self.write_ip, Some(&self.write_user)),
            RouteClass::Read => (&self.read_ip, Some(&self.read_user)),
        };
        let mut verdict = by_ip.take(&limit_key(ip));
        if verdict.taken.allowed
            && let (Some(limit), Some(user)) = (by_user, user)
        {
            let second = limit.take(user);
            if !second.taken.allowed || second.taken.remaining < verdict.taken.remaining {
                verdict = second;
            }
        }
        verdict
    }

    /// Takes one chat send of `user`; a refusal says when to retry.
    pub fn chat_send(&self, user: &str) -> Verdict {
        self.chat_sends.take(user)
    }

    /// Takes one client frame from the budget all of `user`'s WebSockets on this edge share;
    /// false when it is spent (the refusal is counted as `ws_frames_user`).
    pub fn ws_frame(&self, user: Uuid) -> bool {
        let mut key = Uuid::encode_buffer();
        let key = user.as_hyphenated().encode_lower(&mut key);
        self.ws_frames_user.take(key).taken.allowed
    }
}

/// Seconds, rounded up, as the headers want them.
fn whole_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl Verdict {
    /// Writes `RateLimit-Policy` and `RateLimit` (and `Retry-After` when refused).
    pub fn write_headers(&self, response: &mut Response) {
        let policy = format!(
            "\"{}\";q={};w={}",
            self.limit,
            self.quota.burst,
            whole_seconds(self.quota.period)
        );
        let state = format!(
            "\"{}\";r={};t={}",
            self.limit,
            self.taken.remaining,
            whole_seconds(self.taken.reset)
        );
        let headers = response.headers_mut();
        for (name, value) in [("ratelimit-policy", policy), ("ratelimit", state)] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
        if !self.taken.allowed {
            headers.insert(
                "retry-after",
                HeaderValue::from(whole_seconds(self.taken.retry_after).max(1)),
            );
        }
    }

    /// The 429 problem of a refused request, with its headers.
    pub fn refusal(&self) -> Response {
        let mut response = ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "rate limit {} ({}) exceeded; retry after {} s",
                self.limit,
                self.quota,
                whole_seconds(self.taken.retry_after).max(1)
            ),
        )
        .into_response();
        self.write_headers(&mut response);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_fall_into_classes() {
        assert_eq!(
            RouteClass::of(&Method::POST, "/v1/auth/login"),
            Some(RouteClass::Auth)
        );
        assert_eq!(
            RouteClass::of(&Method::POST, "/v1/auth/logout"),
            Some(RouteClass::Write)
        );
        assert_eq!(
            RouteClass::of(&Method::DELETE, "/v1/friends/x"),
            Some(RouteClass::Write)
        );
        assert_eq!(
            RouteClass::of(&Method::GET, "/v1/users/me"),
            Some(RouteClass::Read)
        );
        assert_eq!(RouteClass::of(&Method::GET, "/healthz"), None);
        assert_eq!(RouteClass::of(&Method::GET, "/metrics"), None);
        assert_eq!(RouteClass::of(&Method::GET, "/readyz"), None);
        // Paths outside the API are limited too: they cost the edge all the same.
        assert_eq!(
            RouteClass::of(&Method::POST, "/anything"),
            Some(RouteClass::Write)
        );
        assert_eq!(
            RouteClass::of(&Method::GET, "/docs"),
            Some(RouteClass::Read)
        );
    }

    #[test]
    fn the_user_limit_applies_on_top_of_the_address_limit() {
        let limits = RateLimits::new(RateLimitConfig {
            write_per_ip: Quota::new(10, Duration::from_secs(60)),
            write_per_user: Quota::new(2, Duration::from_secs(60)),
            ..RateLimitConfig::default()
        });
        let first = limits.check_http(RouteClass::Write, "1.1.1.1", Some("ann"));
        assert!(first.taken.allowed);
        assert_eq!(first.limit, "write_user");
        assert!(
            limits
                .check_http(RouteClass::Write, "1.1.1.1", Some("ann"))
                .taken
                .allowed
        );
        let refused = limits.check_http(RouteClass::Write, "1.1.1.1", Some("ann"));
        assert!(!refused.taken.allowed);
        // Bob behind the same address still has his own user budget.
        assert!(
            limits
                .check_http(RouteClass::Write, "1.1.1.1", Some("bob"))
                .taken
                .allowed
        );
        let mut response = refused.refusal();
        assert_eq!(response.status().as_u16(), 429);
        let header = |r: &Response, name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(
            header(&response, "ratelimit-policy").as_deref(),
            Some("\"write_user\";q=2;w=60")
        );
        assert_eq!(header(&response, "retry-after").as_deref(), Some("30"));
        assert!(header(&mut response, "ratelimit").is_some_and(|v| v.contains("r=0")));
    }

    /// A user's frames share one budget however many sockets send them; another user has
    /// their own.
    #[test]
    fn a_users_frames_share_one_budget() {
        let limits = RateLimits::new(RateLimitConfig {
            ws_frames_per_user: Quota::new(3, Duration::from_secs(60)),
            ..RateLimitConfig::default()
        });
        let (ann, bob) = (Uuid::now_v7(), Uuid::now_v7());
        assert!((0..3).all(|_| limits.ws_frame(ann)));
        assert!(!limits.ws_frame(ann));
        assert!(limits.ws_frame(bob));
    }

    /// A client rotating through the addresses of its IPv6 /64 shares one budget; another
    /// /64 has its own.
    #[test]
    fn an_ipv6_client_is_limited_by_its_64() {
        let limits = RateLimits::new(RateLimitConfig {
            auth_per_ip: Quota::new(2, Duration::from_secs(60)),
            ..RateLimitConfig::default()
        });
        let login = |ip: &str| limits.check_http(RouteClass::Auth, ip, None).taken.allowed;
        assert!(login("2001:db8:1:2::1"));
        assert!(login("2001:db8:1:2::2"));
        assert!(
            !login("2001:db8:1:2:ffff::3"),
            "a third address of the same /64"
        );
        assert!(login("2001:db8:1:3::1"), "another /64");
        // IPv4 addresses stay apart.
        assert!(login("192.0.2.1") && login("192.0.2.1") && login("192.0.2.2"));
    }
}
