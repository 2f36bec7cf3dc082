//! Usage quotas on the wire: the plans and their limits, a user's plan and overrides (set by a
//! holder of `quotas:write`), and the usage each counting service reports. Chat counts
//! messages per day; social counts groups owned, group size and friend requests per day.

use poem_openapi::{Enum, Object};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::rpc;
use crate::rpc::Service;

/// The plan of a user without one set.
pub const DEFAULT_PLAN: &str = "free";

/// A limited quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Enum)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
pub enum Metric {
    /// Chat messages stored per UTC day.
    MessagesPerDay,
    /// Groups the user owns now.
    GroupsOwned,
    /// Members of a group the user owns (its `max_members` may not exceed it).
    GroupSize,
    /// Friend requests sent per UTC day.
    FriendRequestsPerDay,
}

/// The limits of a plan, or a user's after overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Object)]
pub struct Limits {
    pub messages_per_day: u32,
    pub groups_owned: u32,
    pub group_size: u32,
    pub friend_requests_per_day: u32,
}

impl Limits {
    pub fn of(&self, metric: Metric) -> u32 {
        match metric {
            Metric::MessagesPerDay => self.messages_per_day,
            Metric::GroupsOwned => self.groups_owned,
            Metric::GroupSize => self.group_size,
            Metric::FriendRequestsPerDay => self.friend_requests_per_day,
        }
    }

    /// These limits with `overrides` applied.
    pub fn with(self, overrides: &LimitOverrides) -> Self {
        Self {
            messages_per_day: overrides.messages_per_day.unwrap_or(self.messages_per_day),
            groups_owned: overrides.groups_owned.unwrap_or(self.groups_owned),
            group_size: overrides.group_size.unwrap_or(self.group_size),
            friend_requests_per_day: overrides
                .friend_requests_per_day
                .unwrap_or(self.friend_requests_per_day),
        }
    }
}

/// The plans, by name.
pub const PLANS: &[(&str, Limits)] = &[
    (
        "free",
        Limits {
            messages_per_day: 100_000,
            groups_owned: 100,
            group_size: 500,
            friend_requests_per_day: 1_000,
        },
    ),
    (
        "pro",
        Limits {
            messages_per_day: 1_000_000,
            groups_owned: 1_000,
            group_size: 2_000,
            friend_requests_per_day: 10_000,
        },
    ),
];

/// The limits of plan `name`, if there is one.
pub fn plan(name: &str) -> Option<Limits> {
    PLANS.iter().find(|(n, _)| *n == name).map(|(_, l)| *l)
}

/// A user's limits: their plan's (the default plan's when it is unknown) with overrides.
pub fn resolve(plan_name: &str, overrides: &LimitOverrides) -> Limits {
    plan(plan_name)
        .or_else(|| plan(DEFAULT_PLAN))
        .expect("the default plan exists")
        .with(overrides)
}

/// How many of `wanted` more units fit under `limit` when `used` are spent: the `>=` rule
/// (nothing once `used >= limit`).
pub fn admissible(used: u64, wanted: u32, limit: u32) -> u32 {
    let room = u64::from(limit).saturating_sub(used);
    u32::try_from(room.min(u64::from(wanted))).unwrap_or(wanted)
}

/// Per-user limits that replace the plan's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Object)]
pub struct LimitOverrides {
    #[oai(validator(maximum(value = "1000000000")))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages_per_day: Option<u32>,
    #[oai(validator(maximum(value = "1000000")))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_owned: Option<u32>,
    #[oai(validator(maximum(value = "1000000")))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_size: Option<u32>,
    #[oai(validator(maximum(value = "1000000000")))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub friend_requests_per_day: Option<u32>,
}

/// Sets a user's plan and overrides (replacing earlier ones).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Object)]
pub struct QuotaSetting {
    /// A plan name (`free`, `pro`).
    #[oai(validator(max_length = 32))]
    pub plan: String,
    /// Absent: no overrides.
    #[oai(default)]
    #[serde(default)]
    pub overrides: LimitOverrides,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetQuotaRequest {
    pub user_id: Uuid,
    pub setting: QuotaSetting,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UsageRequest {
    pub user_id: Uuid,
}

/// One limited quantity: how much is used and the limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Object)]
pub struct UsageItem {
    pub metric: Metric,
    /// Today's count for per-day metrics; the current count otherwise (for `group_size`, the
    /// largest group the user owns).
    pub used: u64,
    pub limit: u32,
}

/// A user's usage and limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Object)]
pub struct Usage {
    pub user_id: Uuid,
    pub plan: String,
    pub overrides: LimitOverrides,
    pub items: Vec<UsageItem>,
}

/// A plan and its limits.
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct PlanInfo {
    pub name: String,
    pub limits: Limits,
    /// True for the plan of users without one set.
    pub default: bool,
}

rpc!(
    /// Admin: sets a user's plan and overrides for chat's metrics.
    ChatSetQuota, Service::Chat, "set_quota", SetQuotaRequest => crate::user::Empty
);
rpc!(
    /// A user's chat usage.
    ChatUsage, Service::Chat, "usage", UsageRequest => Usage
);
rpc!(
    /// Admin: sets a user's plan and overrides for social's metrics.
    SocialSetQuota, Service::Social, "set_quota", SetQuotaRequest => crate::user::Empty
);
rpc!(
    /// A user's social usage.
    SocialUsage, Service::Social, "usage", UsageRequest => Usage
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ge_rule_refuses_once_the_limit_is_used() {
        assert_eq!(admissible(0, 1, 1), 1);
        assert_eq!(admissible(1, 1, 1), 0);
        assert_eq!(admissible(9, 50, 10), 1);
        assert_eq!(admissible(12, 1, 10), 0);
        assert_eq!(admissible(0, 5, 0), 0);
        assert_eq!(admissible(0, 3, 10), 3);
    }

    #[test]
    fn overrides_replace_the_plans_limits_and_unknown_plans_fall_back() {
        let free = plan(DEFAULT_PLAN).unwrap();
        let mine = resolve(
            "pro",
            &LimitOverrides {
                messages_per_day: Some(3),
                ..Default::default()
            },
        );
        assert_eq!(mine.messages_per_day, 3);
        assert_eq!(mine.groups_owned, plan("pro").unwrap().groups_owned);
        assert_eq!(resolve("gone", &LimitOverrides::default()), free);
        assert_eq!(
            free.of(Metric::FriendRequestsPerDay),
            free.friend_requests_per_day
        );
    }
}
