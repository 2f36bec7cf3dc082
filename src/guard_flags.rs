//! Flags of the edge's defences (issue #13): idempotency keys and trusted proxies, parsed
//! into the edge's `GuardConfig`. Every problem is reported at once.

use clap::Args;
use mesh_edge::{Cidr, GuardConfig};

/// Raw values of the edge's defences as given.
#[derive(Debug, Clone, Default, Args)]
pub struct GuardFlags {
    /// How long the response to a request with an `Idempotency-Key` is replayed (at most 24h).
    #[arg(long, env = "MESH_IDEMPOTENCY_TTL", default_value = "24h")]
    pub idempotency_ttl: String,
    /// How long an unfinished idempotent request holds its key (a crashed edge's request).
    #[arg(long, env = "MESH_IDEMPOTENCY_LEASE", default_value = "30s")]
    pub idempotency_lease: String,
    /// Comma-separated CIDRs of proxies whose `Forwarded`/`X-Forwarded-For` are believed.
    #[arg(long, env = "MESH_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,
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
        if problems.is_empty() {
            Ok(guard)
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
    fn defaults_parse() {
        let guard = flags(&[]).parse().unwrap();
        assert_eq!(guard.idempotency.ttl.as_secs(), 24 * 3600);
        assert!(guard.trusted_proxies.is_empty());
    }

    #[test]
    fn every_bad_flag_is_reported() {
        let problems = flags(&[
            "--idempotency-ttl=48h",
            "--idempotency-lease=0s",
            "--trusted-proxies=10.0.0.0/8,bogus",
        ])
        .parse()
        .unwrap_err()
        .join("\n");
        for name in [
            "MESH_IDEMPOTENCY_TTL",
            "MESH_IDEMPOTENCY_LEASE",
            "MESH_TRUSTED_PROXIES",
        ] {
            assert!(problems.contains(name), "{name} in {problems}");
        }
    }
}
