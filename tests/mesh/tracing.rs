//! Traces and access logs of the shipped binary: every role runs as its own `mesh` process
//! (as the Helm chart deploys them) exporting to a real OTLP/HTTP receiver, and a chat message
//! sent over REST must be one trace from the edge through JetStream and the chat worker to
//! Postgres and the push, while scrapes and probes leave no trace and no log line leaks a token.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use uuid::Uuid;

use mesh_contracts::Stream;

use crate::faults::PrivateNats;
use crate::harness::{Client, PASSWORD, TestMesh, fresh_database, keys, poll_until, unique_phone};
use crate::otlp::{CLIENT, CONSUMER, OtlpReceiver, PRODUCER, ReceivedSpan, SERVER};
use crate::social_friends::befriend;
use crate::ws::Ws;

const MESH: &str = env!("CARGO_BIN_EXE_mesh");

/// One `mesh <role>` process and the log lines it wrote.
struct RoleProcess {
    _child: Child,
    logs: Arc<Mutex<Vec<String>>>,
}

/// The mesh as separate processes, one per role, on a fresh prefix and database.
struct ProcessMesh {
    url: String,
    prefix: String,
    roles: Vec<(&'static str, RoleProcess)>,
    dir: PathBuf,
}

impl ProcessMesh {
    async fn start(otlp_endpoint: &str) -> Self {
        Self::start_on(otlp_endpoint, None).await
    }

    /// The mesh on the NATS server at `nats_url` (one without authorization) when given, else
    /// on the test run's own.
    async fn start_on(otlp_endpoint: &str, nats_url: Option<&str>) -> Self {
        Self::start_logging(otlp_endpoint, nats_url, "info").await
    }

    /// `start_on`, with `rust_log` as each process's `RUST_LOG`.
    async fn start_logging(otlp_endpoint: &str, nats_url: Option<&str>, rust_log: &str) -> Self {
        let prefix = format!("t{}", &Uuid::new_v4().simple().to_string()[..12]);
        let dir = std::env::temp_dir().join(format!("mesh-tracing-{prefix}"));
        std::fs::create_dir_all(&dir).expect("key directory");
        std::fs::write(dir.join("private.pem"), &keys().private_pem).expect("private key");
        std::fs::write(dir.join("public.pem"), &keys().public_pem).expect("public key");
        let env = [
            ("MESH_PREFIX", prefix.clone()),
            ("MESH_DATABASE_URL", fresh_database().await),
            (
                "MESH_JWT_PRIVATE_KEY",
                dir.join("private.pem").display().to_string(),
            ),
            (
                "MESH_JWT_PUBLIC_KEY",
                dir.join("public.pem").display().to_string(),
            ),
            ("MESH_HTTP_ADDR", "127.0.0.1:0".into()),
            ("MESH_METRICS_ADDR", "127.0.0.1:0".into()),
            ("MESH_CHAT_OPEN_PRIVATE", "true".into()),
            ("MESH_CHAT_PARTITIONS", "2".into()),
            ("MESH_DB_MAX_CONNECTIONS", "3".into()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_endpoint.into()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
            ("RUST_LOG", rust_log.into()),
        ];
        let command = |role: &str| {
            let mut command = Command::new(MESH);
            command
                .arg(role)
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            if let Some(url) = nats_url {
                command
                    .env("MESH_NATS_URL", url)
                    .env_remove("MESH_NATS_ROLE_CREDENTIALS");
            }
            command
        };
        let migrated = command("migrate").output().await.expect("run mesh migrate");
        assert!(
            migrated.status.success(),
            "mesh migrate failed: {}",
            String::from_utf8_lossy(&migrated.stderr)
        );
        let mut roles = Vec::new();
        for role in ["user", "social", "chat", "outbox", "edge"] {
            let mut child = command(role).spawn().expect("start a mesh role");
            let logs = Arc::new(Mutex::new(Vec::new()));
            let stderr = child.stderr.take().expect("piped stderr");
            let sink = logs.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    sink.lock().expect("log lock").push(line);
                }
            });
            roles.push((
                role,
                RoleProcess {
                    _child: child,
                    logs,
                },
            ));
        }
        let mut mesh = Self {
            url: String::new(),
            prefix,
            roles,
            dir,
        };
        let addr = poll_until("the edge's address", Duration::from_secs(30), || async {
            mesh.log_lines("edge")
                .into_iter()
                .find(|line| line["fields"]["message"] == "edge listening")
                .and_then(|line| line["fields"]["addr"].as_str().map(str::to_owned))
        })
        .await;
        mesh.url = format!("http://{addr}");
        let client = Client::new(&mesh.url);
        poll_until("the mesh ready", Duration::from_secs(30), || async {
            (client.get("/readyz").await.0 == StatusCode::OK).then_some(())
        })
        .await;
        mesh
    }

    /// The raw log lines of `role` so far.
    fn raw_logs(&self, role: &str) -> Vec<String> {
        self.roles
            .iter()
            .filter(|(name, _)| *name == role)
            .flat_map(|(_, process)| process.logs.lock().expect("log lock").clone())
            .collect()
    }

    /// The JSON log lines of `role` so far.
    fn log_lines(&self, role: &str) -> Vec<Value> {
        self.raw_logs(role)
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The Prometheus text of `role`'s metrics port (from its `metrics listening` line).
    async fn metrics_of(&self, role: &str) -> String {
        let addr = self
            .log_lines(role)
            .into_iter()
            .find(|line| line["fields"]["message"] == "metrics listening")
            .and_then(|line| line["fields"]["addr"].as_str().map(str::to_owned))
            .expect("the role logged its metrics address");
        reqwest::get(format!("http://{addr}/metrics"))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("metrics text")
    }

    /// Every log line of every role so far.
    fn all_logs(&self) -> String {
        self.roles
            .iter()
            .flat_map(|(name, _)| self.raw_logs(name))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops the processes and removes the prefix's streams and buckets.
    async fn stop(self) {
        drop(self.roles);
        let _ = std::fs::remove_dir_all(&self.dir);
        let mut settings = crate::harness::test_settings(&self.prefix, None);
        settings.nats_replicas = 1;
        let credentials =
            settings.nats_credentials_for(mesh_contracts::nats_permissions::NatsRole::Migrate);
        if let Ok(bus) = mesh_nats::Bus::connect_with(
            &settings.nats_url,
            &credentials,
            settings.prefix.clone(),
            "tracing-cleanup",
            Duration::from_secs(5),
        )
        .await
        {
            bus.delete_topology().await;
            bus.drain().await;
        }
    }
}

/// Registers and logs in a user through `client`; answers (user id, access token).
async fn user(client: &Client, nickname: &str) -> (String, String) {
    let phone = unique_phone();
    client.register(&phone, nickname).await;
    let tokens = client.login(&phone).await;
    (tokens.user_id, tokens.access)
}

/// The trace id of `response`'s `traceresponse` header.
fn answered_trace(response: &reqwest::Response) -> String {
    let value = response.headers()["traceresponse"].to_str().unwrap();
    value.split('-').nth(1).expect("a trace id").to_owned()
}

/// A W3C trace id and parent span id a caller would send.
fn caller_context() -> (String, String) {
    let trace_id = Uuid::new_v4().simple().to_string();
    let span_id = Uuid::new_v4().simple().to_string()[..16].to_owned();
    (trace_id, span_id)
}

fn find(spans: &[ReceivedSpan], what: impl Fn(&ReceivedSpan) -> bool) -> Option<&ReceivedSpan> {
    spans.iter().find(|span| what(span))
}

#[tokio::test]
async fn a_chat_message_is_one_trace_from_the_edge_through_the_chat_worker_to_postgres() {
    let otlp = OtlpReceiver::start().await;
    let mesh = ProcessMesh::start(&otlp.endpoint).await;
    let client = Client::new(&mesh.url);
    // Scrapes and probes first: once later spans arrived, theirs would have too.
    for path in ["/metrics", "/healthz", "/readyz"] {
        let response = client.raw().get(client.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert!(
            !response.headers().contains_key("traceresponse"),
            "{path} is not traced"
        );
    }
    let (_, ann) = user(&client, "ann").await;
    let (bob_id, bob) = user(&client, "bob").await;
    let (mut bob_ws, _) = Ws::connect_ready(&mesh.url, &bob).await;

    let (trace_id, caller_span) = caller_context();
    let response = client
        .raw()
        .post(client.url("/v1/messages"))
        .bearer_auth(&ann)
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&json!({"client_id": "traced-1", "to": bob_id, "body": "hello traced world"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    bob_ws.message("traced-1").await;
    let traceresponse = response.headers()["traceresponse"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        traceresponse.starts_with(&format!("00-{trace_id}-")),
        "the answer names the continued trace: {traceresponse}"
    );

    let trace = poll_until(
        "the message's whole trace",
        Duration::from_secs(30),
        || async {
            let spans: Vec<ReceivedSpan> = otlp
                .spans()
                .into_iter()
                .filter(|span| span.trace_id == trace_id)
                .collect();
            let complete = find(&spans, |s| {
                s.kind == SERVER && s.service == "nats-mesh-edge"
            })
            .is_some()
                && find(&spans, |s| {
                    s.kind == CONSUMER && s.service == "nats-mesh-chat"
                })
                .is_some()
                && find(&spans, |s| {
                    s.kind == CLIENT
                        && s.service == "nats-mesh-chat"
                        && s.attr("db.operation.name") == Some("INSERT")
                })
                .is_some()
                && find(&spans, |s| {
                    s.kind == PRODUCER && s.service == "nats-mesh-chat"
                })
                .is_some()
                && find(&spans, |s| {
                    s.kind == CONSUMER && s.service == "nats-mesh-edge"
                })
                .is_some();
            complete.then_some(spans)
        },
    )
    .await;

    let server = find(&trace, |s| {
        s.kind == SERVER && s.service == "nats-mesh-edge"
    })
    .unwrap();
    assert_eq!(
        server.parent_span_id, caller_span,
        "the caller's traceparent is continued"
    );
    assert_eq!(server.name, "POST /v1/messages");
    assert_eq!(server.attr("http.route"), Some("/v1/messages"));
    assert_eq!(server.attr("http.request.method"), Some("POST"));
    assert_eq!(server.attr("http.response.status_code"), Some("202"));
    assert_ne!(server.status, 2, "a 202 is no error");
    let publish = find(&trace, |s| {
        s.kind == PRODUCER && s.service == "nats-mesh-edge"
    })
    .expect("the edge's JetStream publish");
    assert_eq!(publish.parent_span_id, server.span_id);
    assert_eq!(publish.attr("messaging.system"), Some("nats"));
    let consumer = find(&trace, |s| {
        s.kind == CONSUMER && s.service == "nats-mesh-chat"
    })
    .unwrap();
    assert_eq!(
        consumer.parent_span_id, publish.span_id,
        "the chat worker continues the trace from the message's headers"
    );
    assert_eq!(consumer.attr("messaging.operation.type"), Some("process"));
    let insert = find(&trace, |s| {
        s.kind == CLIENT
            && s.service == "nats-mesh-chat"
            && s.attr("db.operation.name") == Some("INSERT")
    })
    .unwrap();
    assert_eq!(
        insert.parent_span_id, consumer.span_id,
        "the worker's statements are children of its batch"
    );
    assert_eq!(insert.attr("db.system.name"), Some("postgresql"));
    assert_eq!(insert.attr("mesh.service"), Some("chat"));
    let delivered = find(&trace, |s| {
        s.kind == CONSUMER && s.service == "nats-mesh-edge"
    })
    .unwrap();
    let push = find(&trace, |s| s.span_id == delivered.parent_span_id)
        .expect("the edge received a push of the chat worker");
    assert_eq!(push.kind, PRODUCER);
    assert_eq!(push.service, "nats-mesh-chat");
    assert!(push.name.contains(".push.user."), "{}", push.name);

    // Registering wrote user events: the outbox role relays them in a trace of its own.
    let all = poll_until(
        "the outbox relay's span",
        Duration::from_secs(30),
        || async {
            let all = otlp.spans();
            all.iter()
                .any(|s| s.service == "nats-mesh-outbox" && s.kind == PRODUCER)
                .then_some(all)
        },
    )
    .await;
    // Every service's Postgres work shows up (registering and logging in is the user role's).
    assert!(
        all.iter().any(|s| s.service == "nats-mesh-user"
            && s.kind == CLIENT
            && s.attr("db.system.name") == Some("postgresql")),
        "the user service's statements are spans"
    );
    for span in &all {
        assert!(
            !matches!(
                span.attr("url.path"),
                Some("/metrics" | "/healthz" | "/readyz")
            ),
            "scrapes and probes are not traced: {span:?}"
        );
        for value in span.attributes.values() {
            assert!(
                !value.contains("hello traced world") && !value.contains(&ann),
                "no message body or token in a span: {span:?}"
            );
        }
    }
    mesh.stop().await;
}

#[tokio::test]
async fn every_request_writes_one_access_log_line_without_secrets() {
    let otlp = OtlpReceiver::start().await;
    let mesh = ProcessMesh::start(&otlp.endpoint).await;
    let client = Client::new(&mesh.url);
    let (_, ann) = user(&client, "ann").await;

    let response = client
        .raw()
        .get(client.url("/v1/users/me"))
        .bearer_auth(&ann)
        .header("x-request-id", "access-log-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let trace_id = answered_trace(&response);
    // A token in the query string (the EventSource way) must not reach the log either.
    let query_secret = "query-secret-token-1234";
    let (status, _) = client
        .get(&format!("/v1/events?access_token={query_secret}"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "an invalid token");
    // A request without a token counts as an authentication failure.
    let (status, _) = client.get("/v1/users/me").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let line = poll_until("the access-log line", Duration::from_secs(10), || async {
        mesh.log_lines("edge").into_iter().find(|line| {
            line["target"] == "mesh::access" && line["fields"]["request_id"] == "access-log-1"
        })
    })
    .await;
    let fields = &line["fields"];
    assert_eq!(fields["method"], "GET");
    assert_eq!(fields["route"], "/v1/users/me");
    assert_eq!(fields["path"], "/v1/users/me");
    assert_eq!(fields["status"], 200);
    assert!(line.get("span").is_none(), "the line stands alone: {line}");
    assert!(fields["latency_ms"].as_f64().is_some(), "{line}");
    assert_eq!(fields["trace_id"], trace_id.as_str());
    let lines_of_request = mesh
        .log_lines("edge")
        .into_iter()
        .filter(|line| {
            line["target"] == "mesh::access" && line["fields"]["request_id"] == "access-log-1"
        })
        .count();
    assert_eq!(lines_of_request, 1, "one line per request");

    let metrics = client
        .raw()
        .get(client.url("/metrics"))
        .send()
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains(r#"mesh_auth_failures_total{reason="missing_token"} 1"#),
        "a 401 without a token is an auth failure"
    );
    let user_metrics = mesh.metrics_of("user").await;
    assert!(
        user_metrics
            .contains(r#"mesh_db_query_duration_seconds_count{operation="INSERT",service="user"}"#),
        "statement latency per service"
    );
    let chat_metrics = mesh.metrics_of("chat").await;
    assert!(
        chat_metrics.contains(
            r#"mesh_events_consumed_total{consumer="chat-projection",outcome="dead_lettered"} 0"#
        ),
        "error counters exist at 0 from the start"
    );
    let logs = mesh.all_logs();
    for secret in [ann.as_str(), query_secret, PASSWORD] {
        assert!(!logs.contains(secret), "a secret reached a log: {secret}");
    }
    mesh.stop().await;
}

/// Without an OTLP endpoint (this test process sets none) nothing records a span, yet each
/// message sent over a WebSocket still starts a trace of its own, made without a span: its
/// ingest message carries an unsampled `traceparent` whose trace id no other message has, so
/// the chat worker's log lines about it share one id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_exporter_each_websocket_message_still_starts_its_own_trace() {
    let nats = PrivateNats::start().await;
    let url = nats.url();
    let mesh = TestMesh::spawn_with(|s| {
        s.nats_url = url.clone();
        // The stored messages are read back from the ingest stream below: not compacted away.
        s.chat.compact_every = Duration::from_secs(3600);
    })
    .await;
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;
    let (_, bob) = c.user("bob").await;
    befriend(c, &ann, &bob).await;
    let mut ws = Ws::connect(&mesh.url, &ann.access).await;
    for client_id in ["one", "two", "three"] {
        ws.send_to(&bob.user_id, client_id, "hi").await;
        ws.stored(client_id).await;
    }

    let client = async_nats::connect(&url).await.expect("connect to NATS");
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream
        .get_stream(mesh.settings.prefix.stream(Stream::ChatIn))
        .await
        .expect("the ingest stream");
    let last = stream
        .info()
        .await
        .expect("stream info")
        .state
        .last_sequence;
    assert_eq!(last, 3, "three messages in the ingest stream");
    let mut traces = Vec::new();
    for seq in 1..=last {
        let message = stream.get_raw_message(seq).await.expect("a stored message");
        let parent = message
            .headers
            .get("traceparent")
            .unwrap_or_else(|| panic!("message {seq} carries no traceparent"))
            .to_string();
        let fields: Vec<&str> = parent.split('-').collect();
        assert_eq!(fields.len(), 4, "{parent}");
        assert_eq!(fields[0], "00", "{parent}");
        assert!(
            fields[1].len() == 32 && fields[1].bytes().all(|b| b.is_ascii_hexdigit()),
            "{parent}"
        );
        assert_ne!(fields[1], "0".repeat(32), "{parent}");
        assert_eq!(fields[2].len(), 16, "{parent}");
        assert_eq!(fields[3], "00", "unsampled when nothing exports: {parent}");
        traces.push(fields[1].to_owned());
    }
    traces.sort();
    traces.dedup();
    assert_eq!(traces.len(), 3, "each message its own trace id");
}

/// Without an exporter no CLIENT span is made for an RPC call (it would never be recorded),
/// yet the call still carries its caller's trace: a REST read continuing a client's unsampled
/// `traceparent` asks the user service with that trace id, and so does a read that brought
/// none, with the trace id its `traceresponse` names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_exporter_a_call_carries_the_requests_trace() {
    use futures::StreamExt;
    use mesh_contracts::user::GetMe;
    use mesh_contracts::{Prefix, Rpc};

    let nats = PrivateNats::start().await;
    let url = nats.url();
    let mesh = ProcessMesh::start_on("", Some(&url)).await;
    let client = Client::new(&mesh.url);
    let (_, ann) = user(&client, "ann").await;
    // A plain subscriber gets a copy of every request the service's queue group answers.
    // What happens to the watcher's connection, told when a request does not reach it.
    let events = Arc::new(Mutex::new(Vec::new()));
    let watcher = async_nats::ConnectOptions::new()
        .event_callback({
            let events = events.clone();
            move |event| {
                let events = events.clone();
                async move { events.lock().expect("events lock").push(event.to_string()) }
            }
        })
        .connect(&url)
        .await
        .expect("connect to NATS");
    let prefix = Prefix::parse(&mesh.prefix).expect("the mesh's prefix");
    let mut requests = watcher
        .subscribe(prefix.rpc(GetMe::SERVICE, GetMe::OP))
        .await
        .expect("subscribe to the user service's requests");
    // `flush` only writes the subscription out; the server takes interest once it has read it.
    // It reads a connection's commands in order, so a probe the watcher publishes to itself
    // arriving back means the subscription above is in place before any request is made.
    let probe_subject = format!("{}.watcher-probe", mesh.prefix);
    let mut probe = watcher
        .subscribe(probe_subject.clone())
        .await
        .expect("subscribe to the probe");
    watcher
        .publish(probe_subject, "probe".into())
        .await
        .expect("publish the probe");
    tokio::time::timeout(Duration::from_secs(10), probe.next())
        .await
        .expect("the probe comes back within 10 s")
        .expect("a probe");

    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let reads = [Some(format!("00-{caller_trace}-00f067aa0ba902b7-00")), None];
    for traceparent in reads {
        let mut request = client
            .raw()
            .get(client.url("/v1/users/me"))
            .bearer_auth(&ann);
        if let Some(value) = &traceparent {
            request = request.header("traceparent", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let answered = answered_trace(&response);
        if traceparent.is_some() {
            assert_eq!(
                answered, caller_trace,
                "the request continues its caller's trace"
            );
        }
        let Ok(asked) = tokio::time::timeout(Duration::from_secs(10), requests.next()).await else {
            let tail = |role: &str| {
                let lines = mesh.raw_logs(role);
                lines[lines.len().saturating_sub(20)..].join("\n")
            };
            panic!(
                "the user service was not asked within 10 s (traceparent {traceparent:?}); \
                 watcher events: {:?}\nedge:\n{}\nuser:\n{}",
                events.lock().expect("events lock"),
                tail("edge"),
                tail("user")
            );
        };
        let asked = asked.expect("a request");
        let parent = asked
            .headers
            .as_ref()
            .and_then(|map| map.get("traceparent"))
            .expect("the call carries a traceparent")
            .to_string();
        let fields: Vec<&str> = parent.split('-').collect();
        assert_eq!(fields.len(), 4, "{parent}");
        assert_eq!(
            fields[1], answered,
            "the call is in the request's trace: {parent}"
        );
        assert_eq!(fields[3], "00", "unsampled when nothing exports: {parent}");
    }
    mesh.stop().await;
}

/// A NATS outage is one warning per connection in each role's log, not a line per reconnect
/// attempt (a client tries again every half second), and coming back is one line that says how
/// long the connection was down and how often it failed meanwhile. Each loop that reopens a
/// feed or a watch, or renews leases, warns once too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_is_one_warning_and_one_line_back_per_connection() {
    let mut nats = PrivateNats::start().await;
    let url = nats.url();
    // The mesh's own crates at `debug`: an outage's later failures are logged there.
    let log = "info,mesh_nats=debug,mesh_edge=debug,mesh_user=debug,mesh_social=debug,\
               mesh_chat=debug,mesh_outbox=debug,mesh_service_kit=debug";
    let mesh = ProcessMesh::start_logging("", Some(&url), log).await;
    nats.kill().await;
    // NATS stays away until, in every role, some loop besides the connection failed again
    // (quietly) after warning: the feeds and watches fail once per open timeout (5-10 s).
    let failed_again = |role: &str| {
        let lines = mesh.log_lines(role);
        lines.iter().any(|warned| {
            warned["level"] == "WARN"
                && warned["target"] != "mesh_nats::bus"
                && lines.iter().any(|quiet| {
                    quiet["level"] == "DEBUG"
                        && quiet["target"] == warned["target"]
                        && quiet["fields"]["message"]
                            .as_str()
                            .is_some_and(|m| m.starts_with("cannot ") || m.ends_with("failed"))
                })
        })
    };
    poll_until(
        "a loop of every role failing again during the outage",
        Duration::from_secs(40),
        || async {
            ["user", "social", "chat", "outbox", "edge"]
                .iter()
                .all(|role| failed_again(role))
                .then_some(())
        },
    )
    .await;
    nats.run().await;
    let client = Client::new(&mesh.url);
    poll_until("the mesh ready again", Duration::from_secs(30), || async {
        (client.get("/readyz").await.0 == StatusCode::OK).then_some(())
    })
    .await;
    let bus_lines = |role: &str, message: &str| -> Vec<Value> {
        mesh.log_lines(role)
            .into_iter()
            .filter(|line| {
                line["target"] == "mesh_nats::bus" && line["fields"]["message"] == message
            })
            .collect()
    };
    for role in ["user", "social", "chat", "outbox", "edge"] {
        let back = poll_until(
            &format!("every NATS connection of {role} back"),
            Duration::from_secs(30),
            || async {
                let warned = bus_lines(role, "NATS connection lost");
                let back = bus_lines(role, "NATS connected again");
                (!back.is_empty() && back.len() == warned.len()).then_some(back)
            },
        )
        .await;
        assert!(
            bus_lines(role, "NATS connection lost")
                .iter()
                .all(|line| line["level"] == "WARN"),
            "{role}: an outage's first failure is a warning"
        );
        assert!(
            bus_lines(role, "NATS still unreachable").is_empty(),
            "{role}: reminded of an outage shorter than a minute"
        );
        // Every loop that reopens a feed or a watch, or renews leases, warned once, however
        // often it failed.
        let mut warned: HashMap<String, usize> = HashMap::new();
        for line in mesh.log_lines(role) {
            if line["level"] != "WARN" || line["target"] == "mesh_nats::bus" {
                continue;
            }
            let fields = &line["fields"];
            let key = format!(
                "{} {} {} {} {}",
                line["target"],
                fields["message"],
                fields["consumer"],
                fields["stream"],
                fields["partition"]
            );
            *warned.entry(key).or_default() += 1;
        }
        let repeated: Vec<_> = warned.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            repeated.is_empty(),
            "{role}: warned more than once in one outage: {repeated:?}"
        );
        for line in back {
            let failures = line["fields"]["failures"].as_u64().unwrap_or(0);
            let down_for = line["fields"]["down_for_ms"].as_u64().unwrap_or(0);
            assert!(
                failures >= 2 && down_for >= 1_000,
                "{role}: the line back should count the quiet attempts of the outage: {line}"
            );
        }
    }
    mesh.stop().await;
    drop(nats);
}

/// Messages an edge publishes together in one ingest message each keep their trace: the chat
/// worker's batch span continues one of them and links to every other, so from any message's
/// PRODUCER span an operator reaches the batch that stored it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_published_together_each_reach_the_batch_that_stored_them() {
    // Within the default limit of 30 sends per 10 s.
    const BURST: usize = 24;
    let otlp = OtlpReceiver::start().await;
    let mesh = ProcessMesh::start(&otlp.endpoint).await;
    let client = Client::new(&mesh.url);
    let (_, ann) = user(&client, "ann").await;
    let (bob_id, _) = user(&client, "bob").await;
    let (mut ws, _) = Ws::connect_ready(&mesh.url, &ann).await;
    // Sent at once: while one publish waits for JetStream, the next ones queue and go together.
    for i in 0..BURST {
        ws.send_to(&bob_id, &format!("burst-{i}"), "packed").await;
    }
    for i in 0..BURST {
        ws.stored(&format!("burst-{i}")).await;
    }
    let metrics = client.metrics_text().await;
    let publishes = metrics
        .lines()
        .find(|line| line.starts_with("mesh_chat_ingest_publish_messages_count"))
        .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .expect("the edge counts its ingest publishes");
    assert!(
        publishes < BURST as f64,
        "{BURST} messages went in {publishes} publishes: nothing was published together"
    );

    let ingest = |span: &ReceivedSpan| {
        span.kind == PRODUCER
            && span.service == "nats-mesh-edge"
            && span
                .attr("messaging.destination.name")
                .is_some_and(|d| d.contains(".chat.in."))
    };
    poll_until(
        "every message's PRODUCER span reached from a chat batch",
        Duration::from_secs(30),
        || async {
            let spans = otlp.spans();
            let batches: Vec<&ReceivedSpan> = spans
                .iter()
                .filter(|s| s.kind == CONSUMER && s.service == "nats-mesh-chat")
                .collect();
            let producers: Vec<&ReceivedSpan> = spans.iter().filter(|s| ingest(s)).collect();
            let reached = |producer: &ReceivedSpan| {
                batches.iter().any(|batch| {
                    (batch.trace_id == producer.trace_id
                        && batch.parent_span_id == producer.span_id)
                        || batch
                            .links
                            .contains(&(producer.trace_id.clone(), producer.span_id.clone()))
                })
            };
            (producers.len() >= BURST && producers.iter().all(|p| reached(p))).then_some(())
        },
    )
    .await;
    mesh.stop().await;
}
