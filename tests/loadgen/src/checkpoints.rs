//! Postgres checkpoints and vacuums around a scenario. Before it starts, the bench database is
//! vacuumed and then a checkpoint forced, so that no scenario pays for the rows and pages the
//! ones before it left: `throughput` and `overload` write over two million messages into a
//! `chat.messages` that each run starts empty, and autovacuum, which visits a table once a
//! minute once a fifth of its rows is new, then ran through a whole `latency` scenario
//! (2026-12-07 12:02); they also leave hundreds of megabytes of WAL behind, and a
//! checkpoint's fsyncs hold up the commits of whatever runs meanwhile. The checkpoints and
//! autovacuums that still fell inside the scenario are reported.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// How long forcing a checkpoint, or vacuuming, may take before the scenario starts anyway.
const FORCE_TIMEOUT: Duration = Duration::from_secs(120);

/// The bench database, for vacuums and checkpoints.
pub struct Checkpoints {
    pool: PgPool,
}

/// Postgres's checkpoint counters: how many have completed, and the time spent writing and
/// syncing their pages (milliseconds, cumulative); and the autovacuum runs (vacuum or analyze)
/// completed on the bench database's tables.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Counters {
    pub completed: i64,
    pub write_ms: f64,
    pub sync_ms: f64,
    pub autovacuums: i64,
}

impl Counters {
    /// What happened between `self` and `later`, as a report line.
    pub fn describe_until(&self, later: &Counters) -> String {
        let completed = later.completed - self.completed;
        if completed <= 0 {
            return "none completed".to_owned();
        }
        format!(
            "{completed} completed (writing pages {:.1} s, syncing files {:.0} ms)",
            (later.write_ms - self.write_ms) / 1000.0,
            later.sync_ms - self.sync_ms
        )
    }

    /// The autovacuum runs completed between `self` and `later`, as a report line.
    pub fn autovacuums_until(&self, later: &Counters) -> String {
        match later.autovacuums - self.autovacuums {
            ..=0 => "none completed".to_owned(),
            n => format!("{n} completed"),
        }
    }
}

/// Autovacuum's completed runs on every table of the database.
const AUTOVACUUMS: &str =
    "SELECT coalesce(sum(autovacuum_count + autoanalyze_count), 0)::int8 FROM pg_stat_all_tables";

/// Postgres 17 moved the counters to `pg_stat_checkpointer`; earlier ones keep them in
/// `pg_stat_bgwriter`.
const COUNTERS: [&str; 2] = [
    "SELECT (num_timed + num_requested)::int8, write_time::float8, sync_time::float8 \
     FROM pg_stat_checkpointer",
    "SELECT (checkpoints_timed + checkpoints_req)::int8, checkpoint_write_time::float8, \
     checkpoint_sync_time::float8 FROM pg_stat_bgwriter",
];

impl Checkpoints {
    pub async fn connect(database_url: &str) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(database_url)
            .await?;
        Ok(Self { pool })
    }

    /// Forces a checkpoint and waits for it; how long it took.
    pub async fn force(&self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        tokio::time::timeout(FORCE_TIMEOUT, sqlx::query("CHECKPOINT").execute(&self.pool))
            .await
            .map_err(|_| anyhow::anyhow!("CHECKPOINT took over {FORCE_TIMEOUT:?}"))??;
        Ok(started.elapsed())
    }

    /// Vacuums (and analyzes) the whole database and waits for it; how long it took.
    pub async fn vacuum(&self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        tokio::time::timeout(
            FORCE_TIMEOUT,
            sqlx::query("VACUUM (ANALYZE)").execute(&self.pool),
        )
        .await
        .map_err(|_| anyhow::anyhow!("VACUUM took over {FORCE_TIMEOUT:?}"))??;
        Ok(started.elapsed())
    }

    /// The counters now.
    pub async fn counters(&self) -> anyhow::Result<Counters> {
        let autovacuums: i64 = sqlx::query_scalar(AUTOVACUUMS)
            .fetch_one(&self.pool)
            .await?;
        let mut last = None;
        for statement in COUNTERS {
            match sqlx::query_as::<_, (i64, f64, f64)>(sqlx::AssertSqlSafe(statement))
                .fetch_one(&self.pool)
                .await
            {
                Ok((completed, write_ms, sync_ms)) => {
                    return Ok(Counters {
                        completed,
                        write_ms,
                        sync_ms,
                        autovacuums,
                    });
                }
                Err(err) => last = Some(err),
            }
        }
        Err(last.map_or_else(|| anyhow::anyhow!("no statement"), Into::into))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_inside_a_scenario_are_counted_with_their_times() {
        let before = Counters {
            completed: 4,
            write_ms: 1000.0,
            sync_ms: 50.0,
            autovacuums: 7,
        };
        assert_eq!(before.describe_until(&before), "none completed");
        assert_eq!(before.autovacuums_until(&before), "none completed");
        let after = Counters {
            completed: 5,
            write_ms: 31_500.0,
            sync_ms: 337.0,
            autovacuums: 9,
        };
        assert_eq!(
            before.describe_until(&after),
            "1 completed (writing pages 30.5 s, syncing files 287 ms)"
        );
        assert_eq!(before.autovacuums_until(&after), "2 completed");
    }
}
