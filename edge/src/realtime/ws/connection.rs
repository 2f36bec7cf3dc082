//! One WebSocket from upgrade to close: the `auth` frame when the handshake carried no token
//! (anything else first closes it), registration with the hub, the `ready` frame, the
//! session, and the closing handshake with the code that says why.

use std::io;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use mesh_contracts::ErrorCode;
use mesh_contracts::chat::{ClientFrame, ServerFrame};
use mesh_nats::CallContext;
use mesh_observability::metrics::RT_FRAMES;
use poem::web::websocket::{Message, WebSocketStream};
use tokio::time::Instant;

use super::session::Session;
use crate::SharedState;
use crate::caller::{Verified, authenticate};
use crate::problem::ApiError;
use crate::rate_limit::ConnectionSlot;
use crate::realtime::Transport;
use crate::realtime::close::{CloseReason, ConnectionGauge};
use crate::realtime::frames::frame_type;

/// How long a socket opened without a token has to send its `auth` frame.
const AUTH_DEADLINE: Duration = Duration::from_secs(10);
/// Pings and pongs a socket may send before its `auth` frame (a client's keep-alive while it
/// fetches a token); one more closes it like any other frame before `auth`.
const PINGS_BEFORE_AUTH: u32 = 4;
/// How long to wait for the user's push subscription before giving up on the socket.
const SUBSCRIBE_DEADLINE: Duration = Duration::from_secs(5);
/// A write that does not complete in this time means the client stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the closing handshake may take.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// What the opening of a connection needs: the caller when the handshake carried a token, its
/// place under the connection caps (its address's only until the caller is known), and the
/// request's context.
pub struct Opening {
    pub verified: Option<Verified>,
    pub slot: ConnectionSlot,
    pub ctx: CallContext,
}

pub async fn serve(state: SharedState, mut socket: WebSocketStream, opening: Box<Opening>) {
    let mut gauge = ConnectionGauge::open(Transport::WebSocket);
    // The connection holds its place under the caps until its closing handshake is over.
    let Opening {
        verified,
        mut slot,
        ctx,
    } = *opening;
    // The opening and the closing handshakes are boxed, and so is the session's state: inline,
    // every connection's task would be as large as the deepest of them for its whole life.
    let reason = match Box::pin(open(&state, &mut socket, verified, &mut slot, ctx)).await {
        Ok(session) => session.run(&mut socket).await,
        Err(reason) => reason,
    };
    gauge.closed(reason);
    Box::pin(close(&mut socket, reason)).await;
    drop(slot);
}

/// Authenticates (by the first frame when the handshake carried no token), takes the caller's
/// place under the per-user cap when the handshake could not, registers with the hub and says
/// `ready`; answers the session to run.
async fn open(
    state: &SharedState,
    socket: &mut WebSocketStream,
    verified: Option<Verified>,
    slot: &mut ConnectionSlot,
    ctx: CallContext,
) -> Result<Box<Session>, CloseReason> {
    let verified = match verified {
        Some(verified) => verified,
        None => first_frame_auth(state, socket).await?,
    };
    slot.attach(&verified.caller.user_id.to_string())
        .map_err(|_| CloseReason::TooManyConnections)?;
    let caller = verified.caller.clone();
    let Ok(mut registration) = state.hub.register(caller.user_id, caller.session_id) else {
        return Err(CloseReason::Shutdown);
    };
    // A revocation that arrived between the token check and the registration found nothing
    // to kick; the set has it by then.
    if state.revoked.contains(&caller.session_id) {
        return Err(CloseReason::SessionRevoked);
    }
    if !registration.wait_subscribed(SUBSCRIBE_DEADLINE).await {
        tracing::warn!("push subscription not ready; closing the socket");
        return Err(CloseReason::Error);
    }
    let ready = ServerFrame::Ready {
        user_id: caller.user_id,
        session_id: caller.session_id,
    };
    write_frame(socket, &ready).await?;
    let session = Session::new(state.clone(), &verified, registration, ctx);
    Ok(Box::new(session))
}

/// A place for `verified`'s connection under the per-user and per-address caps.
pub fn take_slot(
    state: &SharedState,
    verified: &Verified,
    ctx: &CallContext,
) -> Result<ConnectionSlot, ApiError> {
    let ip = ctx.client_ip.as_deref().unwrap_or_default();
    state
        .limits
        .connections
        .open(&verified.caller.user_id.to_string(), ip)
        .map_err(|cap| cap.problem())
}

/// A place for a connection from `ctx`'s address whose caller is not known yet (it
/// authenticates with its first frame), under the per-address cap.
pub fn take_address_slot(
    state: &SharedState,
    ctx: &CallContext,
) -> Result<ConnectionSlot, ApiError> {
    let ip = ctx.client_ip.as_deref().unwrap_or_default();
    state
        .limits
        .connections
        .open_anonymous(ip)
        .map_err(|cap| cap.problem())
}

/// Waits for an `auth` frame with a valid token. A socket that sends anything else first (a
/// data frame, or more than `PINGS_BEFORE_AUTH` pings and pongs) is answered `unauthorized`
/// once and closed 4401: before it authenticates, a socket gets no frame budget, so it gets
/// no second chance either.
async fn first_frame_auth(
    state: &SharedState,
    socket: &mut WebSocketStream,
) -> Result<Verified, CloseReason> {
    let deadline = Instant::now() + AUTH_DEADLINE;
    let mut pings = 0;
    loop {
        let incoming = tokio::select! {
            () = state.hub.stopping() => return Err(CloseReason::Shutdown),
            next = tokio::time::timeout_at(deadline, socket.next()) => {
                next.map_err(|_| CloseReason::Unauthenticated)?
            }
        };
        let text = match read(incoming)? {
            Message::Text(text) => text,
            Message::Close(_) => return Err(CloseReason::ClientClosed),
            Message::Ping(_) | Message::Pong(_) if pings < PINGS_BEFORE_AUTH => {
                pings += 1;
                continue;
            }
            Message::Ping(_) | Message::Pong(_) | Message::Binary(_) => String::new(),
        };
        if let Ok(ClientFrame::Auth { token }) = serde_json::from_str::<ClientFrame>(&text) {
            count_in("auth");
            return match authenticate(state, &token) {
                Ok(verified) => Ok(verified),
                Err(refused) => {
                    write_frame(socket, &ServerFrame::error(refused.code, refused.detail)).await?;
                    Err(CloseReason::Unauthenticated)
                }
            };
        }
        count_in("unauthenticated");
        let refusal = ServerFrame::error(ErrorCode::Unauthorized, "send an auth frame first");
        write_frame(socket, &refusal).await?;
        return Err(CloseReason::Unauthenticated);
    }
}

/// The message read, or why the socket can no longer be read.
pub fn read(incoming: Option<io::Result<Message>>) -> Result<Message, CloseReason> {
    match incoming {
        Some(Ok(message)) => Ok(message),
        None => Err(CloseReason::ClientClosed),
        Some(Err(err)) => Err(read_failure(&err)),
    }
}

/// Why a read failed. poem hands tungstenite's errors over as text, so a frame over the limit
/// is recognised by tungstenite's wording ("Space limit exceeded: Message too long").
fn read_failure(err: &io::Error) -> CloseReason {
    match err.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::UnexpectedEof => CloseReason::ClientClosed,
        _ if err.to_string().contains("Message too long") => CloseReason::FrameTooLarge,
        _ => {
            tracing::debug!(error = %err, "WebSocket read failed");
            CloseReason::Error
        }
    }
}

pub fn count_in(frame_type: &str) {
    RT_FRAMES.with_label_values(&["in", frame_type]).inc();
}

/// Writes one frame and flushes it.
pub async fn write_frame(
    socket: &mut WebSocketStream,
    frame: &ServerFrame,
) -> Result<(), CloseReason> {
    queue_frame(socket, frame).await?;
    flush(socket).await
}

/// Queues one frame's JSON text (see `queue`).
pub async fn queue_frame(
    socket: &mut WebSocketStream,
    frame: &ServerFrame,
) -> Result<(), CloseReason> {
    queue_text(socket, frame.to_json()).await
}

/// Queues one frame's JSON text, counted by its type (see `queue`).
pub async fn queue_text(socket: &mut WebSocketStream, text: String) -> Result<(), CloseReason> {
    RT_FRAMES
        .with_label_values(&["out", frame_type(text.as_bytes())])
        .inc();
    queue(socket, Message::Text(text)).await
}

/// Queues `message` without flushing it, so a burst of frames costs one write to the socket
/// rather than one each (tungstenite writes out by itself once its buffer is full). Whoever
/// queues must `flush` before waiting for anything else. A client that does not take its
/// frames in time is a slow consumer.
pub async fn queue(socket: &mut WebSocketStream, message: Message) -> Result<(), CloseReason> {
    within_write_timeout(socket.feed(message)).await
}

/// Writes out everything queued.
pub async fn flush(socket: &mut WebSocketStream) -> Result<(), CloseReason> {
    within_write_timeout(socket.flush()).await
}

async fn within_write_timeout<E>(
    write: impl Future<Output = Result<(), E>>,
) -> Result<(), CloseReason> {
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(CloseReason::ClientClosed),
        Err(_) => Err(CloseReason::SlowConsumer),
    }
}

/// The last frame a client gets before the close frame, when the reason has one.
fn farewell(reason: CloseReason) -> Option<ServerFrame> {
    match reason {
        CloseReason::SessionRevoked => Some(ServerFrame::SessionRevoked),
        CloseReason::TokenExpired => Some(ServerFrame::error(
            ErrorCode::TokenExpired,
            "the access token expired; reconnect with a fresh one",
        )),
        _ => None,
    }
}

/// Ends the socket: the farewell frame, the close frame with the reason's code, then a short
/// wait for the client's close frame so the TCP connection ends cleanly.
async fn close(socket: &mut WebSocketStream, reason: CloseReason) {
    if reason == CloseReason::ClientClosed {
        // Answers the client's close frame (queued by tungstenite), if it sent one.
        let _ = tokio::time::timeout(CLOSE_GRACE, socket.close()).await;
        return;
    }
    if let Some(frame) = farewell(reason)
        && write_frame(socket, &frame).await.is_err()
    {
        return;
    }
    let close = Message::close_with(reason.code(), reason.label());
    if !matches!(
        tokio::time::timeout(CLOSE_GRACE, socket.send(close)).await,
        Ok(Ok(()))
    ) {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(message)) = socket.next().await {
            if message.is_close() {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_failures_name_their_cause() {
        let too_long = io::Error::other("Space limit exceeded: Message too long: 40000 > 32768");
        assert_eq!(read_failure(&too_long), CloseReason::FrameTooLarge);
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(read_failure(&reset), CloseReason::ClientClosed);
        let protocol = io::Error::other("WebSocket protocol error: unmasked frame");
        assert_eq!(read_failure(&protocol), CloseReason::Error);
    }

    #[test]
    fn revoked_and_expired_sockets_are_told_why() {
        assert_eq!(
            farewell(CloseReason::SessionRevoked),
            Some(ServerFrame::SessionRevoked)
        );
        assert!(matches!(
            farewell(CloseReason::TokenExpired),
            Some(ServerFrame::Error { code, .. }) if code == "token_expired"
        ));
        assert_eq!(farewell(CloseReason::IdleTimeout), None);
    }

    /// The size of the future `f` makes, without making one.
    fn future_size<A, B, C, F: std::future::Future>(_f: impl FnOnce(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every connected user costs its connection's task for as long as it stays: the opening,
    /// the handlers and the closing are boxed so that task holds only what waiting needs
    /// (1,296 bytes, against 4,072 when they were inline). A guard against inlining them
    /// again, not a tight fit.
    #[test]
    fn a_connection_task_holds_only_what_waiting_needs() {
        let serve_size = future_size(
            |state: SharedState, socket: WebSocketStream, opening: Box<Opening>| {
                serve(state, socket, opening)
            },
        );
        assert!(
            serve_size <= 1600,
            "a connection's task is {serve_size} bytes"
        );
    }
}
