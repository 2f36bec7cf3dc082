//! The realtime edge: WebSocket authentication (frames before `auth`, HTTP/1.0 handshakes),
//! origins, bad frames, slow clients, revoked sessions, typing and presence, and the SSE
//! stream.

use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::chat::private_id;
use crate::harness::{TestMesh, wait_until};
use crate::social_friends::{befriend, ok};
use crate::ws::{Ws, ws_url};

fn close_code(frame: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> u16 {
    frame.map(|f| u16::from(f.code)).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_authenticate_by_header_subprotocol_or_first_frame() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;

    // Subprotocol `bearer, <token>` (browsers cannot set headers).
    let mut request = ws_url(&mesh.url).into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("bearer, {}", ann.access).parse().unwrap(),
    );
    let mut ws = Ws::open(request)
        .await
        .expect("upgrade with a subprotocol token");
    let ready = ws.expect_type("ready").await;
    assert_eq!(ready["user_id"], ann.user_id.as_str());

    // First frame.
    let request = ws_url(&mesh.url).into_client_request().unwrap();
    let mut ws = Ws::open(request).await.expect("upgrade without a token");
    ws.send(json!({"type": "auth", "token": ann.access})).await;
    assert_eq!(
        ws.expect_type("ready").await["session_id"],
        ann.session_id.as_str()
    );
    ws.send(json!({"type": "ping", "nonce": "n1"})).await;
    assert_eq!(ws.expect_type("pong").await["nonce"], "n1");

    // A bad first frame closes the socket as unauthenticated.
    let request = ws_url(&mesh.url).into_client_request().unwrap();
    let mut ws = Ws::open(request).await.expect("upgrade without a token");
    ws.send(json!({"type": "auth", "token": "not.a.token"}))
        .await;
    assert_eq!(close_code(ws.closed().await), 4401);

    // A bad header token is refused before the upgrade.
    let mut request = ws_url(&mesh.url).into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", "Bearer forged".parse().unwrap());
    assert!(Ws::open(request).await.is_err(), "forged token upgraded");
    mesh.stop().await;
}

/// The frames a closed socket got before its close frame.
async fn frames_before_close(ws: &mut Ws) -> (u16, Vec<Value>) {
    let code = close_code(ws.closed().await);
    let mut frames = Vec::new();
    while let Some(frame) = ws.next_within(Duration::ZERO).await {
        frames.push(frame);
    }
    (code, frames)
}

/// Before it authenticates a socket has no frame budget, so it gets no second chance: the
/// first frame other than `auth` is answered `unauthorized` once and the socket closed 4401
/// (not answered frame after frame until the auth deadline). A few pings pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_before_auth_is_answered_once_then_the_socket_closed() {
    let mesh = TestMesh::spawn().await;
    let (_, ann) = mesh.client.user("ann").await;
    let anonymous = || Ws::open(ws_url(&mesh.url).into_client_request().unwrap());

    let mut ws = anonymous().await.expect("upgrade without a token");
    for nonce in ["a", "b", "c"] {
        ws.send(json!({"type": "ping", "nonce": nonce})).await;
    }
    let (code, frames) = frames_before_close(&mut ws).await;
    assert_eq!(code, 4401);
    assert_eq!(frames.len(), 1, "answered once: {frames:?}");
    assert_eq!(frames[0]["type"], "error");
    assert_eq!(frames[0]["code"], "unauthorized");

    // WebSocket pings (a client's keep-alive) are not frames of the protocol: four pass...
    let mut ws = anonymous().await.expect("upgrade without a token");
    for _ in 0..4 {
        ws.send_raw(Message::Ping(Vec::new().into())).await;
    }
    ws.send(json!({"type": "auth", "token": ann.access})).await;
    ws.expect_type("ready").await;
    ws.close().await;
    // ... but not a stream of them.
    let mut ws = anonymous().await.expect("upgrade without a token");
    for _ in 0..5 {
        ws.send_raw(Message::Ping(Vec::new().into())).await;
    }
    let (code, frames) = frames_before_close(&mut ws).await;
    assert_eq!(code, 4401);
    assert_eq!(frames.len(), 1, "answered once: {frames:?}");
    assert_eq!(frames[0]["code"], "unauthorized");
    mesh.stop().await;
}

/// A WebSocket handshake over HTTP/1.0, which cannot switch protocols, is a 400
/// `bad_request` (poem's own answer is a 500).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_handshake_over_http_1_0_is_a_bad_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mesh = TestMesh::spawn().await;
    let address = mesh.url.trim_start_matches("http://").to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&address).await.unwrap();
    let request = format!(
        "GET /v1/ws HTTP/1.0\r\nHost: {address}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
        .await
        .expect("the edge answers and closes")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    let status_line = answer.lines().next().unwrap_or_default();
    assert!(status_line.contains(" 400 "), "{answer}");
    assert!(answer.contains("\"code\":\"bad_request\""), "{answer}");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_origins_are_refused_and_bad_frames_answered() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;
    for (origin, allowed) in [
        ("https://evil.example", false),
        ("https://app.example", true),
    ] {
        let mut request = ws_url(&mesh.url).into_client_request().unwrap();
        let headers = request.headers_mut();
        headers.insert(
            "authorization",
            format!("Bearer {}", ann.access).parse().unwrap(),
        );
        headers.insert("origin", origin.parse().unwrap());
        assert_eq!(Ws::open(request).await.is_ok(), allowed, "{origin}");
    }

    let mut ws = Ws::connect(&mesh.url, &ann.access).await;
    ws.send_raw(Message::text("{not json")).await;
    assert_eq!(ws.expect_type("error").await["code"], "bad_request");
    ws.send(json!({"type": "teleport"})).await;
    assert_eq!(ws.expect_type("error").await["code"], "bad_request");
    // Still usable after bad frames.
    ws.send(json!({"type": "ping"})).await;
    ws.expect_type("pong").await;
    // A frame over the limit closes the socket with "message too big".
    ws.send_raw(Message::text("x".repeat(40 * 1024))).await;
    assert_eq!(close_code(ws.closed().await), 1009);
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_session_loses_its_sockets_and_other_sessions_keep_theirs() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (profile, ann) = c.user("ann").await;
    let phone = profile["phone"].as_str().unwrap().to_owned();
    let other = c.login(&phone).await;
    let mut doomed = Ws::connect(&mesh.url, &ann.access).await;
    let mut survivor = Ws::connect(&mesh.url, &other.access).await;

    let (status, _) = c.post_as("/v1/auth/logout", &ann.access, json!({})).await;
    assert!(status.is_success(), "logout: {status}");
    doomed.expect_type("session_revoked").await;
    assert_eq!(close_code(doomed.closed().await), 4001);

    survivor
        .send(json!({"type": "ping", "nonce": "still-here"}))
        .await;
    assert_eq!(survivor.expect_type("pong").await["nonce"], "still-here");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected() {
    // A long idle timeout: the slow socket sends nothing, and on a loaded machine the flood
    // below can take longer than the default, which would close it as idle instead.
    let mesh = TestMesh::spawn_with(|s| {
        s.ws.send_queue = 8;
        s.ws.idle_timeout = Duration::from_secs(600);
    })
    .await;
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;
    let (_, bob) = c.user("bob").await;
    befriend(c, &ann, &bob).await;
    let mut slow = Ws::connect(&mesh.url, &bob.access).await;
    let mut reader = Ws::connect(&mesh.url, &bob.access).await;

    // Bob's first socket never reads; large messages fill the socket buffers, then its queue.
    let body = "z".repeat(15 * 1024);
    for i in 0..600 {
        let (status, _) = c
            .post_as(
                "/v1/messages",
                &ann.access,
                json!({"client_id": format!("flood-{i}"), "to": bob.user_id, "body": body}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        // Bob's other socket keeps up, and is never cut off.
        reader.message(&format!("flood-{i}")).await;
    }
    // The close frame (4008) reaches the slow client only if its buffers still had room for
    // it; on a loaded machine they may not, and the edge drops the connection after its close
    // grace instead. Either way the edge cut it off as a slow consumer, which it counts.
    let code = close_code(slow.closed().await);
    assert!(code == 4008 || code == 0, "closed with {code}");
    // The edge counts the disconnect once it has finished closing (after the client's close
    // reply, or its close grace).
    crate::harness::wait_until("a slow_consumer disconnect counted", || async {
        let metrics = c.raw().get(c.url("/metrics")).send().await.unwrap();
        let text = metrics.text().await.unwrap();
        let series = r#"mesh_realtime_disconnects_total{reason="slow_consumer",transport="ws"} "#;
        text.lines()
            .filter_map(|l| l.strip_prefix(series))
            .any(|count| count.parse::<f64>().is_ok_and(|n| n >= 1.0))
    })
    .await;
    reader.send(json!({"type": "ping", "nonce": "ok"})).await;
    assert_eq!(reader.expect_type("pong").await["nonce"], "ok");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_and_presence_reach_friends() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;
    let (_, bob) = c.user("bob").await;
    befriend(c, &ann, &bob).await;
    let mut ann_ws = Ws::connect(&mesh.url, &ann.access).await;

    let presence = format!("/v1/presence?user_ids={},{}", ann.user_id, bob.user_id);
    let offline = ok(c.get_as(&presence, &ann.access).await);
    assert_eq!(offline["items"][1]["online"], false);

    let mut bob_ws = Ws::connect(&mesh.url, &bob.access).await;
    let online = ann_ws
        .expect("bob online", |f| {
            f["type"] == "presence" && f["user_id"] == bob.user_id.as_str()
        })
        .await;
    assert_eq!(online["online"], true);
    wait_until("bob shows as online", || async {
        ok(c.get_as(&presence, &ann.access).await)["items"][1]["online"] == true
    })
    .await;

    bob_ws
        .send(json!({"type": "typing", "conversation_id": private_id(&ann, &bob)}))
        .await;
    let typing = ann_ws.expect_type("typing").await;
    assert_eq!(typing["user_id"], bob.user_id.as_str());

    bob_ws.close().await;
    let gone = ann_ws
        .expect("bob offline", |f| {
            f["type"] == "presence" && f["user_id"] == bob.user_id.as_str() && f["online"] == false
        })
        .await;
    assert!(gone["last_seen"].is_string(), "{gone}");
    wait_until("bob shows as offline with a last-seen time", || async {
        let item = ok(c.get_as(&presence, &ann.access).await)["items"][1].clone();
        item["online"] == false && item["last_seen"].is_string()
    })
    .await;

    // Strangers are refused, not told a made-up "offline, never seen" (ann is online now).
    let (_, eve) = c.user("eve").await;
    let (status, body) = c.get_as(&presence, &eve.access).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], "hidden");
    let own = ok(c
        .get_as(
            &format!("/v1/presence?user_ids={}", eve.user_id),
            &eve.access,
        )
        .await);
    assert_eq!(own["items"][0]["user_id"], eve.user_id.as_str());
    mesh.stop().await;
}

/// A user whose only socket closes and comes back within the offline grace (5 s: a reload, a
/// flaky network) is not reported offline and online again, so a client reconnecting in a loop
/// sends friends nothing; one who stays away is reported offline once the grace ran out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_reconnect_tells_friends_nothing_and_leaving_is_told_after_the_grace() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;
    let (_, bob) = c.user("bob").await;
    befriend(c, &ann, &bob).await;
    let mut ann_ws = Ws::connect(&mesh.url, &ann.access).await;
    let bob_id = bob.user_id.clone();
    let bob_is = |online: bool| {
        let bob_id = bob_id.clone();
        move |f: &Value| {
            f["type"] == "presence" && f["user_id"] == bob_id.as_str() && f["online"] == online
        }
    };
    let mut bob_ws = Ws::connect(&mesh.url, &bob.access).await;
    ann_ws.expect("bob online", bob_is(true)).await;

    // Bob's only socket closes and comes back, three times; each time the edge has seen it
    // go (its closing frame came back) before the next one opens.
    for _ in 0..3 {
        bob_ws.close_seen().await;
        bob_ws = Ws::connect(&mesh.url, &bob.access).await;
    }
    // Past the grace of every departure: nothing reached Ann.
    let flaps = ann_ws
        .frames_within("presence", Duration::from_secs(7))
        .await;
    assert!(flaps.is_empty(), "Ann saw Bob flap: {flaps:?}");
    let presence = format!("/v1/presence?user_ids={}", bob.user_id);
    assert_eq!(
        ok(c.get_as(&presence, &ann.access).await)["items"][0]["online"],
        true
    );

    // Leaving for good is told, once the grace ran out.
    let left = std::time::Instant::now();
    bob_ws.close().await;
    let gone = ann_ws.expect("bob offline", bob_is(false)).await;
    assert!(gone["last_seen"].is_string(), "{gone}");
    let after = left.elapsed();
    assert!(
        after >= Duration::from_secs(4),
        "offline told after {after:?}"
    );
    wait_until("bob shows as offline", || async {
        ok(c.get_as(&presence, &ann.access).await)["items"][0]["online"] == false
    })
    .await;
    mesh.stop().await;
}

/// A connection storm (everyone reconnecting after an edge restart) records every user's
/// last-seen time, as a single connection does; leaving moves it forward for each of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_storm_records_everyones_last_seen() {
    const USERS: usize = 40;
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let mut users = Vec::new();
    for i in 0..USERS {
        users.push(c.user(&format!("storm-{i}")).await.1);
    }
    let ids: Vec<uuid::Uuid> = users.iter().map(|u| u.user_id.parse().unwrap()).collect();
    let seen = || async {
        let mut conn = crate::events::db(&mesh).await;
        let rows: Vec<(uuid::Uuid, time::OffsetDateTime)> =
            sqlx::query_as("SELECT user_id, last_seen FROM chat.last_seen WHERE user_id = ANY($1)")
                .bind(&ids)
                .fetch_all(&mut conn)
                .await
                .unwrap();
        rows.into_iter()
            .collect::<std::collections::HashMap<_, _>>()
    };

    let sockets =
        futures::future::join_all(users.iter().map(|u| Ws::connect(&mesh.url, &u.access))).await;
    wait_until("every user's last-seen time", || async {
        seen().await.len() == USERS
    })
    .await;
    let online = seen().await;
    futures::future::join_all(sockets.into_iter().map(Ws::close)).await;
    wait_until("every last-seen time moved on leaving", || async {
        let now = seen().await;
        ids.iter().all(|id| now[id] > online[id])
    })
    .await;
    mesh.stop().await;
}

/// Reads SSE events from a streaming response until `wanted` matches one. Every event must be
/// unnamed (an `EventSource` dispatches it to `onmessage`); the frame's `type` is its kind.
async fn next_event(
    stream: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buffer: &mut String,
    wanted: impl Fn(&str, &Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut event = "message";
            let mut data = String::new();
            for line in block.lines() {
                if let Some(name) = line.strip_prefix("event:") {
                    event = name.trim();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            if data.is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(&data).expect("SSE data is JSON");
            assert_eq!(event, "message", "SSE events are unnamed: {value}");
            let kind = value["type"].as_str().expect("every frame has a type");
            if wanted(kind, &value) {
                return value;
            }
        }
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("an SSE event within the wait")
            .expect("the stream stays open")
            .expect("a chunk");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_receives_the_same_messages() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;
    let (_, bob) = c.user("bob").await;
    befriend(c, &ann, &bob).await;

    let (status, _) = c.get("/v1/events").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // EventSource cannot set headers: the token may come as a query parameter.
    let response = c
        .raw()
        .get(c.url(&format!("/v1/events?access_token={}", bob.access)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    next_event(&mut stream, &mut buffer, |event, _| event == "ready").await;

    let mut ann_ws = Ws::connect(&mesh.url, &ann.access).await;
    ann_ws.send_to(&bob.user_id, "sse-1", "over sse").await;
    let message = next_event(&mut stream, &mut buffer, |event, v| {
        event == "message" && v["client_id"] == "sse-1"
    })
    .await;
    assert_eq!(message["body"], "over sse");
    assert_eq!(message["seq"], 1);

    // Logging out ends the stream with a session_revoked event.
    let (status, _) = c.post_as("/v1/auth/logout", &bob.access, json!({})).await;
    assert!(status.is_success());
    next_event(&mut stream, &mut buffer, |event, _| {
        event == "session_revoked"
    })
    .await;
    mesh.stop().await;
}
