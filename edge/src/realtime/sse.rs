//! `GET /v1/events`: server-sent events, the receive-only alternative to the WebSocket for
//! clients that cannot use one. Authenticated by `Authorization: Bearer` or `?access_token=`
//! (EventSource cannot set headers). The first event is `ready`; then each pushed frame is one
//! event. No event has an `event:` name: every one reaches `EventSource.onmessage`, and its
//! JSON's `type` says what it is, as over the WebSocket; the stream ends after `session_revoked`, when the token expires
//! (an `error` event `token_expired`), when the client reads too slowly, or at shutdown.

use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use mesh_contracts::ErrorCode;
use mesh_contracts::chat::ServerFrame;
use mesh_observability::metrics::RT_FRAMES;
use poem::web::Data;
use poem::web::sse::{Event, SSE};
use poem::{IntoResponse, Request, Response, handler};
use tokio::time::Instant;

use super::Transport;
use super::close::{CloseReason, ConnectionGauge};
use super::frames::{frame_type, sse_event};
use super::hub::Registration;
use super::kick::Kick;
use crate::SharedState;
use crate::caller::{Verified, authenticate};
use crate::clock::instant_at;
use crate::handshake::{bearer_token, query_token, request_origin_allowed};
use crate::problem::ApiError;
use crate::rate_limit::ConnectionSlot;

/// How long to wait for the user's push subscription before refusing the stream.
const SUBSCRIBE_DEADLINE: Duration = Duration::from_secs(5);

#[handler]
pub async fn events(req: &Request, Data(state): Data<&SharedState>) -> Response {
    // Browsers' EventSource is held to the WebSocket origin list.
    if !request_origin_allowed(req.headers(), &state.ws.allowed_origins) {
        return ApiError::new(
            ErrorCode::Forbidden,
            "this origin may not open an event stream",
        )
        .into_response();
    }
    let Some(token) = bearer_token(req.headers()).or_else(|| query_token(req.uri().query())) else {
        return ApiError::new(
            ErrorCode::Unauthorized,
            "send the access token as `Authorization: Bearer` or `?access_token=`",
        )
        .into_response();
    };
    let verified = match authenticate(state, token) {
        Ok(verified) => verified,
        Err(refused) => return ApiError::from(refused).into_response(),
    };
    let caller = &verified.caller;
    let ip = crate::caller::client_ip(req).unwrap_or_default();
    let slot = match state
        .limits
        .connections
        .open(&caller.user_id.to_string(), &ip)
    {
        Ok(slot) => slot,
        Err(cap) => return cap.problem().into_response(),
    };
    let Ok(mut registration) = state.hub.register(caller.user_id, caller.session_id) else {
        return unavailable("the edge is shutting down");
    };
    if state.revoked.contains(&caller.session_id) {
        return ApiError::new(ErrorCode::SessionRevoked, "the session has been revoked")
            .into_response();
    }
    if !registration.wait_subscribed(SUBSCRIBE_DEADLINE).await {
        return unavailable("push delivery is not available; try again");
    }
    SSE::new(stream(registration, &verified, slot))
        .keep_alive(state.ws.heartbeat)
        .into_response()
}

fn unavailable(detail: &str) -> Response {
    ApiError::new(ErrorCode::ServiceUnavailable, detail).into_response()
}

/// Where the stream is.
enum Phase {
    Starting,
    Live,
    Ended,
}

struct Connection {
    registration: Registration,
    kick: Arc<Kick>,
    expires_at: Instant,
    ready: ServerFrame,
    phase: Phase,
    /// Counts the connection, and its end when the stream is dropped.
    gauge: ConnectionGauge,
    /// This connection's place under the per-user and per-address caps.
    _slot: ConnectionSlot,
}

fn stream(
    registration: Registration,
    verified: &Verified,
    slot: ConnectionSlot,
) -> impl Stream<Item = Event> + Send + use<> {
    let connection = Connection {
        kick: registration.kick(),
        registration,
        expires_at: instant_at(verified.valid_until),
        ready: ServerFrame::Ready {
            user_id: verified.caller.user_id,
            session_id: verified.caller.session_id,
        },
        phase: Phase::Starting,
        gauge: ConnectionGauge::open(Transport::Sse),
        _slot: slot,
    };
    futures::stream::unfold(connection, |mut connection| async move {
        let event = connection.next_event().await?;
        Some((event, connection))
    })
}

impl Connection {
    async fn next_event(&mut self) -> Option<Event> {
        match self.phase {
            Phase::Starting => {
                self.phase = Phase::Live;
                Some(frame_event(&self.ready))
            }
            Phase::Live => {
                let (event, end) = self.live_event().await;
                if let Some(reason) = end {
                    self.gauge.closed(reason);
                    self.phase = Phase::Ended;
                }
                event
            }
            Phase::Ended => None,
        }
    }

    /// The next event, and the reason the stream ends after it, if it does.
    async fn live_event(&mut self) -> (Option<Event>, Option<CloseReason>) {
        if let Some(reason) = self.kick.reason() {
            return farewell(reason);
        }
        tokio::select! {
            reason = self.kick.kicked() => farewell(reason),
            frame = self.registration.frames().recv() => (Some(counted_event(&frame)), None),
            () = tokio::time::sleep_until(self.expires_at) => {
                let expired = ServerFrame::error(
                    ErrorCode::TokenExpired,
                    "the access token expired; reconnect with a fresh one",
                );
                (Some(frame_event(&expired)), Some(CloseReason::TokenExpired))
            }
        }
    }
}

/// A revoked session hears about it before the stream ends; other reasons end it silently.
fn farewell(reason: CloseReason) -> (Option<Event>, Option<CloseReason>) {
    let event =
        (reason == CloseReason::SessionRevoked).then(|| frame_event(&ServerFrame::SessionRevoked));
    (event, Some(reason))
}

fn frame_event(frame: &ServerFrame) -> Event {
    counted_event(frame.to_json().as_bytes())
}

fn counted_event(json: &[u8]) -> Event {
    RT_FRAMES
        .with_label_values(&["out", frame_type(json)])
        .inc();
    sse_event(json)
}
