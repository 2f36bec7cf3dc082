//! `latency`: pairs of friends send at a fixed aggregate rate; how long from the edge's
//! `accepted` ack until the recipient holds the message, and from sending until `stored`.
//! `all` runs it at half the maximum (the target) and again at a quarter as a reference: what
//! the same path takes when the machine's CPUs are not all busy. Accepted → delivered is also
//! split by whether the machine ran at its speed when a message was accepted (`speed`).

use serde_json::json;

use super::pairs::{self, Pacing, Plan, Run};
use super::{Ctx, body, secs};
use crate::report::{Latency, Outcome, thousands};
use crate::speed::{Samples, Speeds};
use crate::timeline::Slot;

/// The product's target: p99 accept-to-delivery below this many milliseconds at half the
/// target throughput.
pub const TARGET_P99_MS: f64 = 50.0;

/// The most messages that may reach their recipient before their sender has read the
/// `accepted` ack, as a share of those measured, for p99 to stand: such a message is counted
/// as 0 ms (its sender's socket was read late, so when it was accepted is not known better),
/// and a tenth of p99's tail misplaced moves p99 by at most a tenth of that tail's ranks.
const EARLY_SHARE_LIMIT: f64 = 0.001;

/// How many messages reached their recipient before their sender read the `accepted` ack.
#[derive(Debug, PartialEq)]
enum Early {
    None,
    /// Too few to move p99: a row of the result.
    Few(String),
    /// Enough to move p99: a problem, and the result is not a measurement of the target.
    Many(String),
}

fn early_deliveries(early: u64, measured: u64) -> Early {
    if early == 0 {
        return Early::None;
    }
    let share = early as f64 / measured.max(1) as f64;
    let line = format!(
        "{early} of {} messages ({:.3}%) reached the recipient before the sender read their accepted ack (counted as 0 ms)",
        thousands(measured as f64),
        share * 100.0
    );
    if share > EARLY_SHARE_LIMIT {
        Early::Many(line)
    } else {
        Early::Few(line)
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Pairs of friends; each sender and each recipient has its own WebSocket.
    #[arg(long, default_value_t = 50)]
    pub pairs: usize,
    /// Messages per second, all senders together.
    #[arg(long, default_value_t = 10_000.0)]
    pub rate: f64,
    /// Length of the measurement, after the warm-up.
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Seconds of sending before the measurement starts (not in the percentiles).
    #[arg(long, default_value_t = 3.0)]
    pub warmup: f64,
    /// Most messages one sender may have unstored; reaching it slows the sender down.
    #[arg(long, default_value_t = 2000)]
    pub max_in_flight: usize,
    /// Bytes per message body.
    #[arg(long, default_value_t = 64)]
    pub body_bytes: usize,
    /// A reference run beside the target one (`latency_headroom`): no verdict.
    #[arg(skip)]
    pub reference: bool,
}

pub async fn run(ctx: &mut Ctx, args: &Args) -> anyhow::Result<Outcome> {
    let pairs = args.pairs.max(1);
    let plan = Plan {
        name: if args.reference {
            "latency_headroom"
        } else {
            "latency"
        },
        pairs,
        pacing: Pacing::Rate {
            per_sender: (args.rate / pairs as f64).max(0.1),
            max_in_flight: args.max_in_flight,
        },
        warmup: secs(args.warmup),
        measure: secs(args.seconds.max(1.0)),
        body: body(args.body_bytes),
        resend: true,
        drain: pairs::DRAIN,
        unanswered: None,
    };
    let run = pairs::run(ctx, &plan).await?;
    let samples = ctx.speed.as_ref().map(Samples::taken).unwrap_or_default();
    let speeds = Speeds::new(&samples, |at| run.timeline.at(at));
    let seconds = run.window_secs();
    let sent_rate = run.count_in_window(|s| &s.sent) as f64 / seconds;
    let stored_rate = run.count_in_window(|s| &s.stored) as f64 / seconds;
    let (accept_to_delivery, negative) = run.between(|s| &s.accepted, |s| &s.delivered);
    let accept_to_delivery = Latency::of(&accept_to_delivery);
    let (send_to_stored, _) = run.between(|s| &s.sent, |s| &s.stored);
    let send_to_stored = Latency::of(&send_to_stored);
    let (send_to_accepted, _) = run.between(|s| &s.sent, |s| &s.accepted);
    let send_to_accepted = Latency::of(&send_to_accepted);
    let (send_to_delivery, _) = run.between(|s| &s.sent, |s| &s.delivered);
    let send_to_delivery = Latency::of(&send_to_delivery);

    let scenario = if args.reference {
        "latency_headroom"
    } else {
        "latency"
    };
    let mut outcome = Outcome::new(
        scenario,
        json!({
            "pairs": pairs,
            "rate": args.rate,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "max_in_flight": args.max_in_flight,
            "body_bytes": args.body_bytes,
        }),
    );
    outcome.row(
        "achieved send rate msg/s",
        format!("{} (asked {})", thousands(sent_rate), thousands(args.rate)),
    );
    outcome.row("stored msg/s", thousands(stored_rate));
    outcome.row("accepted → delivered", accept_to_delivery.line());
    outcome.row("send → accepted", send_to_accepted.line());
    outcome.row("send → stored", send_to_stored.line());
    outcome.row("send → delivered", send_to_delivery.line());
    pairs::describe(&run, &mut outcome);
    if sent_rate < args.rate * 0.95 {
        outcome.problem(format!(
            "the senders reached only {} of the asked {} msg/s (their in-flight limit was reached {} times)",
            thousands(sent_rate),
            thousands(args.rate),
            run.throttled
        ));
    }
    match early_deliveries(negative, accept_to_delivery.count) {
        Early::None => {}
        Early::Few(line) => outcome.row("delivered before the sender read its accepted ack", line),
        Early::Many(line) => outcome.problem(line),
    }
    let by_speed = by_speed(&run, &speeds);
    if let Some(split) = &by_speed {
        outcome.row(
            "accepted → delivered, accepted while the machine ran at its speed",
            split.at_speed.line(),
        );
        outcome.row(
            "accepted → delivered, accepted in a slowed quarter-second",
            split.slowed.line(),
        );
    }
    let met = accept_to_delivery.count > 0
        && accept_to_delivery.p99_ms < TARGET_P99_MS
        && sent_rate >= args.rate * 0.95;
    if args.reference {
        outcome.row(
            &format!("p99 accepted → delivered < {TARGET_P99_MS} ms (reference, not the target)"),
            if met { "yes" } else { "no" },
        );
    } else {
        outcome.verdict(
            format!(
                "p99 accepted → delivered < {TARGET_P99_MS} ms at {} msg/s",
                thousands(args.rate)
            ),
            met,
        );
    }
    outcome.results = json!({
        "sent_per_sec": sent_rate.round(),
        "stored_per_sec": stored_rate.round(),
        "measured_seconds": seconds,
        "accept_to_delivery": accept_to_delivery,
        "send_to_accepted": send_to_accepted,
        "send_to_stored": send_to_stored,
        "send_to_delivery": send_to_delivery,
        "delivered_before_accept_read": negative,
        "sent": run.sent,
        "stored": run.stored,
        "rejected": run.rejected,
        "rejections": run.rejections,
        "in_flight_limit_waits": run.throttled,
        "integrity": run.integrity,
    });
    if let (Some(split), serde_json::Value::Object(results)) = (&by_speed, &mut outcome.results) {
        results.insert("machine_speed".to_owned(), json!(split.summary));
        results.insert(
            "accept_to_delivery_at_speed".to_owned(),
            json!(split.at_speed),
        );
        results.insert("accept_to_delivery_slowed".to_owned(), json!(split.slowed));
    }
    outcome.work = Some(("stored message", run.stored));
    Ok(outcome)
}

/// Accepted → delivered split by whether the machine ran at its speed when a message was
/// accepted (`speed`): the quarter-seconds in which the same fixed work took its thread 1.3x
/// the scenario's fastest or more are slowed.
struct BySpeed {
    summary: crate::speed::Summary,
    at_speed: Latency,
    slowed: Latency,
}

fn by_speed(run: &Run, speeds: &Speeds) -> Option<BySpeed> {
    let (summary, slowed) = speeds.assess(run.window)?;
    let in_slowed =
        |slot: &Slot| Slot::get(&slot.accepted).is_some_and(|at| Speeds::is_slowed(&slowed, at));
    let (at_speed, _) = run.between_where(|s| &s.accepted, |s| &s.delivered, |s| !in_slowed(s));
    let (in_slow, _) = run.between_where(|s| &s.accepted, |s| &s.delivered, in_slowed);
    Some(BySpeed {
        summary,
        at_speed: Latency::of(&at_speed),
        slowed: Latency::of(&in_slow),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_early_deliveries_are_a_row_and_more_than_a_tenth_of_the_tail_a_problem() {
        assert_eq!(early_deliveries(0, 300_000), Early::None);
        let Early::Few(line) = early_deliveries(55, 319_500) else {
            panic!("55 of 319,500 cannot move p99");
        };
        assert!(
            line.starts_with("55 of 319,500 messages (0.017%)"),
            "{line}"
        );
        assert!(matches!(early_deliveries(300, 300_000), Early::Few(_)));
        assert!(matches!(early_deliveries(301, 300_000), Early::Many(_)));
        assert!(matches!(early_deliveries(1, 0), Early::Many(_)));
    }
}
