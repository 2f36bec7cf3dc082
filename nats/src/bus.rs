//! A connection to NATS scoped to one mesh prefix.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_nats::connection::State;
use bytes::Bytes;
use futures::StreamExt;
use mesh_contracts::Prefix;
use mesh_contracts::mesh_health::ServiceInstanceStats;
use mesh_observability::metrics::NATS_EVENTS;

use crate::connection_log::{ConnectionLog, EventKind, Line};
use crate::credentials::{NatsCredentials, ServerUrl, redact_urls};

/// The oldest NATS server the mesh runs against (KV watch and consumer features need it).
pub const MIN_SERVER_VERSION: (i64, i64, i64) = (2, 11, 0);

/// The first server release that keeps a stream's creation time across a restart that follows
/// an update made after a restart (nats-server issue 8470). Older ones work, but a stream or
/// bucket whose settings `mesh migrate` changes reads as made anew after two restarts, and
/// every chat partition then reads the whole ingest stream again.
pub const CREATION_TIME_KEPT_FROM: (i64, i64, i64) = (2, 14, 6);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// `url` never holds credentials (they are cut out before the error is made).
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error("cannot use the NATS credentials: {0}")]
    Credentials(String),
    #[error("NATS server {found} is too old: the mesh needs {}.{}.{} or newer", MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1, MIN_SERVER_VERSION.2)]
    TooOld { found: String },
    #[error("NATS server at {url} has JetStream disabled; start it with -js")]
    NoJetStream { url: String },
    #[error("cannot set up NATS streams and buckets: {0}")]
    Topology(String),
}

/// A cloneable handle on the mesh's NATS connection and its names.
#[derive(Clone, Debug)]
pub struct Bus {
    pub(crate) client: async_nats::Client,
    pub(crate) jetstream: async_nats::jetstream::Context,
    pub(crate) prefix: Prefix,
    /// How many times the connection was lost since it was made (an event watch ends when
    /// this moves: what was published while the connection was down never reaches it).
    pub(crate) disconnects: Arc<AtomicU64>,
}

impl Bus {
    /// Connects anonymously (a server without authorization); see `connect_with`.
    pub async fn connect(
        url: &str,
        prefix: Prefix,
        name: &str,
        connect_timeout: Duration,
    ) -> Result<Self, ConnectError> {
        Self::connect_with(
            url,
            &NatsCredentials::default(),
            prefix,
            name,
            connect_timeout,
        )
        .await
    }

    /// Connects to `urls` (comma-separated; credentials in a URL are used when `credentials`
    /// names none), reconnecting forever after the first success, and checks the server.
    ///
    /// The first connection must succeed within `connect_timeout` so that a wrong URL fails
    /// fast at start-up instead of hanging; later disconnects are retried without limit.
    /// Errors and logs name the URLs without their credentials.
    pub async fn connect_with(
        urls: &str,
        credentials: &NatsCredentials,
        prefix: Prefix,
        name: &str,
        connect_timeout: Duration,
    ) -> Result<Self, ConnectError> {
        let servers: Vec<ServerUrl> = urls.split(',').map(ServerUrl::parse).collect();
        let safe_url = redact_urls(urls);
        let credentials = servers
            .first()
            .map_or_else(|| credentials.clone(), |s| s.merge_into(credentials));
        let addrs = servers
            .iter()
            .map(|s| s.url.parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| ConnectError::Connect {
                url: safe_url.clone(),
                source: async_nats::ConnectError::with_source(
                    async_nats::ConnectErrorKind::ServerParse,
                    source,
                ),
            })?;
        let log = Arc::new(Mutex::new(ConnectionLog::default()));
        let disconnects = Arc::new(AtomicU64::new(0));
        let counted = disconnects.clone();
        let options = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(connect_timeout)
            .max_reconnects(None)
            .reconnect_delay_callback(reconnect_delay)
            .event_callback(move |event| {
                let (log, counted) = (log.clone(), counted.clone());
                async move { note_event(&log, &counted, &event) }
            });
        let options = credentials
            .apply(options)
            .await
            .map_err(|err| ConnectError::Credentials(err.to_string()))?;
        let client = tokio::time::timeout(connect_timeout, options.connect(addrs))
            .await
            .map_err(|_| ConnectError::Connect {
                url: safe_url.clone(),
                source: async_nats::ConnectError::new(async_nats::ConnectErrorKind::TimedOut),
            })?
            .map_err(|source| ConnectError::Connect {
                url: safe_url.clone(),
                source,
            })?;
        let (major, minor, patch) = MIN_SERVER_VERSION;
        if !client.is_server_compatible(major, minor, patch) {
            return Err(ConnectError::TooOld {
                found: client.server_info().version,
            });
        }
        if !client.server_info().jetstream {
            return Err(ConnectError::NoJetStream { url: safe_url });
        }
        let jetstream = async_nats::jetstream::new(client.clone());
        Ok(Self {
            client,
            jetstream,
            prefix,
            disconnects,
        })
    }

    pub fn prefix(&self) -> &Prefix {
        &self.prefix
    }

    /// True while the connection to the server is up.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    /// How many times the connection was lost since it was made (counted as the client reports
    /// it, a moment after it happened).
    pub fn disconnects(&self) -> u64 {
        self.disconnects.load(Ordering::Acquire)
    }

    /// The largest message the server takes, in bytes, as it reported when we connected.
    pub fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }

    /// Messages this connection has sent to the server so far (publishes, requests, acks).
    pub fn messages_sent(&self) -> u64 {
        self.client
            .statistics()
            .out_messages
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the server keeps creation times across restarts after an update
    /// (`CREATION_TIME_KEPT_FROM`).
    pub fn keeps_creation_times(&self) -> bool {
        let (major, minor, patch) = CREATION_TIME_KEPT_FROM;
        self.client.is_server_compatible(major, minor, patch)
    }

    /// The version the server reported when we connected.
    pub fn server_version(&self) -> String {
        self.client.server_info().version
    }

    /// Flushes pending publishes and closes the connection.
    pub async fn drain(&self) {
        if let Err(err) = self.client.drain().await {
            tracing::debug!(error = %err, "NATS drain failed");
        }
    }
}

impl Bus {
    /// Asks NATS service discovery (`$SRV.INFO.<name>`) about a service: its description,
    /// version, metadata and endpoints, as the services API reports them.
    pub async fn discover(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<serde_json::Value, String> {
        let request = async_nats::Request::new().timeout(Some(timeout));
        let reply = self
            .client
            .send_request(format!("$SRV.INFO.{name}"), request)
            .await
            .map_err(|err| err.to_string())?;
        serde_json::from_slice(&reply.payload).map_err(|err| err.to_string())
    }

    /// Asks every instance of a service for its statistics (`$SRV.STATS.<name>`) and gathers
    /// the answers that arrive within `window` (each instance answers once; none answering
    /// is an empty list). Answers that are not statistics are skipped.
    pub async fn service_stats(
        &self,
        name: &str,
        window: Duration,
    ) -> Result<Vec<ServiceInstanceStats>, String> {
        let inbox = self.client.new_inbox();
        let mut answers = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|err| err.to_string())?;
        self.client
            .publish_with_reply(format!("$SRV.STATS.{name}"), inbox, Bytes::new())
            .await
            .map_err(|err| err.to_string())?;
        let mut stats = Vec::new();
        let deadline = tokio::time::Instant::now() + window;
        while let Ok(Some(answer)) = tokio::time::timeout_at(deadline, answers.next()).await {
            if let Ok(instance) = serde_json::from_slice(&answer.payload) {
                stats.push(instance);
            }
        }
        Ok(stats)
    }
}

/// Counts a connection event (and in `disconnects` a lost connection) and logs it as `log`
/// says (an outage's reconnect attempts are not a line each).
fn note_event(log: &Mutex<ConnectionLog>, disconnects: &AtomicU64, event: &async_nats::Event) {
    use async_nats::Event;
    if matches!(event, Event::Disconnected) {
        disconnects.fetch_add(1, Ordering::AcqRel);
    }
    let (label, kind) = match event {
        Event::Connected => ("connected", EventKind::Connected),
        Event::Disconnected => ("disconnected", EventKind::Failure),
        Event::ClientError(_) => ("client_error", EventKind::Failure),
        Event::LameDuckMode => ("lame_duck", EventKind::Other),
        Event::Draining => ("draining", EventKind::Closing),
        Event::Closed => ("closed", EventKind::Closing),
        Event::SlowConsumer(_) => ("slow_consumer", EventKind::Other),
        Event::ServerError(_) => ("server_error", EventKind::Other),
    };
    NATS_EVENTS.with_label_values(&[label]).inc();
    let line = log
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .on(kind, Instant::now());
    match line {
        Line::Connected => tracing::info!("NATS connected"),
        Line::Reconnected { down_for, failures } => tracing::info!(
            down_for_ms = u64::try_from(down_for.as_millis()).unwrap_or(u64::MAX),
            failures,
            "NATS connected again"
        ),
        Line::Lost => tracing::warn!(%event, "NATS connection lost"),
        Line::Notice => tracing::warn!(%event, "NATS connection event"),
        Line::StillDown { down_for, failures } => tracing::warn!(
            %event,
            down_for_s = down_for.as_secs(),
            failures,
            "NATS still unreachable"
        ),
        Line::Quiet => tracing::debug!(%event, "NATS connection event"),
    }
}

/// Backoff between reconnect attempts: doubling from 1 ms, at most 500 ms (the client's own
/// default grows to 4 s, which turned a 3 s NATS blip into ~4 s of lost leases and pushes).
fn reconnect_delay(attempts: usize) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1)).unwrap_or(u32::MAX);
    Duration::from_millis(2_u64.saturating_pow(doublings)).min(Duration::from_millis(500))
}
