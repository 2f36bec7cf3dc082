//! The brute-force rule of sign-ins: recent failures per account and per client address give
//! a progressive delay, then a temporary lock. Unknown phones are counted like known ones, so
//! neither delays nor locks tell whether a phone is registered. A known device (one holding a
//! device token of the account) is not held by its account's lock, so the owner can still sign
//! in while someone guesses their password from elsewhere.

use std::time::Duration;

/// Thresholds of the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginThrottle {
    /// Failures of an account before each attempt is delayed.
    pub delay_after: u32,
    /// Failures of an account that lock it (until the failures are forgotten).
    pub lock_after: u32,
    /// Failures from one client address that lock it out of every account.
    pub ip_lock_after: u32,
    /// The first delay; each further failure doubles it, up to `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self {
            delay_after: 3,
            lock_after: 10,
            ip_lock_after: 50,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(4),
        }
    }
}

/// What to do with a sign-in attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Verify the password after waiting this long (zero: at once).
    Proceed(Duration),
    /// Refuse without verifying.
    Locked,
}

/// Recent failures counted for one attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Failures {
    pub account: u32,
    pub ip: u32,
}

impl LoginThrottle {
    pub fn judge(&self, failures: Failures, known_device: bool) -> Attempt {
        if failures.ip >= self.ip_lock_after {
            return Attempt::Locked;
        }
        if known_device {
            return Attempt::Proceed(Duration::ZERO);
        }
        if failures.account >= self.lock_after {
            return Attempt::Locked;
        }
        let over = failures.account.saturating_sub(self.delay_after);
        if failures.account < self.delay_after {
            return Attempt::Proceed(Duration::ZERO);
        }
        let delay = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(over.min(16)))
            .min(self.max_delay);
        Attempt::Proceed(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(n: u32) -> Failures {
        Failures { account: n, ip: 0 }
    }

    #[test]
    fn failures_delay_progressively_then_lock() {
        let rule = LoginThrottle::default();
        let ms = Duration::from_millis;
        assert_eq!(rule.judge(account(0), false), Attempt::Proceed(ms(0)));
        assert_eq!(rule.judge(account(2), false), Attempt::Proceed(ms(0)));
        assert_eq!(rule.judge(account(3), false), Attempt::Proceed(ms(250)));
        assert_eq!(rule.judge(account(4), false), Attempt::Proceed(ms(500)));
        assert_eq!(rule.judge(account(9), false), Attempt::Proceed(ms(4000)));
        assert_eq!(rule.judge(account(10), false), Attempt::Locked);
    }

    #[test]
    fn a_known_device_passes_the_account_lock_but_not_the_address_lock() {
        let rule = LoginThrottle::default();
        assert_eq!(
            rule.judge(account(100), true),
            Attempt::Proceed(Duration::ZERO)
        );
        let storm = Failures { account: 0, ip: 50 };
        assert_eq!(rule.judge(storm, true), Attempt::Locked);
        assert_eq!(rule.judge(storm, false), Attempt::Locked);
    }
}
