//! The scenarios and what they share: the mesh's API, the user pool, the watched processes,
//! the raw limits measured so far, opening many sockets at once.

use std::time::Duration;

use futures::{StreamExt, stream};

use crate::api::Api;
use crate::procs::Procs;
use crate::raw_nats::NatsAccess;
use crate::users::Pool;
use crate::ws::{self, Profile, Socket};

pub mod baseline;
pub mod connections;
pub mod fanout;
pub mod latency;
pub mod login;
pub mod overload;
mod pairs;
pub mod peer;
pub mod reads;
pub mod throughput;

/// What every scenario needs.
pub struct Ctx {
    pub api: Api,
    pub pool: Pool,
    /// The `/v1/ws` URL of every edge: the one of `--url` first, then the others given.
    pub ws_urls: Vec<String>,
    /// The processes whose CPU (and the mesh's memory) is read.
    pub procs: Procs,
    /// NATS for the raw limits; `None` skips them.
    pub nats: Option<NatsAccess>,
    /// The bench database, for the raw Postgres limit.
    pub database_url: Option<String>,
    /// Raw limits measured so far in this run.
    pub limits: baseline::Limits,
    /// The stored msg/s `throughput` measured in this run (what `overload` doubles).
    pub max_stored_per_sec: Option<f64>,
    /// The CPU each process spent per stored message in that `throughput` run.
    pub max_cpu: Option<crate::report::CpuReport>,
    /// p99 accepted → delivered of the latest `latency` run, for the peer's ratio.
    pub latency_p99_ms: Option<f64>,
    /// The Synapse peer, once set up.
    pub peer: Option<peer::Peer>,
    /// Why there is no peer, when one was asked for.
    pub peer_problem: Option<String>,
    /// Where the pairs scenarios write each message's moments (`--timelines`).
    pub timelines: Option<std::path::PathBuf>,
    /// The samples of the speed probe beside the running scenario (`meter`).
    pub speed: Option<crate::speed::Samples>,
}

impl Ctx {
    /// The `/v1/ws` URL of the edge of `--url`.
    pub fn ws_url(&self) -> &str {
        &self.ws_urls[0]
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
        .map(|(i, token)| async move { (i, ws::connect_from(url, token, profile, None).await) })
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
}
