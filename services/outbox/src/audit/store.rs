//! The `audit.records` table: batch inserts that ignore records already stored, and keyset
//! reads newest first.

use mesh_contracts::audit::AuditRecord;
use sqlx::{FromRow, PgPool, Postgres, QueryBuilder};
use time::OffsetDateTime;
use uuid::Uuid;

use super::query::AuditQuery;

const COLUMNS: &str = "id, at, actor_id, session_id, action, method, path, target, status, \
                       result, client_ip, request_id";

#[derive(FromRow)]
struct Row {
    id: Uuid,
    at: OffsetDateTime,
    actor_id: Option<Uuid>,
    session_id: Option<Uuid>,
    action: String,
    method: String,
    path: String,
    target: Option<String>,
    status: i32,
    result: String,
    client_ip: Option<String>,
    request_id: String,
}

impl From<Row> for AuditRecord {
    fn from(row: Row) -> Self {
        AuditRecord {
            id: row.id,
            at: row.at,
            actor_id: row.actor_id,
            session_id: row.session_id,
            action: row.action,
            method: row.method,
            path: row.path,
            target: row.target,
            status: u16::try_from(row.status).unwrap_or_default(),
            result: row.result,
            client_ip: row.client_ip,
            request_id: row.request_id,
        }
    }
}

/// Inserts `records` in one statement; records already stored (a redelivery) are skipped.
/// Returns how many were new.
pub async fn insert(pool: &PgPool, records: &[AuditRecord]) -> sqlx::Result<u64> {
    let column = |field: fn(&AuditRecord) -> Option<&str>| -> Vec<Option<&str>> {
        records.iter().map(field).collect()
    };
    let ids: Vec<Uuid> = records.iter().map(|r| r.id).collect();
    let at: Vec<OffsetDateTime> = records.iter().map(|r| r.at).collect();
    let actors: Vec<Option<Uuid>> = records.iter().map(|r| r.actor_id).collect();
    let sessions: Vec<Option<Uuid>> = records.iter().map(|r| r.session_id).collect();
    let statuses: Vec<i32> = records.iter().map(|r| i32::from(r.status)).collect();
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO audit.records ({COLUMNS}) \
         SELECT * FROM UNNEST($1::uuid[], $2::timestamptz[], $3::uuid[], $4::uuid[], \
                              $5::text[], $6::text[], $7::text[], $8::text[], $9::int4[], \
                              $10::text[], $11::text[], $12::text[]) \
         ON CONFLICT (id) DO NOTHING"
    )))
    .bind(&ids)
    .bind(&at)
    .bind(&actors)
    .bind(&sessions)
    .bind(column(|r| Some(&r.action)))
    .bind(column(|r| Some(&r.method)))
    .bind(column(|r| Some(&r.path)))
    .bind(column(|r| r.target.as_deref()))
    .bind(&statuses)
    .bind(column(|r| Some(&r.result)))
    .bind(column(|r| r.client_ip.as_deref()))
    .bind(column(|r| Some(&r.request_id)))
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// The records `query` selects, newest first: one more than its page when more follow.
pub async fn list(pool: &PgPool, query: &AuditQuery) -> sqlx::Result<Vec<AuditRecord>> {
    let mut sql: QueryBuilder<Postgres> =
        QueryBuilder::new(format!("SELECT {COLUMNS} FROM audit.records WHERE TRUE"));
    if let Some(actor) = query.actor {
        sql.push(" AND actor_id = ").push_bind(actor);
    }
    if let Some(action) = &query.action {
        sql.push(" AND action = ").push_bind(action.clone());
    }
    if let Some(from) = query.from {
        sql.push(" AND at >= ").push_bind(from);
    }
    if let Some(to) = query.to {
        sql.push(" AND at < ").push_bind(to);
    }
    if let Some(after) = query.page.after {
        sql.push(" AND id < ").push_bind(after);
    }
    sql.push(" ORDER BY id DESC LIMIT ")
        .push_bind(query.page.fetch());
    let rows: Vec<Row> = sql.build_query_as().fetch_all(pool).await?;
    Ok(rows.into_iter().map(AuditRecord::from).collect())
}
