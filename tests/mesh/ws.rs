//! A WebSocket client for whole-mesh tests: connects like an app would, sends frames, and waits
//! for the frames it expects while keeping the others for later. Also the tests of what a
//! user's sockets share: the typing allowance and the per-user frame budget.

use std::collections::VecDeque;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::harness::{TestMesh, Tokens};
use crate::social_groups::{create_group, join_open};

/// How long a test waits for one expected frame.
pub const FRAME_WAIT: Duration = Duration::from_secs(20);

pub struct Ws {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Frames received while waiting for another one.
    kept: VecDeque<Value>,
}

/// `ws://host:port/v1/ws` for an edge's `http://host:port`.
pub fn ws_url(base: &str) -> String {
    format!("{}/v1/ws", base.replacen("http", "ws", 1))
}

impl Ws {
    /// Opens an authenticated socket and waits for its `ready` frame.
    pub async fn connect(base: &str, token: &str) -> Self {
        Self::connect_ready(base, token).await.0
    }

    /// Opens an authenticated socket; answers it with its `ready` frame.
    pub async fn connect_ready(base: &str, token: &str) -> (Self, Value) {
        let mut request = ws_url(base).into_client_request().expect("ws request");
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
        let mut ws = Self::open(request).await.expect("websocket upgrade");
        let ready = ws.expect_type("ready").await;
        (ws, ready)
    }

    /// Opens a socket with a prepared request (no waiting for `ready`).
    pub async fn open(
        request: tokio_tungstenite::tungstenite::handshake::client::Request,
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        let (socket, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Self {
            socket,
            kept: VecDeque::new(),
        })
    }

    pub async fn send(&mut self, frame: Value) {
        self.socket
            .send(Message::text(frame.to_string()))
            .await
            .expect("frame sent");
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.socket.send(message).await.expect("frame sent");
    }

    /// Sends a private message to `to`.
    pub async fn send_to(&mut self, to: &str, client_id: &str, body: &str) {
        self.send(json!({"type": "send", "client_id": client_id, "to": to, "body": body}))
            .await;
    }

    /// Sends a message to a conversation.
    pub async fn send_in(&mut self, conversation: &str, client_id: &str, body: &str) {
        self.send(json!({
            "type": "send", "client_id": client_id, "conversation_id": conversation, "body": body
        }))
        .await;
    }

    /// The next data frame from the server before `deadline`; `None` once the socket closed.
    async fn read(&mut self, deadline: tokio::time::Instant) -> Option<Value> {
        loop {
            let next = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .expect("the expected frame within the wait");
            match next? {
                Ok(Message::Text(text)) => {
                    return Some(serde_json::from_str(&text).expect("frames are JSON"));
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// Waits for the first frame matching `wanted` (kept frames first); others are kept.
    pub async fn expect(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        if let Some(at) = self.kept.iter().position(&wanted) {
            return self.kept.remove(at).expect("position is valid");
        }
        let deadline = tokio::time::Instant::now() + FRAME_WAIT;
        loop {
            let frame = self
                .read(deadline)
                .await
                .unwrap_or_else(|| panic!("socket closed while waiting for {what}"));
            if wanted(&frame) {
                return frame;
            }
            self.kept.push_back(frame);
        }
    }

    /// The next frame (kept frames first) arriving within `wait`; `None` when none came (or
    /// the socket closed): for clients that do other work while they listen.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Value> {
        if let Some(frame) = self.kept.pop_front() {
            return Some(frame);
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    return Some(serde_json::from_str(&text).expect("frames are JSON"));
                }
                Ok(Some(Ok(_))) => continue,
                Ok(_) | Err(_) => return None,
            }
        }
    }

    /// Every frame of `kind` already kept or arriving within `wait` (all of it: unlike
    /// [`Ws::drain`], the server's pings do not stretch it); other frames are kept.
    pub async fn frames_within(&mut self, kind: &str, wait: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        let (mut out, mut others) = (Vec::new(), VecDeque::new());
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(frame) = self.next_within(left).await else {
                break;
            };
            if frame["type"] == kind {
                out.push(frame);
            } else {
                others.push_back(frame);
            }
        }
        self.kept.extend(others);
        out
    }

    /// Frames up to and including the message frame of `client_id`, in arrival order.
    pub async fn frames_until_message(&mut self, client_id: &str) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let frame = self
                .next_within(FRAME_WAIT)
                .await
                .unwrap_or_else(|| panic!("no message {client_id} within the wait; got {seen:?}"));
            let done = frame["type"] == "message" && frame["client_id"] == client_id;
            seen.push(frame);
            if done {
                return seen;
            }
        }
    }

    pub async fn expect_type(&mut self, kind: &str) -> Value {
        self.expect(kind, |f| f["type"] == kind).await
    }

    /// Waits for the ack of `client_id` with `status`.
    pub async fn ack(&mut self, client_id: &str, status: &str) -> Value {
        self.expect(&format!("{status} ack of {client_id}"), |f| {
            f["type"] == "ack" && f["client_id"] == client_id && f["status"] == status
        })
        .await
    }

    /// Waits for the stored ack of `client_id` and returns its seq.
    pub async fn stored(&mut self, client_id: &str) -> i64 {
        let ack = self.ack(client_id, "stored").await;
        ack["seq"].as_i64().expect("a stored ack has a seq")
    }

    /// Waits for a message frame with `client_id`.
    pub async fn message(&mut self, client_id: &str) -> Value {
        self.expect(&format!("message {client_id}"), |f| {
            f["type"] == "message" && f["client_id"] == client_id
        })
        .await
    }

    /// Every frame of `kind` already kept or arriving within `quiet` of the previous one.
    pub async fn drain(&mut self, kind: &str, quiet: Duration) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        let mut rest = VecDeque::new();
        for frame in self.kept.drain(..) {
            if frame["type"] == kind {
                out.push(frame);
            } else {
                rest.push_back(frame);
            }
        }
        self.kept = rest;
        while let Ok(Some(Ok(message))) = tokio::time::timeout(quiet, self.socket.next()).await {
            if let Message::Text(text) = message {
                let frame: Value = serde_json::from_str(&text).expect("frames are JSON");
                if frame["type"] == kind {
                    out.push(frame);
                } else {
                    self.kept.push_back(frame);
                }
            }
        }
        out
    }

    /// Waits until the server closes the socket; returns its close frame.
    pub async fn closed(&mut self) -> Option<CloseFrame> {
        let deadline = tokio::time::Instant::now() + FRAME_WAIT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .expect("the socket closes within the wait");
            match next {
                None | Some(Err(_)) => return None,
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(Message::Text(text))) => {
                    self.kept
                        .push_back(serde_json::from_str(&text).expect("frames are JSON"));
                }
                Some(Ok(_)) => {}
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }

    /// Closes the socket and waits for the edge's closing frame. The edge sends it only once
    /// the connection's session ended and left the hub, so after this the edge has seen the
    /// connection go.
    pub async fn close_seen(mut self) {
        let _ = self.socket.close(None).await;
        self.closed().await;
    }
}

// ---- What a user's sockets share ---------------------------------------------------------

/// Longer than any gap between the indicators of one burst, shorter than the typing interval
/// (2 s) plus that burst: an extra indicator would arrive within it.
const TYPING_QUIET: Duration = Duration::from_millis(1500);

/// Ann's open group with Bob in it, and both users' sockets (Bob's hears Ann's indicators).
async fn group_of_two(mesh: &TestMesh) -> (Tokens, Ws, String) {
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;
    let (_, bob) = c.user("bob").await;
    let group = create_group(c, &ann, "open", 10).await;
    join_open(c, &bob, &group).await;
    let bob_ws = Ws::connect(&mesh.url, &bob.access).await;
    (ann, bob_ws, group)
}

fn typing(conversation: &str) -> Value {
    json!({"type": "typing", "conversation_id": conversation})
}

/// A group id has several spellings the contracts accept (upper case, without hyphens,
/// `urn:uuid:`, braced): the typing limit counts the group, not the spelling, so one socket
/// gets one indicator out per interval however it spells the id, and the indicator names the
/// group by its canonical id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spellings_of_one_group_id_share_one_typing_allowance() {
    let mesh = TestMesh::spawn().await;
    let (ann, mut bob_ws, group) = group_of_two(&mesh).await;
    let canonical = format!("g:{group}");
    let id = uuid::Uuid::parse_str(&group).unwrap();
    let mut ann_ws = Ws::connect(&mesh.url, &ann.access).await;
    let spellings = [
        canonical.clone(),
        format!("g:{}", group.to_uppercase()),
        format!("g:{}", id.simple()),
        format!("g:{}", id.urn()),
        format!("g:{}", id.braced()),
    ];
    for spelling in &spellings {
        ann_ws.send(typing(spelling)).await;
    }
    let first = bob_ws.expect_type("typing").await;
    assert_eq!(first["conversation_id"], canonical.as_str());
    assert_eq!(first["user_id"], ann.user_id.as_str());
    let extra = bob_ws.frames_within("typing", TYPING_QUIET).await;
    assert!(extra.is_empty(), "one group, several indicators: {extra:?}");
    // None of the spellings was refused: each is the group.
    let refused = ann_ws
        .frames_within("error", Duration::from_millis(200))
        .await;
    assert!(refused.is_empty(), "{refused:?}");

    // The next interval allows the next indicator, whatever the spelling.
    let next = next_indicator(&mut ann_ws, &mut bob_ws, &spellings[1]).await;
    assert_eq!(next["conversation_id"], canonical.as_str());

    // What is no conversation at all is refused, as the chat service refuses it.
    ann_ws.send(typing("g:not-a-group")).await;
    assert_eq!(
        ann_ws.expect_type("error").await["code"],
        "unknown_conversation"
    );
    mesh.stop().await;
}

/// The typing allowance is the user's, not the socket's: a user's phone and laptop typing in
/// one group send one indicator per interval between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_sockets_share_one_typing_allowance() {
    let mesh = TestMesh::spawn().await;
    let (ann, mut bob_ws, group) = group_of_two(&mesh).await;
    let conversation = format!("g:{group}");
    let mut phone = Ws::connect(&mesh.url, &ann.access).await;
    let mut laptop = Ws::connect(&mesh.url, &ann.access).await;
    phone.send(typing(&conversation)).await;
    laptop.send(typing(&conversation)).await;
    let first = bob_ws.expect_type("typing").await;
    assert_eq!(first["user_id"], ann.user_id.as_str());
    let extra = bob_ws.frames_within("typing", TYPING_QUIET).await;
    assert!(extra.is_empty(), "two sockets, two indicators: {extra:?}");

    // After the interval either socket may send the next one.
    next_indicator(&mut laptop, &mut bob_ws, &conversation).await;
    mesh.stop().await;
}

/// Keeps `sender` typing in `conversation` until `watcher` gets an indicator (once the
/// allowance's interval is over); that indicator.
async fn next_indicator(sender: &mut Ws, watcher: &mut Ws, conversation: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        sender.send(typing(conversation)).await;
        let seen = watcher
            .frames_within("typing", Duration::from_millis(250))
            .await;
        if let Some(indicator) = seen.into_iter().next() {
            return indicator;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no indicator in a new interval"
        );
    }
}

/// Sends a ping on `ws` and answers the frame it got back (`pong` or `error`).
async fn ping(ws: &mut Ws, nonce: &str) -> Value {
    ws.send(json!({"type": "ping", "nonce": nonce})).await;
    ws.expect("pong or error", |f| {
        f["type"] == "pong" || f["type"] == "error"
    })
    .await
}

/// A user's frames over the per-user budget are refused `rate_limited` whichever socket sends
/// them, though each socket is within its own budget, and a socket that keeps sending them is
/// closed 4029 like any flood; another user is not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_frames_over_the_user_budget_are_refused_on_every_socket() {
    let mesh = TestMesh::spawn_with(|s| {
        // The socket's own budget stays lifted; the user's has six frames (and refills one
        // every 100 s, never within the test).
        s.guard.limits.ws_frames_per_user = mesh_edge::Quota::new(6, Duration::from_secs(600));
        s.guard.limits.ws_flood_close_after = 3;
    })
    .await;
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;
    let (_, bob) = c.user("bob").await;
    let mut phone = Ws::connect(&mesh.url, &ann.access).await;
    let mut laptop = Ws::connect(&mesh.url, &ann.access).await;
    for i in 0..4 {
        assert_eq!(ping(&mut phone, &format!("p{i}")).await["type"], "pong");
    }
    for i in 0..2 {
        assert_eq!(ping(&mut laptop, &format!("l{i}")).await["type"], "pong");
    }
    // Six frames spent between the two sockets: the seventh is refused on either.
    let refused = ping(&mut laptop, "l2").await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "rate_limited");
    assert_eq!(ping(&mut phone, "p4").await["code"], "rate_limited");
    assert_eq!(ping(&mut laptop, "l3").await["code"], "rate_limited");
    // The laptop's third refused frame in a row closes it as a flood.
    laptop.send(json!({"type": "ping", "nonce": "l4"})).await;
    let close = laptop.closed().await.map(|f| u16::from(f.code));
    assert_eq!(close, Some(4029));

    // Bob has his own budget.
    let mut bob_ws = Ws::connect(&mesh.url, &bob.access).await;
    assert_eq!(ping(&mut bob_ws, "b0").await["type"], "pong");
    mesh.stop().await;
}
