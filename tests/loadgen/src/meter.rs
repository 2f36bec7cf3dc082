//! What wraps every scenario: it starts only from an empty ingest backlog (or fails with a
//! problem line saying what was left), and its outcome gets the CPU seconds each watched
//! process used while it ran, and per unit of its work, and how much of the machine's CPU
//! time the host took meanwhile (steal, from `/proc/stat`).

use std::time::{Duration, Instant};

use crate::backlog::Probe;
use crate::procs::{CpuSample, Procs};
use crate::report::{CpuLine, CpuReport, Outcome};

/// How long a scenario waits for the previous one's backlog to be stored.
pub const BACKLOG_WAIT: Duration = Duration::from_secs(120);

pub struct Meter {
    before: CpuSample,
    /// The machine's (steal, total) CPU ticks at the start, where readable.
    machine_before: Option<(u64, u64)>,
    started: Instant,
    /// How long the backlog took to empty; `None` when it was not checked.
    waited: Option<Duration>,
}

impl Meter {
    /// Waits for an empty ingest backlog (when a probe is given), then starts counting.
    pub async fn start(procs: &Procs, probe: Option<&Probe>) -> anyhow::Result<Self> {
        let waited = match probe {
            Some(probe) => Some(probe.wait_empty(BACKLOG_WAIT).await.map_err(|err| {
                err.context("the scenario did not start: the previous backlog was not stored")
            })?),
            None => None,
        };
        Ok(Self {
            before: procs.sample(),
            machine_before: machine_ticks(),
            started: Instant::now(),
            waited,
        })
    }

    /// Adds the CPU rows to `outcome`.
    pub fn finish(self, procs: &Procs, outcome: &mut Outcome) {
        let used = procs.sample().since(&self.before);
        let steal_share = self
            .machine_before
            .zip(machine_ticks())
            .and_then(|(before, after)| steal_share(before, after));
        let wall = self.started.elapsed().as_secs_f64();
        let (unit, units) = match outcome.work {
            Some((unit, n)) => (Some(unit.to_owned()), Some(n)),
            None => (None, None),
        };
        let lines: Vec<CpuLine> = used
            .iter()
            .map(|u| CpuLine {
                process: u.process.to_owned(),
                seconds: u.seconds,
                ms_per_unit: units
                    .filter(|n| *n > 0)
                    .map(|n| (u.seconds * 1000.0 / n as f64 * 10_000.0).round() / 10_000.0),
            })
            .collect();
        match self.waited {
            Some(waited) => outcome.row(
                "ingest backlog before the start",
                format!("empty (waited {:.1} s)", waited.as_secs_f64()),
            ),
            None => outcome.row(
                "ingest backlog before the start",
                "not checked (no --nats-monitor)",
            ),
        }
        let seconds: Vec<String> = lines
            .iter()
            .map(|l| format!("{} {:.1}", l.process, l.seconds))
            .collect();
        outcome.row(
            &format!("CPU seconds over {wall:.1} s"),
            seconds.join(" · "),
        );
        if let Some(share) = steal_share {
            outcome.row(
                "machine CPU time taken by the host (steal)",
                format!("{:.0}%", share * 100.0),
            );
        }
        if let (Some(unit), Some(n)) = (&unit, units.filter(|n| *n > 0)) {
            let per: Vec<String> = lines
                .iter()
                .filter_map(|l| Some(format!("{} {:.3}", l.process, l.ms_per_unit?)))
                .collect();
            outcome.row(&format!("CPU ms per {unit} ({n})"), per.join(" · "));
        }
        outcome.cpu = Some(CpuReport {
            wall_seconds: (wall * 100.0).round() / 100.0,
            unit,
            units,
            processes: lines,
            steal_share: steal_share.map(|s| (s * 1000.0).round() / 1000.0),
        });
    }
}

/// The machine's (steal, total) CPU ticks, from the `cpu` line of `/proc/stat`.
fn machine_ticks() -> Option<(u64, u64)> {
    parse_cpu_line(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// (steal, total) from `/proc/stat` text: `cpu user nice system idle iowait irq softirq steal
/// ...`; guest time is already inside user and nice, so it is not added again.
fn parse_cpu_line(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    (ticks.len() == 8).then(|| (ticks[7], ticks.iter().sum()))
}

/// The share of the ticks between two readings that were steal; `None` when no time passed.
fn steal_share(before: (u64, u64), after: (u64, u64)) -> Option<f64> {
    let total = after.1.checked_sub(before.1).filter(|t| *t > 0)?;
    let steal = after.0.saturating_sub(before.0);
    Some(steal as f64 / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_line_gives_steal_and_total() {
        let stat = "cpu  100 5 50 800 10 0 5 30 7 0\ncpu0 50 2 25 400 5 0 2 15 3 0\n";
        assert_eq!(parse_cpu_line(stat), Some((30, 1000)));
        assert_eq!(parse_cpu_line("cpu0 1 2 3\n"), None);
        assert_eq!(parse_cpu_line("cpu  1 2 x 4 5 6 7 8\n"), None);
    }

    #[test]
    fn the_steal_share_is_of_the_ticks_between_readings() {
        assert_eq!(steal_share((30, 1_000), (130, 1_400)), Some(0.25));
        assert_eq!(steal_share((30, 1_000), (30, 1_000)), None);
    }
}
