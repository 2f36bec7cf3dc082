//! A WebSocket client for whole-mesh tests: connects like an app would, sends frames, and waits
//! for the frames it expects while keeping the others for later.

use std::collections::VecDeque;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

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
}
