//! Usage quotas, shared by the services that count something: a user's plan and overrides in
//! `<schema>.quota_settings`, and per-day counters in `<schema>.usage_daily` charged inside the
//! transaction of the effect they count (the row lock on the counter makes the `>=` check
//! race-free; the effect's own unique row makes a retry free).

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

/// Charges up to `wanted` units of a per-day `metric` to `user` today (UTC) in `conn`'s
/// transaction and answers how many fit under `limit`. The counter row stays locked until
/// the transaction ends, so concurrent charges of one user are decided one after another.
pub async fn charge_today(
    conn: &mut PgConnection,
    schema: &str,
    user: Uuid,
    metric: Metric,
    wanted: u32,
    limit: u32,
) -> sqlx::Result<u32> {
    let name = metric_name(metric);
    let used: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {schema}.usage_daily (user_id, day, metric, used)
         VALUES ($1, (now() AT TIME ZONE 'utc')::date, $2, 0)
         ON CONFLICT (user_id, day, metric) DO UPDATE SET used = {schema}.usage_daily.used
         RETURNING used"
    )))
    .bind(user)
    .bind(name)
    .fetch_one(&mut *conn)
    .await?;
    let granted = usage::admissible(u64::try_from(used).unwrap_or(0), wanted, limit);
    if granted > 0 {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {schema}.usage_daily SET used = used + $3
             WHERE user_id = $1 AND day = (now() AT TIME ZONE 'utc')::date AND metric = $2"
        )))
        .bind(user)
        .bind(name)
        .bind(i64::from(granted))
        .execute(conn)
        .await?;
    }
    Ok(granted)
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
