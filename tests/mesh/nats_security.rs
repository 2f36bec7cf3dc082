//! NATS as a trust boundary: a nats-server of the test's own runs the authorization that
//! `mesh nats-config` generates for exactly the test's prefix; the mesh works end to end with
//! every role on its own least-privilege login, while the eavesdropping, impersonation and
//! forgery of issue 12 are refused by the server, for a client without credentials and for
//! one holding each role's.

use std::time::Duration;

use async_nats::{Client, HeaderMap};
use mesh_contracts::nats_permissions::{NatsRole, Scope};
use mesh_contracts::{Bucket, Prefix, Service, Stream};
use mesh_nats::{NatsCredentials, Secret};
use reqwest::StatusCode;
use serde_json::json;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::chat::{history, private_id};
use crate::harness::{TestMesh, wait_until};
use crate::nats_server::{NatsServer, scratch_dir};
use crate::social_friends::befriend;

/// A nats-server with JetStream and the generated authorization for one prefix.
pub struct SecureNats {
    _server: NatsServer,
    pub url: String,
    pub prefix: Prefix,
    pub logins: Vec<(NatsRole, NatsCredentials)>,
}

impl SecureNats {
    pub async fn start() -> Self {
        let prefix = Prefix::parse(&format!("s{}", &Uuid::new_v4().simple().to_string()[..12]))
            .expect("prefix");
        let dir = scratch_dir("secure-nats");
        let written =
            nats_mesh::nats_config::write(&dir, &Scope::Exact(prefix.clone())).expect("config");
        let logins = mesh_nats::parse_role_passwords(
            &std::fs::read_to_string(&written.role_credentials).unwrap(),
        )
        .unwrap();
        let server = NatsServer::start(&dir, "include ./auth.conf\n").await;
        Self {
            url: server.url.clone(),
            _server: server,
            prefix,
            logins,
        }
    }

    pub fn login(&self, role: NatsRole) -> NatsCredentials {
        self.logins
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, c)| c.clone())
            .expect("a login for every role")
    }

    /// The whole mesh on this server, every role with its own login.
    pub async fn mesh(&self) -> TestMesh {
        let (url, prefix, logins) = (self.url.clone(), self.prefix.clone(), self.logins.clone());
        TestMesh::spawn_with(move |s| {
            s.nats_url = url;
            s.prefix = prefix;
            s.nats_role_credentials = logins;
        })
        .await
    }
}

/// A raw client (as an attacker would use) holding `role`'s login, and the server's errors.
async fn client_as(nats: &SecureNats, role: NatsRole) -> (Client, mpsc::UnboundedReceiver<String>) {
    let creds = nats.login(role);
    let (tx, rx) = mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::new()
        .user_and_password(
            creds.user.clone().unwrap(),
            creds.password.as_ref().unwrap().expose().to_owned(),
        )
        // Its own role's inbox: the only replies this login may read.
        .custom_inbox_prefix(role.inbox_prefix(&nats.prefix))
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(err) = event {
                    let _ = tx.send(err.to_string().to_lowercase());
                }
            }
        })
        .connect(&nats.url)
        .await
        .expect("connect with a role's login");
    (client, rx)
}

/// Waits for the server's permissions violation naming `subject`.
async fn refused(errors: &mut mpsc::UnboundedReceiver<String>, subject: &str) {
    let wanted = subject.to_lowercase();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(err) = errors.recv().await {
            if err.contains("permissions violation") && err.contains(&wanted) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "no permissions violation for {subject}");
}

/// Headers claiming to act for `user` with an invented session, as in the issue.
fn forged(user: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("Mesh-User-Id", user);
    headers.insert("Mesh-Session-Id", Uuid::new_v4().to_string().as_str());
    headers.insert("Mesh-Request-Id", "forged");
    headers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_valid_login_nobody_connects_and_errors_keep_the_password() {
    let nats = SecureNats::start().await;
    let anonymous = async_nats::connect(&nats.url).await;
    assert!(anonymous.is_err(), "an anonymous client connected");

    let wrong = NatsCredentials {
        user: Some("edge".into()),
        password: Some(Secret::new("not-the-password")),
        ..Default::default()
    };
    let err = mesh_nats::Bus::connect_with(
        &nats.url,
        &wrong,
        nats.prefix.clone(),
        "wrong",
        Duration::from_secs(3),
    )
    .await
    .expect_err("a wrong password connected");
    assert!(!err.to_string().contains("not-the-password"), "{err}");

    // A password in the URL is used, and never printed.
    let in_url = nats.url.replace("nats://", "nats://edge:hunter2secret@");
    let err = mesh_nats::Bus::connect(&in_url, nats.prefix.clone(), "url", Duration::from_secs(3))
        .await
        .expect_err("a wrong URL password connected");
    let text = format!("{err} {err:?}");
    assert!(!text.contains("hunter2secret"), "{text}");
    let edge = nats.login(NatsRole::Edge);
    let good = nats.url.replace(
        "nats://",
        &format!("nats://edge:{}@", edge.password.unwrap().expose()),
    );
    mesh_nats::Bus::connect(&good, nats.prefix.clone(), "url", Duration::from_secs(3))
        .await
        .expect("the URL's user and password are used");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_runs_end_to_end_on_least_privilege_logins() {
    let nats = SecureNats::start().await;
    let mesh = nats.mesh().await;
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;
    let (_, bob) = c.user("bob").await;
    befriend(c, &ann, &bob).await;
    let (status, ack) = c
        .post_as(
            "/v1/messages",
            &ann.access,
            json!({"client_id": "least-1", "to": bob.user_id, "body": "hi"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{ack}");
    let conversation = private_id(&ann, &bob);
    wait_until("message stored", || async {
        history(c, &bob, &conversation, 0).await.len() == 1
    })
    .await;
    // Revocation (the user role writes REVOKED, the edge watches it) still works.
    let (status, _) = c.post_as("/v1/auth/logout", &ann.access, json!({})).await;
    assert!(status.is_success(), "{status}");
    wait_until("revoked token refused", || async {
        c.get_as("/v1/users/me", &ann.access).await.0 == StatusCode::UNAUTHORIZED
    })
    .await;
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eavesdropping_impersonation_and_forgery_are_refused() {
    let nats = SecureNats::start().await;
    let mesh = nats.mesh().await;
    let p = &nats.prefix;
    let (_, ann) = mesh.client.user("ann").await;

    // A worker's login cannot call what it does not need: no forged get_me or role change.
    let (chat, mut chat_errors) = client_as(&nats, NatsRole::Chat).await;
    let get_me = p.rpc(Service::User, "get_me");
    let request = async_nats::Request::new()
        .headers(forged(&ann.user_id))
        .payload("{}".into())
        .timeout(Some(Duration::from_millis(500)));
    assert!(chat.send_request(get_me.clone(), request).await.is_err());
    refused(&mut chat_errors, &get_me).await;
    let (social, mut social_errors) = client_as(&nats, NatsRole::Social).await;
    let set_roles = p.rpc(Service::User, "admin_set_roles");
    social
        .publish_with_headers(set_roles.clone(), forged(&ann.user_id), "{}".into())
        .await
        .unwrap();
    refused(&mut social_errors, &set_roles).await;

    // Nobody reads another role's replies or other users' pushes.
    for (role, subject) in [
        (NatsRole::User, "_INBOX.>".to_owned()),
        (NatsRole::Chat, format!("_INBOX.{}.edge.>", p.as_str())),
        (NatsRole::Outbox, format!("{}.push.user.>", p.as_str())),
        (NatsRole::Social, p.push_many()),
    ] {
        let (client, mut errors) = client_as(&nats, role).await;
        let _sub = client.subscribe(subject.clone()).await.unwrap();
        refused(&mut errors, &subject).await;
    }
    // A worker cannot answer another service's requests.
    let login = p.rpc(Service::User, "login");
    let _sub = chat.subscribe(login.clone()).await.unwrap();
    refused(&mut chat_errors, &login).await;

    // Forged chat messages, events and revocations are not written.
    let ingest = p.chat_in(0);
    let forged_message = json!({"sender_id": ann.user_id, "body": "not from ann"});
    social
        .publish(ingest.clone(), forged_message.to_string().into())
        .await
        .unwrap();
    refused(&mut social_errors, &ingest).await;
    let event = p.event(Service::Social, "friendship_created");
    social.publish(event.clone(), "{}".into()).await.unwrap();
    refused(&mut social_errors, &event).await;
    // Only the chat worker says who receives a group's frames: no forged group pushes.
    let many = p.push_many();
    social.publish(many.clone(), "{}".into()).await.unwrap();
    refused(&mut social_errors, &many).await;
    let (edge, mut edge_errors) = client_as(&nats, NatsRole::Edge).await;
    edge.publish(many.clone(), "{}".into()).await.unwrap();
    refused(&mut edge_errors, &many).await;
    let revoke = format!("$KV.{}.{}", p.bucket(Bucket::Revoked), Uuid::new_v4());
    edge.publish(revoke.clone(), "{}".into()).await.unwrap();
    refused(&mut edge_errors, &revoke).await;

    // The JetStream API is limited to each role's own use: no deleting streams, no reading
    // the ingest stream but chat's.
    let delete = format!("$JS.API.STREAM.DELETE.{}", p.stream(Stream::ChatIn));
    edge.publish(delete.clone(), "".into()).await.unwrap();
    refused(&mut edge_errors, &delete).await;
    let consume = format!("$JS.API.CONSUMER.CREATE.{}.spy", p.stream(Stream::ChatIn));
    social.publish(consume.clone(), "{}".into()).await.unwrap();
    refused(&mut social_errors, &consume).await;
    let create = format!("$JS.API.STREAM.CREATE.{}_EXTRA", p.stream(Stream::Events));
    chat.publish(create.clone(), "{}".into()).await.unwrap();
    refused(&mut chat_errors, &create).await;

    // After all that, the streams are intact and ann still signs in as herself.
    let migrate = mesh.bus_as(NatsRole::Migrate, "check").await;
    migrate
        .require_topology(
            &[Stream::ChatIn, Stream::Events],
            &[Bucket::Revoked],
            nats_mesh::roles::topology_settings(&mesh.settings).needs(),
        )
        .await
        .expect("streams and buckets intact");
    migrate.drain().await;
    let (status, me) = mesh.client.get_as("/v1/users/me", &ann.access).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    mesh.stop().await;
}

/// Only the roles that push may publish to a user's push subject: the chat worker (frames of
/// messages, reads, presence) and the edge (answers to resends). The outbox, user and social
/// logins never push, so a leaked one cannot put frames on anybody's connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_pushing_roles_publish_to_a_users_connections() {
    use futures::StreamExt;

    let nats = SecureNats::start().await;
    let push = nats.prefix.push_user(Uuid::now_v7());
    let (edge, _) = client_as(&nats, NatsRole::Edge).await;
    let mut delivered = edge.subscribe(push.clone()).await.unwrap();
    edge.flush().await.unwrap();
    let (chat, _) = client_as(&nats, NatsRole::Chat).await;
    chat.publish(push.clone(), "from chat".into())
        .await
        .unwrap();
    let frame = tokio::time::timeout(Duration::from_secs(10), delivered.next())
        .await
        .expect("the chat worker's push arrives")
        .expect("a subscription");
    assert_eq!(&frame.payload[..], b"from chat");
    for role in [NatsRole::Outbox, NatsRole::User, NatsRole::Social] {
        let (client, mut errors) = client_as(&nats, role).await;
        client.publish(push.clone(), "forged".into()).await.unwrap();
        refused(&mut errors, &push).await;
    }
}

/// A caller cannot aim a service's answer at the JetStream API: a request whose reply
/// subject is `$JS.API.STREAM.DELETE.<stream>` deletes nothing. NATS's
/// `allow_responses` would let the user service publish its error answer there, and an empty
/// body is a valid delete; services answer only into the mesh's inboxes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_services_answer_cannot_be_aimed_at_the_jetstream_api() {
    let nats = SecureNats::start().await;
    let mesh = nats.mesh().await;
    let p = &nats.prefix;
    let (edge, _) = client_as(&nats, NatsRole::Edge).await;
    let login = p.rpc(Service::User, "login");
    // Such a request, asked the normal way, is answered (an error for a body that is not
    // JSON): the service does take it.
    let answered = tokio::time::timeout(
        Duration::from_secs(10),
        edge.request(login.clone(), "not json".into()),
    )
    .await
    .expect("answered in time")
    .expect("an answer");
    assert!(answered.headers.is_some(), "an error answer");

    let targets = [
        format!("$JS.API.STREAM.DELETE.{}", p.bucket_stream(Bucket::Revoked)),
        format!("$JS.API.STREAM.DELETE.{}", p.stream(Stream::Audit)),
    ];
    for target in &targets {
        edge.publish_with_reply(login.clone(), target.clone(), "not json".into())
            .await
            .unwrap();
        let chat = p.rpc(Service::Chat, "history");
        edge.publish_with_reply(chat, target.clone(), "not json".into())
            .await
            .unwrap();
    }
    edge.flush().await.unwrap();
    // Each service saw every one of them and answered none (a foreign reply subject).
    for subject in [login.clone(), p.rpc(Service::Chat, "history")] {
        let labels = [
            format!("subject=\"{subject}\""),
            "outcome=\"foreign_reply\"".into(),
        ];
        wait_until(
            &format!("{subject} refuses the foreign replies"),
            || async {
                let text = mesh.metrics_text().await;
                text.lines()
                    .filter(|line| line.starts_with("mesh_rpc_server_requests_total{"))
                    .find(|line| labels.iter().all(|label| line.contains(label.as_str())))
                    .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                    == Some(targets.len() as f64)
            },
        )
        .await;
    }
    let migrate = mesh.bus_as(NatsRole::Migrate, "check").await;
    migrate
        .require_topology(
            &[Stream::ChatIn, Stream::Events, Stream::Audit],
            &[Bucket::Revoked],
            nats_mesh::roles::topology_settings(&mesh.settings).needs(),
        )
        .await
        .expect("streams and buckets intact");
    migrate.drain().await;
    mesh.stop().await;
}

/// Only the chat worker reads, acks, changes or deletes the consumers of the events stream.
/// Edges and social instances watch the events they drop cached entries for with a plain
/// subscription, so their logins are refused every operation on chat's projection: pulled,
/// acked or deleted with them, it would miss blocks and unfriendings, and a blocked user would
/// keep messaging. The projection still applies a block, and an edge still drops a changed
/// grant from its cache at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_chat_reads_acks_or_deletes_the_event_consumers() {
    let nats = SecureNats::start().await;
    let mesh = nats.mesh().await;
    let c = &mesh.client;
    let p = &nats.prefix;
    let events = p.stream(Stream::Events);
    let projection = mesh_contracts::Consumer::ChatProjection.name();
    let (migrate, _) = client_as(&nats, NatsRole::Migrate).await;
    let jetstream = async_nats::jetstream::new(migrate);
    let created = || async {
        let stream = jetstream.get_stream(&events).await.ok()?;
        let info = stream.consumer_info(&projection).await.ok()?;
        Some(info.created)
    };
    let before = crate::harness::poll_until(
        "chat's projection consumer",
        Duration::from_secs(20),
        created,
    )
    .await;

    let ack = format!("$JS.ACK.{events}.{projection}.1.1.1.1700000000000000000.0");
    for role in [NatsRole::Edge, NatsRole::Social] {
        let (client, mut errors) = client_as(&nats, role).await;
        for api in ["MSG.NEXT", "DELETE", "INFO", "CREATE", "DURABLE.CREATE"] {
            let subject = format!("$JS.API.CONSUMER.{api}.{events}.{projection}");
            client
                .publish_with_reply(subject.clone(), client.new_inbox(), "{}".into())
                .await
                .unwrap();
            refused(&mut errors, &subject).await;
        }
        client.publish(ack.clone(), "+ACK".into()).await.unwrap();
        refused(&mut errors, &ack).await;
    }
    // The same consumer, neither deleted nor created again.
    assert_eq!(created().await, Some(before));

    // It still applies what social publishes: a block reaches chat.
    let (_, ann) = c.user("ann").await;
    let (_, bob) = c.user("bob").await;
    befriend(c, &ann, &bob).await;
    let (status, body) = c
        .post_as(
            &format!("/v1/blocks/{}", ann.user_id),
            &bob.access,
            json!({}),
        )
        .await;
    assert!(status.is_success(), "{status}: {body}");
    let db = sqlx::PgPool::connect(mesh.database_url())
        .await
        .expect("connect to the test database");
    wait_until("the block is projected", || async {
        let blocks: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM chat.blocks WHERE blocker_id = $1::uuid AND blocked_id = $2::uuid",
        )
        .bind(&bob.user_id)
        .bind(&ann.user_id)
        .fetch_one(&db)
        .await
        .expect("query");
        blocks == 1
    })
    .await;
    db.close().await;

    // The edge watches the user events on its own login: a direct grant counts at once.
    let root = crate::rbac::root(c).await;
    let audit = || c.get_as("/v1/admin/audit", &ann.access);
    assert_eq!(audit().await.0, StatusCode::FORBIDDEN);
    let grant = format!("/v1/admin/users/{}/permissions/audit:read", ann.user_id);
    let (status, body) = c
        .send(reqwest::Method::PUT, &grant, Some(&root.access), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_until("the direct grant counts at the edge", || async {
        audit().await.0 == StatusCode::OK
    })
    .await;
    mesh.stop().await;
}
