//! What wraps every scenario: it starts only from an empty ingest backlog (or fails with a
//! problem line saying what was left), and its outcome gets the CPU seconds each watched
//! process used while it ran, and per unit of its work.

use std::time::{Duration, Instant};

use crate::backlog::Probe;
use crate::procs::{CpuSample, Procs};
use crate::report::{CpuLine, CpuReport, Outcome};

/// How long a scenario waits for the previous one's backlog to be stored.
pub const BACKLOG_WAIT: Duration = Duration::from_secs(120);

pub struct Meter {
    before: CpuSample,
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
            started: Instant::now(),
            waited,
        })
    }

    /// Adds the CPU rows to `outcome`.
    pub fn finish(self, procs: &Procs, outcome: &mut Outcome) {
        let used = procs.sample().since(&self.before);
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
        });
    }
}
