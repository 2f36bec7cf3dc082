//! Results: each scenario's outcome is printed, appended as one JSON line to the JSON file and
//! as a table to a dated section of the Markdown file.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A histogram of microseconds, from 1 µs to 10 minutes at 3 significant figures.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Percentiles of a latency histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    pub fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |us: u64| (us as f64 / 1000.0 * 100.0).round() / 100.0;
        Self {
            count: histogram.len(),
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p90_ms: ms(histogram.value_at_quantile(0.90)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            max_ms: ms(histogram.max()),
            mean_ms: (histogram.mean() / 10.0).round() / 100.0,
        }
    }

    /// `p50 1.2 · p90 3.4 · p99 9.9 · max 20.1 ms (n = 1000)`.
    pub fn line(&self) -> String {
        if self.count == 0 {
            return "no samples".to_owned();
        }
        format!(
            "p50 {} · p90 {} · p99 {} · max {} ms (n = {})",
            self.p50_ms,
            self.p90_ms,
            self.p99_ms,
            self.max_ms,
            thousands(self.count as f64)
        )
    }
}

/// `12345.6` as `12,346`.
pub fn thousands(value: f64) -> String {
    let rounded = value.round() as i64;
    let digits = rounded.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if rounded < 0 { format!("-{out}") } else { out }
}

/// A product target and whether the run met it.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub target: String,
    pub met: bool,
}

/// A figure beside the raw limit it approaches, both measured in the same run.
#[derive(Debug, Clone, Serialize)]
pub struct Versus {
    pub figure: String,
    pub value: f64,
    pub limit_name: String,
    /// `None` when the limit was not measured in this run.
    pub limit: Option<f64>,
    pub ratio: Option<f64>,
}

/// CPU seconds of the watched processes over a scenario, and per unit of its work.
#[derive(Debug, Clone, Serialize)]
pub struct CpuReport {
    pub wall_seconds: f64,
    /// What the work is counted in, e.g. `stored message`.
    pub unit: Option<String>,
    pub units: Option<u64>,
    pub processes: Vec<CpuLine>,
    /// Share of the machine's CPU time (all cores) spent running anything while the scenario
    /// ran: near 1, every process waits for a CPU and latencies grow with the queue.
    pub busy_share: Option<f64>,
    /// Share of the machine's CPU time the host took (steal) while the scenario ran; figures
    /// measured under much steal are lower than the machine can do.
    pub steal_share: Option<f64>,
    /// How fast the machine's CPUs ran meanwhile, and how much of the time slowed (`speed`).
    pub speed: Option<crate::speed::Summary>,
}

impl CpuReport {
    /// CPU ms per unit of work of the processes `counted` keeps, added together; `None` when
    /// one of them could not be read.
    pub fn ms_per_unit_of(&self, counted: impl Fn(&CpuLine) -> bool) -> Option<f64> {
        self.processes
            .iter()
            .filter(|line| counted(line))
            .map(|line| line.ms_per_unit)
            .sum()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CpuLine {
    pub process: String,
    pub seconds: f64,
    pub ms_per_unit: Option<f64>,
}

/// What one scenario measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub scenario: &'static str,
    /// The scenario's settings, e.g. `{"pairs": 50, "seconds": 20}`.
    pub params: Value,
    /// Every number, for the JSON file.
    pub results: Value,
    /// The human summary: label and value.
    pub rows: Vec<(String, String)>,
    pub verdicts: Vec<Verdict>,
    /// Anything that looked wrong (rejections, gaps, closes, errors), with evidence.
    pub problems: Vec<String>,
    /// The scenario's work, for CPU per unit: e.g. `("stored message", 150_000)`.
    pub work: Option<(&'static str, u64)>,
    pub versus: Vec<Versus>,
    pub cpu: Option<CpuReport>,
}

impl Outcome {
    pub fn new(scenario: &'static str, params: Value) -> Self {
        Self {
            scenario,
            params,
            results: json!({}),
            rows: Vec::new(),
            verdicts: Vec::new(),
            problems: Vec::new(),
            work: None,
            versus: Vec::new(),
            cpu: None,
        }
    }

    /// Reports `value` (of `figure`) beside the raw `limit` measured in the same run.
    pub fn versus(&mut self, figure: &str, value: f64, limit_name: &str, limit: Option<f64>) {
        let ratio = limit
            .filter(|l| *l > 0.0)
            .map(|l| (value / l * 1000.0).round() / 1000.0);
        let text = match (limit, ratio) {
            (Some(limit), Some(ratio)) => {
                format!("{} of {} = {ratio:.2}x", thousands(value), thousands(limit))
            }
            _ => format!("{} (limit not measured in this run)", thousands(value)),
        };
        self.row(&format!("{figure} vs {limit_name}"), text);
        self.versus.push(Versus {
            figure: figure.to_owned(),
            value,
            limit_name: limit_name.to_owned(),
            limit,
            ratio,
        });
    }

    pub fn row(&mut self, label: &str, value: impl Into<String>) {
        self.rows.push((label.to_owned(), value.into()));
    }

    pub fn verdict(&mut self, target: impl Into<String>, met: bool) {
        self.verdicts.push(Verdict {
            target: target.into(),
            met,
        });
    }

    pub fn problem(&mut self, problem: impl Into<String>) {
        self.problems.push(problem.into());
    }

    fn params_line(&self) -> String {
        match &self.params {
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", "),
            other => other.to_string(),
        }
    }

    fn markdown(&self) -> String {
        let mut md = format!("\n### {} ({})\n\n", self.scenario, self.params_line());
        md.push_str("| measure | value |\n|---|---|\n");
        for (label, value) in &self.rows {
            let _ = writeln!(md, "| {label} | {} |", value.replace('|', "\\|"));
        }
        for verdict in &self.verdicts {
            let mark = if verdict.met { "met" } else { "**missed**" };
            let _ = writeln!(md, "| target {} | {mark} |", verdict.target);
        }
        if !self.problems.is_empty() {
            md.push_str("\nProblems seen:\n\n");
            for problem in &self.problems {
                let _ = writeln!(md, "- {problem}");
            }
        }
        md
    }

    fn text(&self) -> String {
        let mut text = format!("== {} ({})\n", self.scenario, self.params_line());
        let width = self.rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        for (label, value) in &self.rows {
            let _ = writeln!(text, "  {label:width$}  {value}");
        }
        for verdict in &self.verdicts {
            let mark = if verdict.met { "met" } else { "MISSED" };
            let _ = writeln!(text, "  target {}: {mark}", verdict.target);
        }
        for problem in &self.problems {
            let _ = writeln!(text, "  problem: {problem}");
        }
        text
    }
}

/// Appends outcomes to the Markdown and JSON-lines files; the section heading is written with
/// the first outcome.
pub struct Writer {
    markdown: PathBuf,
    json: PathBuf,
    command: String,
    url: String,
    note: Option<String>,
    started: OffsetDateTime,
    heading_written: bool,
}

fn append(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// CPU count and model of this machine, for the section heading.
fn machine() -> String {
    let cpus = crate::procs::cpus();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!("{cpus} CPUs ({model})")
}

impl Writer {
    pub fn new(
        markdown: PathBuf,
        json: PathBuf,
        command: &str,
        url: &str,
        note: Option<String>,
    ) -> Self {
        Self {
            markdown,
            json,
            command: command.to_owned(),
            url: url.to_owned(),
            note,
            started: OffsetDateTime::now_utc()
                .replace_nanosecond(0)
                .expect("zero nanoseconds are valid"),
            heading_written: false,
        }
    }

    fn stamp(&self) -> String {
        self.started.format(&Rfc3339).unwrap_or_default()
    }

    pub fn write(&mut self, outcome: &Outcome) -> anyhow::Result<()> {
        print!("{}", outcome.text());
        if !self.heading_written {
            let mut heading = format!("\n## {} · `loadgen {}`\n\n", self.stamp(), self.command);
            let _ = write!(
                heading,
                "Mesh {} · load generator on the same machine · {}",
                self.url,
                machine()
            );
            if let Some(note) = &self.note {
                let _ = write!(heading, " · {note}");
            }
            heading.push('\n');
            append(&self.markdown, &heading)?;
            self.heading_written = true;
        }
        append(&self.markdown, &outcome.markdown())?;
        let line = json!({
            "time": self.stamp(),
            "command": self.command,
            "url": self.url,
            "note": self.note,
            "machine": machine(),
            "scenario": outcome.scenario,
            "params": outcome.params,
            "results": outcome.results,
            "targets": outcome.verdicts,
            "problems": outcome.problems,
            "versus": outcome.versus,
            "cpu": outcome.cpu,
        });
        append(&self.json, &format!("{line}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1234.0), "1,234");
        assert_eq!(thousands(20_000.4), "20,000");
        assert_eq!(thousands(-1_234_567.0), "-1,234,567");
    }

    #[test]
    fn percentiles_are_in_milliseconds() {
        let mut h = histogram();
        for us in 1..=1000u64 {
            h.record(us * 100).unwrap();
        }
        let latency = Latency::of(&h);
        assert_eq!(latency.count, 1000);
        assert!((latency.p50_ms - 50.0).abs() < 0.1, "{latency:?}");
        assert!((latency.p99_ms - 99.0).abs() < 0.1, "{latency:?}");
        assert!((latency.max_ms - 100.0).abs() < 0.1, "{latency:?}");
        assert_eq!(Latency::of(&histogram()).line(), "no samples");
    }
}
