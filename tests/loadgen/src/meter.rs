//! What wraps every scenario: it starts only from an empty ingest backlog (or fails with a
//! problem line saying what was left) and, with the bench database given, right after a
//! Postgres checkpoint (the checkpoints that still fell inside it are reported); its outcome
//! gets the CPU seconds each watched process used while it ran, and per unit of its work, how
//! busy the machine's CPUs were meanwhile and how much of their time the host took (steal),
//! both from `/proc/stat`, and how fast the machine's CPUs ran (`speed`: what the host slows
//! without reporting it as steal). A `Window` measures the CPU over part of a scenario.

use std::time::{Duration, Instant};

use crate::backlog::Probe;
use crate::checkpoints::{Checkpoints, Counters};
use crate::procs::{CpuSample, CpuUse, Procs};
use crate::report::{CpuLine, CpuReport, Outcome};
use crate::speed::{Sampler, Samples, Speeds};

/// How long a scenario waits for the previous one's backlog to be stored.
pub const BACKLOG_WAIT: Duration = Duration::from_secs(120);

pub struct Meter {
    /// The CPU counted from the start.
    window: Window,
    /// How long the backlog took to empty; `None` when it was not checked.
    waited: Option<Duration>,
    /// What vacuuming and forcing a checkpoint said, and the counters at the start.
    checkpoint: Option<(Settled, Option<Counters>)>,
    /// The machine's speed, sampled from the start.
    speed: Sampler,
}

impl Meter {
    /// Waits for an empty ingest backlog (when a probe is given), then starts counting.
    pub async fn start(
        procs: &Procs,
        probe: Option<&Probe>,
        checkpoints: Option<&Checkpoints>,
    ) -> anyhow::Result<Self> {
        let waited = match probe {
            Some(probe) => Some(probe.wait_empty(BACKLOG_WAIT).await.map_err(|err| {
                err.context("the scenario did not start: the previous backlog was not stored")
            })?),
            None => None,
        };
        let checkpoint = match checkpoints {
            Some(checkpoints) => Some(settle(checkpoints).await),
            None => None,
        };
        Ok(Self {
            window: Window::open(procs),
            waited,
            checkpoint,
            speed: Sampler::start(),
        })
    }

    /// The speed probe's samples, for a scenario that splits its figures by them.
    pub fn speed(&self) -> Samples {
        self.speed.samples()
    }

    /// Adds the CPU rows (and the checkpoint rows) to `outcome`.
    pub async fn finish(
        self,
        procs: &Procs,
        checkpoints: Option<&Checkpoints>,
        outcome: &mut Outcome,
    ) {
        let started = self.window.started;
        let used = self.window.close(procs);
        let samples = self.speed.finish();
        let speed = Speeds::new(&samples, |at| {
            u32::try_from(at.saturating_duration_since(started).as_micros()).unwrap_or(u32::MAX)
        })
        .summary((0, u32::MAX));
        if let (Some((settled, before)), Some(checkpoints)) = (&self.checkpoint, checkpoints) {
            outcome.row("Postgres vacuum before the start", settled.vacuumed.clone());
            outcome.row(
                "Postgres checkpoint before the start",
                settled.forced.clone(),
            );
            let after = checkpoints.counters().await;
            let inside = |describe: fn(&Counters, &Counters) -> String| match (before, &after) {
                (Some(before), Ok(after)) => describe(before, after),
                (None, _) => "not known (no counters at the start)".to_owned(),
                (_, Err(err)) => format!("not known: {err:#}"),
            };
            outcome.row(
                "Postgres checkpoints during the scenario",
                inside(Counters::describe_until),
            );
            outcome.row(
                "Postgres autovacuums during the scenario",
                inside(Counters::autovacuums_until),
            );
        }
        let shares = used.shares;
        let wall = used.seconds;
        let (unit, units) = match outcome.work {
            Some((unit, n)) => (Some(unit.to_owned()), Some(n)),
            None => (None, None),
        };
        let lines: Vec<CpuLine> = used
            .processes
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
        if let Some(shares) = shares {
            outcome.row(
                "machine CPU busy (every process, all cores)",
                format!("{:.0}%", shares.busy * 100.0),
            );
            outcome.row(
                "machine CPU time taken by the host (steal)",
                format!("{:.0}%", shares.steal * 100.0),
            );
        }
        if let Some(speed) = &speed {
            outcome.row(
                "machine CPU speed (a fixed piece of work, timed in its own thread's CPU time every 5 ms)",
                speed.line(),
            );
        }
        if let (Some(unit), Some(n)) = (&unit, units.filter(|n| *n > 0)) {
            outcome.row(&format!("CPU ms per {unit} ({n})"), used.ms_per(n, 3));
        }
        outcome.cpu = Some(CpuReport {
            wall_seconds: (wall * 100.0).round() / 100.0,
            unit,
            units,
            processes: lines,
            busy_share: shares.map(|s| (s.busy * 1000.0).round() / 1000.0),
            steal_share: shares.map(|s| (s.steal * 1000.0).round() / 1000.0),
            speed,
        });
    }
}

/// CPU use over part of a scenario (fan-out's sending and delivering, without the set-up
/// before it), where the whole scenario's figures would mix in its preparation.
pub struct Window {
    before: CpuSample,
    machine_before: Option<Ticks>,
    started: Instant,
}

/// What a window measured.
pub struct WindowUse {
    pub seconds: f64,
    pub processes: Vec<CpuUse>,
    /// How busy the machine's CPUs were meanwhile and how much the host took, where readable.
    shares: Option<Shares>,
}

impl Window {
    pub fn open(procs: &Procs) -> Self {
        Self {
            before: procs.sample(),
            machine_before: machine_ticks(),
            started: Instant::now(),
        }
    }

    pub fn close(self, procs: &Procs) -> WindowUse {
        WindowUse {
            seconds: self.started.elapsed().as_secs_f64(),
            processes: procs.sample().since(&self.before),
            shares: self
                .machine_before
                .zip(machine_ticks())
                .and_then(|(before, after)| Shares::between(before, after)),
        }
    }
}

impl WindowUse {
    /// How busy the machine's CPUs were meanwhile (every process, all cores), where readable.
    pub fn busy_share(&self) -> Option<f64> {
        self.shares.map(|shares| shares.busy)
    }

    /// `mesh 0.010 · nats-server 0.004 · ...`: CPU milliseconds of each process per unit,
    /// with `decimals` places.
    pub fn ms_per(&self, units: u64, decimals: usize) -> String {
        let units = units.max(1) as f64;
        self.processes
            .iter()
            .map(|u| format!("{} {:.decimals$}", u.process, u.seconds * 1000.0 / units))
            .collect::<Vec<_>>()
            .join(" · ")
    }
}

/// What was reported about vacuuming and the checkpoint before a scenario.
struct Settled {
    vacuumed: String,
    forced: String,
}

/// Vacuums the bench database, then forces a checkpoint (which writes the pages the vacuum
/// dirtied): what to report about both, and the counters right after.
async fn settle(checkpoints: &Checkpoints) -> (Settled, Option<Counters>) {
    let vacuumed = match checkpoints.vacuum().await {
        Ok(took) => format!("VACUUM (ANALYZE) (took {:.1} s)", took.as_secs_f64()),
        Err(err) => format!("not vacuumed: {err:#}"),
    };
    let forced = match checkpoints.force().await {
        Ok(took) => format!("forced (took {:.1} s)", took.as_secs_f64()),
        Err(err) => format!("not forced: {err:#}"),
    };
    (
        Settled { vacuumed, forced },
        checkpoints.counters().await.ok(),
    )
}

/// The machine's CPU ticks since boot, all cores together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ticks {
    /// Running anything (not idle, not waiting for I/O, not stolen).
    busy: u64,
    steal: u64,
    total: u64,
}

/// The machine's CPU ticks, from the `cpu` line of `/proc/stat`.
fn machine_ticks() -> Option<Ticks> {
    parse_cpu_line(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// Ticks from `/proc/stat` text: `cpu user nice system idle iowait irq softirq steal ...`;
/// guest time is already inside user and nice, so it is not added again.
fn parse_cpu_line(stat: &str) -> Option<Ticks> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    (ticks.len() == 8).then(|| {
        let total: u64 = ticks.iter().sum();
        let (idle, iowait, steal) = (ticks[3], ticks[4], ticks[7]);
        Ticks {
            busy: total - idle - iowait - steal,
            steal,
            total,
        }
    })
}

/// Shares of the ticks between two readings.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Shares {
    busy: f64,
    steal: f64,
}

impl Shares {
    /// `None` when no time passed.
    fn between(before: Ticks, after: Ticks) -> Option<Self> {
        let total = after.total.checked_sub(before.total).filter(|t| *t > 0)? as f64;
        let share = |a: u64, b: u64| a.saturating_sub(b) as f64 / total;
        Some(Self {
            busy: share(after.busy, before.busy),
            steal: share(after.steal, before.steal),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_gives_each_process_its_cpu_per_unit() {
        let used = WindowUse {
            seconds: 2.0,
            processes: vec![
                CpuUse {
                    process: "mesh",
                    seconds: 3.0,
                },
                CpuUse {
                    process: "nats-server",
                    seconds: 0.5,
                },
            ],
            shares: Some(Shares {
                busy: 0.9,
                steal: 0.0,
            }),
        };
        assert_eq!(used.busy_share(), Some(0.9));
        assert_eq!(used.ms_per(200_000, 4), "mesh 0.0150 · nats-server 0.0025");
        assert_eq!(used.ms_per(0, 4), "mesh 3000.0000 · nats-server 500.0000");
    }

    #[test]
    fn the_cpu_line_gives_busy_steal_and_total() {
        let stat = "cpu  100 5 50 800 10 0 5 30 7 0\ncpu0 50 2 25 400 5 0 2 15 3 0\n";
        let ticks = Ticks {
            busy: 160,
            steal: 30,
            total: 1000,
        };
        assert_eq!(parse_cpu_line(stat), Some(ticks));
        assert_eq!(parse_cpu_line("cpu0 1 2 3\n"), None);
        assert_eq!(parse_cpu_line("cpu  1 2 x 4 5 6 7 8\n"), None);
    }

    #[test]
    fn the_shares_are_of_the_ticks_between_readings() {
        let before = Ticks {
            busy: 500,
            steal: 30,
            total: 1_000,
        };
        let after = Ticks {
            busy: 800,
            steal: 130,
            total: 1_400,
        };
        let shares = Shares::between(before, after);
        assert_eq!(
            shares,
            Some(Shares {
                busy: 0.75,
                steal: 0.25
            })
        );
        assert_eq!(Shares::between(before, before), None);
    }
}
