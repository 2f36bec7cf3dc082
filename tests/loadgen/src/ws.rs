//! The WebSocket client: opens an authenticated `/v1/ws` connection, waits for `ready`, and
//! decodes server frames into the few fields the scenarios look at.

use std::borrow::Cow;
use std::time::Duration;

use anyhow::{Context, bail};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};

use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, client_async_with_config, connect_async_with_config,
};
use uuid::Uuid;

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
pub type Sink = SplitSink<Socket, Message>;
pub type Stream = SplitStream<Socket>;

/// How long a connection may take to open and say `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Buffer sizes: busy sockets read and write in larger chunks; idle ones stay small so the
/// load generator itself can hold thousands. A read zeroes its whole read buffer first
/// (tungstenite resizes it before each `read`), so even a busy socket's stays far below
/// tungstenite's default of 128 KiB: at that size, zeroing took about a quarter of the load
/// generator's CPU in `latency`, CPU the mesh shares on this machine.
#[derive(Debug, Clone, Copy)]
pub enum Profile {
    Busy,
    Idle,
}

/// Bytes a busy socket reads at most at once: dozens of frames of the mesh.
const BUSY_READ_BUFFER: usize = 16 * 1024;

impl Profile {
    fn config(self) -> WebSocketConfig {
        match self {
            Profile::Busy => WebSocketConfig::default().read_buffer_size(BUSY_READ_BUFFER),
            Profile::Idle => WebSocketConfig::default()
                .read_buffer_size(4 * 1024)
                .write_buffer_size(0),
        }
    }
}

/// The `/v1/ws` URL of a mesh given by its HTTP base URL.
pub fn ws_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    let rest = base
        .strip_prefix("https://")
        .map(|r| format!("wss://{r}"))
        .or_else(|| base.strip_prefix("http://").map(|r| format!("ws://{r}")))
        .unwrap_or_else(|| base.to_owned());
    format!("{rest}/v1/ws")
}

/// The `host:port` of a `ws://` URL as a socket address (an IP literal; the bench's meshes
/// listen on one).
fn plain_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url
        .strip_prefix("ws://")
        .with_context(|| format!("{url}: a chosen source address needs a ws:// URL"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .parse()
        .with_context(|| format!("{authority}: a chosen source address needs an IP:port"))
}

/// Opens a WebSocket with `Authorization: Bearer <token>` and waits for the `ready` frame;
/// from the local address `source` when given (e.g. one of 127.0.0.0/8, so that many
/// connections do not run out of ephemeral ports of one address).
pub async fn connect_from(
    url: &str,
    token: &str,
    profile: Profile,
    source: Option<IpAddr>,
) -> anyhow::Result<Socket> {
    let open = async {
        let mut request = url.into_client_request()?;
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}"))?,
        );
        let opened = match source {
            None => connect_async_with_config(request, Some(profile.config()), true).await,
            Some(source) => {
                let server = plain_addr(url)?;
                let socket = match source {
                    IpAddr::V4(_) => TcpSocket::new_v4(),
                    IpAddr::V6(_) => TcpSocket::new_v6(),
                }
                .context("creating a socket")?;
                socket
                    .bind(SocketAddr::new(source, 0))
                    .with_context(|| format!("binding to {source}"))?;
                let stream = socket
                    .connect(server)
                    .await
                    .with_context(|| format!("connecting from {source} to {server}"))?;
                stream.set_nodelay(true)?;
                client_async_with_config(
                    request,
                    MaybeTlsStream::Plain(stream),
                    Some(profile.config()),
                )
                .await
            }
        };
        let (mut socket, _response) = match opened {
            Ok(opened) => opened,
            Err(WsError::Http(response)) => {
                let body = response
                    .body()
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default()
                    .chars()
                    .take(300)
                    .collect::<String>();
                bail!("GET /v1/ws answered {}: {body}", response.status());
            }
            Err(err) => return Err(err).context("opening /v1/ws"),
        };
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    let frame = Frame::parse(&text)
                        .with_context(|| format!("undecodable first frame {text}"))?;
                    match frame.kind.as_ref() {
                        "ready" => return Ok(socket),
                        "error" => bail!("first frame was an error: {text}"),
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(close))) => bail!("closed before ready: {close:?}"),
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(err).context("reading the ready frame"),
                None => bail!("connection ended before ready"),
            }
        }
    };
    tokio::time::timeout(READY_TIMEOUT, open)
        .await
        .context("no ready frame within 15 s")?
}

/// Says goodbye politely, without waiting long for the server's answer.
pub async fn close(mut sink: Sink) {
    let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
}

/// A server frame, decoded lazily: only the fields the load generator reads, borrowed from the
/// text where possible (`ack` and `message` frames fill different ones; other frames are
/// reported as their whole text).
#[derive(Debug, Deserialize)]
pub struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(default, borrow)]
    pub client_id: Cow<'a, str>,
    #[serde(default, borrow)]
    pub status: Cow<'a, str>,
    #[serde(default, borrow)]
    pub conversation_id: Cow<'a, str>,
    #[serde(default)]
    pub seq: Option<i64>,
    /// Why a message was rejected (`ack`).
    #[serde(default)]
    pub reason: Option<String>,
}

impl<'a> Frame<'a> {
    pub fn parse(text: &'a str) -> anyhow::Result<Self> {
        Ok(serde_json::from_str(text)?)
    }
}

/// Where a `send` goes: a user (their private conversation) or a conversation id.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    User(Uuid),
    Conversation(&'a str),
}

#[derive(Serialize)]
struct SendFrame<'a> {
    #[serde(rename = "type")]
    frame_type: &'static str,
    client_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    conversation_id: Option<&'a str>,
    body: &'a str,
}

/// The text of a `send` frame.
pub fn send_frame(client_id: &str, target: Target<'_>, body: &str) -> Message {
    let (to, conversation_id) = match target {
        Target::User(id) => (Some(id), None),
        Target::Conversation(c) => (None, Some(c)),
    };
    let frame = SendFrame {
        frame_type: "send",
        client_id,
        to,
        conversation_id,
        body,
    };
    Message::text(serde_json::to_string(&frame).expect("send frames serialize"))
}

/// A close frame's code and reason as text, for reports.
/// The next text frame a reader gets, or `None` once `stop` fires or the socket ends; an end the
/// server caused is recorded as a problem of the `who` socket (sender, recipient, member).
pub async fn next_text(
    stream: &mut Stream,
    stop: &tokio_util::sync::CancellationToken,
    problems: &crate::problems::Problems,
    who: &str,
) -> Option<tokio_tungstenite::tungstenite::Utf8Bytes> {
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => return None,
            message = stream.next() => message,
        };
        match message {
            Some(Ok(Message::Text(text))) => return Some(text),
            Some(Ok(other)) => {
                if let Some(close) = describe_close(&other) {
                    problems.add(&format!("{who} socket closed by the server"), || close);
                    return None;
                }
            }
            Some(Err(err)) => {
                problems.add(&format!("{who} socket failed"), || err.to_string());
                return None;
            }
            None => return None,
        }
    }
}

pub fn describe_close(message: &Message) -> Option<String> {
    match message {
        Message::Close(Some(frame)) => Some(format!("{} {}", u16::from(frame.code), frame.reason)),
        Message::Close(None) => Some("close without code".to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_sockets_read_far_less_than_tungstenites_default_at_once() {
        // tungstenite zeroes the whole read buffer before each read.
        let busy = Profile::Busy.config().read_buffer_size;
        assert_eq!(busy, BUSY_READ_BUFFER);
        assert!(busy * 8 <= WebSocketConfig::default().read_buffer_size);
    }

    #[test]
    fn plain_addresses_come_from_ws_urls() {
        assert_eq!(
            plain_addr("ws://127.0.0.1:28080/v1/ws").unwrap(),
            "127.0.0.1:28080".parse().unwrap()
        );
        assert!(plain_addr("wss://127.0.0.1:1/v1/ws").is_err());
        assert!(plain_addr("ws://localhost:1/v1/ws").is_err());
    }

    #[test]
    fn urls_switch_scheme() {
        assert_eq!(
            ws_url("http://127.0.0.1:8080/"),
            "ws://127.0.0.1:8080/v1/ws"
        );
        assert_eq!(ws_url("https://chat.example"), "wss://chat.example/v1/ws");
    }

    #[test]
    fn frames_decode_the_fields_read() {
        let ack = Frame::parse(
            r#"{"type":"ack","client_id":"c\"1","status":"stored","conversation_id":"g:x","seq":7,"message_id":"00000000-0000-0000-0000-000000000001"}"#,
        )
        .unwrap();
        assert_eq!(
            (
                ack.kind.as_ref(),
                ack.client_id.as_ref(),
                ack.status.as_ref(),
                ack.seq
            ),
            ("ack", "c\"1", "stored", Some(7))
        );
        let ready = Frame::parse(r#"{"type":"ready","user_id":"u","session_id":"s"}"#).unwrap();
        assert_eq!((ready.kind.as_ref(), ready.seq), ("ready", None));
        assert!(Frame::parse("{}").is_err(), "a frame names its type");
    }

    #[test]
    fn send_frames_name_one_target() {
        let to = Uuid::from_u128(1);
        let Message::Text(text) = send_frame("c1", Target::User(to), "hi") else {
            panic!("not text")
        };
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["type"], "send");
        assert_eq!(value["to"], to.to_string());
        assert!(value.get("conversation_id").is_none());
        let Message::Text(text) = send_frame("c2", Target::Conversation("g:1"), "hi") else {
            panic!("not text")
        };
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["conversation_id"], "g:1");
        assert!(value.get("to").is_none());
    }
}
