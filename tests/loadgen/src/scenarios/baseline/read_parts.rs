//! The two parts a read through the bus cannot do without, run together with nothing else: the
//! edge's own HTTP answer (`GET /healthz`) and a raw NATS request/reply, each asked the read
//! target's rate (a share of the raw request/reply rate just measured) by as many clients as
//! the read scenario has. When this machine cannot hold both at that rate at once, no read
//! that needs one of each can reach it.

use serde_json::json;

use crate::api::Api;
use crate::raw_nats::NatsAccess;
use crate::report::{Outcome, thousands};
use crate::scenarios::Ctx;
use crate::scenarios::reads::TARGET_RATIO;

use super::{Args, Figure, Limit, edge_http, request_reply};

struct Plan {
    concurrency: usize,
    seconds: f64,
    /// Operations a second asked of each part.
    per_sec: f64,
}

/// What each part reached.
struct Parts {
    edge_http: Figure,
    request_reply: Figure,
}

async fn measure(api: &Api, nats: &NatsAccess, plan: &Plan) -> anyhow::Result<Parts> {
    let http = edge_http::Plan {
        concurrency: plan.concurrency,
        seconds: plan.seconds,
        pace: Some(plan.per_sec),
    };
    let nats_plan = request_reply::Plan {
        concurrency: plan.concurrency,
        seconds: plan.seconds,
        answer_bytes: request_reply::ANSWER_BYTES,
        pace: Some(plan.per_sec),
    };
    let (edge_http, request_reply) = tokio::join!(
        edge_http::measure(api, &http),
        request_reply::measure(nats, &nats_plan)
    );
    Ok(Parts {
        edge_http: edge_http?,
        request_reply: request_reply?,
    })
}

/// Whether a part reached the rate asked of it (within 2%: a paced client's last slots may
/// fall past the end).
fn kept_up(reached: f64, asked: f64) -> bool {
    reached >= asked * 0.98
}

/// What the two parts of a read reached together, each asked `asked` a second.
#[derive(Debug, Clone, Copy)]
pub struct ReadParts {
    pub asked: f64,
    pub edge_http: f64,
    pub request_reply: f64,
    /// Share of every CPU busy meanwhile, once measured.
    pub busy_share: Option<f64>,
}

impl ReadParts {
    /// Whether both parts kept to the rate asked.
    pub fn kept_up(&self) -> bool {
        kept_up(self.edge_http, self.asked) && kept_up(self.request_reply, self.asked)
    }
}

/// Runs the edge's HTTP answers and request/reply together, each asked the read target's share
/// of the raw request/reply rate measured before, and keeps what they reached.
pub async fn run(ctx: &mut Ctx, args: &Args, nats: &NatsAccess) -> anyhow::Result<Outcome> {
    let raw = ctx.limits.request_reply.ok_or_else(|| {
        anyhow::anyhow!("the raw request/reply rate was not measured before the read's parts")
    })?;
    let asked = (raw * TARGET_RATIO).round();
    let plan = Plan {
        concurrency: args.concurrency,
        seconds: args.seconds,
        per_sec: asked,
    };
    let parts = measure(&ctx.api, nats, &plan).await?;
    let (http, rr) = (&parts.edge_http, &parts.request_reply);
    let mut outcome = Outcome::new(
        Limit::ReadParts.name(),
        json!({ "limit": "a read's parts together", "concurrency": args.concurrency, "ratio": TARGET_RATIO }),
    );
    outcome.row(
        "asked of each part",
        format!(
            "{}/s ({}x the raw request/reply rate {}), {} clients each",
            thousands(asked),
            TARGET_RATIO,
            thousands(raw),
            args.concurrency
        ),
    );
    for (what, figure) in [
        ("edge HTTP answers (no bus)", http),
        ("NATS request/reply", rr),
    ] {
        outcome.row(&format!("{what} per second"), thousands(figure.per_sec));
        if let Some(latency) = &figure.latency {
            outcome.row(&format!("{what}: latency of one"), latency.line());
        }
        if figure.failed > 0 {
            outcome.problem(format!("{what}: {} operations failed", figure.failed));
        }
    }
    let summary = ReadParts {
        asked,
        edge_http: http.per_sec,
        request_reply: rr.per_sec,
        busy_share: None,
    };
    outcome.row(
        "both kept to the rate asked",
        if summary.kept_up() { "yes" } else { "no" }.to_owned(),
    );
    // Each pair of parts is what one read needs.
    outcome.work = Some(("pair of parts", http.count.min(rr.count)));
    outcome.results = json!({
        "asked_per_sec": asked,
        "edge_http_per_sec": http.per_sec.round(),
        "request_reply_per_sec": rr.per_sec.round(),
        "edge_http_latency": http.latency,
        "request_reply_latency": rr.latency,
        "kept_up": summary.kept_up(),
        "failed": http.failed + rr.failed,
    });
    ctx.limits.read_parts = Some(summary);
    Ok(outcome)
}
