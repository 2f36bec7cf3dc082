//! Token buckets: a quota (`burst` requests, refilled evenly over `period`) and the bucket of
//! one client under it. Pure arithmetic over instants, so it is tested without clocks.

use std::time::{Duration, Instant};

/// `burst` tokens, refilled from empty to full over `period`: `20/1m` allows a burst of 20 and
/// then one every 3 s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    pub burst: u32,
    pub period: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a quota like `20/1m` (a burst of 1 or more, then a period)")]
pub struct InvalidQuota(pub String);

impl Quota {
    pub const fn new(burst: u32, period: Duration) -> Self {
        Self { burst, period }
    }

    /// Parses `<burst>/<period>`, the period in humantime form (`10s`, `1m`, `1h`).
    pub fn parse(raw: &str) -> Result<Self, InvalidQuota> {
        let invalid = || InvalidQuota(raw.to_owned());
        let (burst, period) = raw.trim().split_once('/').ok_or_else(invalid)?;
        let burst = burst.trim().parse::<u32>().map_err(|_| invalid())?;
        let period = humantime::parse_duration(period.trim()).map_err(|_| invalid())?;
        if burst == 0 || period.is_zero() {
            return Err(invalid());
        }
        Ok(Self { burst, period })
    }

    fn per_second(&self) -> f64 {
        f64::from(self.burst) / self.period.as_secs_f64()
    }
}

impl std::fmt::Display for Quota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}",
            self.burst,
            humantime::format_duration(self.period)
        )
    }
}

/// What a bucket answered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Taken {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// Whole tokens left after this request.
    pub remaining: u32,
    /// When a refused request may retry (a token will be there); zero when allowed.
    pub retry_after: Duration,
    /// Until the bucket is full again.
    pub reset: Duration,
}

/// One client's bucket under a quota.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn full(quota: &Quota, now: Instant) -> Self {
        Self {
            tokens: f64::from(quota.burst),
            updated: now,
        }
    }

    /// Takes one token at `now` if there is one.
    pub fn take(&mut self, quota: &Quota, now: Instant) -> Taken {
        let rate = quota.per_second();
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(quota.burst));
        self.updated = now;
        let allowed = self.tokens >= 1.0;
        if allowed {
            self.tokens -= 1.0;
        }
        let retry_after = if allowed {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / rate)
        };
        Taken {
            allowed,
            remaining: self.tokens.floor() as u32,
            retry_after,
            reset: Duration::from_secs_f64((f64::from(quota.burst) - self.tokens) / rate),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_parse() {
        assert_eq!(
            Quota::parse("20/1m"),
            Ok(Quota::new(20, Duration::from_secs(60)))
        );
        assert_eq!(
            Quota::parse(" 5 / 10s "),
            Ok(Quota::new(5, Duration::from_secs(10)))
        );
        for bad in ["", "20", "0/1m", "20/0s", "x/1m", "20/soon", "-1/1m"] {
            assert!(Quota::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Quota::new(20, Duration::from_secs(60)).to_string(), "20/1m");
    }

    #[test]
    fn a_bucket_allows_its_burst_then_refills_evenly() {
        let quota = Quota::new(3, Duration::from_secs(3));
        let t0 = Instant::now();
        let mut bucket = TokenBucket::full(&quota, t0);
        for left in [2, 1, 0] {
            let taken = bucket.take(&quota, t0);
            assert!(taken.allowed);
            assert_eq!(taken.remaining, left);
        }
        let refused = bucket.take(&quota, t0);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Duration::from_secs(1));
        assert_eq!(refused.reset, Duration::from_secs(3));
        // Half a token later: still refused, half the wait left.
        let half = bucket.take(&quota, t0 + Duration::from_millis(500));
        assert!(!half.allowed);
        assert_eq!(half.retry_after, Duration::from_millis(500));
        assert!(bucket.take(&quota, t0 + Duration::from_secs(1)).allowed);
        // Long idle never fills past the burst.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(bucket.take(&quota, later).remaining, 2);
    }
}
