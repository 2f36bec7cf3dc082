//! Frames as the realtime connections see them: JSON text whose `type` names the frame, read
//! without decoding the rest, and their SSE form.

use poem::web::sse::Event;

/// Every server frame type (`ServerFrame`'s tags); anything else is counted as `other`.
const SERVER_TYPES: &[&str] = &[
    "ready",
    "ack",
    "message",
    "read",
    "typing",
    "presence",
    "recall",
    "sync",
    "notification",
    "error",
    "pong",
    "session_revoked",
];

/// The `type` of a server frame, as a bounded label. Frames built by serde start with their
/// tag (`{"type":"...`), so that prefix is read directly; anything else is parsed.
pub fn frame_type(json: &[u8]) -> &'static str {
    let named = json
        .strip_prefix(br#"{"type":""#)
        .and_then(|rest| rest.iter().position(|&b| b == b'"').map(|end| &rest[..end]));
    let parsed;
    let name = match named {
        Some(name) => name,
        None => {
            parsed = serde_json::from_slice::<serde_json::Value>(json).ok();
            match parsed.as_ref().and_then(|v| v["type"].as_str()) {
                Some(name) => name.as_bytes(),
                None => return "other",
            }
        }
    };
    SERVER_TYPES
        .iter()
        .find(|known| known.as_bytes() == name)
        .copied()
        .unwrap_or("other")
}

/// A frame as a server-sent event: `data: <frame json>` and no `event:` line, for every frame
/// alike, so a browser's `EventSource.onmessage` sees them all (`ready` included) and reads the
/// kind from the frame's `type`, exactly as over the WebSocket.
pub fn sse_event(json: &[u8]) -> Event {
    Event::message(String::from_utf8_lossy(json))
}

#[cfg(test)]
mod tests {
    use mesh_contracts::ErrorCode;
    use mesh_contracts::chat::ServerFrame;

    use super::*;

    #[test]
    fn types_are_read_from_the_tag() {
        let pong = ServerFrame::Pong { nonce: None }.to_json();
        assert_eq!(frame_type(pong.as_bytes()), "pong");
        let revoked = ServerFrame::SessionRevoked.to_json();
        assert_eq!(frame_type(revoked.as_bytes()), "session_revoked");
        assert_eq!(frame_type(br#"{ "data": 1, "type": "typing" }"#), "typing");
        assert_eq!(frame_type(br#"{"type":"made_up"}"#), "other");
        assert_eq!(frame_type(b"not json"), "other");
        assert_eq!(frame_type(br#"{"type":"ack"#), "other");
    }

    #[test]
    fn sse_events_are_unnamed_and_carry_the_json() {
        for frame in [
            ServerFrame::error(ErrorCode::TokenExpired, "refresh").to_json(),
            ServerFrame::SessionRevoked.to_json(),
            ServerFrame::Ready {
                user_id: uuid::Uuid::nil(),
                session_id: uuid::Uuid::nil(),
            }
            .to_json(),
        ] {
            assert_eq!(
                sse_event(frame.as_bytes()).to_string(),
                format!("data: {frame}\n\n")
            );
        }
    }
}
