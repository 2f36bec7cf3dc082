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

/// A frame as a server-sent event: `event: <frame type>` and `data: <frame json>`.
pub fn sse_event(json: &[u8]) -> Event {
    Event::message(String::from_utf8_lossy(json)).event_type(frame_type(json))
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
    fn sse_events_carry_type_and_json() {
        let frame = ServerFrame::error(ErrorCode::TokenExpired, "refresh").to_json();
        assert_eq!(
            sse_event(frame.as_bytes()).to_string(),
            format!("event: error\ndata: {frame}\n\n")
        );
        let revoked = ServerFrame::SessionRevoked.to_json();
        assert_eq!(
            sse_event(revoked.as_bytes()).to_string(),
            "event: session_revoked\ndata: {\"type\":\"session_revoked\"}\n\n"
        );
        // `message` is the SSE default type, so poem leaves the `event:` line out; an
        // EventSource dispatches it as `message` all the same.
        let message = br#"{"type":"message","seq":1}"#;
        assert_eq!(
            sse_event(message).to_string(),
            "data: {\"type\":\"message\",\"seq\":1}\n\n"
        );
    }
}
