//! Flags of the mesh's defences (issue #13): idempotency keys, trusted proxies and rate
//! limits (the edge's `GuardConfig`), and the sign-in throttle (the user service's
//! `LoginThrottle`). Every problem is reported at once.

use clap::Args;
use mesh_edge::{Cidr, ForwardedHeader, GuardConfig, Quota, RateLimitConfig};
use mesh_user::LoginThrottle;

/// Raw values of the edge's defences as given.
#[derive(Debug, Clone, Default, Args)]
pub struct GuardFlags {
    /// How long the response to a request with an `Idempotency-Key` is replayed (at most 24h).
    #[arg(long, env = "MESH_IDEMPOTENCY_TTL", default_value = "24h")]
    pub idempotency_ttl: String,
    /// How long an unfinished idempotent request holds its key (a crashed edge's request).
    #[arg(long, env = "MESH_IDEMPOTENCY_LEASE", default_value = "30s")]
    pub idempotency_lease: String,
    /// Comma-separated CIDRs of proxies whose forwarding header is believed.
    #[arg(long, env = "MESH_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,
    /// The forwarding header those proxies write: `x-forwarded-for` or `forwarded`.
    #[arg(long, env = "MESH_FORWARDED_HEADER", default_value = "x-forwarded-for")]
    pub forwarded_header: String,
    /// Register, login and refresh per client address: `<burst>/<period>`.
    #[arg(long, env = "MESH_RATE_AUTH_IP", default_value = "30/1m")]
    pub rate_auth_ip: String,
    /// Other mutating requests per client address.
    #[arg(long, env = "MESH_RATE_WRITE_IP", default_value = "600/1m")]
    pub rate_write_ip: String,
    /// Other mutating requests per user.
    #[arg(long, env = "MESH_RATE_WRITE_USER", default_value = "120/1m")]
    pub rate_write_user: String,
    /// Reads per client address.
    #[arg(long, env = "MESH_RATE_READ_IP", default_value = "1200/1m")]
    pub rate_read_ip: String,
    /// Reads per user.
    #[arg(long, env = "MESH_RATE_READ_USER", default_value = "600/1m")]
    pub rate_read_user: String,
    /// Chat messages per user (REST and WebSocket).
    #[arg(long, env = "MESH_RATE_CHAT_SENDS", default_value = "30/10s")]
    pub rate_chat_sends: String,
    /// Client frames per WebSocket connection.
    #[arg(long, env = "MESH_RATE_WS_FRAMES", default_value = "100/10s")]
    pub rate_ws_frames: String,
    /// Client frames per user, all their WebSocket connections to one edge together; empty:
    /// twice `MESH_RATE_WS_FRAMES`.
    #[arg(long, env = "MESH_RATE_WS_FRAMES_USER", default_value = "")]
    pub rate_ws_frames_user: String,
    /// Frames refused in a row before a flooding WebSocket is closed with 4029.
    #[arg(long, env = "MESH_WS_FLOOD_CLOSE_AFTER", default_value = "20")]
    pub ws_flood_close_after: String,
    /// Open WebSocket/SSE connections per user.
    #[arg(long, env = "MESH_MAX_CONNECTIONS_PER_USER", default_value = "10")]
    pub max_connections_per_user: String,
    /// Open WebSocket/SSE connections per client address.
    #[arg(long, env = "MESH_MAX_CONNECTIONS_PER_IP", default_value = "200")]
    pub max_connections_per_ip: String,
    /// Comma-separated origins whose pages may call the API (CORS); `*` for any.
    #[arg(long, env = "MESH_CORS_ALLOWED_ORIGINS", default_value = "")]
    pub cors_allowed_origins: String,
    /// Largest total size of a request's headers, in bytes (431 above it).
    #[arg(long, env = "MESH_MAX_HEADER_BYTES", default_value = "16384")]
    pub max_header_bytes: String,
    /// Answers say `X-Token-Refresh-Required: true` when the access token has less left.
    #[arg(long, env = "MESH_TOKEN_REFRESH_HINT", default_value = "60s")]
    pub token_refresh_hint: String,
    /// Recent failed sign-ins of an account before each attempt is delayed.
    #[arg(long, env = "MESH_LOGIN_DELAY_AFTER", default_value = "3")]
    pub login_delay_after: String,
    /// Recent failed sign-ins that lock an account (for 15 min after the last one).
    #[arg(long, env = "MESH_LOGIN_LOCK_AFTER", default_value = "10")]
    pub login_lock_after: String,
    /// Recent failed sign-ins from one client address that lock it out.
    #[arg(long, env = "MESH_LOGIN_IP_LOCK_AFTER", default_value = "50")]
    pub login_ip_lock_after: String,
}

/// The longest the idempotency bucket keeps anything.
const MAX_IDEMPOTENCY_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

fn duration(problems: &mut Vec<String>, name: &str, raw: &str) -> Option<std::time::Duration> {
    match humantime::parse_duration(raw) {
        Ok(d) if !d.is_zero() => Some(d),
        Ok(_) => {
            problems.push(format!("{name}: must be greater than zero"));
            None
        }
        Err(err) => {
            problems.push(format!("{name}: {err}"));
            None
        }
    }
}

fn quota(problems: &mut Vec<String>, name: &str, raw: &str, into: &mut Quota) {
    match Quota::parse(raw) {
        Ok(parsed) => *into = parsed,
        Err(err) => problems.push(format!("{name}: {err}")),
    }
}

fn count<T: std::str::FromStr>(problems: &mut Vec<String>, name: &str, raw: &str, into: &mut T) {
    match raw.trim().parse::<T>() {
        Ok(parsed) => *into = parsed,
        Err(_) => problems.push(format!("{name}: not a whole number: {raw:?}")),
    }
}

/// Comma-separated values, blanks dropped.
pub fn list(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(',').map(str::trim).filter(|s| !s.is_empty())
}

impl GuardFlags {
    pub fn parse(&self) -> Result<GuardConfig, Vec<String>> {
        let mut problems = Vec::new();
        let mut guard = GuardConfig::default();
        if let Some(ttl) = duration(&mut problems, "MESH_IDEMPOTENCY_TTL", &self.idempotency_ttl) {
            if ttl > MAX_IDEMPOTENCY_TTL {
                problems.push("MESH_IDEMPOTENCY_TTL: at most 24h (the bucket's age)".into());
            }
            guard.idempotency.ttl = ttl;
        }
        if let Some(lease) = duration(
            &mut problems,
            "MESH_IDEMPOTENCY_LEASE",
            &self.idempotency_lease,
        ) {
            guard.idempotency.lease = lease;
        }
        guard.trusted_proxies = list(&self.trusted_proxies)
            .filter_map(|raw| {
                Cidr::parse(raw)
                    .map_err(|err| problems.push(format!("MESH_TRUSTED_PROXIES: {err}")))
                    .ok()
            })
            .collect();
        match ForwardedHeader::parse(&self.forwarded_header) {
            Ok(header) => guard.forwarded_header = header,
            Err(err) => problems.push(format!("MESH_FORWARDED_HEADER: {err}")),
        }
        guard.cors_allowed_origins = list(&self.cors_allowed_origins)
            .map(|o| o.trim_end_matches('/').to_owned())
            .collect();
        count(
            &mut problems,
            "MESH_MAX_HEADER_BYTES",
            &self.max_header_bytes,
            &mut guard.max_header_bytes,
        );
        if guard.max_header_bytes < 1024 {
            problems.push("MESH_MAX_HEADER_BYTES: at least 1024".into());
        }
        if let Some(hint) = duration(
            &mut problems,
            "MESH_TOKEN_REFRESH_HINT",
            &self.token_refresh_hint,
        ) {
            guard.token_refresh_hint = hint;
        }
        let limits = &mut guard.limits;
        for (name, raw, into) in [
            (
                "MESH_RATE_AUTH_IP",
                &self.rate_auth_ip,
                &mut limits.auth_per_ip,
            ),
            (
                "MESH_RATE_WRITE_IP",
                &self.rate_write_ip,
                &mut limits.write_per_ip,
            ),
            (
                "MESH_RATE_WRITE_USER",
                &self.rate_write_user,
                &mut limits.write_per_user,
            ),
            (
                "MESH_RATE_READ_IP",
                &self.rate_read_ip,
                &mut limits.read_per_ip,
            ),
            (
                "MESH_RATE_READ_USER",
                &self.rate_read_user,
                &mut limits.read_per_user,
            ),
            (
                "MESH_RATE_CHAT_SENDS",
                &self.rate_chat_sends,
                &mut limits.chat_sends_per_user,
            ),
            (
                "MESH_RATE_WS_FRAMES",
                &self.rate_ws_frames,
                &mut limits.ws_frames,
            ),
        ] {
            quota(&mut problems, name, raw, into);
        }
        limits.ws_frames_per_user = RateLimitConfig::ws_frames_per_user_for(limits.ws_frames);
        if !self.rate_ws_frames_user.trim().is_empty() {
            quota(
                &mut problems,
                "MESH_RATE_WS_FRAMES_USER",
                &self.rate_ws_frames_user,
                &mut limits.ws_frames_per_user,
            );
        }
        count(
            &mut problems,
            "MESH_WS_FLOOD_CLOSE_AFTER",
            &self.ws_flood_close_after,
            &mut limits.ws_flood_close_after,
        );
        count(
            &mut problems,
            "MESH_MAX_CONNECTIONS_PER_USER",
            &self.max_connections_per_user,
            &mut limits.connections_per_user,
        );
        count(
            &mut problems,
            "MESH_MAX_CONNECTIONS_PER_IP",
            &self.max_connections_per_ip,
            &mut limits.connections_per_ip,
        );
        if problems.is_empty() {
            Ok(guard)
        } else {
            Err(problems)
        }
    }
}

impl GuardFlags {
    /// The sign-in throttle of the user service.
    pub fn login_throttle(&self) -> Result<LoginThrottle, Vec<String>> {
        let mut problems = Vec::new();
        let mut throttle = LoginThrottle::default();
        count(
            &mut problems,
            "MESH_LOGIN_DELAY_AFTER",
            &self.login_delay_after,
            &mut throttle.delay_after,
        );
        count(
            &mut problems,
            "MESH_LOGIN_LOCK_AFTER",
            &self.login_lock_after,
            &mut throttle.lock_after,
        );
        count(
            &mut problems,
            "MESH_LOGIN_IP_LOCK_AFTER",
            &self.login_ip_lock_after,
            &mut throttle.ip_lock_after,
        );
        if throttle.lock_after == 0 || throttle.ip_lock_after == 0 {
            problems.push("MESH_LOGIN_LOCK_AFTER, MESH_LOGIN_IP_LOCK_AFTER: at least 1".into());
        }
        if problems.is_empty() {
            Ok(throttle)
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        guard: GuardFlags,
    }

    fn flags(args: &[&str]) -> GuardFlags {
        Cli::try_parse_from(std::iter::once("mesh").chain(args.iter().copied()))
            .unwrap()
            .guard
    }

    #[test]
    fn defaults_parse_into_the_edge_defaults() {
        let guard = flags(&[]).parse().unwrap();
        let defaults = GuardConfig::default();
        assert_eq!(guard.idempotency.ttl, defaults.idempotency.ttl);
        assert_eq!(guard.idempotency.lease, defaults.idempotency.lease);
        assert!(guard.trusted_proxies.is_empty());
        assert_eq!(guard.forwarded_header, ForwardedHeader::XForwardedFor);
        assert!(guard.cors_allowed_origins.is_empty());
        assert_eq!(guard.max_header_bytes, defaults.max_header_bytes);
        assert_eq!(guard.token_refresh_hint, defaults.token_refresh_hint);
        assert_eq!(
            format!("{:?}", guard.limits),
            format!("{:?}", defaults.limits)
        );
    }

    /// Unset, the per-user frame budget is twice the socket's, so lifting one lifts both.
    #[test]
    fn the_users_frame_budget_follows_the_sockets_unless_set() {
        let guard = flags(&["--rate-ws-frames=50/1s"]).parse().unwrap();
        assert_eq!(
            guard.limits.ws_frames_per_user,
            Quota::new(100, std::time::Duration::from_secs(1))
        );
        let guard = flags(&["--rate-ws-frames=50/1s", "--rate-ws-frames-user=60/1m"])
            .parse()
            .unwrap();
        assert_eq!(
            guard.limits.ws_frames_per_user,
            Quota::new(60, std::time::Duration::from_secs(60))
        );
    }

    #[test]
    fn every_bad_flag_is_reported() {
        let problems = flags(&[
            "--idempotency-ttl=48h",
            "--idempotency-lease=0s",
            "--trusted-proxies=10.0.0.0/8,bogus",
            "--forwarded-header=x-real-ip",
            "--rate-chat-sends=lots",
            "--rate-ws-frames-user=0/10s",
            "--max-connections-per-ip=-1",
        ])
        .parse()
        .unwrap_err()
        .join("\n");
        for name in [
            "MESH_IDEMPOTENCY_TTL",
            "MESH_IDEMPOTENCY_LEASE",
            "MESH_TRUSTED_PROXIES",
            "MESH_FORWARDED_HEADER",
            "MESH_RATE_CHAT_SENDS",
            "MESH_RATE_WS_FRAMES_USER",
            "MESH_MAX_CONNECTIONS_PER_IP",
        ] {
            assert!(problems.contains(name), "{name} in {problems}");
        }
    }
}
