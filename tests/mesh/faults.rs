//! Faults: the mesh without its NATS server answers 503 at once instead of hanging, recovers by
//! itself when the server comes back, and stops promptly when told to while it is gone.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mesh_contracts::nats_permissions::NatsRole;
use mesh_user::login_failures::{LoginFailures, Subjects};
use nats_mesh::Role;
use reqwest::StatusCode;
use serde_json::json;
use tokio::process::{Child, Command};

use crate::edge_hardening::FollowedFailures;
use crate::fencing::ChatProcess;
use crate::harness::{
    PASSWORD, TestMesh, assert_problem, poll_until, scraped_sum, unique_phone, wait_until,
};
use crate::nats_server::{client_port, nats_server_bin, ports_file_args, scratch_dir};

/// A NATS server of this test alone, so stopping it disturbs no other test.
pub(crate) struct PrivateNats {
    bin: PathBuf,
    /// Its client port: taken by the server itself at the first start (`-p -1`), kept for
    /// restarts.
    port: Option<u16>,
    store: PathBuf,
    child: Option<Child>,
}

impl PrivateNats {
    pub(crate) async fn start() -> Self {
        let mut nats = Self {
            bin: nats_server_bin(),
            port: None,
            store: scratch_dir("faults"),
            child: None,
        };
        nats.run().await;
        nats
    }

    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port.expect("started"))
    }

    /// Starts the server (again on the same port and store), and waits until it listens.
    pub(crate) async fn run(&mut self) {
        assert!(self.child.is_none(), "already running");
        let port = self
            .port
            .map_or_else(|| "-1".to_owned(), |port| port.to_string());
        let mut child = Command::new(&self.bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &port, "-sd"])
            .arg(&self.store)
            .args(ports_file_args(&self.store))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start nats-server");
        let pid = child.id().expect("a running child");
        let listening = client_port(pid, &self.store, || {
            let status = child.try_wait().ok().flatten()?;
            Some(format!("{status} (port {port} taken by another process?)"))
        })
        .await;
        self.port = Some(listening);
        self.child = Some(child);
    }

    /// Kills the server (no goodbye to its clients) and reaps it.
    pub(crate) async fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().await.expect("kill nats-server");
    }

    /// Deletes the stopped server's JetStream store, as a server rebuilt without its volumes
    /// starts: every stream and bucket gone.
    pub(crate) fn lose_store(&mut self) {
        assert!(self.child.is_none(), "the server still runs");
        let jetstream = self.store.join("jetstream");
        std::fs::remove_dir_all(&jetstream)
            .unwrap_or_else(|err| panic!("remove {}: {err}", jetstream.display()));
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// Told to stop (SIGTERM from Kubernetes, Ctrl-C in a terminal) while its NATS server is gone,
/// the mesh stops within a few seconds: no role waits out its NATS timeouts one after another.
/// The chat worker is caught both while it still holds its partitions and once their leases
/// lapsed, when each tick tries to acquire every partition again. As many partitions as a
/// deployment's default: acquiring or releasing them one after another would take 12 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_nats_every_role_stops_promptly() {
    // Holding its partitions: the whole mesh in this process.
    let mut nats = PrivateNats::start().await;
    let url = nats.url();
    let mesh = TestMesh::spawn_with(|s| {
        s.nats_url = url;
        s.chat.partitions = 16;
    })
    .await;
    nats.kill().await;
    wait_until("the edge not ready without NATS", || async {
        mesh.client.get("/readyz").await.0 == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let took = mesh.stop_timed().await;
    assert!(
        took < Duration::from_secs(5),
        "the roles took {took:?} to stop without NATS"
    );
    drop(nats);

    // Once the leases lapsed: a chat worker process of its own, whose metrics say when.
    let mut nats = PrivateNats::start().await;
    let url = nats.url();
    let roles = &[Role::Edge, Role::User, Role::Social, Role::Outbox];
    let mesh = TestMesh::spawn_roles(roles, |s| {
        s.nats_url = url;
        s.chat.partitions = 16;
    })
    .await;
    let (worker, metrics) = ChatProcess::with_metrics(&mesh, "0", &[]);
    mesh.wait_ready().await;
    let owned = || scraped_sum(&metrics, "mesh_chat_partitions_owned");
    poll_until(
        "the worker owns every partition",
        Duration::from_secs(20),
        || async { (owned().await == Some(16.0)).then_some(()) },
    )
    .await;
    nats.kill().await;
    poll_until(
        "the worker gave its lapsed leases up",
        Duration::from_secs(20),
        || async { (owned().await == Some(0.0)).then_some(()) },
    )
    .await;
    let took = worker.terminate_timed().await;
    assert!(
        took < Duration::from_secs(5),
        "the chat worker took {took:?} to stop without NATS once its leases lapsed"
    );
    let took = mesh.stop_timed().await;
    assert!(
        took < Duration::from_secs(5),
        "the other roles took {took:?} to stop without NATS"
    );
}

/// Without NATS, readiness and API calls answer 503 promptly (no hang); once NATS is back on the
/// same address, the mesh is ready again and serves logins without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_nats_the_edge_answers_503_and_recovers() {
    let mut nats = PrivateNats::start().await;
    let url = nats.url();
    let mesh = TestMesh::spawn_with(|s| s.nats_url = url).await;
    let c = &mesh.client;
    let phone = unique_phone();
    c.register(&phone, "Ann").await;
    let tokens = c.login(&phone).await;
    assert_eq!(
        c.get_as("/v1/users/me", &tokens.access).await.0,
        StatusCode::OK
    );

    nats.kill().await;
    wait_until("readyz reports NATS down", || async {
        c.get("/readyz").await.0 == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    assert_problem(
        &c.get("/readyz").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    );
    // Liveness is about the process, not its dependencies.
    assert_eq!(c.get("/healthz").await.0, StatusCode::OK);

    // Well under the RPC deadline: the edge knows it is disconnected and does not wait.
    let prompt = mesh.settings.rpc_timeout / 2;
    let started = Instant::now();
    assert_problem(
        &c.get_as("/v1/users/me", &tokens.access).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    );
    assert_problem(
        &c.post(
            "/v1/auth/login",
            json!({ "phone": phone, "password": PASSWORD }),
        )
        .await,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    );
    let register = c
        .post(
            "/v1/auth/register",
            json!({ "phone": unique_phone(), "password": PASSWORD, "nickname": "Bob" }),
        )
        .await;
    assert_problem(
        &register,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    );
    assert!(
        started.elapsed() < prompt,
        "503s took {:?}",
        started.elapsed()
    );
    // Authentication still happens first: a bad token is 401, not 503.
    assert_problem(
        &c.get_as("/v1/users/me", "garbage").await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );

    nats.run().await;
    wait_until("readyz after NATS is back", || async {
        c.get("/readyz").await.0 == StatusCode::OK
    })
    .await;
    // The account survived (Postgres) and the RPC path works again, with old and new tokens.
    let again = c.login(&phone).await;
    assert_eq!(
        c.get_as("/v1/users/me", &again.access).await.0,
        StatusCode::OK
    );
    assert_eq!(
        c.get_as("/v1/users/me", &tokens.access).await.0,
        StatusCode::OK
    );
    c.register(&unique_phone(), "Bob").await;
    // Revocation still reaches the edge through the re-established watch.
    assert_eq!(
        c.post_as("/v1/auth/logout", &tokens.access, json!({}))
            .await
            .0,
        StatusCode::OK
    );
    wait_until("revocation after reconnect", || async {
        c.get_as("/v1/users/me", &tokens.access).await.0 == StatusCode::UNAUTHORIZED
    })
    .await;
    assert_problem(
        &c.get_as("/v1/users/me", &tokens.access).await,
        StatusCode::UNAUTHORIZED,
        "session_revoked",
    );
    mesh.stop().await;
    drop(nats);
}

/// A request that is in flight when NATS goes away gets a clear 503 or 504, never a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_racing_a_nats_outage_end_with_a_clear_status() {
    let mut nats = PrivateNats::start().await;
    let url = nats.url();
    let mesh = TestMesh::spawn_with(|s| {
        s.nats_url = url;
        s.rpc_timeout = Duration::from_secs(2);
    })
    .await;
    let c = mesh.client.clone();
    let phone = unique_phone();
    c.register(&phone, "Ann").await;
    let tokens = c.login(&phone).await;

    // A stream of requests across the outage, until told to stop.
    let seen = Arc::new(Mutex::new(Vec::<StatusCode>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let (c, seen, stop) = (c.clone(), seen.clone(), stop.clone());
        let token = tokens.access.clone();
        async move {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let (status, body) = c.get_as("/v1/users/me", &token).await;
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "request hung for {:?}",
                    started.elapsed()
                );
                match status {
                    StatusCode::OK => {}
                    StatusCode::SERVICE_UNAVAILABLE => {
                        assert_eq!(body["code"], "service_unavailable", "{body}")
                    }
                    StatusCode::GATEWAY_TIMEOUT => assert_eq!(body["code"], "timeout", "{body}"),
                    other => panic!("unexpected {other}: {body}"),
                }
                seen.lock().unwrap().push(status);
            }
        }
    });
    let count = |status: StatusCode| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|s| **s == status)
            .count()
    };
    wait_until("requests served before the outage", || async {
        count(StatusCode::OK) >= 5
    })
    .await;
    nats.kill().await;
    wait_until("requests refused during the outage", || async {
        count(StatusCode::SERVICE_UNAVAILABLE) >= 5
    })
    .await;
    nats.run().await;
    let served_before = count(StatusCode::OK);
    wait_until("requests served after the outage", || async {
        count(StatusCode::OK) >= served_before + 5
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    load.await.expect("the load saw only clear statuses");
    // Readiness asks every service to answer within 800 ms; right after the outage one may
    // still be re-subscribing, so it comes back shortly after the requests do.
    wait_until("ready again after the outage", || async {
        c.get("/readyz").await.0 == StatusCode::OK
    })
    .await;
    mesh.stop().await;
    drop(nats);
}

/// The user service's copy of which accounts have failed sign-ins survives NATS going away:
/// after the server restarts, failures another instance counts still lock the account, so a
/// watch lost with the server never leaves the copy answering "no failures" for good; and a
/// follower that lived through the restart is current again (reads nothing for a clean
/// account) and sees the new failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_counted_after_a_nats_restart_still_lock_the_account() {
    let mut nats = PrivateNats::start().await;
    let url = nats.url();
    let mesh = TestMesh::spawn_with(|s| {
        s.nats_url = url;
        s.login_throttle.lock_after = 3;
    })
    .await;
    let c = &mesh.client;
    let phone = unique_phone();
    c.register(&phone, "Ann").await;
    c.login(&phone).await;
    let followed = FollowedFailures::start(&mesh).await;
    let following = &followed.failures;

    nats.kill().await;
    nats.run().await;
    wait_until("readyz after NATS is back", || async {
        c.get("/readyz").await.0 == StatusCode::OK
    })
    .await;
    c.login(&phone).await;
    let clean = Subjects::new(&unique_phone(), None);
    poll_until(
        "the follower current after the restart",
        Duration::from_secs(20),
        || async { (followed.messages_to_count(&clean, 1).await == 0).then_some(()) },
    )
    .await;

    // Another user service instance counts three failures of the account.
    let other = mesh.bus_as(NatsRole::User, "test-other-user-service").await;
    let failures = LoginFailures::open(&other)
        .await
        .expect("the failures bucket");
    for _ in 0..3 {
        failures.record(&Subjects::new(&phone, None)).await;
    }
    wait_until(
        "the account locked by the other instance's count",
        || async {
            let answer = c
                .post(
                    "/v1/auth/login",
                    json!({ "phone": phone, "password": PASSWORD }),
                )
                .await;
            answer.0 == StatusCode::TOO_MANY_REQUESTS && answer.1["code"] == "login_locked"
        },
    )
    .await;
    let account = Subjects::new(&phone, None);
    poll_until(
        "the follower sees the new failures",
        Duration::from_secs(10),
        || async { (following.count(&account).await.failures.account == 3).then_some(()) },
    )
    .await;
    followed.stop().await;
    mesh.stop().await;
    drop(nats);
}

/// A service instance told to stop still answers the requests NATS already handed to it:
/// dropped, each would leave its caller waiting out the RPC deadline (5 s), on every rolling
/// restart. The stand-in user service runs one request at a time, so while the first waits
/// at a gate the others sit in its subscription when it is told to stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_service_answers_the_requests_already_handed_to_it() {
    use futures::StreamExt;
    use mesh_contracts::user::{Empty, Health};
    use mesh_contracts::{Rpc, Service};
    use mesh_nats::ServiceHost;
    use std::sync::atomic::AtomicUsize;
    use tokio::sync::Notify;
    use tokio_util::sync::CancellationToken;

    // On the old drain each queued request was dropped or not by a coin toss: 12 make a pass
    // by chance (1 in 4,096) all but impossible.
    const QUEUED: usize = 12;
    let nats = PrivateNats::start().await;
    let url = nats.url();
    let roles = &[Role::Edge, Role::Social];
    let mesh = TestMesh::spawn_roles(roles, |s| s.nats_url = url.clone()).await;
    let service_bus = mesh.bus_as(NatsRole::User, "stand-in-user").await;
    let (calls, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
    let host = ServiceHost::new(service_bus.clone(), Service::User, "one at a time")
        .max_in_flight(1)
        .handle::<Health, _, _, _, mesh_contracts::ServiceError>(
            (calls.clone(), gate.clone()),
            |(calls, gate), _ctx, _req: Empty| async move {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    gate.notified().await;
                }
                Ok(Empty {})
            },
        );
    let stop = CancellationToken::new();
    let serving = tokio::spawn(host.run(stop.clone().cancelled_owned()));
    // A subscription on the service's own connection, for the marker below.
    let marker = uuid::Uuid::new_v4();
    let markers = service_bus
        .subscribe_push(marker)
        .await
        .expect("subscribe to the markers");
    let markers = &tokio::sync::Mutex::new(markers);
    let subject = mesh.settings.prefix.rpc(Health::SERVICE, Health::OP);
    let caller = async_nats::connect(&url).await.expect("connect to NATS");
    // Services answer only into the mesh's inboxes (`_INBOX.<prefix>.`).
    let inbox = format!("_INBOX.{}.caller.", mesh.settings.prefix.as_str());
    let mut replies = caller
        .subscribe(format!("{inbox}>"))
        .await
        .expect("subscribe to the replies");
    let ask = |n: usize| {
        let (caller, subject, inbox) = (caller.clone(), subject.clone(), inbox.clone());
        async move {
            caller
                .publish_with_reply(subject, format!("{inbox}{n}"), "{}".into())
                .await
                .expect("publish a request");
            caller.flush().await.expect("flush");
        }
    };
    // The service may take a moment to subscribe: the first request is repeated until it runs.
    poll_until(
        "the first request runs",
        Duration::from_secs(10),
        || async {
            ask(0).await;
            (calls.load(Ordering::SeqCst) >= 1).then_some(())
        },
    )
    .await;
    for n in 1..=QUEUED {
        ask(n).await;
    }
    // A client's flush only writes out what that client buffered: no round trip, so neither
    // flush proves NATS even routed the requests yet. A marker does: published on the
    // requests' connection after them, NATS writes it to the service's connection after them,
    // and that connection files what it reads into its subscriptions in that order. Once a
    // marker came out of the service's connection, the requests are in its subscription.
    // (The marker's subscription may not be on the server yet at first: markers are repeated.)
    let marker_subject = mesh.settings.prefix.push_user(marker);
    poll_until(
        "the service's connection read everything sent before the marker",
        Duration::from_secs(10),
        || async {
            caller
                .publish(marker_subject.clone(), "marker".into())
                .await
                .expect("publish a marker");
            caller.flush().await.expect("flush");
            let mut markers = markers.lock().await;
            tokio::time::timeout(Duration::from_millis(100), markers.next())
                .await
                .ok()
                .flatten()
        },
    )
    .await;
    stop.cancel();
    gate.notify_one();

    let mut answered = std::collections::BTreeSet::new();
    while answered.len() < QUEUED {
        let Ok(Some(reply)) = tokio::time::timeout(Duration::from_secs(4), replies.next()).await
        else {
            panic!(
                "requests handed to the stopping service went unanswered: only {answered:?} of 1..={QUEUED}"
            );
        };
        let n: usize = reply.subject.as_str()[inbox.len()..]
            .parse()
            .expect("a number");
        assert!(
            reply
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Service-Error"))
                .is_none(),
            "request {n} was refused: {reply:?}"
        );
        if n == 0 {
            // Copies of the first request: NATS answers those sent before the service
            // subscribed itself ("no responders").
            continue;
        }
        // A status (503 "no responders") is NATS answering for a service it found no
        // subscriber for, not the service answering.
        assert!(
            reply.status.is_none(),
            "NATS, not the service, answered request {n}: {reply:?}"
        );
        answered.insert(n);
    }
    tokio::time::timeout(Duration::from_secs(5), serving)
        .await
        .expect("the service stops once they are answered")
        .expect("the service task")
        .expect("the service ran");
    mesh.stop().await;
}

/// A bus of the migrate role on the settings' NATS.
async fn migrate_bus(settings: &nats_mesh::config::Settings) -> mesh_nats::Bus {
    mesh_nats::Bus::connect_with(
        &settings.nats_url,
        &settings.nats_credentials_for(NatsRole::Migrate),
        settings.prefix.clone(),
        "migrate-test",
        Duration::from_secs(10),
    )
    .await
    .expect("connect to NATS")
}

/// Every stream and bucket `mesh migrate` made, as read through a bus of the migrate role:
/// each one's creation time.
async fn creation_times(settings: &nats_mesh::config::Settings) -> Vec<(String, String)> {
    use mesh_contracts::{Bucket, Stream};
    let bus = migrate_bus(settings).await;
    let mut times = Vec::new();
    for stream in Stream::ALL {
        let mark = bus.stream_mark(stream).await.expect("the stream");
        times.push((format!("{stream:?}"), mark.created.to_string()));
    }
    for bucket in Bucket::ALL {
        let mark = bus.bucket_mark(bucket).await.expect("the bucket");
        times.push((format!("{bucket:?}"), mark.created.to_string()));
    }
    bus.drain().await;
    times
}

/// `mesh migrate` at every deploy, a NATS restart after it: every stream and bucket keeps the
/// creation time it was made with, so a chat worker still takes the ingest stream and the
/// lease bucket for the ones its partitions' positions were recorded in (a stream made anew
/// would reset them, and every partition would read the whole stream again). Migrate updates
/// only what differs from the settings (nats-server before 2.14.6 wrote its last start as the
/// creation time on such an update); what does differ is still updated, and the server this
/// project installs keeps the creation time across restarts after that update too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_buckets_keep_their_creation_time_across_migrations_and_restarts() {
    let mut nats = PrivateNats::start().await;
    let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let mut settings = crate::harness::test_settings(&prefix, None);
    settings.nats_url = nats.url();
    nats_mesh::roles::migrate_nats(&settings)
        .await
        .expect("migrate");
    let made = creation_times(&settings).await;

    for round in 0..2 {
        let what = format!("after restart {round} and migrate");
        restart_keeps_times(&mut nats, &settings, &made, true, &what).await;
    }
    let what = "after migrate and another restart";
    restart_keeps_times(&mut nats, &settings, &made, false, what).await;

    // A setting that differs is still brought to what migrate declares.
    settings.chat.dedup_window = Duration::from_secs(7);
    nats_mesh::roles::migrate_nats(&settings)
        .await
        .expect("migrate with another duplicate window");
    let bus = migrate_bus(&settings).await;
    assert!(
        bus.keeps_creation_times(),
        "the installed server {} is one migrate warns about",
        bus.server_version()
    );
    bus.drain().await;
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let stream = async_nats::jetstream::new(client)
        .get_stream(settings.prefix.stream(mesh_contracts::Stream::ChatIn))
        .await
        .expect("the ingest stream");
    assert_eq!(
        stream.cached_info().config.duplicate_window,
        Duration::from_secs(7)
    );

    // That real change, then restarts: the server itself keeps every creation time (2.12.8
    // wrote the restart's time on an update after a restart, and the next restart showed it).
    for round in 0..2 {
        let what = format!("restart {round} after a changed setting");
        restart_keeps_times(&mut nats, &settings, &made, false, &what).await;
    }
    drop(nats);
}

/// Restarts `nats` (then runs migrate, when `migrate`) and requires every stream and bucket to
/// have kept the creation time in `made`.
async fn restart_keeps_times(
    nats: &mut PrivateNats,
    settings: &nats_mesh::config::Settings,
    made: &[(String, String)],
    migrate: bool,
    what: &str,
) {
    nats.kill().await;
    nats.run().await;
    if migrate {
        nats_mesh::roles::migrate_nats(settings)
            .await
            .expect("migrate after a restart");
    }
    assert_eq!(creation_times(settings).await, made, "{what}");
}
