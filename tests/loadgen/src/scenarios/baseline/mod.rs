//! `baseline`: the raw limits the mesh's figures are set beside, measured in the same run on
//! the same machine: JetStream publish+ack, a Postgres insert of the storing transaction's
//! shape, NATS request/reply, the edge's own HTTP answer rate, those two together at the read
//! target's rate, argon2id hashes, and a message's raw path (those parts of a stored, delivered
//! message that no design can skip) at the latency target's rate. Each is its own outcome; the figures are kept in
//! `Ctx::limits` for the scenarios that follow.

mod argon2id;
mod edge_http;
mod jetstream;
mod message_path;
mod postgres;
mod read_parts;
mod request_reply;

pub use message_path::PathFloor;
pub use read_parts::ReadParts;

use serde_json::json;

use super::Ctx;
use crate::report::{Latency, Outcome, thousands};
use crate::tally::Tally;

/// One raw limit.
pub struct Figure {
    pub per_sec: f64,
    pub count: u64,
    pub failed: u64,
    pub latency: Option<Latency>,
    /// How it was measured, in words.
    pub detail: String,
}

impl Figure {
    /// What timed workers counted over `seconds`, each operation worth `units` (rows of a
    /// transaction, say).
    pub fn of(tally: &Tally, units: u64, seconds: f64, detail: String) -> Self {
        let count = tally.ok * units;
        Self {
            per_sec: count as f64 / seconds,
            count,
            failed: tally.failed,
            latency: Some(tally.latency()),
            detail,
        }
    }
}

/// The raw limits of this run, where measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// JetStream publishes acknowledged per second.
    pub jetstream: Option<f64>,
    /// Rows per second stored by the raw storing transaction.
    pub postgres: Option<f64>,
    /// NATS request/reply round trips per second.
    pub request_reply: Option<f64>,
    /// HTTP answers per second from the edge alone (no token, no NATS).
    pub edge_http: Option<f64>,
    /// Their p99 in milliseconds.
    pub edge_http_p99_ms: Option<f64>,
    /// CPU milliseconds every watched process spent together per raw request/reply.
    pub request_reply_cpu_ms: Option<f64>,
    /// CPU milliseconds every watched process spent together per edge HTTP answer.
    pub edge_http_cpu_ms: Option<f64>,
    /// argon2id hashes per second.
    pub argon2: Option<f64>,
    /// The edge's HTTP answers and request/reply run together at the read target's rate.
    pub read_parts: Option<ReadParts>,
    /// A message's raw path (JetStream, Postgres, NATS) at the latency target's rate.
    pub message_path: Option<PathFloor>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Seconds each raw limit is measured.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// JetStream publishers (the throughput scenario's pairs).
    #[arg(long, default_value_t = 50)]
    pub publishers: usize,
    /// Unacknowledged publishes each publisher keeps (the throughput scenario's window).
    #[arg(long, default_value_t = 200)]
    pub window: usize,
    /// Bytes per JetStream payload (about the size of the edge's ingest message).
    #[arg(long, default_value_t = 256)]
    pub payload_bytes: usize,
    /// Concurrent Postgres writers (ingest partitions storing at once).
    #[arg(long, default_value_t = 8)]
    pub writers: usize,
    /// Rows per Postgres transaction (the chat worker stores at most 256 per batch).
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Requesters of the request/reply and edge HTTP limits (the read scenario's concurrency).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Hashing threads (default: one per CPU).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Messages a second asked of the raw message path (`all`: the latency target's rate).
    #[arg(long, default_value_t = 10_000.0)]
    pub path_rate: f64,
    /// Measure only these limits (their scenario names, e.g. `raw_message_path`); all when
    /// empty.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
}

impl Args {
    /// The limits `baseline` measures, in order.
    pub fn chosen(&self) -> Vec<Limit> {
        Limit::ALL
            .into_iter()
            .filter(|l| self.only.is_empty() || self.only.iter().any(|o| o == l.name()))
            .collect()
    }
}

fn outcome(
    name: &'static str,
    what: &str,
    unit: &'static str,
    figure: anyhow::Result<Figure>,
) -> anyhow::Result<(Outcome, Figure)> {
    let figure = figure?;
    let mut outcome = Outcome::new(name, json!({ "limit": what }));
    outcome.row(&format!("{what} per second"), thousands(figure.per_sec));
    outcome.row("how", figure.detail.clone());
    if let Some(latency) = &figure.latency {
        outcome.row("latency of one", latency.line());
    }
    if figure.failed > 0 {
        outcome.problem(format!("{} operations failed", figure.failed));
    }
    outcome.work = Some((unit, figure.count));
    outcome.results = json!({
        "per_sec": figure.per_sec.round(),
        "count": figure.count,
        "failed": figure.failed,
        "latency": figure.latency,
        "how": figure.detail,
    });
    Ok((outcome, figure))
}

impl Limits {
    /// Keeps what a raw limit's operations cost in CPU, once its scenario was measured: the
    /// read bound adds the two a read cannot do without.
    pub fn record_cpu(&mut self, outcome: &Outcome) {
        if outcome.scenario == Limit::ReadParts.name() {
            if let Some(parts) = &mut self.read_parts {
                parts.busy_share = outcome.cpu.as_ref().and_then(|cpu| cpu.busy_share);
            }
            return;
        }
        if outcome.scenario == Limit::MessagePath.name() {
            // An earlier run kept as the better one keeps its own figures.
            if let Some(path) = &mut self.message_path
                && path.just_measured
            {
                path.busy_share = outcome.cpu.as_ref().and_then(|cpu| cpu.busy_share);
                path.just_measured = false;
            }
            return;
        }
        let slot = match outcome.scenario {
            "raw_request_reply" => &mut self.request_reply_cpu_ms,
            "raw_edge_http" => &mut self.edge_http_cpu_ms,
            _ => return,
        };
        *slot = outcome
            .cpu
            .as_ref()
            .and_then(|cpu| cpu.ms_per_unit_of(|_| true));
    }
}

/// The raw limits, in the order `baseline` measures them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    JetStream,
    Postgres,
    RequestReply,
    EdgeHttp,
    /// The two before together, at the read target's rate (after both were measured).
    ReadParts,
    Argon2id,
    /// A message's raw path at the latency target's rate.
    MessagePath,
}

impl Limit {
    pub const ALL: [Limit; 7] = [
        Limit::JetStream,
        Limit::Postgres,
        Limit::RequestReply,
        Limit::EdgeHttp,
        Limit::ReadParts,
        Limit::Argon2id,
        Limit::MessagePath,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Limit::JetStream => "raw_jetstream",
            Limit::Postgres => "raw_postgres",
            Limit::RequestReply => "raw_request_reply",
            Limit::EdgeHttp => "raw_edge_http",
            Limit::ReadParts => "raw_read_parts",
            Limit::Argon2id => "raw_argon2id",
            Limit::MessagePath => "raw_message_path",
        }
    }
}

/// Measures one raw limit and keeps it in `ctx.limits`.
pub async fn run(ctx: &mut Ctx, args: &Args, limit: Limit) -> anyhow::Result<Outcome> {
    let name = limit.name();
    let nats = || {
        ctx.nats
            .clone()
            .ok_or_else(|| anyhow::anyhow!("no --nats-url"))
    };
    let (outcome, figure) = match limit {
        Limit::JetStream => {
            let plan = jetstream::Plan {
                publishers: args.publishers,
                window: args.window,
                seconds: args.seconds,
                payload_bytes: args.payload_bytes,
            };
            let figure = jetstream::measure(&nats()?, &plan).await;
            outcome(name, "JetStream publish+ack", "publish", figure)?
        }
        Limit::Postgres => {
            let url = ctx
                .database_url
                .clone()
                .ok_or_else(|| anyhow::anyhow!("no --database-url"))?;
            let plan = postgres::Plan {
                database_url: url,
                writers: args.writers,
                batch: args.batch,
                conversations: args.publishers,
                seconds: args.seconds,
                body_bytes: 64,
            };
            let figure = postgres::measure(&plan).await;
            outcome(name, "rows stored (raw batch insert)", "row", figure)?
        }
        Limit::RequestReply => {
            let plan = request_reply::Plan {
                concurrency: args.concurrency,
                seconds: args.seconds,
                answer_bytes: request_reply::ANSWER_BYTES,
                pace: None,
            };
            let figure = request_reply::measure(&nats()?, &plan).await;
            outcome(name, "NATS request/reply", "request", figure)?
        }
        Limit::EdgeHttp => {
            let plan = edge_http::Plan {
                concurrency: args.concurrency,
                seconds: args.seconds,
                pace: None,
            };
            let figure = edge_http::measure(&ctx.api, &plan).await;
            outcome(name, "edge HTTP answers (no bus)", "request", figure)?
        }
        Limit::ReadParts => return read_parts::run(ctx, args, &nats()?).await,
        Limit::MessagePath => {
            let nats = nats()?;
            return message_path::run(ctx, args, &nats, args.path_rate).await;
        }
        Limit::Argon2id => {
            let plan = argon2id::Plan {
                threads: args.threads.unwrap_or_else(crate::procs::cpus),
                seconds: args.seconds,
            };
            outcome(
                name,
                "argon2id hashes",
                "hash",
                argon2id::measure(&plan).await,
            )?
        }
    };
    let slot = match limit {
        Limit::JetStream => &mut ctx.limits.jetstream,
        Limit::Postgres => &mut ctx.limits.postgres,
        Limit::RequestReply => &mut ctx.limits.request_reply,
        Limit::EdgeHttp => &mut ctx.limits.edge_http,
        Limit::Argon2id => &mut ctx.limits.argon2,
        Limit::ReadParts | Limit::MessagePath => unreachable!("answered above"),
    };
    *slot = Some(figure.per_sec);
    if limit == Limit::EdgeHttp {
        ctx.limits.edge_http_p99_ms = figure.latency.map(|latency| latency.p99_ms);
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{CpuLine, CpuReport};

    fn measured(scenario: &'static str, ms: &[Option<f64>]) -> Outcome {
        let mut outcome = Outcome::new(scenario, json!({}));
        outcome.cpu = Some(CpuReport {
            wall_seconds: 5.0,
            unit: Some("request".into()),
            units: Some(1000),
            processes: ms
                .iter()
                .map(|ms| CpuLine {
                    process: "p".into(),
                    seconds: 1.0,
                    ms_per_unit: *ms,
                })
                .collect(),
            busy_share: None,
            steal_share: None,
            speed: None,
        });
        outcome
    }

    #[test]
    fn only_the_limits_named_are_chosen() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        let all = Cli::parse_from(["baseline"]).args.chosen();
        assert_eq!(all, Limit::ALL);
        let some = Cli::parse_from(["baseline", "--only", "raw_message_path,raw_postgres"])
            .args
            .chosen();
        assert_eq!(some, [Limit::Postgres, Limit::MessagePath]);
    }

    #[test]
    fn a_raw_operations_cpu_is_every_process_together() {
        let mut limits = Limits::default();
        limits.record_cpu(&measured("raw_request_reply", &[Some(0.010), Some(0.007)]));
        limits.record_cpu(&measured("raw_edge_http", &[Some(0.012), None]));
        limits.record_cpu(&measured("raw_jetstream", &[Some(0.5)]));
        assert!((limits.request_reply_cpu_ms.unwrap() - 0.017).abs() < 1e-12);
        assert_eq!(
            limits.edge_http_cpu_ms, None,
            "a process not read voids the sum"
        );
        assert_eq!(limits.jetstream, None);
    }
}
