//! Raw Postgres insert of the chat ingest's batch shape: per transaction, lock the batch's
//! conversation rows, insert its messages with one `UNNEST` insert, move each conversation's
//! last seq, commit. Scratch copies of `chat.conversations` and `chat.messages` (same columns
//! and indexes, no foreign keys) in schema `loadgen` of the bench database take the rows.
//! Writers own disjoint conversations, as ingest partitions do.

use std::time::{Duration, Instant};

use anyhow::Context;
use mesh_contracts::chat::ConversationId;
use sqlx::postgres::PgPoolOptions;
use time::OffsetDateTime;
use uuid::Uuid;

use super::Figure;
use crate::tally::Tally;

pub struct Plan {
    pub database_url: String,
    pub writers: usize,
    pub batch: usize,
    pub conversations: usize,
    pub seconds: f64,
    pub body_bytes: usize,
}

/// Made anew each time, so that they follow the chat schema's columns, collations and indexes
/// as its migrations leave them.
const SETUP: [&str; 5] = [
    "CREATE SCHEMA IF NOT EXISTS loadgen",
    "DROP TABLE IF EXISTS loadgen.messages, loadgen.conversations",
    "CREATE TABLE loadgen.conversations (LIKE chat.conversations INCLUDING ALL)",
    "CREATE TABLE loadgen.messages (LIKE chat.messages INCLUDING ALL)",
    "INSERT INTO loadgen.conversations (id, kind) \
     SELECT id, 'private' FROM UNNEST($1::text[]) AS u(id)",
];

/// The scratch tables, made anew and empty, with private conversations 1 to `conversations`
/// (`conversation`).
pub async fn prepare(pool: &sqlx::PgPool, conversations: usize) -> anyhow::Result<()> {
    for statement in &SETUP[..4] {
        sqlx::query(sqlx::AssertSqlSafe(*statement))
            .execute(pool)
            .await
            .with_context(|| format!("{statement} (does the database hold the chat schema?)"))?;
    }
    let ids: Vec<String> = (1..=conversations).map(conversation).collect();
    sqlx::query(SETUP[4]).bind(&ids).execute(pool).await?;
    Ok(())
}

/// Spreads a number over all 128 bits (multiplying by an odd constant is a bijection), so
/// made-up user ids differ from their first byte, as random ones do.
const SPREAD: u128 = 0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835;

/// The id of scratch conversation `n` (from 1): a private conversation of two made-up users,
/// written as the mesh writes one (`p:<uuid>:<uuid>`, 75 bytes), so that its keys cost the
/// indexes what the mesh's cost them.
pub fn conversation(n: usize) -> String {
    let user = |k: usize| Uuid::from_u128((k as u128).wrapping_mul(SPREAD));
    ConversationId::private(user(2 * n), user(2 * n + 1)).to_string()
}

/// Empties the scratch tables (best effort: the next measurement empties them anyway).
pub async fn clear(pool: &sqlx::PgPool) {
    let _ = sqlx::query("TRUNCATE loadgen.messages, loadgen.conversations")
        .execute(pool)
        .await;
}

pub async fn measure(plan: &Plan) -> anyhow::Result<Figure> {
    let writers = plan.writers.max(1);
    let conversations = plan.conversations.max(writers);
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(writers + 1).unwrap_or(u32::MAX))
        .connect(&plan.database_url)
        .await
        .context("connecting to the bench database")?;
    prepare(&pool, conversations).await?;

    let body = crate::scenarios::body(plan.body_bytes);
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(plan.seconds.max(1.0));
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let pool = pool.clone();
            let body = body.clone();
            let batch = plan.batch.max(1);
            let mine: Vec<String> = (1..=conversations)
                .filter(|c| c % writers == w)
                .map(conversation)
                .collect();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut n = 0u64;
                while Instant::now() < end {
                    let began = Instant::now();
                    let rows: Vec<usize> = (0..batch).map(|i| i % mine.len()).collect();
                    match store(&pool, &mine, &rows, &body, &mut n).await {
                        Ok(()) => tally.success(began),
                        Err(err) => tally.failure(err),
                    }
                }
                tally
            })
        })
        .collect();
    let tally = Tally::join(tasks).await?;
    let seconds = started.elapsed().as_secs_f64();
    clear(&pool).await;
    Ok(Figure::of(
        &tally,
        plan.batch.max(1) as u64,
        seconds,
        format!(
            "{writers} writers, {} rows per transaction over {conversations} conversations; latency per transaction",
            plan.batch
        ),
    ))
}

/// One transaction storing a message in `conversations[row]` for each of `rows`, from one
/// sender, with client ids numbered on from `n`.
pub async fn store(
    pool: &sqlx::PgPool,
    conversations: &[String],
    rows: &[usize],
    body: &str,
    n: &mut u64,
) -> sqlx::Result<()> {
    let batch = rows.len();
    let sender = Uuid::nil();
    let mut tx = pool.begin().await?;
    let mut ids: Vec<&str> = rows.iter().map(|&r| conversations[r].as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let locked: Vec<(String, i64)> = sqlx::query_as(
        "SELECT id, last_seq FROM loadgen.conversations WHERE id = ANY($1) ORDER BY id FOR UPDATE",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut last: std::collections::HashMap<String, i64> = locked.into_iter().collect();
    let now = OffsetDateTime::now_utc();
    let mut conversation = Vec::with_capacity(batch);
    let mut seq = Vec::with_capacity(batch);
    let mut id = Vec::with_capacity(batch);
    let mut client = Vec::with_capacity(batch);
    for &row in rows {
        let c = &conversations[row];
        let next = last.entry(c.clone()).or_insert(0);
        *next += 1;
        conversation.push(c.as_str());
        seq.push(*next);
        id.push(Uuid::now_v7());
        client.push(format!("raw-{n}"));
        *n += 1;
    }
    sqlx::query(
        "INSERT INTO loadgen.messages \
           (conversation_id, seq, id, sender_id, client_id, kind, body, sent_at) \
         SELECT * FROM UNNEST($1::text[], $2::int8[], $3::uuid[], $4::uuid[], $5::text[], \
                              $6::text[], $7::text[], $8::timestamptz[])",
    )
    .bind(&conversation)
    .bind(&seq)
    .bind(&id)
    .bind(vec![sender; batch])
    .bind(&client)
    .bind(vec!["text"; batch])
    .bind(vec![body; batch])
    .bind(vec![now; batch])
    .execute(&mut *tx)
    .await?;
    let (ids, seqs): (Vec<String>, Vec<i64>) = last.into_iter().unzip();
    sqlx::query(
        "UPDATE loadgen.conversations c SET last_seq = u.seq, updated_at = now() \
         FROM UNNEST($1::text[], $2::int8[]) AS u(id, seq) WHERE c.id = u.id",
    )
    .bind(&ids)
    .bind(&seqs)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn scratch_conversations_are_spelled_as_the_mesh_spells_them_and_all_differ() {
        let ids: Vec<String> = (1..=1000).map(conversation).collect();
        for id in &ids {
            assert_eq!(id.len(), 75, "{id}");
            assert!(
                matches!(ConversationId::parse(id), Some(ConversationId::Private(..))),
                "{id} is not a canonical private conversation id"
            );
        }
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
        let first_bytes: HashSet<&str> = ids.iter().map(|id| &id[2..4]).collect();
        assert!(
            first_bytes.len() > 100,
            "made-up users should differ from their first byte: {first_bytes:?}"
        );
    }
}
