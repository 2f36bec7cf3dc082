//! Usage quotas, shared by the services that count something: a user's plan and overrides in
//! `<schema>.quota_settings`, and per-day counters in `<schema>.usage_daily` charged inside the
//! transaction of the effect they count (the row lock on the counter makes the `>=` check
//! race-free; the effect's own unique row makes a retry free).

use std::collections::{BTreeMap, HashMap};

use mesh_contracts::usage::{
    self, DEFAULT_PLAN, LimitOverrides, Limits, Metric, QuotaSetting, SetQuotaRequest, Usage,
    UsageItem,
};
use mesh_contracts::user::Empty;
use mesh_contracts::{ErrorCode, ServiceError};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// The wire name of a metric, as the counters table keeps it.
fn metric_name(metric: Metric) -> &'static str {
    match metric {
        Metric::MessagesPerDay => "messages_per_day",
        Metric::GroupsOwned => "groups_owned",
        Metric::GroupSize => "group_size",
        Metric::FriendRequestsPerDay => "friend_requests_per_day",
    }
}

/// A user's plan, overrides and the limits they add up to.
pub async fn setting(
    db: impl PgExecutor<'_>,
    schema: &str,
    user: Uuid,
) -> sqlx::Result<(QuotaSetting, Limits)> {
    let row: Option<(String, sqlx::types::Json<LimitOverrides>)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT plan, overrides FROM {schema}.quota_settings WHERE user_id = $1"
        )))
        .bind(user)
        .fetch_optional(db)
        .await?;
    let setting = row.map_or_else(
        || QuotaSetting {
            plan: DEFAULT_PLAN.to_owned(),
            overrides: LimitOverrides::default(),
        },
        |(plan, overrides)| QuotaSetting {
            plan,
            overrides: overrides.0,
        },
    );
    let limits = usage::resolve(&setting.plan, &setting.overrides);
    Ok((setting, limits))
}

/// Checks a setting an administrator sends: the plan must exist.
pub fn check_setting(setting: &QuotaSetting) -> Result<(), ServiceError> {
    if usage::plan(&setting.plan).is_none() {
        return Err(ServiceError::new(
            ErrorCode::ValidationFailed,
            format!("plan: no plan named {:?}", setting.plan),
        ));
    }
    Ok(())
}

/// Replaces a user's plan and overrides.
pub async fn set(
    db: impl PgExecutor<'_>,
    schema: &str,
    user: Uuid,
    setting: &QuotaSetting,
) -> sqlx::Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {schema}.quota_settings (user_id, plan, overrides) VALUES ($1, $2, $3)
         ON CONFLICT (user_id) DO UPDATE SET plan = $2, overrides = $3, updated_at = now()"
    )))
    .bind(user)
    .bind(&setting.plan)
    .bind(sqlx::types::Json(&setting.overrides))
    .execute(db)
    .await
    .map(|_| ())
}

/// One user's wish to use `wanted` more units of a per-day metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    pub user: Uuid,
    pub wanted: u32,
}

/// What a charge got: how many units fit, under which limit (the user's plan and overrides).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted {
    pub granted: u32,
    pub limit: u32,
}

/// Charges each of `charges` to its user's per-day `metric` today (UTC) in `conn`'s
/// transaction, each up to the limit the user's plan and overrides give, and answers what each
/// got, in order (a user named twice is charged twice, one after the other).
///
/// One statement in the usual case: it adds everything wanted to the users' counters
/// (creating and locking them in user-id order, so concurrent charges never deadlock and are
/// decided one after another, and the `>=` check cannot be raced) and reads their settings;
/// the grants are then decided against the counts before the addition. Only when something
/// did not fit does a second statement take back what was not granted, before the
/// transaction commits.
pub async fn charge_today(
    conn: &mut PgConnection,
    schema: &str,
    metric: Metric,
    charges: &[Charge],
) -> sqlx::Result<Vec<Granted>> {
    let mut wanted: BTreeMap<Uuid, i64> = BTreeMap::new();
    for charge in charges {
        *wanted.entry(charge.user).or_default() += i64::from(charge.wanted);
    }
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let name = metric_name(metric);
    let (users, amounts): (Vec<Uuid>, Vec<i64>) = wanted.iter().map(|(u, n)| (*u, *n)).unzip();
    type Row = (
        Uuid,
        i64,
        Option<String>,
        Option<sqlx::types::Json<LimitOverrides>>,
    );
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {schema}.usage_daily AS d (user_id, day, metric, used)
         SELECT u, (now() AT TIME ZONE 'utc')::date, $2, n
         FROM UNNEST($1::uuid[], $3::int8[]) AS w(u, n) ORDER BY u
         ON CONFLICT (user_id, day, metric) DO UPDATE SET used = d.used + EXCLUDED.used
         RETURNING d.user_id, d.used,
           (SELECT s.plan FROM {schema}.quota_settings s WHERE s.user_id = d.user_id),
           (SELECT s.overrides FROM {schema}.quota_settings s WHERE s.user_id = d.user_id)"
    )))
    .bind(&users)
    .bind(name)
    .bind(&amounts)
    .fetch_all(&mut *conn)
    .await?;
    let counters: HashMap<Uuid, Counter> = rows
        .into_iter()
        .map(|(user, used_after, plan, overrides)| {
            let overrides = overrides.map(|o| o.0).unwrap_or_default();
            let limits = usage::resolve(plan.as_deref().unwrap_or(DEFAULT_PLAN), &overrides);
            let before = used_after - wanted.get(&user).copied().unwrap_or(0);
            let counter = Counter {
                used: u64::try_from(before).unwrap_or(0),
                limit: limits.of(metric),
            };
            (user, counter)
        })
        .collect();
    let (granted, added) = grant(charges, counters);
    let added: HashMap<Uuid, u64> = added.into_iter().collect();
    let (over, back): (Vec<Uuid>, Vec<i64>) = wanted
        .iter()
        .map(|(user, n)| {
            let got = i64::try_from(added.get(user).copied().unwrap_or(0)).unwrap_or(i64::MAX);
            (*user, n - got)
        })
        .filter(|(_, back)| *back > 0)
        .unzip();
    if !over.is_empty() {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {schema}.usage_daily d SET used = d.used - g.n
             FROM UNNEST($1::uuid[], $3::int8[]) AS g(u, n)
             WHERE d.user_id = g.u AND d.day = (now() AT TIME ZONE 'utc')::date AND d.metric = $2"
        )))
        .bind(&over)
        .bind(name)
        .bind(&back)
        .execute(conn)
        .await?;
    }
    Ok(granted)
}

/// A user's counter as a charge finds it: used today, and their limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counter {
    used: u64,
    limit: u32,
}

/// Decides `charges` in order against `counters` (a user without one gets nothing): what each
/// charge got, and how much each user's counter grew (only users that grew).
fn grant(
    charges: &[Charge],
    mut counters: HashMap<Uuid, Counter>,
) -> (Vec<Granted>, Vec<(Uuid, u64)>) {
    let mut added: HashMap<Uuid, u64> = HashMap::new();
    let granted = charges
        .iter()
        .map(|charge| {
            let counter = counters
                .entry(charge.user)
                .or_insert(Counter { used: 0, limit: 0 });
            let granted = usage::admissible(counter.used, charge.wanted, counter.limit);
            counter.used += u64::from(granted);
            if granted > 0 {
                *added.entry(charge.user).or_default() += u64::from(granted);
            }
            Granted {
                granted,
                limit: counter.limit,
            }
        })
        .collect();
    (granted, added.into_iter().collect())
}

/// Today's count of a per-day metric.
pub async fn used_today(
    db: impl PgExecutor<'_>,
    schema: &str,
    user: Uuid,
    metric: Metric,
) -> sqlx::Result<u64> {
    let used: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT used FROM {schema}.usage_daily
         WHERE user_id = $1 AND day = (now() AT TIME ZONE 'utc')::date AND metric = $2"
    )))
    .bind(user)
    .bind(metric_name(metric))
    .fetch_optional(db)
    .await?;
    Ok(used.map_or(0, |u| u64::try_from(u).unwrap_or(0)))
}

/// The refusal of work over a limit.
pub fn exceeded(metric: Metric, limit: u32) -> ServiceError {
    ServiceError::new(
        ErrorCode::QuotaExceeded,
        format!("{} limit of {limit} reached", metric_name(metric)),
    )
}

/// `set_quota`: validates and stores an administrator's setting (the edge checked
/// `quotas:write`; only edges may call it).
pub async fn apply_setting(
    pool: &sqlx::PgPool,
    schema: &str,
    req: &SetQuotaRequest,
) -> Result<Empty, ServiceError> {
    check_setting(&req.setting)?;
    set(pool, schema, req.user_id, &req.setting)
        .await
        .map_err(crate::db_error)?;
    Ok(Empty {})
}

/// `usage`: the user's plan, overrides and the `used` counts against their limits.
pub async fn report(
    pool: &sqlx::PgPool,
    schema: &str,
    user: Uuid,
    used: &[(Metric, u64)],
) -> Result<Usage, ServiceError> {
    let (setting, limits) = self::setting(pool, schema, user)
        .await
        .map_err(crate::db_error)?;
    Ok(Usage {
        user_id: user,
        plan: setting.plan,
        overrides: setting.overrides,
        items: used
            .iter()
            .map(|(metric, used)| UsageItem {
                metric: *metric,
                used: *used,
                limit: limits.of(*metric),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_are_decided_in_order_and_a_user_named_twice_is_charged_twice() {
        let (ann, bob, nobody) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let counters = HashMap::from([
            (ann, Counter { used: 7, limit: 10 }),
            (
                bob,
                Counter {
                    used: 10,
                    limit: 10,
                },
            ),
        ]);
        let charges = [
            Charge {
                user: ann,
                wanted: 2,
            },
            Charge {
                user: bob,
                wanted: 1,
            },
            Charge {
                user: ann,
                wanted: 2,
            },
            Charge {
                user: nobody,
                wanted: 1,
            },
        ];
        let (granted, mut added) = grant(&charges, counters);
        let got: Vec<(u32, u32)> = granted.iter().map(|g| (g.granted, g.limit)).collect();
        assert_eq!(got, vec![(2, 10), (0, 10), (1, 10), (0, 0)]);
        added.sort();
        assert_eq!(added, vec![(ann, 3)]);
    }
}
