//! Account rows.

use mesh_contracts::user::{PublicUser, Sex, UserProfile};
use sqlx::{FromRow, PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::fields::AccountQuery;
use crate::domain::paging::Page;
use crate::domain::roles;

#[derive(Debug, Clone, FromRow)]
pub struct AccountRow {
    pub id: Uuid,
    pub phone: String,
    pub password_hash: String,
    pub nickname: String,
    pub avatar: Option<String>,
    pub sex: String,
    pub roles: Vec<String>,
    /// Direct grants, outside any role.
    pub permissions: Vec<String>,
    pub disabled: bool,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

const COLUMNS: &str = "id, phone, password_hash, nickname, avatar, sex, roles, permissions, disabled, created_at, updated_at";

pub fn sex_from_str(raw: &str) -> Sex {
    match raw {
        "male" => Sex::Male,
        "female" => Sex::Female,
        "other" => Sex::Other,
        _ => Sex::Unspecified,
    }
}

pub fn sex_to_str(sex: Sex) -> &'static str {
    match sex {
        Sex::Unspecified => "unspecified",
        Sex::Male => "male",
        Sex::Female => "female",
        Sex::Other => "other",
    }
}

impl AccountRow {
    /// Role names, `user` first.
    pub fn roles(&self) -> Vec<String> {
        roles::normalize(&self.roles)
    }

    pub fn profile(&self) -> UserProfile {
        UserProfile {
            id: self.id,
            phone: self.phone.clone(),
            nickname: self.nickname.clone(),
            avatar: self.avatar.clone(),
            sex: sex_from_str(&self.sex),
            roles: self.roles(),
            disabled: self.disabled,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }

    pub fn public(&self) -> PublicUser {
        PublicUser {
            id: self.id,
            nickname: self.nickname.clone(),
            avatar: self.avatar.clone(),
            sex: sex_from_str(&self.sex),
        }
    }
}

pub struct NewAccount<'a> {
    pub id: Uuid,
    pub phone: &'a str,
    pub password_hash: &'a str,
    pub nickname: &'a str,
    pub avatar: Option<&'a str>,
    pub sex: Sex,
    pub roles: Vec<String>,
}

#[tracing::instrument(name = "db.accounts.insert", skip_all)]
pub async fn insert(conn: &mut PgConnection, new: &NewAccount<'_>) -> sqlx::Result<AccountRow> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO users.accounts (id, phone, password_hash, nickname, avatar, sex, roles)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    )))
    .bind(new.id)
    .bind(new.phone)
    .bind(new.password_hash)
    .bind(new.nickname)
    .bind(new.avatar)
    .bind(sex_to_str(new.sex))
    .bind(&new.roles)
    .fetch_one(conn)
    .await
}

#[tracing::instrument(name = "db.accounts.by_id", skip_all)]
pub async fn by_id(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<AccountRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM users.accounts WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
}

#[tracing::instrument(name = "db.accounts.by_phone", skip_all)]
pub async fn by_phone(pool: &PgPool, phone: &str) -> sqlx::Result<Option<AccountRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM users.accounts WHERE phone = $1"
    )))
    .bind(phone)
    .fetch_optional(pool)
    .await
}

/// The fields of a profile update; `None` leaves a field unchanged.
pub struct ProfileChange<'a> {
    pub nickname: Option<&'a str>,
    /// `Some(None)` clears the avatar.
    pub avatar: Option<Option<&'a str>>,
    pub sex: Option<Sex>,
}

#[tracing::instrument(name = "db.accounts.update_profile", skip_all)]
pub async fn update_profile(
    conn: &mut PgConnection,
    id: Uuid,
    change: &ProfileChange<'_>,
) -> sqlx::Result<Option<AccountRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE users.accounts SET
             nickname = COALESCE($2, nickname),
             avatar = CASE WHEN $3 THEN $4 ELSE avatar END,
             sex = COALESCE($5, sex),
             updated_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(change.nickname)
    .bind(change.avatar.is_some())
    .bind(change.avatar.flatten())
    .bind(change.sex.map(sex_to_str))
    .fetch_optional(conn)
    .await
}

#[tracing::instrument(name = "db.accounts.set_disabled", skip_all)]
pub async fn set_disabled(
    conn: &mut PgConnection,
    id: Uuid,
    disabled: bool,
) -> sqlx::Result<Option<AccountRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE users.accounts SET disabled = $2, updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(disabled)
    .fetch_optional(conn)
    .await
}

#[tracing::instrument(name = "db.accounts.set_roles", skip_all)]
pub async fn set_roles(
    conn: &mut PgConnection,
    id: Uuid,
    roles: &[String],
) -> sqlx::Result<Option<AccountRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE users.accounts SET roles = $2, updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(roles)
    .fetch_optional(conn)
    .await
}

#[tracing::instrument(name = "db.accounts.set_permissions", skip_all)]
pub async fn set_permissions(
    conn: &mut PgConnection,
    id: Uuid,
    permissions: &[String],
) -> sqlx::Result<Option<AccountRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE users.accounts SET permissions = $2, updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(permissions)
    .fetch_optional(conn)
    .await
}

/// Locks an account row until the transaction ends (grants change one holder at a time).
#[tracing::instrument(name = "db.accounts.lock", skip_all)]
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<AccountRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM users.accounts WHERE id = $1 FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// How many enabled accounts hold `role` other than `except`, counted under a transaction
/// lock on the role so that two removals cannot both see the other holder.
#[tracing::instrument(name = "db.accounts.other_holders", skip_all)]
pub async fn other_enabled_holders(
    conn: &mut PgConnection,
    role: &str,
    except: Uuid,
) -> sqlx::Result<i64> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('users.role.' || $1, 0))")
        .bind(role)
        .execute(&mut *conn)
        .await?;
    sqlx::query_scalar(
        "SELECT count(*) FROM users.accounts WHERE $1 = ANY(roles) AND NOT disabled AND id <> $2",
    )
    .bind(role)
    .bind(except)
    .fetch_one(conn)
    .await
}

/// Takes `role` away from every account holding it; answers their ids.
#[tracing::instrument(name = "db.accounts.drop_role", skip_all)]
pub async fn drop_role(conn: &mut PgConnection, role: &str) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "UPDATE users.accounts SET roles = array_remove(roles, $1), updated_at = now()
         WHERE $1 = ANY(roles) RETURNING id",
    )
    .bind(role)
    .fetch_all(conn)
    .await
}

/// How to pick accounts for a listing.
pub enum Filter<'a> {
    Phone(&'a str),
    NicknameContains(&'a str),
    Ids(&'a [Uuid]),
    /// The administrators' listing: by state, and matching a search if one is given.
    Admin {
        disabled: Option<bool>,
        query: Option<&'a AccountQuery>,
    },
}

/// One page of accounts matching `filter`, ordered by id. Public searches skip disabled accounts.
#[tracing::instrument(name = "db.accounts.list", skip_all)]
pub async fn list(
    pool: &PgPool,
    filter: Filter<'_>,
    include_disabled: bool,
    page: Page,
) -> sqlx::Result<Vec<AccountRow>> {
    let condition = match filter {
        Filter::Phone(_) => "phone = $4",
        Filter::NicknameContains(_) => "nickname ILIKE $4 ESCAPE '\\'",
        Filter::Ids(_) => "id = ANY($4)",
        Filter::Admin { .. } => {
            "($4::boolean IS NULL OR disabled = $4)
             AND ($5::text IS NULL OR nickname ILIKE $5 ESCAPE '\\'
                  OR phone LIKE $6 ESCAPE '\\' OR id = $7)"
        }
    };
    let query = format!(
        "SELECT {COLUMNS} FROM users.accounts
         WHERE ($1::uuid IS NULL OR id > $1) AND ($2 OR NOT disabled) AND {condition}
         ORDER BY id LIMIT $3"
    );
    let q = sqlx::query_as(sqlx::AssertSqlSafe(query))
        .bind(page.after)
        .bind(include_disabled)
        .bind(page.fetch());
    let q = match filter {
        Filter::Phone(phone) => q.bind(phone.to_owned()),
        Filter::NicknameContains(part) => q.bind(contains_pattern(part)),
        Filter::Ids(ids) => q.bind(ids.to_vec()),
        Filter::Admin { disabled, query } => q
            .bind(disabled)
            .bind(query.map(|q| contains_pattern(q.text())))
            .bind(
                query
                    .and_then(AccountQuery::phone_prefix)
                    .map(|p| format!("{}%", escape_like(&p))),
            )
            .bind(query.and_then(AccountQuery::id)),
    };
    q.fetch_all(pool).await
}

/// A LIKE pattern matching `part` anywhere, literally.
fn contains_pattern(part: &str) -> String {
    format!("%{}%", escape_like(part))
}

/// Escapes LIKE wildcards so user input matches literally.
fn escape_like(raw: &str) -> String {
    raw.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(escape_like("a%b_c\\"), "a\\%b\\_c\\\\");
    }

    #[test]
    fn sex_round_trips() {
        for sex in [Sex::Unspecified, Sex::Male, Sex::Female, Sex::Other] {
            assert_eq!(sex_from_str(sex_to_str(sex)), sex);
        }
    }
}
