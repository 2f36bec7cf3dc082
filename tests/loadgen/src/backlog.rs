//! The mesh's ingest backlog as NATS sees it: messages of the chat ingest stream that its
//! consumers have not yet taken (`num_pending`) or not yet acknowledged (`num_ack_pending`),
//! read from the NATS monitoring endpoint (`/jsz`). A scenario starts only once it is empty,
//! so it never inherits the previous one's backlog. Of a partition's consumers only the
//! newest epoch's counts: an older owner's consumer (from an earlier run, kept until it has
//! been idle for 10 minutes) only grows, since nobody reads it, and what it has not taken the
//! newest one has.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use mesh_contracts::Consumer;
use serde::Deserialize;

/// How often the backlog is read while waiting for it to empty.
const POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Deserialize)]
struct Jsz {
    #[serde(default)]
    account_details: Vec<Account>,
}

#[derive(Debug, Deserialize)]
struct Account {
    #[serde(default)]
    stream_detail: Vec<StreamDetail>,
}

#[derive(Debug, Deserialize)]
struct StreamDetail {
    name: String,
    #[serde(default)]
    consumer_detail: Vec<ConsumerDetail>,
}

#[derive(Debug, Deserialize)]
struct ConsumerDetail {
    #[serde(default)]
    name: String,
    #[serde(default)]
    num_pending: u64,
    #[serde(default)]
    num_ack_pending: u64,
}

/// Reads one stream's backlog from a NATS monitoring endpoint.
#[derive(Clone)]
pub struct Probe {
    http: reqwest::Client,
    url: String,
    stream: String,
}

/// Messages of the stream not yet taken plus those taken but not yet acknowledged, summed over
/// its consumers: of each partition's, the newest epoch's only.
fn backlog_of(jsz: &Jsz, stream: &str) -> Option<u64> {
    let consumers = &jsz
        .account_details
        .iter()
        .flat_map(|a| &a.stream_detail)
        .find(|s| s.name == stream)?
        .consumer_detail;
    let mut newest: HashMap<u32, u64> = HashMap::new();
    for consumer in consumers {
        if let Some(Consumer::ChatPartition { partition, epoch }) = Consumer::parse(&consumer.name)
        {
            let known = newest.entry(partition).or_insert(epoch);
            *known = (*known).max(epoch);
        }
    }
    Some(
        consumers
            .iter()
            .filter(|c| match Consumer::parse(&c.name) {
                Some(Consumer::ChatPartition { partition, epoch }) => {
                    newest.get(&partition) == Some(&epoch)
                }
                _ => true,
            })
            .map(|c| c.num_pending + c.num_ack_pending)
            .sum(),
    )
}

impl Probe {
    /// `monitor` is the NATS monitoring base URL (e.g. `http://127.0.0.1:8222`); `prefix` the
    /// mesh's NATS prefix, whose `<PREFIX>_CHAT_IN` stream is watched.
    pub fn new(monitor: &str, prefix: &str) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
            url: format!(
                "{}/jsz?accounts=true&streams=true&consumers=true",
                monitor.trim_end_matches('/')
            ),
            stream: format!("{}_CHAT_IN", prefix.to_ascii_uppercase().replace('-', "_")),
        })
    }

    /// The ingest backlog now.
    pub async fn backlog(&self) -> anyhow::Result<u64> {
        let jsz: Jsz = self
            .http
            .get(&self.url)
            .send()
            .await
            .with_context(|| format!("GET {}", self.url))?
            .error_for_status()?
            .json()
            .await
            .context("decoding /jsz")?;
        backlog_of(&jsz, &self.stream)
            .with_context(|| format!("NATS has no stream {}", self.stream))
    }

    /// Waits until the backlog is empty; fails with what is left after `within`.
    pub async fn wait_empty(&self, within: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            let left = self.backlog().await?;
            if left == 0 {
                return Ok(started.elapsed());
            }
            if started.elapsed() >= within {
                anyhow::bail!(
                    "the mesh still had {left} ingested messages not stored ({} pending) after {:.0?}",
                    self.stream,
                    within
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_sums_the_stream_consumers() {
        let jsz: Jsz = serde_json::from_str(
            r#"{"account_details":[{"name":"$G","stream_detail":[
                {"name":"OTHER_CHAT_IN","consumer_detail":[{"num_pending":50}]},
                {"name":"BENCH_CHAT_IN","consumer_detail":[
                    {"name":"p0","num_pending":3,"num_ack_pending":2},
                    {"name":"p1","num_pending":0,"num_ack_pending":0}]}]}]}"#,
        )
        .unwrap();
        assert_eq!(backlog_of(&jsz, "BENCH_CHAT_IN"), Some(5));
        assert_eq!(backlog_of(&jsz, "MESH_CHAT_IN"), None);
        // An earlier owner's consumer of partition 0 keeps growing unread; only the newest
        // epoch of each partition counts, and other consumers count as they are.
        let jsz: Jsz = serde_json::from_str(
            r#"{"account_details":[{"name":"$G","stream_detail":[
                {"name":"BENCH_CHAT_IN","consumer_detail":[
                    {"name":"chat-p0-e3","num_pending":900,"num_ack_pending":40},
                    {"name":"chat-p0-e7","num_pending":2,"num_ack_pending":1},
                    {"name":"chat-p1-e4","num_pending":5,"num_ack_pending":0},
                    {"name":"chat-p1","num_pending":0,"num_ack_pending":6}]}]}]}"#,
        )
        .unwrap();
        assert_eq!(backlog_of(&jsz, "BENCH_CHAT_IN"), Some(2 + 1 + 5 + 6));
        let probe = Probe::new("http://127.0.0.1:8222/", "my-bench").unwrap();
        assert_eq!(probe.stream, "MY_BENCH_CHAT_IN");
    }
}
