//! Dead letters: what a consumer could not handle, set aside in `<schema>.dead_letters` with
//! the error, so it never blocks what comes after it and an operator can look at it later.

use sqlx::PgPool;
use uuid::Uuid;

/// Keeps `payload` (as text: invalid UTF-8 and NULs, which Postgres refuses in `text`, are
/// replaced) with the `error` that stopped `consumer`.
pub async fn write(
    pool: &PgPool,
    schema: &str,
    consumer: &str,
    payload: &[u8],
    error: &str,
) -> sqlx::Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {schema}.dead_letters (id, consumer, payload, error) VALUES ($1, $2, $3, $4)"
    )))
    .bind(Uuid::now_v7())
    .bind(consumer)
    .bind(storable_text(payload))
    .bind(storable_text(error.as_bytes()))
    .execute(pool)
    .await?;
    Ok(())
}

/// `bytes` as text Postgres accepts: lossy UTF-8 with NUL spelled `\u0000`.
fn storable_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).replace('\0', "\\u0000")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_and_invalid_utf8_become_storable() {
        assert_eq!(storable_text(b"a\0b"), "a\\u0000b");
        assert_eq!(storable_text(b"ok \xff"), "ok \u{FFFD}");
        assert_eq!(storable_text(b"plain"), "plain");
    }
}
