//! The standard metrics of the mesh, registered once in the process-wide Prometheus registry.
//!
//! Label values are bounded: routes are path patterns, never raw paths; subjects are RPC
//! subjects of known operations; outcomes are error codes.

use std::sync::LazyLock;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    register_histogram, register_histogram_vec, register_int_counter, register_int_counter_vec,
    register_int_gauge, register_int_gauge_vec,
};

/// Latency buckets in seconds, from 0.5 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn histogram(name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    register_histogram_vec!(
        HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
        labels
    )
    .expect("metric registered once")
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register_int_counter_vec!(Opts::new(name, help), labels).expect("metric registered once")
}

/// HTTP requests served by the edge, by route pattern, method and status.
pub static HTTP_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "mesh_http_requests_total",
        "HTTP requests by route, method and status",
        &["route", "method", "status"],
    )
});

/// HTTP request latency by route pattern and method.
pub static HTTP_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "mesh_http_request_duration_seconds",
        "HTTP request latency",
        &["route", "method"],
    )
});

/// RPC calls made by clients (the edge), by subject and outcome (`ok` or an error kind).
pub static RPC_CLIENT_CALLS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "mesh_rpc_client_calls_total",
        "RPC calls by subject and outcome",
        &["subject", "outcome"],
    )
});

/// RPC call latency seen by clients.
pub static RPC_CLIENT_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "mesh_rpc_client_duration_seconds",
        "RPC latency seen by the caller",
        &["subject"],
    )
});

/// RPC requests handled by services, by subject and outcome (`ok` or an error code).
pub static RPC_SERVER_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "mesh_rpc_server_requests_total",
        "RPC requests handled, by subject and outcome",
        &["subject", "outcome"],
    )
});

/// RPC handling latency inside services.
pub static RPC_SERVER_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "mesh_rpc_server_duration_seconds",
        "RPC handling latency",
        &["subject"],
    )
});

/// Requests each operation of a service is handling now (holding one of its turns), by
/// subject; beside `RPC_SERVER_TURNS`, how close the operation is to its bound.
pub static RPC_SERVER_IN_FLIGHT: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "mesh_rpc_server_in_flight",
        "RPC requests being handled now, by subject",
        &["subject"],
    )
});

/// The most requests each operation of a service handles at once (its bound), by subject;
/// requests beyond it wait on NATS for a turn until their caller's deadline.
pub static RPC_SERVER_TURNS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "mesh_rpc_server_turns",
        "Most RPC requests handled at once, by subject",
        &["subject"],
    )
});

/// Authentication failures at the edge, by reason.
pub static AUTH_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "mesh_auth_failures_total",
        "Authentication failures by reason",
        &["reason"],
    )
});

/// Idempotency-Key handling at the edge, by outcome: `stored`, `replayed`, `in_progress`
/// (409), `mismatch` (422), `released` (a 5xx freed the key), `fail_open` (the bucket was
/// unavailable and the request went ahead unprotected).
pub static IDEMPOTENCY: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "mesh_idempotency_total",
        "Idempotency-Key outcomes at the edge",
        &["outcome"],
    )
});

/// Requests, frames and connections refused by a rate limit, by limit.
pub static RATE_LIMITED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "mesh_rate_limited_total",
        "Requests, frames and connections refused by a rate limit",
        &["limit"],
    )
});

/// Revoked sessions currently known to this process.
pub static REVOKED_SESSIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("mesh_revoked_sessions", "Revoked sessions held in memory")
        .expect("metric registered once")
});

/// NATS connection state changes, by event.
pub static NATS_EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "mesh_nats_connection_events_total",
        "NATS connection events",
        &["event"],
    )
});

/// Cache lookups by cache and result (`hit` or `miss`).
pub static CACHE_LOOKUPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "mesh_cache_lookups_total",
        "Cache lookups by cache and result",
        &["cache", "result"],
    )
});

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register_int_gauge_vec!(Opts::new(name, help), labels).expect("metric registered once")
}

/// Chat messages the edge published to the ingest stream (JetStream acked).
pub static CHAT_ACCEPTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "mesh_chat_messages_accepted_total",
        "Chat messages accepted by the edge, by transport",
        &["transport"],
    )
});

/// Chat messages stored by a worker (duplicates not counted).
pub static CHAT_STORED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "mesh_chat_messages_stored_total",
        "Chat messages stored, by conversation kind",
        &["kind"],
    )
});

/// Chat messages refused, by reason code (at the edge or by the worker).
pub static CHAT_REJECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "mesh_chat_messages_rejected_total",
        "Chat messages rejected, by reason",
        &["reason"],
    )
});

/// Ingest messages set aside in `chat.dead_letters` instead of blocking their partition.
pub static CHAT_DEAD_LETTERS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "mesh_chat_dead_letters_total",
        "Chat ingest messages set aside as dead letters, by reason (unreadable, unstorable)",
        &["reason"],
    )
});

/// Resent messages dropped because they were already stored.
pub static CHAT_DUPLICATES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "mesh_chat_messages_duplicate_total",
        "Chat messages dropped as duplicates, by where they were caught",
        &["stage"],
    )
});

/// Store rounds taken again: an attempt that assumed the round held no resend was given up.
pub static CHAT_STORE_RETAKES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "mesh_chat_store_retakes_total",
        "Chat store rounds taken again, by why the first attempt was given up and rolled back (resend: the write found one; quota: the charge refused a message; both then look their resends up. refused: social refused a poster of a round stored ahead of its answer; unanswered: social did not answer it in time; both then store the round after social's answer)",
        &["reason"],
    )
});

/// Time from the edge's JetStream ack to the worker's commit.
pub static CHAT_ACCEPT_TO_STORE: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        HistogramOpts::new(
            "mesh_chat_accept_to_store_seconds",
            "Latency from accepted to stored"
        )
        .buckets(LATENCY_BUCKETS.to_vec())
    )
    .expect("metric registered once")
});

/// Chat messages per ingest message an edge publishes (what queued for its partition while
/// the publish before waited for JetStream's ack).
pub static CHAT_INGEST_PACKED: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        HistogramOpts::new(
            "mesh_chat_ingest_publish_messages",
            "Chat messages per ingest message an edge published (1 when its partition was idle)"
        )
        .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0])
    )
    .expect("metric registered once")
});

/// Size of the batches a partition owner stores in one transaction.
pub static CHAT_BATCH_SIZE: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        HistogramOpts::new(
            "mesh_chat_batch_messages",
            "Messages per storing transaction (a store round: one or more partitions' batches)"
        )
        .buckets(vec![
            1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0
        ])
    )
    .expect("metric registered once")
});

/// Where a store round's time goes, by step, each attempt at a round counted once:
/// - `wait`: a batch, from its owner asking for a round until the round took it (the linger
///   and the wait for a free turn), counted per batch;
/// - `authorize`: unreadable messages set aside, and the membership check;
/// - `store`: group rosters synced, the storing transaction (split around a refused message),
///   and any retries;
/// - `deliver`: pushes and acks to senders, unstorable messages set aside;
/// - `acknowledge`: positions recorded when the store did not record them, refusals answered,
///   JetStream acks;
/// - `unfinished`: the step an attempt was in when it ended early (halted or fenced out).
pub static CHAT_ROUND_STEP: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "mesh_chat_round_step_seconds",
        "Time a chat store round spends in each step (wait: a batch waiting for its round; store_ahead: a round written while social decides who may post; unfinished: an attempt ended early)",
        &["step"],
    )
});

/// Ingest partitions this process owns.
pub static CHAT_PARTITIONS_OWNED: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "mesh_chat_partitions_owned",
        "Chat ingest partitions owned by this process"
    )
    .expect("metric registered once")
});

/// Messages waiting in each owned partition's consumer (`pending`: not yet delivered,
/// `ack_pending`: delivered, not yet acknowledged).
pub static CHAT_CONSUMER_PENDING: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "mesh_chat_consumer_pending",
        "Ingest consumer backlog by partition and state",
        &["partition", "state"],
    )
});

/// Chat messages of each owned partition accepted but not stored, as its owner reports them to
/// the edges (what they admit new messages by, against `MESH_CHAT_MAX_UNSTORED`). Unlike
/// `mesh_chat_consumer_pending`, which counts ingest messages, it counts chat messages: an
/// ingest message may carry up to 64.
pub static CHAT_UNSTORED: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "mesh_chat_unstored_messages",
        "Chat messages accepted but not stored, by partition (the backlog edges admit by)",
        &["partition"],
    )
});

/// Stored messages purged from the ingest stream by compaction.
pub static CHAT_INGEST_COMPACTED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "mesh_chat_ingest_compacted_total",
        "Messages purged from the chat ingest stream once every partition had stored them"
    )
    .expect("metric registered once")
});

/// Compactions of the ingest stream by outcome (`ok`, `failed`): one that keeps failing leaves
/// stored messages in the stream until JetStream's storage is full.
pub static CHAT_INGEST_COMPACTIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "mesh_chat_ingest_compactions_total",
        "Compactions of the chat ingest stream attempted, by outcome (ok, failed)",
        &["outcome"],
    )
});

/// Partitions whose recorded state (`chat.partitions`: owner epoch and stored stream
/// sequence) referred to an ingest stream or lease bucket that no longer exists (JetStream
/// lost its store, or they were deleted and made again), reset by the claim that found it.
pub static CHAT_PARTITION_RESETS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "mesh_chat_partition_resets_total",
        "Chat ingest partitions whose recorded position and epoch referred to an ingest stream or lease bucket that no longer exists, reset when claimed"
    )
    .expect("metric registered once")
});

/// Ingest messages delivered more than once.
pub static CHAT_REDELIVERIES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "mesh_chat_redeliveries_total",
        "Ingest messages delivered again after a failure or takeover"
    )
    .expect("metric registered once")
});

/// Frames pushed to users' push subjects.
pub static CHAT_PUSHES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "mesh_chat_pushes_total",
        "Frames published to users' push subjects, by frame type",
        &["frame"],
    )
});

/// Open realtime connections on this edge, by transport (`ws` or `sse`).
pub static RT_CONNECTIONS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "mesh_realtime_connections",
        "Open WebSocket and SSE connections",
        &["transport"],
    )
});

/// Frames through realtime connections, by direction (`in`/`out`) and frame type.
pub static RT_FRAMES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "mesh_realtime_frames_total",
        "Realtime frames by direction and type",
        &["direction", "type"],
    )
});

/// Realtime connections closed, by reason.
pub static RT_DISCONNECTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "mesh_realtime_disconnects_total",
        "Realtime connections closed, by reason",
        &["transport", "reason"],
    )
});

/// Outbox rows not yet relayed, by schema.
pub static OUTBOX_BACKLOG: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "mesh_outbox_backlog",
        "Outbox rows waiting to be relayed, by schema",
        &["schema"],
    )
});

/// Age in seconds of the oldest row not yet relayed, by schema (0 when none).
pub static OUTBOX_OLDEST_AGE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "mesh_outbox_oldest_age_seconds",
        "Age of the oldest unrelayed outbox row, by schema",
        &["schema"],
    )
});

/// Events relayed to the EVENTS stream, by schema.
pub static OUTBOX_RELAYED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "mesh_outbox_relayed_total",
        "Outbox rows relayed to the EVENTS stream, by schema",
        &["schema"],
    )
});

/// Time to publish one relay step and get every JetStream ack.
pub static OUTBOX_PUBLISH_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "mesh_outbox_publish_duration_seconds",
        "Relay publish latency per step, by schema",
        &["schema"],
    )
});

/// Events handled by consumers, by consumer and outcome (`ok`, `duplicate`, `retry`,
/// `dead_lettered`).
pub static EVENTS_CONSUMED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "mesh_events_consumed_total",
        "Domain events handled, by consumer and outcome",
        &["consumer", "outcome"],
    )
});

/// Events delivered again to a consumer.
pub static EVENTS_REDELIVERED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "mesh_events_redelivered_total",
        "Domain events delivered more than once, by consumer",
        &["consumer"],
    )
});

/// Audit records written.
pub static AUDIT_WRITTEN: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!("mesh_audit_records_written_total", "Audit records written")
        .expect("metric registered once")
});

/// Audit records deleted for being older than the retention (`MESH_AUDIT_RETENTION`).
pub static AUDIT_PRUNED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "mesh_audit_records_pruned_total",
        "Audit records deleted after the retention period"
    )
    .expect("metric registered once")
});

/// Audit records an edge dropped because they could not even be queued for publishing.
pub static AUDIT_DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "mesh_audit_records_dropped_total",
        "Audit records dropped by the edge before reaching the stream"
    )
    .expect("metric registered once")
});

/// Constant 1, labelled with the binary's version and commit and the roles this process runs.
pub static BUILD_INFO: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "mesh_build_info",
        "Version, commit and roles of this process (always 1)",
        &["version", "commit", "roles"],
    )
});

/// 1 while a role's NATS connection is up, 0 while it is down, by connection (role).
pub static NATS_CONNECTED: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "mesh_nats_connected",
        "1 while connected to NATS, 0 otherwise, by connection",
        &["connection"],
    )
});

/// Connections of each service's Postgres pool, by state (`idle` or `busy`).
pub static DB_POOL_CONNECTIONS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "mesh_db_pool_connections",
        "Postgres pool connections by service and state",
        &["service", "state"],
    )
});

/// The most connections each service's Postgres pool may open.
pub static DB_POOL_MAX: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "mesh_db_pool_max_connections",
        "Largest size of each service's Postgres pool",
        &["service"],
    )
});

/// Backlog of the durable consumers of the EVENTS and AUDIT streams, by stream, consumer and
/// state (`pending`: not yet delivered, `ack_pending`: delivered, not yet acknowledged).
pub static CONSUMER_PENDING: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "mesh_consumer_pending",
        "Durable consumer backlog by stream, consumer and state",
        &["stream", "consumer", "state"],
    )
});

/// Postgres statement latency by service and operation (`SELECT`, `INSERT`, ... `COMMIT`),
/// measured by sqlx from send to the last row.
pub static DB_QUERY_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "mesh_db_query_duration_seconds",
        "Postgres statement latency by service and operation",
        &["service", "operation"],
    )
});

/// 1 while this edge's watch on the revoked-sessions bucket is open, 0 while it is re-opened.
pub static REVOCATION_WATCH_OPEN: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "mesh_revocation_watch_open",
        "1 while the revoked-sessions watch is open, 0 otherwise"
    )
    .expect("metric registered once")
});

/// 1 while this user service's copy of the sign-in failure bucket's keys is current (sign-ins
/// with no failures read nothing from NATS), 0 while its watch opens, replays or is broken.
pub static LOGIN_FAILURE_KEYS_CURRENT: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "mesh_login_failure_keys_current",
        "1 while the user service's copy of the sign-in failure keys is current, 0 otherwise"
    )
    .expect("metric registered once")
});

/// Records the binary's version and commit and the roles this process runs.
pub fn set_build_info(version: &str, commit: &str, roles: &str) {
    BUILD_INFO
        .with_label_values(&[version, commit, roles])
        .set(1);
}

/// Error labels that dashboards and alerts read, created at 0 so a rate exists before the
/// first error.
const AUTH_FAILURE_REASONS: &[&str] = &[
    "missing_token",
    "invalid_token",
    "token_expired",
    "session_revoked",
];
const DISCONNECT_REASONS: &[&str] = &["slow_consumer", "idle_timeout", "error"];
const RATE_LIMITS: &[&str] = &[
    "auth_ip",
    "write_ip",
    "write_user",
    "read_ip",
    "read_user",
    "chat_sends",
    "ws_frames",
    "ws_frames_user",
    "connections_ip",
    "connections_user",
];
/// The error codes a chat message is refused with, at the edge or by the chat worker.
const CHAT_REJECTIONS: &[&str] = &[
    "rate_limited",
    "service_unavailable",
    "validation_failed",
    "invalid_text",
    "message_too_large",
    "unknown_conversation",
    "not_friends",
    "blocked",
    "not_member",
    "muted",
    "forbidden",
    "unstorable",
];

/// Creates at zero the labelled series that dashboards and alerts read before anything counted
/// them (mostly ways of failing).
fn touch_labels() {
    for reason in AUTH_FAILURE_REASONS {
        AUTH_FAILURES.with_label_values(&[reason]);
    }
    for transport in ["ws", "sse"] {
        for reason in DISCONNECT_REASONS {
            RT_DISCONNECTS.with_label_values(&[transport, reason]);
        }
    }
    for limit in RATE_LIMITS {
        RATE_LIMITED.with_label_values(&[limit]);
    }
    for reason in CHAT_REJECTIONS {
        CHAT_REJECTED.with_label_values(&[reason]);
    }
    for event in ["disconnected", "connected"] {
        NATS_EVENTS.with_label_values(&[event]);
    }
    for reason in ["unreadable", "unstorable"] {
        CHAT_DEAD_LETTERS.with_label_values(&[reason]);
    }
    // Both outcomes exist from the start, so an alert can ask whether none succeeded lately.
    for outcome in ["ok", "failed"] {
        CHAT_INGEST_COMPACTIONS.with_label_values(&[outcome]);
    }
}

/// Encodes every registered metric in the Prometheus text format.
pub fn render() -> String {
    let families = prometheus::gather();
    prometheus::TextEncoder::new()
        .encode_to_string(&families)
        .unwrap_or_else(|err| format!("# encode error: {err}\n"))
}

/// Registers every standard metric so they show up (at zero) before first use.
pub fn touch_all() {
    LazyLock::force(&HTTP_REQUESTS);
    LazyLock::force(&HTTP_DURATION);
    LazyLock::force(&RPC_CLIENT_CALLS);
    LazyLock::force(&RPC_CLIENT_DURATION);
    LazyLock::force(&RPC_SERVER_REQUESTS);
    LazyLock::force(&RPC_SERVER_DURATION);
    LazyLock::force(&RPC_SERVER_IN_FLIGHT);
    LazyLock::force(&RPC_SERVER_TURNS);
    LazyLock::force(&AUTH_FAILURES);
    LazyLock::force(&IDEMPOTENCY);
    LazyLock::force(&RATE_LIMITED);
    LazyLock::force(&REVOKED_SESSIONS);
    LazyLock::force(&NATS_EVENTS);
    LazyLock::force(&CACHE_LOOKUPS);
    LazyLock::force(&CHAT_ACCEPTED);
    LazyLock::force(&CHAT_STORED);
    LazyLock::force(&CHAT_REJECTED);
    LazyLock::force(&CHAT_DUPLICATES);
    LazyLock::force(&CHAT_STORE_RETAKES);
    LazyLock::force(&CHAT_DEAD_LETTERS);
    LazyLock::force(&CHAT_ACCEPT_TO_STORE);
    LazyLock::force(&CHAT_BATCH_SIZE);
    LazyLock::force(&CHAT_INGEST_PACKED);
    LazyLock::force(&CHAT_PARTITIONS_OWNED);
    LazyLock::force(&CHAT_CONSUMER_PENDING);
    LazyLock::force(&CHAT_UNSTORED);
    LazyLock::force(&CHAT_REDELIVERIES);
    LazyLock::force(&CHAT_INGEST_COMPACTED);
    LazyLock::force(&CHAT_INGEST_COMPACTIONS);
    LazyLock::force(&CHAT_PARTITION_RESETS);
    LazyLock::force(&CHAT_PUSHES);
    LazyLock::force(&RT_CONNECTIONS);
    LazyLock::force(&RT_FRAMES);
    LazyLock::force(&RT_DISCONNECTS);
    LazyLock::force(&OUTBOX_BACKLOG);
    LazyLock::force(&OUTBOX_OLDEST_AGE);
    LazyLock::force(&OUTBOX_RELAYED);
    LazyLock::force(&OUTBOX_PUBLISH_DURATION);
    LazyLock::force(&EVENTS_CONSUMED);
    LazyLock::force(&EVENTS_REDELIVERED);
    LazyLock::force(&AUDIT_WRITTEN);
    LazyLock::force(&AUDIT_PRUNED);
    LazyLock::force(&AUDIT_DROPPED);
    LazyLock::force(&BUILD_INFO);
    LazyLock::force(&NATS_CONNECTED);
    LazyLock::force(&DB_POOL_CONNECTIONS);
    LazyLock::force(&DB_POOL_MAX);
    LazyLock::force(&DB_QUERY_DURATION);
    LazyLock::force(&REVOCATION_WATCH_OPEN);
    LazyLock::force(&LOGIN_FAILURE_KEYS_CURRENT);
    LazyLock::force(&CONSUMER_PENDING);
    // Process CPU, memory and file descriptors (`process_*`): the prometheus crate's default
    // registry registers its process collector itself (feature `process`, Linux).
    let _ = prometheus::default_registry();
    touch_labels();
}
