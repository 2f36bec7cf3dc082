//! An authenticated WebSocket: one loop that reads client frames, forwards what is pushed to
//! the user, answers finished requests and keeps the timers, until something ends it.

use std::io;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use mesh_contracts::ErrorCode;
use mesh_contracts::chat::{ClientFrame, ConversationId, ServerFrame};
use mesh_nats::CallContext;
use poem::web::websocket::{Message, WebSocketStream};
use tokio::time::Instant;
use uuid::Uuid;

use super::connection::{count_in, flush, queue, queue_frame, queue_text, read};
use super::flood::{FloodGuard, FrameVerdict};
use super::requests::Requests;
use super::timers::{Due, Timers};
use crate::SharedState;
use crate::caller::{Verified, authenticate};
use crate::clock::instant_at;
use crate::limits::OverLimit;
use crate::realtime::close::CloseReason;
use crate::realtime::hub::Registration;

/// The most events handled in a row before what they queued is flushed.
const MAX_UNFLUSHED: usize = 32;

pub struct Session {
    state: SharedState,
    user: Uuid,
    session: Uuid,
    registration: Registration,
    requests: Requests,
    timers: Timers,
    flood: FloodGuard,
}

/// What woke the loop.
enum Event {
    Kicked(CloseReason),
    Incoming(Option<io::Result<Message>>),
    Pushed(Bytes),
    Answered(Option<ServerFrame>),
    TimerFired,
}

impl Session {
    pub fn new(
        state: SharedState,
        verified: &Verified,
        registration: Registration,
        ctx: CallContext,
    ) -> Self {
        let (user, session) = (verified.caller.user_id, verified.caller.session_id);
        let timers = Timers::new(
            Instant::now(),
            state.ws.heartbeat,
            state.ws.idle_timeout,
            instant_at(verified.valid_until),
        );
        let limits = &state.limits.config;
        let flood = FloodGuard::new(
            limits.ws_frames,
            limits.ws_flood_close_after,
            std::time::Instant::now(),
        );
        Self {
            flood,
            requests: Requests::new(state.clone(), user, session, ctx),
            state,
            user,
            session,
            registration,
            timers,
        }
    }

    /// Serves the socket; answers why it must close.
    pub async fn run(mut self: Box<Self>, socket: &mut WebSocketStream) -> CloseReason {
        let kick = self.registration.kick();
        let timer = tokio::time::sleep_until(self.timers.next());
        tokio::pin!(timer);
        let mut unflushed = 0_usize;
        loop {
            if let Some(reason) = kick.reason() {
                return reason;
            }
            timer.as_mut().reset(self.timers.next());
            let event = tokio::select! {
                reason = kick.kicked() => Event::Kicked(reason),
                incoming = socket.next(), if self.requests.has_room() => Event::Incoming(incoming),
                pushed = self.registration.frames().recv() => Event::Pushed(pushed),
                answer = self.requests.next_reply() => Event::Answered(answer),
                () = &mut timer => Event::TimerFired,
            };
            let handled = match event {
                Event::Kicked(reason) => Err(reason),
                Event::Answered(None) => Ok(()),
                // Boxed: while the socket idles, its task keeps only the waiting state above,
                // not room for the deepest handler (a few KiB per connected user).
                event => Box::pin(self.handle(socket, event)).await,
            };
            if let Err(reason) = handled {
                return reason;
            }
            // Frames are queued; they go out in one write once no push is waiting (or after
            // a bounded run of them, so a busy user's frames are never held long).
            unflushed += 1;
            if unflushed >= MAX_UNFLUSHED || self.registration.frames().is_empty() {
                if let Err(reason) = flush(socket).await {
                    return reason;
                }
                unflushed = 0;
            }
        }
    }

    async fn handle(
        &mut self,
        socket: &mut WebSocketStream,
        event: Event,
    ) -> Result<(), CloseReason> {
        match event {
            Event::Incoming(incoming) => self.on_incoming(socket, incoming).await,
            Event::Pushed(frame) => forward(socket, frame).await,
            Event::Answered(Some(frame)) => self.on_answered(socket, &frame).await,
            Event::TimerFired => self.on_timer(socket).await,
            Event::Kicked(_) | Event::Answered(None) => Ok(()),
        }
    }

    /// Queues an answer and every other one already there (the acks of sends published
    /// together finish together), so they go out in one write.
    async fn on_answered(
        &mut self,
        socket: &mut WebSocketStream,
        frame: &ServerFrame,
    ) -> Result<(), CloseReason> {
        queue_frame(socket, frame).await?;
        while let Some(answer) = self.requests.next_reply().now_or_never() {
            if let Some(frame) = answer {
                queue_frame(socket, &frame).await?;
            }
        }
        Ok(())
    }

    async fn on_incoming(
        &mut self,
        socket: &mut WebSocketStream,
        incoming: Option<io::Result<Message>>,
    ) -> Result<(), CloseReason> {
        let message = read(incoming)?;
        self.timers.heard(Instant::now());
        if matches!(message, Message::Text(_) | Message::Binary(_)) {
            // The socket's budget, then the one all the user's sockets here share.
            let (limits, user) = (&self.state.limits, self.user);
            match self
                .flood
                .judge(std::time::Instant::now(), || limits.ws_frame(user))
            {
                FrameVerdict::Serve => {}
                FrameVerdict::Refuse => {
                    let refusal = ServerFrame::error(
                        ErrorCode::RateLimited,
                        "too many frames; slow down (a continued flood closes the socket with 4029)",
                    );
                    return queue_frame(socket, &refusal).await;
                }
                FrameVerdict::Close => return Err(CloseReason::Flooding),
            }
        }
        match message {
            Message::Text(text) => self.on_text(socket, &text).await,
            Message::Binary(_) => {
                count_in("binary");
                let refusal = ServerFrame::error(
                    ErrorCode::BadRequest,
                    "binary frames are not supported; send JSON text frames",
                );
                queue_frame(socket, &refusal).await
            }
            Message::Close(_) => Err(CloseReason::ClientClosed),
            // tungstenite answers pings itself; either way the client is alive.
            Message::Ping(_) | Message::Pong(_) => Ok(()),
        }
    }

    async fn on_text(
        &mut self,
        socket: &mut WebSocketStream,
        text: &str,
    ) -> Result<(), CloseReason> {
        let frame = match serde_json::from_str::<ClientFrame>(text) {
            Ok(frame) => frame,
            Err(err) => {
                count_in("invalid");
                return queue_frame(socket, &malformed(&err)).await;
            }
        };
        count_in(client_frame_type(&frame));
        match frame {
            ClientFrame::Send(message) => self.requests.send(message),
            ClientFrame::Read {
                conversation_id,
                seq,
            } => self.requests.mark_read(conversation_id, seq),
            ClientFrame::Sync {
                conversation_id,
                after_seq,
                limit,
            } => {
                if let Err(OverLimit(why)) = self.requests.sync(conversation_id, after_seq, limit) {
                    let refusal = ServerFrame::error(OverLimit::CODE, why);
                    return queue_frame(socket, &refusal).await;
                }
            }
            ClientFrame::Typing { conversation_id } => {
                // Limited per conversation, however the client spells its id (the chat service
                // would refuse an id that is none the same way).
                let Some(conversation) = ConversationId::parse(&conversation_id) else {
                    let refusal =
                        ServerFrame::error(ErrorCode::UnknownConversation, "no such conversation");
                    return queue_frame(socket, &refusal).await;
                };
                if self.registration.allow_typing(conversation, Instant::now()) {
                    self.requests.typing(conversation.to_string());
                }
            }
            ClientFrame::Ping { nonce } => {
                return queue_frame(socket, &ServerFrame::Pong { nonce }).await;
            }
            ClientFrame::Auth { token } => return self.reauthenticate(socket, &token).await,
        }
        Ok(())
    }

    /// A fresh token of the same user moves the expiry (and the session, if it changed); a
    /// bad one is refused and the current token stays in force.
    async fn reauthenticate(
        &mut self,
        socket: &mut WebSocketStream,
        token: &str,
    ) -> Result<(), CloseReason> {
        let verified = match authenticate(&self.state, token) {
            Ok(verified) => verified,
            Err(refused) => {
                let refusal = ServerFrame::error(refused.code, refused.detail);
                return queue_frame(socket, &refusal).await;
            }
        };
        if verified.caller.user_id != self.user {
            let refusal =
                ServerFrame::error(ErrorCode::Forbidden, "the token belongs to another user");
            queue_frame(socket, &refusal).await?;
            return Err(CloseReason::UserMismatch);
        }
        self.timers.renew(instant_at(verified.valid_until));
        let session = verified.caller.session_id;
        if session != self.session {
            self.session = session;
            self.registration.rebind(session);
            self.requests.set_session(session);
            // As at registration: a revocation racing the rebind is caught by the set.
            if self.state.revoked.contains(&session) {
                return Err(CloseReason::SessionRevoked);
            }
        }
        Ok(())
    }

    async fn on_timer(&mut self, socket: &mut WebSocketStream) -> Result<(), CloseReason> {
        match self.timers.due(Instant::now()) {
            Some(Due::Ping) => queue(socket, Message::Ping(Vec::new())).await,
            Some(Due::Idle) => Err(CloseReason::IdleTimeout),
            Some(Due::Expired) => Err(CloseReason::TokenExpired),
            None => Ok(()),
        }
    }
}

/// A pushed frame is already the client's JSON text: forwarded as it is.
async fn forward(socket: &mut WebSocketStream, frame: Bytes) -> Result<(), CloseReason> {
    match String::from_utf8(Vec::from(frame)) {
        Ok(text) => queue_text(socket, text).await,
        Err(_) => {
            tracing::debug!("dropped a pushed frame that is not UTF-8");
            Ok(())
        }
    }
}

/// The answer to a frame that is not JSON, or not a known frame.
fn malformed(err: &serde_json::Error) -> ServerFrame {
    let detail = if err.is_data() {
        format!("not a valid frame: {err}")
    } else {
        "frames are JSON objects with a `type`".to_owned()
    };
    ServerFrame::error(ErrorCode::BadRequest, detail)
}

fn client_frame_type(frame: &ClientFrame) -> &'static str {
    match frame {
        ClientFrame::Auth { .. } => "auth",
        ClientFrame::Send(_) => "send",
        ClientFrame::Read { .. } => "read",
        ClientFrame::Sync { .. } => "sync",
        ClientFrame::Typing { .. } => "typing",
        ClientFrame::Ping { .. } => "ping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_frames_are_bad_requests() {
        let not_json = serde_json::from_str::<ClientFrame>("{nope").unwrap_err();
        let unknown = serde_json::from_str::<ClientFrame>(r#"{"type":"dance"}"#).unwrap_err();
        for err in [not_json, unknown] {
            let ServerFrame::Error { code, .. } = malformed(&err) else {
                panic!("not an error frame")
            };
            assert_eq!(code, "bad_request");
        }
    }
}
