//! Domain events end to end: the outbox relay, chat's projection of social, notifications on
//! the affected users' sockets, redelivery without a second effect, dead letters, and fresh
//! reads across instances.

use std::time::{Duration, Instant};

use bytes::Bytes;
use mesh_contracts::events::{EVENT_VERSION, EventEnvelope, SocialEvent};
use mesh_contracts::nats_permissions::NatsRole;
use mesh_contracts::social::GroupRole;
use mesh_contracts::{Prefix, Service};
use mesh_nats::{Bus, OutgoingEvent};
use nats_mesh::Role;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::faults::PrivateNats;
use crate::harness::{TestMesh, Tokens, poll_until, wait_until};
use crate::social_friends::{befriend, delete_as, ok, patch_as, send_request};
use crate::social_groups::{create_group, invite, kick};
use crate::ws::Ws;

pub async fn db(mesh: &TestMesh) -> PgConnection {
    PgConnection::connect(mesh.database_url())
        .await
        .expect("connect to the test database")
}

async fn scalar(mesh: &TestMesh, sql: &str) -> i64 {
    let mut conn = db(mesh).await;
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&mut conn)
        .await
        .expect("query")
}

pub async fn bus(mesh: &TestMesh) -> Bus {
    mesh.bus_as(NatsRole::Outbox, "test-events").await
}

fn pair_sql(a: &Tokens, b: &Tokens) -> String {
    let (lo, hi) = if a.user_id < b.user_id {
        (a, b)
    } else {
        (b, a)
    };
    format!(
        "SELECT count(*) FROM chat.friendships WHERE user_lo = '{}' AND user_hi = '{}'",
        lo.user_id, hi.user_id
    )
}

pub async fn notification(ws: &mut Ws, kind: &str) -> serde_json::Value {
    ws.expect(kind, |f| f["type"] == "notification" && f["kind"] == kind)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn social_changes_reach_the_projection_and_the_users_sockets() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;
    let (_, bob) = c.user("bob").await;
    let mut ann_ws = Ws::connect(&mesh.url, &ann.access).await;
    let mut bob_ws = Ws::connect(&mesh.url, &bob.access).await;

    befriend(c, &ann, &bob).await;
    let received = notification(&mut bob_ws, "friend_request_received").await;
    assert_eq!(
        received["data"]["request"]["from_user_id"],
        ann.user_id.as_str()
    );
    notification(&mut ann_ws, "friend_request_accepted").await;
    let pair = pair_sql(&ann, &bob);
    wait_until("the friendship is projected", || async {
        scalar(&mesh, &pair).await == 1
    })
    .await;

    // A block is projected, and refuses the next message at once.
    let (status, _) = c
        .post_as(
            &format!("/v1/blocks/{}", ann.user_id),
            &bob.access,
            json!({}),
        )
        .await;
    assert!(status.is_success());
    let blocks = format!(
        "SELECT count(*) FROM chat.blocks WHERE blocker_id = '{}' AND blocked_id = '{}'",
        bob.user_id, ann.user_id
    );
    wait_until("the block is projected", || async {
        scalar(&mesh, &blocks).await == 1
    })
    .await;
    wait_until("the friendship is gone", || async {
        scalar(&mesh, &pair).await == 0
    })
    .await;
    ann_ws.send_to(&bob.user_id, "after-block", "hello?").await;
    assert_eq!(
        ann_ws.ack("after-block", "rejected").await["reason"],
        "blocked"
    );

    // Groups: an invitation, a kick and a dissolution reach the members concerned.
    let (_, amy) = c.user("amy").await;
    let (_, cal) = c.user("cal").await;
    let mut amy_ws = Ws::connect(&mesh.url, &amy.access).await;
    let mut cal_ws = Ws::connect(&mesh.url, &cal.access).await;
    let group = create_group(c, &ann, "open", 10).await;
    for who in [&amy, &cal] {
        let (status, body) = invite(c, &ann, &group, who).await;
        assert!(status.is_success(), "{body}");
    }
    assert_eq!(
        notification(&mut amy_ws, "group_invitation").await["data"]["group_id"],
        group.as_str()
    );
    notification(&mut cal_ws, "group_invitation").await;
    let members = format!("SELECT count(*) FROM chat.group_members WHERE group_id = '{group}'");
    wait_until("members are projected", || async {
        scalar(&mesh, &members).await == 3
    })
    .await;
    let (status, body) = kick(c, &ann, &group, &cal).await;
    assert!(status.is_success(), "{body}");
    assert_eq!(
        notification(&mut cal_ws, "kicked").await["data"]["group_id"],
        group.as_str()
    );
    wait_until("the kick is projected", || async {
        scalar(&mesh, &members).await == 2
    })
    .await;
    cal_ws
        .send_in(&format!("g:{group}"), "kicked-out", "still here?")
        .await;
    assert_eq!(
        cal_ws.ack("kicked-out", "rejected").await["reason"],
        "not_member"
    );
    let (status, _) = delete_as(c, &format!("/v1/groups/{group}"), &ann.access).await;
    assert!(status.is_success(), "{status}");
    notification(&mut amy_ws, "group_dissolved").await;
    wait_until("the group is gone", || async {
        scalar(&mesh, &members).await == 0
    })
    .await;

    // Everything was relayed: nothing is left in the outboxes.
    for schema in ["users", "social"] {
        let sql = format!("SELECT count(*) FROM {schema}.outbox WHERE sent_at IS NULL");
        wait_until("the outbox drains", || async {
            scalar(&mesh, &sql).await == 0
        })
        .await;
    }
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_between_publish_and_mark_sent_has_no_second_effect() {
    // Without the outbox role; the test drives the relay step itself. JetStream's duplicate
    // window is short, so a republish after it reaches the consumers again.
    let mesh = TestMesh::spawn_roles(&[Role::Edge, Role::User, Role::Social, Role::Chat], |s| {
        s.chat.dedup_window = Duration::from_millis(300)
    })
    .await;
    mesh.wait_ready().await;
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;
    let (_, bob) = c.user("bob").await;
    let mut bob_ws = Ws::connect(&mesh.url, &bob.access).await;
    send_request(c, &ann, &bob, "hi").await;

    let url = mesh.database_url().to_owned();
    let source = mesh_outbox::Source {
        service: Service::Social,
        schema: "social",
        pool: sqlx::PgPool::connect(&url).await.unwrap(),
        url,
    };
    let bus = bus(&mesh).await;
    let relayed = mesh_outbox::relay::relay_once(&bus, &source, 500)
        .await
        .unwrap();
    assert_eq!(relayed, 1);
    notification(&mut bob_ws, "friend_request_received").await;

    // The relay "dies" before marking the rows sent: they are sent again, after the window.
    let mut conn = db(&mesh).await;
    sqlx::query("UPDATE social.outbox SET sent_at = NULL")
        .execute(&mut conn)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        mesh_outbox::relay::relay_once(&bus, &source, 500)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        bus.events_stored().await.unwrap(),
        2,
        "the resend reached the stream"
    );
    let processed =
        "SELECT count(*) FROM chat.processed_events WHERE consumer = 'chat-notifications'";
    assert!(
        bob_ws
            .drain("notification", Duration::from_millis(800))
            .await
            .is_empty(),
        "the same event notified twice"
    );
    assert_eq!(scalar(&mesh, processed).await, 1);
    assert_eq!(
        mesh_outbox::relay::relay_once(&bus, &source, 500)
            .await
            .unwrap(),
        0
    );
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_dead_lettered_and_later_events_still_flow() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let bus = bus(&mesh).await;
    let id = Uuid::now_v7();
    let poison = EventEnvelope {
        id,
        service: "social".into(),
        event_type: "friendship_created".into(),
        version: EVENT_VERSION,
        aggregate: id,
        occurred_at: time::OffsetDateTime::now_utc(),
        payload: json!({ "not": "a friendship" }),
    };
    bus.publish_events(vec![OutgoingEvent {
        id,
        service: Service::Social,
        event_type: "friendship_created".into(),
        payload: Bytes::from(serde_json::to_vec(&poison).unwrap()),
    }])
    .await
    .unwrap();

    let (_, ann) = c.user("ann").await;
    let (_, bob) = c.user("bob").await;
    befriend(c, &ann, &bob).await;
    let pair = pair_sql(&ann, &bob);
    wait_until("the later friendship is projected", || async {
        scalar(&mesh, &pair).await == 1
    })
    .await;
    let dead = "SELECT count(*) FROM chat.dead_letters WHERE consumer = 'chat-projection'";
    assert_eq!(scalar(&mesh, dead).await, 1);
    let mut conn = db(&mesh).await;
    let (payload, error): (String, String) = sqlx::query_as(
        "SELECT payload, error FROM chat.dead_letters WHERE consumer = 'chat-projection'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(payload.contains(&id.to_string()), "{payload}");
    assert!(!error.is_empty());
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_changed_through_one_edge_reads_fresh_through_another() {
    let mut mesh = TestMesh::spawn().await;
    let other = mesh.spawn_edge().await;
    let c = mesh.client.clone();
    let (_, ann) = c.user("ann").await;
    let (_, bob) = c.user("bob").await;
    befriend(&c, &ann, &bob).await;
    for nickname in ["first", "second", "third"] {
        let changed = ok(patch_as(
            &c,
            "/v1/users/me",
            &ann.access,
            json!({"nickname": nickname}),
        )
        .await);
        assert_eq!(changed["nickname"], nickname);
        let (status, seen) = other
            .get_as(&format!("/v1/users/{}", ann.user_id), &bob.access)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(seen["nickname"], nickname);
        let friends = ok(other.get_as("/v1/friends", &bob.access).await);
        assert_eq!(friends["items"].as_array().unwrap().len(), 1);
    }
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_outbox_role_delivers_every_event_once_when_back() {
    let mut mesh =
        TestMesh::spawn_roles(&[Role::Edge, Role::User, Role::Social, Role::Chat], |_| {}).await;
    mesh.wait_ready().await;
    let relay = mesh.start_node(&[Role::Outbox]).await;
    let c = mesh.client.clone();
    let mut users = Vec::new();
    for i in 0..8 {
        users.push(c.user(&format!("u{i}")).await.1);
    }
    // A burst of friendships; the relay dies in the middle of it.
    for (i, pair) in users.chunks(2).enumerate() {
        befriend(&c, &pair[0], &pair[1]).await;
        if i == 1 {
            mesh.kill_node(relay);
        }
    }
    for i in 0..users.len() - 2 {
        befriend(&c, &users[i], &users[i + 2]).await;
    }
    mesh.start_node(&[Role::Outbox]).await;
    let unsent = "SELECT count(*) FROM social.outbox WHERE sent_at IS NULL";
    wait_until("the backlog drains", || async {
        scalar(&mesh, unsent).await == 0
    })
    .await;
    let social = "SELECT count(*) / 2 FROM social.friendships";
    let projected = "SELECT count(*) FROM chat.friendships";
    wait_until("the projection matches social", || async {
        scalar(&mesh, projected).await == scalar(&mesh, social).await
    })
    .await;
    assert_eq!(scalar(&mesh, projected).await, 4 + 6);
    // Every social event was applied exactly once.
    let events = "SELECT count(*) FROM social.outbox";
    let applied = "SELECT count(*) FROM chat.processed_events WHERE consumer = 'chat-projection'";
    wait_until("every event applied", || async {
        scalar(&mesh, applied).await == scalar(&mesh, events).await
    })
    .await;
    assert_eq!(
        scalar(&mesh, "SELECT count(*) FROM chat.dead_letters").await,
        0
    );
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregates_events_are_relayed_in_commit_order() {
    // Without the outbox role; the test drives the relay step itself, after both writes.
    let mesh =
        TestMesh::spawn_roles(&[Role::Edge, Role::User, Role::Social, Role::Chat], |_| {}).await;
    mesh.wait_ready().await;
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;
    let (_, cal) = c.user("cal").await;
    let group = create_group(c, &ann, "open", 10).await;
    let url = mesh.database_url().to_owned();
    let source = |service, schema| {
        let url = url.clone();
        async move {
            mesh_outbox::Source {
                service,
                schema,
                pool: sqlx::PgPool::connect(&url).await.unwrap(),
                url,
            }
        }
    };
    let users = source(Service::User, "users").await;
    let social = source(Service::Social, "social").await;
    let bus = bus(&mesh).await;
    // What the accounts and the group wrote goes out first.
    mesh_outbox::relay::relay_once(&bus, &users, 500)
        .await
        .unwrap();
    assert!(
        mesh_outbox::relay::relay_once(&bus, &social, 500)
            .await
            .unwrap()
            > 0
    );
    let watcher = mesh.bus_as(NatsRole::Social, "test-event-order").await;
    let mut watch = watcher.event_watch(&[Service::Social]).await.unwrap();

    // The admin's kick begins first but takes the group's lock last: cal's join, begun later,
    // commits in between, and the kick (seeing cal as a member) commits after it.
    let group_id: Uuid = group.parse().unwrap();
    let cal_id: Uuid = cal.user_id.parse().unwrap();
    let ann_id: Uuid = ann.user_id.parse().unwrap();
    let mut kicker = db(&mesh).await;
    let mut kick = kicker.begin().await.unwrap();
    // The kick's transaction time is taken by its first statement, a round trip before the
    // join begins (the setup check below says so if that ever fails to hold).
    sqlx::query("SELECT 1").execute(&mut *kick).await.unwrap();
    let mut joiner = db(&mesh).await;
    let mut join = joiner.begin().await.unwrap();
    let joined = SocialEvent::GroupMemberJoined {
        group_id,
        user_id: cal_id,
        role: GroupRole::Member,
        invited_by: None,
    };
    mesh_service_kit::outbox::append(&mut join, "social", group_id, &joined)
        .await
        .unwrap();
    join.commit().await.unwrap();
    let kicked = SocialEvent::GroupMemberKicked {
        group_id,
        user_id: cal_id,
        by: ann_id,
    };
    mesh_service_kit::outbox::append(&mut kick, "social", group_id, &kicked)
        .await
        .unwrap();
    kick.commit().await.unwrap();
    let began: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM social.outbox WHERE sent_at IS NULL ORDER BY created_at",
    )
    .fetch_all(&mut kicker)
    .await
    .unwrap();
    assert_eq!(
        began,
        ["group_member_kicked", "group_member_joined"],
        "the kick's transaction began first"
    );

    assert_eq!(
        mesh_outbox::relay::relay_once(&bus, &social, 500)
            .await
            .unwrap(),
        2
    );
    let mut published = Vec::new();
    for _ in 0..2 {
        let delivery = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("the relayed event arrives")
            .expect("the watch is open")
            .expect("a delivery");
        let envelope: EventEnvelope = serde_json::from_slice(&delivery.payload).unwrap();
        published.push(envelope.event_type);
    }
    assert_eq!(
        published,
        ["group_member_joined", "group_member_kicked"],
        "published in commit order"
    );

    // So chat's projection ends with cal out of the group.
    let events = "SELECT count(*) FROM social.outbox";
    let applied = "SELECT count(*) FROM chat.processed_events WHERE consumer = 'chat-projection'";
    wait_until("every event applied", || async {
        scalar(&mesh, applied).await == scalar(&mesh, events).await
    })
    .await;
    let member = format!(
        "SELECT count(*) FROM chat.group_members WHERE group_id = '{group}' AND user_id = '{cal_id}'"
    );
    assert_eq!(scalar(&mesh, &member).await, 0, "the kicked user stays out");
    mesh.stop().await;
}

/// A watch of events is a plain subscription, which the client renews by itself after a
/// reconnection without what was published meanwhile. So the watch ends once its connection
/// was lost, even with nothing to deliver (its owner then starts its caches over), and a
/// watch opened afterwards delivers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_watch_ends_once_its_connection_was_lost() {
    let mut nats = PrivateNats::start().await;
    let prefix = Prefix::parse(&format!("w{}", &Uuid::new_v4().simple().to_string()[..12]))
        .expect("a prefix");
    let watcher = Bus::connect(&nats.url(), prefix.clone(), "watch", Duration::from_secs(5))
        .await
        .expect("connect");
    let publisher = async_nats::connect(nats.url()).await.expect("connect");
    let subject = prefix.event(Service::User, "role_defined");
    let in_time = Duration::from_secs(10);

    let mut watch = watcher.event_watch(&[Service::User]).await.expect("open");
    // Another service's events are not watched; the user's are.
    let other = prefix.event(Service::Social, "group_created");
    publisher.publish(other, "other".into()).await.unwrap();
    publisher
        .publish(subject.clone(), "before".into())
        .await
        .unwrap();
    let event = tokio::time::timeout(in_time, watch.next())
        .await
        .expect("delivered in time")
        .expect("open")
        .expect("an event");
    assert_eq!(event.subject, subject);
    assert_eq!(&event.payload[..], b"before");

    nats.kill().await;
    nats.run().await;
    wait_until("the watcher connected again", || async {
        watcher.is_connected()
    })
    .await;
    // Nothing was published since, and the subscription is back: the watch ends all the same.
    let ended = tokio::time::timeout(in_time, watch.next())
        .await
        .expect("the watch ends in time");
    assert!(matches!(ended, Some(Err(_))), "{ended:?}");
    assert!(watcher.disconnects() > 0);

    let mut again = watcher.event_watch(&[Service::User]).await.expect("open");
    // A client of its own: the first one may have written into the killed server's socket.
    let publisher = async_nats::connect(nats.url()).await.expect("connect");
    publisher
        .publish(subject.clone(), "after".into())
        .await
        .unwrap();
    publisher.flush().await.unwrap();
    let event = tokio::time::timeout(in_time, again.next())
        .await
        .expect("delivered in time")
        .expect("open")
        .expect("an event");
    assert_eq!(&event.payload[..], b"after");
    watcher.drain().await;
}

/// The social worker's caches do not outlive a NATS outage: its watch of the social events
/// comes back with the connection without what was published meanwhile, so the watch ends and
/// the caches start over. The change is written straight to Postgres (no event at all), so
/// only starting over can make the worker see it before the entry expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn social_caches_start_over_after_a_nats_outage() {
    let mut nats = PrivateNats::start().await;
    let url = nats.url();
    let mesh = TestMesh::spawn_with(|s| s.nats_url = url.clone()).await;
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;
    let group = create_group(c, &ann, "open", 10).await;
    let db = sqlx::PgPool::connect(mesh.database_url())
        .await
        .expect("connect to the test database");
    let rename = |name: String| {
        let (db, group) = (db.clone(), group.clone());
        async move {
            sqlx::query("UPDATE social.groups SET name = $2 WHERE id = $1::uuid")
                .bind(group)
                .bind(name)
                .execute(&db)
                .await
                .expect("rename");
        }
    };
    // The group's name as served, or `None` while the mesh cannot answer.
    let name = || async {
        let (status, body) = c.get_as(&format!("/v1/groups/{group}"), &ann.access).await;
        (status == StatusCode::OK).then(|| body["name"].as_str().unwrap().to_owned())
    };

    // A profile read fills the cache, and a rename behind its back is not seen. (Tried again
    // should the watch's first open have cleared the cache in between.)
    let mut renames = 0;
    let (before, filled) = loop {
        renames += 1;
        assert!(renames <= 10, "the profile is never served from the cache");
        let (before, filled) = (name().await.expect("served"), Instant::now());
        rename(format!("renamed {renames}")).await;
        if name().await.expect("served") == before {
            break (before, filled);
        }
    };

    nats.kill().await;
    nats.run().await;
    let seen = poll_until(
        "the renamed group after NATS came back",
        Duration::from_secs(20),
        || async { name().await.filter(|now| *now != before) },
    )
    .await;
    assert_eq!(seen, format!("renamed {renames}"));
    // Sooner than the entry would have expired by itself.
    let ttl = mesh_social::SocialConfig::new(Duration::from_secs(1)).cache_ttl;
    assert!(
        filled.elapsed() < ttl,
        "seen after {:?}, not before the cache lifetime {ttl:?}",
        filled.elapsed()
    );
    db.close().await;
    mesh.stop().await;
    drop(nats);
}
