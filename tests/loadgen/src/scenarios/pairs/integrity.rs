//! What a pairs run checks afterwards: each conversation's stored seqs are consecutive and
//! unique, each message was stored and delivered exactly once; and how both pairs scenarios
//! report it.

use std::sync::atomic::Ordering;

use super::Run;
use super::readers::StoredLog;
use crate::problems::Problems;
use crate::report::{self, Outcome};
use crate::timeline::Timeline;

/// Integrity of what was stored and delivered.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Integrity {
    /// Conversations whose stored seqs of this run were not consecutive.
    pub conversations_with_gaps: u64,
    /// Seqs given to two messages of this run.
    pub duplicate_seqs: u64,
    /// Messages with more than one `stored` ack.
    pub stored_twice: u64,
    /// Messages sent but neither stored nor rejected by the end of the drain.
    pub unanswered: u64,
    /// Messages stored but never delivered to the recipient.
    pub undelivered: u64,
    /// Messages a recipient received more than once.
    pub delivered_twice: u64,
    /// Times a recipient received a seq other than the previous one plus one.
    pub out_of_order: u64,
}

impl Integrity {
    pub fn clean(&self) -> bool {
        self.conversations_with_gaps == 0
            && self.duplicate_seqs == 0
            && self.stored_twice == 0
            && self.unanswered == 0
            && self.undelivered == 0
            && self.delivered_twice == 0
            && self.out_of_order == 0
    }
}

/// Checks the stored seqs of each conversation and the timeline's counts.
pub fn check(
    timeline: &Timeline,
    logs: &[StoredLog],
    out_of_order: u64,
    problems: &Problems,
) -> Integrity {
    let mut integrity = Integrity {
        out_of_order,
        ..Integrity::default()
    };
    for log in logs {
        if log.conversations.len() > 1 {
            problems.add(
                "one sender's messages landed in several conversations",
                || log.conversations.join(", "),
            );
        }
        let mut seqs: Vec<i64> = log.stored.iter().map(|(seq, _)| *seq).collect();
        seqs.sort_unstable();
        let before = seqs.len();
        seqs.dedup();
        integrity.duplicate_seqs += (before - seqs.len()) as u64;
        if let (Some(first), Some(last)) = (seqs.first(), seqs.last())
            && (last - first + 1) as usize != seqs.len()
        {
            integrity.conversations_with_gaps += 1;
            let conversation = log.conversations.first().cloned().unwrap_or_default();
            problems.add("stored seqs with gaps", || {
                format!(
                    "{conversation}: {} seqs between {first} and {last}",
                    seqs.len()
                )
            });
        }
    }
    for slot in timeline.slots() {
        let stores = slot.stores.load(Ordering::Relaxed);
        let deliveries = slot.deliveries.load(Ordering::Relaxed);
        if stores > 1 {
            integrity.stored_twice += 1;
        }
        if stores == 0 && slot.rejected.load(Ordering::Relaxed) == 0 {
            integrity.unanswered += 1;
        }
        if stores > 0 && deliveries == 0 {
            integrity.undelivered += 1;
        }
        if deliveries > 1 {
            integrity.delivered_twice += 1;
        }
    }
    integrity
}

/// `retry_after` values per field: `retry_after_ms: n 12, min 100, p50 250, max 1000`.
pub fn retry_after_summary(seen: &[(String, f64)]) -> Option<String> {
    let mut fields: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
    fields.sort_unstable();
    fields.dedup();
    let parts: Vec<String> = fields
        .iter()
        .map(|field| {
            let mut values: Vec<f64> = seen
                .iter()
                .filter(|(k, _)| k == field)
                .map(|(_, v)| *v)
                .collect();
            values.sort_by(f64::total_cmp);
            format!(
                "{field}: n {}, min {}, p50 {}, max {}",
                values.len(),
                values[0],
                values[values.len() / 2],
                values[values.len() - 1]
            )
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// The rows, results and problems both pairs scenarios report the same way.
pub fn describe(run: &Run, outcome: &mut Outcome) {
    outcome.row(
        "messages sent / accepted / stored / rejected",
        format!(
            "{} / {} / {} / {}",
            report::thousands(run.sent as f64),
            report::thousands(run.accepted as f64),
            report::thousands(run.stored as f64),
            report::thousands(run.rejected as f64)
        ),
    );
    if !run.rejections.is_empty() {
        let reasons: Vec<String> = run
            .rejections
            .iter()
            .map(|(reason, n)| format!("{reason} × {n}"))
            .collect();
        outcome.row("rejection reasons", reasons.join(", "));
        let final_reasons: Vec<&String> = reasons
            .iter()
            .filter(|r| {
                let pushed_back = super::readers::RESEND_REASONS
                    .iter()
                    .any(|reason| r.starts_with(reason));
                !(run.resent > 0 && pushed_back)
            })
            .collect();
        if !final_reasons.is_empty() {
            outcome.problem(format!(
                "messages rejected: {}",
                final_reasons
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    if run.resent > 0 {
        outcome.row(
            "sent again after service_unavailable",
            report::thousands(run.resent as f64),
        );
    }
    if let Some(summary) = retry_after_summary(&run.retry_after) {
        outcome.row("retry_after asked", summary);
    }
    if !run.error_codes.is_empty() {
        let codes: Vec<String> = run
            .error_codes
            .iter()
            .map(|(code, n)| format!("{code} × {n}"))
            .collect();
        outcome.row("error frames by code", codes.join(", "));
    }
    outcome.row(
        "most accepted but not stored (client side, sampled every 100 ms)",
        report::thousands(run.max_backlog() as f64),
    );
    let i = &run.integrity;
    outcome.row(
        "integrity",
        if i.clean() {
            "every stored seq gap-free per conversation, each client id stored once, every stored message delivered once and in order".to_owned()
        } else {
            format!(
                "conversations with gaps {}, duplicate seqs {}, stored twice {}, unanswered {}, undelivered {}, delivered twice {}, out of order {}",
                i.conversations_with_gaps,
                i.duplicate_seqs,
                i.stored_twice,
                i.unanswered,
                i.undelivered,
                i.delivered_twice,
                i.out_of_order
            )
        },
    );
    if !i.clean() {
        outcome.problem("integrity check failed (see the integrity row)");
    }
    for problem in &run.problems {
        outcome.problem(problem.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(seqs: &[i64]) -> StoredLog {
        StoredLog {
            conversations: vec!["p:a:b".to_owned()],
            stored: seqs
                .iter()
                .enumerate()
                .map(|(i, s)| (*s, i as u64))
                .collect(),
        }
    }

    #[test]
    fn retry_after_values_are_summarised_per_field() {
        assert_eq!(retry_after_summary(&[]), None);
        let seen = [
            ("retry_after_ms".to_owned(), 300.0),
            ("retry_after_ms".to_owned(), 100.0),
            ("retry_after_ms".to_owned(), 200.0),
        ];
        assert_eq!(
            retry_after_summary(&seen).as_deref(),
            Some("retry_after_ms: n 3, min 100, p50 200, max 300")
        );
    }

    #[test]
    fn stored_seqs_must_be_consecutive_and_unique() {
        let timeline = Timeline::new();
        let problems = Problems::default();
        let clean = check(&timeline, &[log(&[12, 10, 11])], 0, &problems);
        assert!(clean.clean(), "{clean:?}");
        let gaps = check(&timeline, &[log(&[1, 2, 4]), log(&[5, 5, 6])], 0, &problems);
        assert_eq!(gaps.conversations_with_gaps, 1);
        assert_eq!(gaps.duplicate_seqs, 1);
    }

    #[test]
    fn slots_tell_lost_and_duplicated_messages() {
        let timeline = Timeline::new();
        for _ in 0..4 {
            timeline.allocate();
        }
        timeline.slot(0).stores.store(1, Ordering::Relaxed);
        timeline.slot(0).deliveries.store(1, Ordering::Relaxed);
        timeline.slot(1).stores.store(2, Ordering::Relaxed);
        timeline.slot(1).deliveries.store(2, Ordering::Relaxed);
        timeline.slot(2).rejected.store(1, Ordering::Relaxed);
        let integrity = check(&timeline, &[], 0, &Problems::default());
        assert_eq!(integrity.stored_twice, 1);
        assert_eq!(integrity.delivered_twice, 1);
        assert_eq!(integrity.unanswered, 1, "slot 3 got no answer");
        assert_eq!(integrity.undelivered, 0);
    }
}
