//! The scenarios and what they share: the mesh's API, the user pool, opening many sockets at
//! once and a bounded list of problems seen while running.

use std::sync::Mutex;
use std::time::Duration;

use futures::{StreamExt, stream};

use crate::api::Api;
use crate::users::Pool;
use crate::ws::{self, Profile, Socket};

pub mod fanout;
pub mod idle;
pub mod latency;
mod pairs;
pub mod throughput;

/// What every scenario needs.
pub struct Ctx {
    pub api: Api,
    pub pool: Pool,
    pub ws_url: String,
}

/// Most problems of one kind kept as evidence; the rest are only counted.
const PROBLEM_SAMPLES: usize = 5;

/// Problems seen by many tasks: counted by kind, with the first few kept word for word.
#[derive(Default)]
pub struct Problems {
    seen: Mutex<Vec<(String, u64, Vec<String>)>>,
}

impl Problems {
    pub fn add(&self, kind: &str, evidence: impl FnOnce() -> String) {
        let mut seen = self.seen.lock().expect("problems lock");
        let index = match seen.iter().position(|(k, _, _)| k == kind) {
            Some(index) => index,
            None => {
                seen.push((kind.to_owned(), 0, Vec::new()));
                seen.len() - 1
            }
        };
        let entry = &mut seen[index];
        entry.1 += 1;
        if entry.2.len() < PROBLEM_SAMPLES {
            entry.2.push(evidence());
        }
    }

    /// One line per kind: `kind (n times), e.g. evidence; evidence`.
    pub fn lines(&self) -> Vec<String> {
        self.seen
            .lock()
            .expect("problems lock")
            .iter()
            .map(|(kind, n, samples)| format!("{kind} ({n} times), e.g. {}", samples.join("; ")))
            .collect()
    }
}

/// Opens one socket per token, `concurrency` at a time; answers the sockets opened (in the
/// order of `tokens`, `None` where opening failed) and the failures' messages.
pub async fn open_sockets(
    url: &str,
    tokens: &[String],
    profile: Profile,
    concurrency: usize,
) -> (Vec<Option<Socket>>, Vec<String>) {
    let opened: Vec<(usize, anyhow::Result<Socket>)> = stream::iter(tokens.iter().enumerate())
        .map(|(i, token)| async move { (i, ws::connect(url, token, profile).await) })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut sockets: Vec<Option<Socket>> = (0..tokens.len()).map(|_| None).collect();
    let mut failures = Vec::new();
    for (i, result) in opened {
        match result {
            Ok(socket) => sockets[i] = Some(socket),
            Err(err) => failures.push(format!("{err:#}")),
        }
    }
    (sockets, failures)
}

/// `seconds` as a `Duration`, accepting fractions.
pub fn secs(seconds: f64) -> Duration {
    Duration::from_secs_f64(seconds.max(0.0))
}

/// A message body of `len` bytes.
pub fn body(len: usize) -> String {
    let mut body = String::from("loadgen ");
    while body.len() < len {
        body.push(char::from(b'a' + (body.len() % 26) as u8));
    }
    body.truncate(len.max(1));
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_asked_length() {
        assert_eq!(body(64).len(), 64);
        assert_eq!(body(3).len(), 3);
        assert_eq!(body(0).len(), 1, "never empty");
    }

    #[test]
    fn problems_are_counted_with_a_few_samples() {
        let problems = Problems::default();
        for i in 0..7 {
            problems.add("closed", || format!("close {i}"));
        }
        let lines = problems.lines();
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with("closed (7 times), e.g. close 0;"),
            "{}",
            lines[0]
        );
        assert!(!lines[0].contains("close 5"));
    }
}
