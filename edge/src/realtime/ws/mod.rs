//! `GET /v1/ws`: the WebSocket. The handshake checks the `Origin` allowlist and the connection
//! caps and, when the request carries a token (`Authorization: Bearer` or
//! `Sec-WebSocket-Protocol: bearer, <token>`), authenticates before upgrading; otherwise the
//! first frame must be `auth` (any other is answered once, then the socket is closed 4401).

mod connection;
mod flood;
mod requests;
mod session;
mod timers;
/// Kept per user in the hub.
pub(super) mod typing;

use mesh_contracts::ErrorCode;
use poem::http::header::SEC_WEBSOCKET_PROTOCOL;
use poem::web::Data;
use poem::web::websocket::{WebSocket, WebSocketConfig};
use poem::{IntoResponse, Request, Response, handler};

use crate::SharedState;
use crate::caller::{authenticate, request_context};
use crate::config::WsConfig;
use crate::handshake::{BEARER_PROTOCOL, bearer_token, request_origin_allowed, subprotocol_token};
use crate::problem::ApiError;

/// Bytes read from the socket at a time. The buffer is allocated for every connection and
/// most frames are a few hundred bytes, so it is kept far below tungstenite's 128 KiB default
/// (512 bytes: a burst of sends takes a few more reads, every idle user 1.5 KiB less than at
/// 2 KiB); a larger frame (up to `max_frame_bytes`) grows it as it is read.
const READ_BUFFER_BYTES: usize = 512;
/// Queued frames are written out once this much is waiting, or at the session's flush: a
/// burst of pushes costs one write, not one per frame. The buffer grows only as frames are
/// queued, so an idle connection's stays as small as the frames it got.
const WRITE_BUFFER_BYTES: usize = 8 * 1024;

#[handler]
pub async fn websocket(
    req: &Request,
    socket: WebSocket,
    Data(state): Data<&SharedState>,
) -> Response {
    if !request_origin_allowed(req.headers(), &state.ws.allowed_origins) {
        return ApiError::new(ErrorCode::Forbidden, "this origin may not open a WebSocket")
            .into_response();
    }
    let offered = req
        .headers()
        .get(SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok());
    let token = bearer_token(req.headers()).or_else(|| offered.and_then(subprotocol_token));
    let verified = match token.map(|token| authenticate(state, token)).transpose() {
        Ok(verified) => verified,
        Err(refused) => return ApiError::from(refused).into_response(),
    };
    let ctx = request_context(req);
    // Every socket holds a place under its address's cap from before the upgrade (a 429), so
    // sockets waiting for their `auth` frame count too. Known callers are held to their user's
    // cap at the same time; callers that authenticate with their first frame, right after it
    // (close 4030).
    let slot = match &verified {
        Some(verified) => connection::take_slot(state, verified, &ctx),
        None => connection::take_address_slot(state, &ctx),
    };
    let slot = match slot {
        Ok(slot) => slot,
        Err(refused) => return refused.into_response(),
    };
    let state = state.clone();
    // One box for what only the opening needs: the upgrade's closure and the connection's
    // task each keep their arguments for the connection's whole life.
    let opening = Box::new(connection::Opening {
        verified,
        slot,
        ctx,
    });
    socket
        .protocols([BEARER_PROTOCOL])
        .config(socket_config(&state.ws))
        .on_upgrade(move |stream| connection::serve(state, stream, opening))
        .into_response()
}

/// Small buffers (an idle connection should cost a few KiB), frames written per burst, and the
/// client's frames limited to `max_frame_bytes` (a larger one fails the read: close 1009).
fn socket_config(ws: &WsConfig) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_message_size(Some(ws.max_frame_bytes))
        .max_frame_size(Some(ws.max_frame_bytes))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn sockets_use_small_buffers_and_the_frame_limit() {
        let ws = WsConfig {
            allowed_origins: vec![],
            heartbeat: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            send_queue: 256,
            max_frame_bytes: 32 * 1024,
        };
        let config = socket_config(&ws);
        assert_eq!(config.read_buffer_size, READ_BUFFER_BYTES);
        assert_eq!(config.write_buffer_size, WRITE_BUFFER_BYTES);
        assert!(config.max_write_buffer_size > config.write_buffer_size);
        assert_eq!(config.max_message_size, Some(32 * 1024));
        assert_eq!(config.max_frame_size, Some(32 * 1024));
    }
}
