//! What this machine allows a scenario at best, from figures of the same run, so a missed
//! target says whether the machine rules it out: stored msg/s if the mesh used no CPU (the
//! other processes' CPU per stored message on all CPUs), the read targets against the edge's
//! own HTTP answers (no token, no bus) at the same concurrency, against what an HTTP answer
//! and a request/reply cost together in CPU, and against whether the two, run together at the
//! target's rate, kept to it (and, beside them, what a read may spend beyond those two parts
//! at the target's rate against what the reads spent); and the sign-in ratio if the
//! mesh's work beside the hash cost nothing (a raw hash's CPU against it plus the other
//! processes' CPU per sign-in). Each bound is generous: it grants every CPU fully busy.
//! Latency at half the maximum is set beside a message's raw path at the same rate (JetStream,
//! one Postgres transaction per batch, a core NATS push; `raw_message_path`, the better of two
//! runs when the first misses): when even that misses the target, the machine rules it out. Its other row says why the CPUs are as busy
//! as they are there (each process's CPU per message against the maximum's).

use serde_json::{Value, json};

use crate::report::{CpuReport, Outcome, thousands};
use crate::scenarios::baseline::{PathFloor, ReadParts};
use crate::scenarios::{Ctx, latency, login, reads, throughput};

/// The process whose CPU the bounds leave out: the system under test.
const MESH: &str = "mesh";

/// Adds the bound of `outcome`'s scenario (when it has one and its figures were measured).
pub fn add(outcome: &mut Outcome, ctx: &Ctx, cpus: usize) {
    let limits = &ctx.limits;
    let bound = match outcome.scenario {
        "throughput" => outcome
            .cpu
            .as_ref()
            .and_then(others_ms)
            .map(|others| stored_bound(others, cpus)),
        "reads" => match (
            limits.request_reply,
            limits.edge_http,
            limits.edge_http_p99_ms,
        ) {
            (Some(raw), Some(edge), Some(p99)) => {
                let mut bound = read_bound(edge / raw, p99);
                if let (Some(rr_ms), Some(edge_ms)) =
                    (limits.request_reply_cpu_ms, limits.edge_http_cpu_ms)
                {
                    bound.join(read_parts_bound(raw, rr_ms, edge_ms, cpus));
                    let spent = outcome
                        .cpu
                        .as_ref()
                        .and_then(|cpu| cpu.ms_per_unit_of(|_| true));
                    if let Some(spent) = spent {
                        bound.join(beyond_parts_bound(raw, rr_ms + edge_ms, spent, cpus));
                    }
                }
                if let Some(parts) = limits.read_parts {
                    bound.join(parts_together_bound(&parts));
                }
                Some(bound)
            }
            _ => None,
        },
        "login" => match (limits.argon2, outcome.cpu.as_ref().and_then(others_ms)) {
            (Some(hashes), Some(others)) => Some(login_bound(hashes, others, cpus)),
            _ => None,
        },
        "latency" => {
            let rate = outcome.params["rate"].as_f64();
            let floor = limits
                .message_path
                .filter(|floor| Some(floor.rate) == rate)
                .map(|floor| path_floor_bound(&floor));
            let account = match (outcome.cpu.as_ref(), ctx.max_cpu.as_ref()) {
                (Some(here), Some(maximum)) => latency_account(here, maximum, cpus),
                _ => None,
            };
            let speed = speed_bound(&outcome.results);
            [floor, account, speed]
                .into_iter()
                .flatten()
                .reduce(|mut all, bound| {
                    all.join(bound);
                    all
                })
        }
        _ => None,
    };
    let Some(bound) = bound else { return };
    for (label, text) in &bound.rows {
        outcome.row(label, text.clone());
    }
    if let Value::Object(results) = &mut outcome.results {
        results.insert("ceiling".to_owned(), bound.results);
    }
}

/// A scenario's bound: its report rows and its figures for the JSON file.
struct Bound {
    rows: Vec<(String, String)>,
    results: Value,
}

impl Bound {
    /// Adds another bound's rows and figures (both objects) to this one's.
    fn join(&mut self, other: Bound) {
        self.rows.extend(other.rows);
        if let (Value::Object(mine), Value::Object(theirs)) = (&mut self.results, other.results) {
            mine.extend(theirs);
        }
    }
}

/// CPU ms per unit of work of every process but the mesh, when every process was counted.
fn others_ms(cpu: &CpuReport) -> Option<f64> {
    cpu.ms_per_unit_of(|line| line.process != MESH)
}

fn verdict(reachable: bool) -> &'static str {
    if reachable {
        "not ruled out here"
    } else {
        "out of reach on this machine"
    }
}

/// Stored msg/s on `cpus` CPUs if the other processes spent `others_ms` per stored message
/// and the mesh nothing.
fn stored_bound(others_ms: f64, cpus: usize) -> Bound {
    let most = cpus as f64 * 1000.0 / others_ms;
    let target = throughput::TARGET_STORED_PER_SEC;
    let text = format!(
        "{} stored msg/s: nats-server, Postgres and the load generator (and any other process \
         watched) took {others_ms:.3} ms of CPU per stored message on {cpus} CPUs; {} is {}",
        thousands(most),
        thousands(target),
        verdict(most >= target)
    );
    Bound {
        rows: vec![("ceiling (the mesh using no CPU)".to_owned(), text)],
        results: json!({ "stored_per_sec": most.round(), "others_ms_per_message": others_ms, "cpus": cpus }),
    }
}

/// The read targets against the edge's own HTTP answers at the same concurrency:
/// `edge_ratio` of the raw request/reply rate, with p99 `edge_p99_ms`.
fn read_bound(edge_ratio: f64, edge_p99_ms: f64) -> Bound {
    let ratio = format!(
        "the edge alone (no token, no bus) answered {edge_ratio:.3}x the raw request/reply rate; \
         {}x is {}",
        reads::TARGET_RATIO,
        verdict(edge_ratio >= reads::TARGET_RATIO)
    );
    let p99 = format!(
        "the edge alone answered with p99 {edge_p99_ms:.2} ms at the same concurrency; \
         p99 < {} ms is {}",
        reads::TARGET_P99_MS,
        verdict(edge_p99_ms < reads::TARGET_P99_MS)
    );
    Bound {
        rows: vec![
            (
                "ceiling of the ratio (the edge's own HTTP)".to_owned(),
                ratio,
            ),
            ("ceiling of p99 (the edge's own HTTP)".to_owned(), p99),
        ],
        results: json!({ "edge_ratio": edge_ratio, "edge_p99_ms": edge_p99_ms }),
    }
}

/// The read ratio on `cpus` CPUs if a read cost only what it cannot do without, each at its
/// raw cost in the same run: the edge's HTTP answer (`edge_ms` of CPU, every process) and a
/// NATS request/reply (`request_reply_ms`), against the raw request/reply rate `raw`. The
/// bound grants that a read's token check, routing and JSON cost nothing.
fn read_parts_bound(raw: f64, request_reply_ms: f64, edge_ms: f64, cpus: usize) -> Bound {
    let most = cpus as f64 * 1000.0 / (request_reply_ms + edge_ms);
    let ratio = most / raw;
    let text = format!(
        "{ratio:.3}x ({} reads/s): an edge HTTP answer took {edge_ms:.3} ms of CPU and a raw \
         request/reply {request_reply_ms:.3} ms (every process, in the raw scenarios), so {cpus} \
         CPUs fully busy allow at most that if a read cost nothing else; {}x is {}",
        thousands(most),
        reads::TARGET_RATIO,
        verdict(ratio >= reads::TARGET_RATIO)
    );
    Bound {
        rows: vec![(
            "ceiling of the ratio (an HTTP answer and a request/reply at their raw cost)"
                .to_owned(),
            text,
        )],
        results: json!({
            "parts_ratio": ratio,
            "parts_reads_per_sec": most.round(),
            "edge_http_cpu_ms": edge_ms,
            "request_reply_cpu_ms": request_reply_ms,
        }),
    }
}

/// What a read may spend beyond its two parts at the target's rate, against what the mesh's
/// reads spent beyond them: `cpus` fully busy at `TARGET_RATIO` of the raw request/reply rate
/// `raw` allow so much CPU per read (every process); the parts at their raw cost
/// (`parts_ms`) take their share, and what is left is all a read's token check, routing,
/// caches, JSON, logs and metrics may cost. `spent_ms` is the reads' own CPU per read, every
/// process. Not a verdict: it says how far the mesh's own work is from the target.
fn beyond_parts_bound(raw: f64, parts_ms: f64, spent_ms: f64, cpus: usize) -> Bound {
    let rate = reads::TARGET_RATIO * raw;
    let allowed_ms = cpus as f64 * 1000.0 / rate;
    let left_ms = allowed_ms - parts_ms;
    let beyond_ms = spent_ms - parts_ms;
    let (left, times) = if left_ms > 0.0 {
        (
            format!("{left_ms:.3} ms"),
            format!("{:.1}x what is left", beyond_ms / left_ms),
        )
    } else {
        ("nothing".to_owned(), "with nothing left".to_owned())
    };
    let text = format!(
        "at {}x ({} reads/s) {cpus} CPUs fully busy allow {allowed_ms:.3} ms of CPU per read; its \
         parts take {parts_ms:.3} at their raw cost, leaving {left} for everything else a read \
         does (token, route, caches, JSON, logs, metrics); the reads here spent {spent_ms:.3} ms \
         (every process), {beyond_ms:.3} beyond the parts: {times}",
        reads::TARGET_RATIO,
        thousands(rate),
    );
    Bound {
        rows: vec![("what a read may spend beyond its parts".to_owned(), text)],
        results: json!({
            "beyond_parts_allowed_ms": left_ms,
            "beyond_parts_spent_ms": beyond_ms,
        }),
    }
}

/// The read ratio against what the two parts a read needs reached when run together with
/// nothing else, each asked the target's rate: if either fell short, no read can reach it.
fn parts_together_bound(parts: &ReadParts) -> Bound {
    let busy = parts
        .busy_share
        .map(|share| format!(", the CPUs {:.0}% busy", share * 100.0))
        .unwrap_or_default();
    let text = format!(
        "asked {}/s each, together and with nothing else, the edge's HTTP answers reached {}/s and \
         raw request/reply {}/s{busy}; {}x is {}",
        thousands(parts.asked),
        thousands(parts.edge_http),
        thousands(parts.request_reply),
        reads::TARGET_RATIO,
        verdict(parts.kept_up())
    );
    Bound {
        rows: vec![(
            "ceiling of the ratio (an HTTP answer and a request/reply together at the target rate)"
                .to_owned(),
            text,
        )],
        results: json!({
            "parts_together_asked_per_sec": parts.asked,
            "parts_together_edge_http_per_sec": parts.edge_http.round(),
            "parts_together_request_reply_per_sec": parts.request_reply.round(),
            "parts_together_busy_share": parts.busy_share,
            "parts_together_kept_up": parts.kept_up(),
        }),
    }
}

/// The best sign-in ratio on `cpus` CPUs hashing `hashes_per_sec` alone, if the other
/// processes spent `others_ms` per sign-in and the mesh only the hash.
fn login_bound(hashes_per_sec: f64, others_ms: f64, cpus: usize) -> Bound {
    let hash_ms = cpus as f64 * 1000.0 / hashes_per_sec;
    let best = hash_ms / (hash_ms + others_ms);
    let text = format!(
        "{best:.3}x: a raw hash takes {hash_ms:.1} ms of CPU ({cpus} CPUs at {} hashes/s), and \
         nats-server, Postgres and the load generator (and any other process watched) took \
         {others_ms:.2} ms per sign-in; {}x is {}",
        thousands(hashes_per_sec),
        login::TARGET_RATIO,
        verdict(best >= login::TARGET_RATIO)
    );
    Bound {
        rows: vec![(
            "ceiling (the mesh's work beside the hash free)".to_owned(),
            text,
        )],
        results: json!({ "ratio": best, "hash_ms": hash_ms, "others_ms_per_login": others_ms, "cpus": cpus }),
    }
}

/// The latency target against a message's raw path at the same rate, with nothing else
/// running (`PathFloor::better` of two runs when the first missed): when the path's own p99
/// misses the target, or the path could not keep to the rate, no design that stores and
/// delivers through the same parts reaches it on this machine.
fn path_floor_bound(floor: &PathFloor) -> Bound {
    let rules_out = floor.rules_out();
    let busy = floor
        .busy_share
        .map(|share| format!(", the CPUs {:.0}% busy", share * 100.0))
        .unwrap_or_default();
    let other = floor
        .other_p99_ms
        .map(|p99| format!(" (the better of two runs; the other's p99 was {p99} ms)"))
        .unwrap_or_default();
    let text = format!(
        "a message's raw path at {} msg/s with nothing else (JetStream publish and ack, a consumer \
         per CPU, one Postgres transaction per batch, a core NATS push) took p50 {} · p99 {} \
         ms from ack to delivery{}{busy}{other}; p99 < {} ms is {}",
        thousands(floor.rate),
        floor.p50_ms,
        floor.p99_ms,
        if floor.kept_up {
            ""
        } else {
            " and did not keep to the rate"
        },
        latency::TARGET_P99_MS,
        verdict(!rules_out)
    );
    Bound {
        rows: vec![(
            "ceiling (a message's raw path at this rate)".to_owned(),
            text,
        )],
        results: json!({
            "path_rate": floor.rate,
            "path_p50_ms": floor.p50_ms,
            "path_p99_ms": floor.p99_ms,
            "path_kept_up": floor.kept_up,
            "path_busy_share": floor.busy_share,
            "path_other_p99_ms": floor.other_p99_ms,
            "path_rules_out": rules_out,
        }),
    }
}

/// Whether a missed latency target lies in the stretches in which this machine's CPUs ran
/// slowed (`speed`): when the messages accepted while the machine ran at its speed kept p99
/// under the target and the whole scenario did not, the host's slow-downs account for the miss.
/// None when the scenario had no speed samples.
fn speed_bound(results: &Value) -> Option<Bound> {
    let speed = results.get("machine_speed")?;
    let p99 = |key: &str| results.get(key)?.get("p99_ms")?.as_f64();
    let count = |key: &str| results.get(key)?.get("count")?.as_u64();
    let (whole, at_speed) = (
        p99("accept_to_delivery")?,
        p99("accept_to_delivery_at_speed")?,
    );
    let slowed_share = speed.get("slowed_share")?.as_f64()?;
    let slowest = speed.get("slowest")?.as_f64()?;
    let target = latency::TARGET_P99_MS;
    let accounts = whole >= target && at_speed < target && count("accept_to_delivery_slowed")? > 0;
    let finding = if whole < target {
        "the target was met".to_owned()
    } else if accounts {
        format!(
            "the miss lies in the quarter-seconds in which the host slowed this machine's CPUs; \
             at their speed p99 < {target} ms was kept"
        )
    } else {
        format!(
            "at the machine's speed too p99 was {at_speed} ms: the host's slow-downs do not account for the miss"
        )
    };
    let text = format!(
        "the same fixed work ran slowed (1.3x or more) in {:.0}% of the quarter-seconds, the \
         slowest at {slowest:.2}x; p99 of the messages accepted at the machine's speed \
         {at_speed} ms, of all {whole} ms; {finding}",
        slowed_share * 100.0
    );
    Some(Bound {
        rows: vec![("ceiling (this machine's speed)".to_owned(), text)],
        results: json!({
            "speed_slowed_share": slowed_share,
            "speed_p99_at_speed_ms": at_speed,
            "speed_accounts_for_miss": accounts,
        }),
    })
}

/// Why the CPUs are as busy as they are at the latency scenario's rate: each process's CPU per
/// stored message there against the same run's maximum (`throughput`), and how busy the
/// processes besides the mesh alone kept the CPUs. It bounds nothing by itself (the raw path
/// does). None when a process's figure is missing.
fn latency_account(here: &CpuReport, maximum: &CpuReport, cpus: usize) -> Option<Bound> {
    let mut parts = Vec::new();
    let mut per_process = serde_json::Map::new();
    let (mut total_here, mut total_maximum) = (0.0, 0.0);
    for line in &here.processes {
        let at_rate = line.ms_per_unit?;
        let at_maximum = maximum
            .processes
            .iter()
            .find(|m| m.process == line.process)?
            .ms_per_unit?;
        total_here += at_rate;
        total_maximum += at_maximum;
        parts.push(format!(
            "{} {at_rate:.3} against {at_maximum:.3}",
            line.process
        ));
        per_process.insert(
            line.process.clone(),
            json!({ "ms_per_message": at_rate, "ms_per_message_at_maximum": at_maximum }),
        );
    }
    if total_maximum <= 0.0 || here.wall_seconds <= 0.0 {
        return None;
    }
    let ratio = total_here / total_maximum;
    let others_seconds: f64 = here
        .processes
        .iter()
        .filter(|line| line.process != MESH)
        .map(|line| line.seconds)
        .sum();
    let others_busy = others_seconds / (here.wall_seconds * cpus as f64);
    let text = format!(
        "CPU ms per stored message at this rate against the maximum: {}; {ratio:.2}x in all, \
         so the CPUs are busier than the rate alone suggests, and the processes besides the \
         mesh alone kept them {:.0}% busy",
        parts.join(" · "),
        others_busy * 100.0,
    );
    Some(Bound {
        rows: vec![("why the CPUs are busy at this rate".to_owned(), text)],
        results: json!({
            "cpu_ratio_to_maximum": ratio,
            "others_busy_share": others_busy,
            "per_process": per_process,
            "cpus": cpus,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::CpuLine;

    fn cpu(lines: &[(&str, Option<f64>)]) -> CpuReport {
        CpuReport {
            wall_seconds: 10.0,
            unit: Some("stored message".into()),
            units: Some(1000),
            processes: lines
                .iter()
                .map(|(process, ms)| CpuLine {
                    process: (*process).to_owned(),
                    seconds: 1.0,
                    ms_per_unit: *ms,
                })
                .collect(),
            busy_share: None,
            steal_share: None,
            speed: None,
        }
    }

    #[test]
    fn the_mesh_is_left_out_and_an_unknown_process_voids_the_sum() {
        let known = cpu(&[
            ("mesh", Some(0.085)),
            ("nats-server", Some(0.052)),
            ("postgres", Some(0.040)),
            ("loadgen", Some(0.024)),
        ]);
        assert!((others_ms(&known).unwrap() - 0.116).abs() < 1e-9);
        let unknown = cpu(&[("mesh", Some(0.085)), ("nats-server", None)]);
        assert_eq!(others_ms(&unknown), None);
    }

    #[test]
    fn latencys_cpu_row_says_why_the_cpus_are_busy() {
        let here = cpu(&[
            ("mesh", Some(0.180)),
            ("nats-server", Some(0.120)),
            ("postgres", Some(0.090)),
            ("loadgen", Some(0.070)),
        ]);
        let maximum = cpu(&[
            ("mesh", Some(0.115)),
            ("nats-server", Some(0.070)),
            ("postgres", Some(0.050)),
            ("loadgen", Some(0.030)),
        ]);
        let bound = latency_account(&here, &maximum, 2).unwrap();
        // 0.46 ms against 0.265 ms per message: 1.74x.
        assert!(
            (bound.results["cpu_ratio_to_maximum"].as_f64().unwrap() - 0.46 / 0.265).abs() < 1e-9
        );
        // Three processes besides the mesh, 1 s each, over 10 s on 2 CPUs: 15% busy.
        assert!((bound.results["others_busy_share"].as_f64().unwrap() - 0.15).abs() < 1e-9);
        let text = &bound.rows[0].1;
        assert!(text.contains("mesh 0.180 against 0.115"), "{text}");
        assert!(text.contains("1.74x in all"), "{text}");
        assert!(text.ends_with("kept them 15% busy"), "{text}");
        // A process the maximum did not measure voids the account.
        let partial = cpu(&[("mesh", Some(0.115)), ("nats-server", None)]);
        assert!(latency_account(&here, &partial, 2).is_none());
    }

    #[test]
    fn latency_is_ruled_out_only_when_the_raw_path_misses_it_or_falls_behind() {
        let floor = |p99_ms, kept_up| PathFloor {
            rate: 20_000.0,
            p50_ms: 5.0,
            p99_ms,
            kept_up,
            busy_share: Some(0.6),
            other_p99_ms: None,
            just_measured: false,
        };
        let within = path_floor_bound(&floor(12.5, true));
        assert_eq!(within.results["path_rules_out"], false);
        let text = &within.rows[0].1;
        assert!(text.contains("p50 5 · p99 12.5 ms"), "{text}");
        assert!(text.contains("the CPUs 60% busy"), "{text}");
        assert!(
            text.ends_with("p99 < 50 ms is not ruled out here"),
            "{text}"
        );
        let slow = path_floor_bound(&floor(50.0, true));
        assert_eq!(slow.results["path_rules_out"], true);
        assert!(slow.rows[0].1.ends_with("out of reach on this machine"));
        let behind = path_floor_bound(&floor(12.5, false));
        assert_eq!(behind.results["path_rules_out"], true);
        assert!(behind.rows[0].1.contains("did not keep to the rate"));
    }

    #[test]
    fn a_miss_lies_in_the_slowed_stretches_only_when_the_rest_kept_the_target() {
        let results = |whole: f64, at_speed: f64, slowed_count: u64| {
            json!({
                "accept_to_delivery": { "p99_ms": whole, "count": 1000 },
                "accept_to_delivery_at_speed": { "p99_ms": at_speed, "count": 1000 - slowed_count },
                "accept_to_delivery_slowed": { "p99_ms": 190.0, "count": slowed_count },
                "machine_speed": { "slowed_share": 0.2, "slowest": 1.74 },
            })
        };
        let accounts = |bound: &Bound| bound.results["speed_accounts_for_miss"].as_bool().unwrap();
        let bound = speed_bound(&results(108.9, 41.0, 200)).unwrap();
        assert!(accounts(&bound));
        assert!(
            bound.rows[0].1.contains("20% of the quarter-seconds"),
            "{:?}",
            bound.rows
        );
        assert!(
            bound.rows[0]
                .1
                .contains("the miss lies in the quarter-seconds")
        );
        let bound = speed_bound(&results(108.9, 60.0, 200)).unwrap();
        assert!(!accounts(&bound));
        assert!(bound.rows[0].1.contains("do not account for the miss"));
        assert!(
            !accounts(&speed_bound(&results(40.0, 38.0, 200)).unwrap()),
            "met"
        );
        assert!(
            !accounts(&speed_bound(&results(60.0, 40.0, 0)).unwrap()),
            "nothing slowed"
        );
        assert!(speed_bound(&json!({ "accept_to_delivery": { "p99_ms": 60.0 } })).is_none());
    }

    #[test]
    fn a_raw_path_run_twice_counts_the_better_run() {
        let run = |p99_ms, kept_up| PathFloor {
            rate: 20_000.0,
            p50_ms: 5.0,
            p99_ms,
            kept_up,
            busy_share: None,
            other_p99_ms: None,
            just_measured: true,
        };
        let mut first = run(52.4, true);
        first.busy_share = Some(0.86);
        first.just_measured = false;
        // The second run met the target: it is kept, and its CPU figures are still to come.
        let kept = first.better(run(20.1, true));
        assert!(!kept.rules_out());
        assert_eq!((kept.p99_ms, kept.other_p99_ms), (20.1, Some(52.4)));
        assert!(kept.just_measured && kept.busy_share.is_none());
        let bound = path_floor_bound(&kept);
        assert_eq!(bound.results["path_rules_out"], false);
        assert_eq!(bound.results["path_other_p99_ms"], 52.4);
        assert!(
            bound.rows[0]
                .1
                .contains("(the better of two runs; the other's p99 was 52.4 ms)"),
            "{}",
            bound.rows[0].1
        );
        // A slower second run leaves the first, with its own CPU figures.
        let kept = first.better(run(61.0, true));
        assert_eq!((kept.p99_ms, kept.other_p99_ms), (52.4, Some(61.0)));
        assert!(!kept.just_measured && kept.busy_share == Some(0.86));
        assert!(kept.rules_out());
        // Keeping to the rate counts before p99: a lower p99 that fell behind is not better.
        let kept = first.better(run(30.0, false));
        assert_eq!(kept.p99_ms, 52.4);
        assert!(first.better(run(49.9, true)).p99_ms == 49.9);
    }

    #[test]
    fn stored_messages_are_bounded_by_the_other_processes() {
        // 2 CPUs, 0.116 ms per message elsewhere: about 17,241/s, below 20,000.
        let bound = stored_bound(0.116, 2);
        assert_eq!(bound.results["stored_per_sec"], 17241.0);
        assert!(
            bound.rows[0]
                .1
                .ends_with("20,000 is out of reach on this machine")
        );
        // 0.08 ms elsewhere would allow 25,000/s: the target is not ruled out.
        assert!(
            stored_bound(0.08, 2).rows[0]
                .1
                .ends_with("not ruled out here")
        );
    }

    #[test]
    fn reads_are_bounded_by_the_edge_alone() {
        let bound = read_bound(0.40, 5.66);
        assert!(
            bound.rows[0]
                .1
                .ends_with("0.5x is out of reach on this machine")
        );
        assert!(
            bound.rows[1]
                .1
                .ends_with("5 ms is out of reach on this machine")
        );
        let open = read_bound(0.52, 4.78);
        assert!(open.rows[0].1.ends_with("not ruled out here"));
        assert!(open.rows[1].1.ends_with("not ruled out here"));
    }

    #[test]
    fn reads_are_bounded_by_an_http_answer_and_a_request_reply_together() {
        // 0.025 + 0.017 ms on 2 CPUs: 47,619 reads/s, 0.603x of 79,000/s.
        let open = read_parts_bound(79_000.0, 0.017, 0.025, 2);
        let ratio = open.results["parts_ratio"].as_f64().unwrap();
        assert!((ratio - 0.6028).abs() < 0.001, "{ratio}");
        assert!(
            open.rows[0].1.starts_with("0.603x (47,619 reads/s)"),
            "{}",
            open.rows[0].1
        );
        assert!(open.rows[0].1.ends_with("0.5x is not ruled out here"));
        assert!(!open.rows[0].1.contains("  "), "{}", open.rows[0].1);
        // Twice as costly parts halve it, below the target.
        let closed = read_parts_bound(79_000.0, 0.034, 0.050, 2);
        assert!(
            closed.rows[0]
                .1
                .ends_with("0.5x is out of reach on this machine")
        );
        // Joined to the edge's own bound, both rows and both figures are kept.
        let mut bound = read_bound(0.95, 1.2);
        bound.join(open);
        assert_eq!(bound.rows.len(), 3);
        assert!(bound.results["edge_ratio"].is_number());
        assert!(bound.results["parts_ratio"].is_number());
    }

    #[test]
    fn a_reads_work_beyond_its_parts_is_set_against_what_the_target_leaves() {
        // 0.5x of 70,000/s is 35,000 reads/s: 2 CPUs allow 0.0571 ms each; parts of 0.052
        // leave 0.0051; reads that spent 0.146 went 0.094 beyond, 18.3x what is left.
        let bound = beyond_parts_bound(70_000.0, 0.052, 0.146, 2);
        let left = bound.results["beyond_parts_allowed_ms"].as_f64().unwrap();
        let beyond = bound.results["beyond_parts_spent_ms"].as_f64().unwrap();
        assert!((left - 0.00514).abs() < 0.0001, "{left}");
        assert!((beyond - 0.094).abs() < 0.0001, "{beyond}");
        let text = &bound.rows[0].1;
        assert!(
            text.starts_with("at 0.5x (35,000 reads/s) 2 CPUs"),
            "{text}"
        );
        assert!(
            text.ends_with("0.094 beyond the parts: 18.3x what is left"),
            "{text}"
        );
        assert!(!text.contains("  "), "{text}");
        // Parts that alone take more than the target allows leave nothing.
        let none = beyond_parts_bound(70_000.0, 0.060, 0.146, 2);
        let text = &none.rows[0].1;
        assert!(
            text.contains("leaving nothing for everything else"),
            "{text}"
        );
        assert!(text.ends_with("with nothing left"), "{text}");
    }

    #[test]
    fn reads_are_out_of_reach_when_their_parts_together_fall_short() {
        let parts = |edge_http, request_reply| ReadParts {
            asked: 36_000.0,
            edge_http,
            request_reply,
            busy_share: Some(0.99),
        };
        let held = parts_together_bound(&parts(35_900.0, 35_500.0));
        assert!(
            held.rows[0].1.starts_with(
                "asked 36,000/s each, together and with nothing else, the edge's HTTP answers \
                 reached 35,900/s and raw request/reply 35,500/s, the CPUs 99% busy"
            ),
            "{}",
            held.rows[0].1
        );
        assert!(held.rows[0].1.ends_with("0.5x is not ruled out here"));
        assert_eq!(held.results["parts_together_kept_up"], true);
        // Either part short of the rate asked (by more than its last slots) rules it out.
        for (edge_http, request_reply) in [(30_000.0, 36_000.0), (36_000.0, 34_000.0)] {
            let short = parts_together_bound(&parts(edge_http, request_reply));
            assert!(
                short.rows[0]
                    .1
                    .ends_with("0.5x is out of reach on this machine"),
                "{}",
                short.rows[0].1
            );
            assert_eq!(short.results["parts_together_kept_up"], false);
        }
    }

    #[test]
    fn sign_ins_are_bounded_by_the_hash_and_the_other_processes() {
        // 89 hashes/s on 2 CPUs: 22.5 ms each; 2.89 ms elsewhere per sign-in allows 0.886x.
        let bound = login_bound(89.0, 2.893, 2);
        let ratio = bound.results["ratio"].as_f64().unwrap();
        assert!((ratio - 0.886).abs() < 0.001, "{ratio}");
        assert!(
            bound.rows[0]
                .1
                .ends_with("0.9x is out of reach on this machine")
        );
        // Just under the target reads as under it, not rounded up to it.
        let close = login_bound(87.0, 2.5834, 2);
        assert!(close.rows[0].1.starts_with("0.899x"), "{}", close.rows[0].1);
        assert!(close.rows[0].1.ends_with("out of reach on this machine"));
        // 101 hashes/s and 1.92 ms elsewhere allow 0.91x.
        let open = login_bound(101.0, 1.92, 2);
        assert!(open.results["ratio"].as_f64().unwrap() > 0.9);
        assert!(open.rows[0].1.ends_with("not ruled out here"));
    }
}
