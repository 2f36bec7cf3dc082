//! `throughput`: how many messages per second the mesh stores when pairs of friends send as
//! fast as a window of unstored messages allows.

use serde_json::json;

use super::pairs::{self, Pacing, Plan};
use super::{Ctx, body, secs};
use crate::report::{Latency, Outcome, thousands};

/// The product's target: stored messages per second on a 2-core box.
pub const TARGET_STORED_PER_SEC: f64 = 20_000.0;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Pairs of friends; each sender and each recipient has its own WebSocket.
    #[arg(long, default_value_t = 50)]
    pub pairs: usize,
    /// Length of the measurement, after the warm-up.
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Seconds of sending before the measurement starts.
    #[arg(long, default_value_t = 3.0)]
    pub warmup: f64,
    /// Messages each sender may have sent but not yet seen `stored` (or `rejected`).
    #[arg(long, default_value_t = 200)]
    pub window: usize,
    /// Bytes per message body.
    #[arg(long, default_value_t = 64)]
    pub body_bytes: usize,
    /// Most sends each sender keeps written but unanswered (`accepted` or `rejected`), as a
    /// client keeping to the realtime contract does (32: what one connection takes, as the
    /// `overload` scenario's senders keep); by default only the window limits them.
    #[arg(long)]
    pub unanswered: Option<usize>,
}

pub async fn run(ctx: &mut Ctx, args: &Args) -> anyhow::Result<Outcome> {
    let plan = Plan {
        name: "throughput",
        pairs: args.pairs.max(1),
        pacing: Pacing::Window(args.window.max(1)),
        warmup: secs(args.warmup),
        measure: secs(args.seconds.max(1.0)),
        body: body(args.body_bytes),
        resend: true,
        drain: pairs::DRAIN,
        unanswered: args.unanswered,
    };
    let run = pairs::run(ctx, &plan).await?;
    let seconds = run.window_secs();
    let stored_rate = run.count_in_window(|s| &s.stored) as f64 / seconds;
    let accepted_rate = run.count_in_window(|s| &s.accepted) as f64 / seconds;
    let delivered_rate = run.count_in_window(|s| &s.delivered) as f64 / seconds;
    let (send_to_stored, _) = run.between(|s| &s.sent, |s| &s.stored);
    let send_to_stored = Latency::of(&send_to_stored);
    let (accept_to_delivery, _) = run.between(|s| &s.accepted, |s| &s.delivered);
    let accept_to_delivery = Latency::of(&accept_to_delivery);

    let mut outcome = Outcome::new(
        "throughput",
        json!({
            "pairs": plan.pairs,
            "window": args.window,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "body_bytes": args.body_bytes,
            "unanswered": args.unanswered,
        }),
    );
    outcome.row("stored msg/s", thousands(stored_rate));
    outcome.row("accepted msg/s", thousands(accepted_rate));
    outcome.row(
        "delivered msg/s (to the recipient)",
        thousands(delivered_rate),
    );
    outcome.row("send → stored under full load", send_to_stored.line());
    outcome.row(
        "accepted → delivered under full load",
        accept_to_delivery.line(),
    );
    outcome.versus(
        "stored msg/s",
        stored_rate,
        "raw JetStream publish+ack/s",
        ctx.limits.jetstream,
    );
    outcome.versus(
        "stored msg/s",
        stored_rate,
        "raw Postgres rows/s",
        ctx.limits.postgres,
    );
    pairs::describe(&run, &mut outcome);
    outcome.verdict(
        format!("≥ {} stored msg/s", thousands(TARGET_STORED_PER_SEC)),
        stored_rate >= TARGET_STORED_PER_SEC,
    );
    outcome.results = json!({
        "stored_per_sec": stored_rate.round(),
        "accepted_per_sec": accepted_rate.round(),
        "delivered_per_sec": delivered_rate.round(),
        "measured_seconds": seconds,
        "sent": run.sent,
        "stored": run.stored,
        "rejected": run.rejected,
        "rejections": run.rejections,
        "window_full_waits": run.throttled,
        "send_to_stored": send_to_stored,
        "accept_to_delivery": accept_to_delivery,
        "integrity": run.integrity,
    });
    outcome.work = Some(("stored message", run.stored));
    Ok(outcome)
}
