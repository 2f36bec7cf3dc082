//! Role rows: named permission sets, built-in or created by an administrator.

use mesh_contracts::rbac::RoleInfo;
use sqlx::{FromRow, PgConnection, PgExecutor};

#[derive(Debug, Clone, FromRow)]
pub struct RoleRow {
    pub name: String,
    pub description: String,
    pub permissions: Vec<String>,
    pub builtin: bool,
}

impl RoleRow {
    pub fn info(&self) -> RoleInfo {
        RoleInfo {
            name: self.name.clone(),
            description: self.description.clone(),
            permissions: self.permissions.clone(),
            builtin: self.builtin,
        }
    }
}

const COLUMNS: &str = "name, description, permissions, builtin";

#[tracing::instrument(name = "db.roles.list", skip_all)]
pub async fn list(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<RoleRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM users.roles ORDER BY builtin DESC, name"
    )))
    .fetch_all(db)
    .await
}

/// The roles among `names` that exist.
#[tracing::instrument(name = "db.roles.named", skip_all)]
pub async fn named(db: impl PgExecutor<'_>, names: &[String]) -> sqlx::Result<Vec<RoleRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM users.roles WHERE name = ANY($1) ORDER BY name"
    )))
    .bind(names)
    .fetch_all(db)
    .await
}

/// Inserts a role; `None` when the name is taken.
#[tracing::instrument(name = "db.roles.insert", skip_all)]
pub async fn insert(
    conn: &mut PgConnection,
    name: &str,
    description: &str,
    permissions: &[String],
) -> sqlx::Result<Option<RoleRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO users.roles (name, description, permissions) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO NOTHING RETURNING {COLUMNS}"
    )))
    .bind(name)
    .bind(description)
    .bind(permissions)
    .fetch_optional(conn)
    .await
}

/// Locks a role row until the transaction ends.
#[tracing::instrument(name = "db.roles.lock", skip_all)]
pub async fn lock(conn: &mut PgConnection, name: &str) -> sqlx::Result<Option<RoleRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM users.roles WHERE name = $1 FOR UPDATE"
    )))
    .bind(name)
    .fetch_optional(conn)
    .await
}

#[tracing::instrument(name = "db.roles.update", skip_all)]
pub async fn update(
    conn: &mut PgConnection,
    name: &str,
    description: &str,
    permissions: &[String],
) -> sqlx::Result<RoleRow> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE users.roles SET description = $2, permissions = $3, updated_at = now()
         WHERE name = $1 RETURNING {COLUMNS}"
    )))
    .bind(name)
    .bind(description)
    .bind(permissions)
    .fetch_one(conn)
    .await
}

#[tracing::instrument(name = "db.roles.delete", skip_all)]
pub async fn delete(conn: &mut PgConnection, name: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM users.roles WHERE name = $1 AND NOT builtin")
        .bind(name)
        .execute(conn)
        .await
        .map(|_| ())
}
