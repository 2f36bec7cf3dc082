//! `overload`: pairs of friends offer twice the maximum the throughput scenario measured, at a
//! fixed pace (the offer does not slow down on its own), for 30 s. A well-behaved client sends
//! `overloaded` and `service_unavailable` rejections again in order after their `retry_after`,
//! and keeps at most as many sends unanswered as a connection takes (the realtime contract:
//! more would only wait unread in its socket); at that limit it writes again once several are
//! answered (`readers::Slots`), and what it cannot send yet waits on its side, behind the
//! offer's schedule. Reported: the stored rate against the maximum, send →
//! accepted (from the first attempt, and from the attempt the mesh accepted), how far the
//! senders fell behind the schedule, the most messages accepted but not yet stored at once
//! (sampled on the client side), and how the mesh pushed back.

use serde_json::json;

use super::pairs::{self, Pacing, Plan};
use super::{Ctx, body, secs};
use crate::report::{Latency, Outcome, thousands};

/// The product's targets under overload.
pub const TARGET_STORED_FRACTION: f64 = 0.9;
pub const TARGET_P99_ACCEPT_MS: f64 = 1000.0;
/// How long the backlog may take to drain after the offer stops.
const DRAIN_SECS: f64 = 120.0;
/// Messages a sender may have unstored; high, so only the mesh slows the offer down.
const MAX_IN_FLIGHT: usize = 1_000_000;
/// Sends a sender keeps written but unanswered: what one connection takes
/// (`edge/src/realtime/ws/requests.rs`, and the AsyncAPI description).
const MAX_UNANSWERED: usize = 32;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Pairs of friends; each sender and each recipient has its own WebSocket.
    #[arg(long, default_value_t = 50)]
    pub pairs: usize,
    /// The maximum stored msg/s to overload (default: what `throughput` measured in this run;
    /// required when run alone).
    #[arg(long)]
    pub maximum: Option<f64>,
    /// Offered rate as a multiple of the maximum.
    #[arg(long, default_value_t = 2.0)]
    pub factor: f64,
    /// Length of the measurement, after the warm-up.
    #[arg(long, default_value_t = 30.0)]
    pub seconds: f64,
    /// Seconds of sending before the measurement starts.
    #[arg(long, default_value_t = 3.0)]
    pub warmup: f64,
    /// Bytes per message body.
    #[arg(long, default_value_t = 64)]
    pub body_bytes: usize,
}

pub async fn run(ctx: &mut Ctx, args: &Args) -> anyhow::Result<Outcome> {
    let maximum = args.maximum.or(ctx.max_stored_per_sec).ok_or_else(|| {
        anyhow::anyhow!("no maximum to overload: run throughput first or give --maximum")
    })?;
    let offered = maximum * args.factor;
    let pairs = args.pairs.max(1);
    let plan = Plan {
        name: "overload",
        pairs,
        pacing: Pacing::Rate {
            per_sender: (offered / pairs as f64).max(0.1),
            max_in_flight: MAX_IN_FLIGHT,
        },
        warmup: secs(args.warmup),
        measure: secs(args.seconds.max(1.0)),
        body: body(args.body_bytes),
        resend: true,
        drain: secs(DRAIN_SECS),
        unanswered: Some(MAX_UNANSWERED),
    };
    let run = pairs::run(ctx, &plan).await?;
    let seconds = run.window_secs();
    let sent_rate = run.count_in_window(|s| &s.sent) as f64 / seconds;
    let stored_rate = run.count_in_window(|s| &s.stored) as f64 / seconds;
    let accepted_rate = run.count_in_window(|s| &s.accepted) as f64 / seconds;
    let (send_to_accepted, _) = run.between(|s| &s.sent, |s| &s.accepted);
    let send_to_accepted = Latency::of(&send_to_accepted);
    let (attempt_to_accepted, _) = run.between(|s| &s.attempted, |s| &s.accepted);
    let attempt_to_accepted = Latency::of(&attempt_to_accepted);
    let (send_to_stored, _) = run.between(|s| &s.sent, |s| &s.stored);
    let send_to_stored = Latency::of(&send_to_stored);
    let fraction = stored_rate / maximum;

    let mut outcome = Outcome::new(
        "overload",
        json!({
            "pairs": pairs,
            "maximum": maximum.round(),
            "factor": args.factor,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "body_bytes": args.body_bytes,
        }),
    );
    outcome.row(
        "offered msg/s",
        format!(
            "{} asked ({}x the maximum {}), {} sent",
            thousands(offered),
            args.factor,
            thousands(maximum),
            thousands(sent_rate)
        ),
    );
    outcome.row(
        "stored msg/s",
        format!(
            "{} = {:.0}% of the maximum",
            thousands(stored_rate),
            fraction * 100.0
        ),
    );
    outcome.row("accepted msg/s", thousands(accepted_rate));
    outcome.row(
        "send → accepted, from the first attempt",
        send_to_accepted.line(),
    );
    outcome.row(
        "send → accepted, from the attempt accepted",
        attempt_to_accepted.line(),
    );
    outcome.row("send → stored", send_to_stored.line());
    outcome.row(
        "behind the offer's schedule",
        format!(
            "{:.1} s at most (what the senders could not send yet, at {} unanswered sends per connection)",
            run.behind_schedule.as_secs_f64(),
            MAX_UNANSWERED
        ),
    );
    pairs::describe(&run, &mut outcome);
    outcome.verdict(
        format!(
            "stored ≥ {:.0}% of the maximum under {}x offer",
            TARGET_STORED_FRACTION * 100.0,
            args.factor
        ),
        fraction >= TARGET_STORED_FRACTION,
    );
    outcome.verdict(
        format!("p99 send → accepted < {TARGET_P99_ACCEPT_MS} ms (from the attempt accepted)"),
        attempt_to_accepted.count > 0 && attempt_to_accepted.p99_ms < TARGET_P99_ACCEPT_MS,
    );
    outcome.verdict(
        format!("p99 send → accepted < {TARGET_P99_ACCEPT_MS} ms (from the first attempt)"),
        send_to_accepted.count > 0 && send_to_accepted.p99_ms < TARGET_P99_ACCEPT_MS,
    );
    // The accepted-but-not-stored count, one sample per second.
    let per_second: Vec<(f64, u64)> = run
        .backlog
        .iter()
        .step_by(10)
        .map(|(t, n)| ((t * 10.0).round() / 10.0, *n))
        .collect();
    outcome.results = json!({
        "offered_per_sec": offered.round(),
        "sent_per_sec": sent_rate.round(),
        "stored_per_sec": stored_rate.round(),
        "accepted_per_sec": accepted_rate.round(),
        "stored_fraction_of_maximum": (fraction * 1000.0).round() / 1000.0,
        "send_to_accepted": send_to_accepted,
        "attempt_to_accepted": attempt_to_accepted,
        "send_to_stored": send_to_stored,
        "max_accepted_not_stored": run.max_backlog(),
        "accepted_not_stored_per_second": per_second,
        "rejections": run.rejections,
        "resent": run.resent,
        "max_unanswered_per_sender": MAX_UNANSWERED,
        "behind_schedule_secs": (run.behind_schedule.as_secs_f64() * 10.0).round() / 10.0,
        "retry_after": pairs::retry_after_summary(&run.retry_after),
        "error_frames": run.error_codes,
        "sent": run.sent,
        "stored": run.stored,
        "rejected": run.rejected,
        "integrity": run.integrity,
    });
    outcome.work = Some(("stored message", run.stored));
    Ok(outcome)
}
