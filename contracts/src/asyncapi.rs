//! The realtime protocol (WebSocket `/v1/ws` and SSE `/v1/events`) as an AsyncAPI 3 document,
//! generated from the frame types in [`crate::chat`], so the published description cannot drift
//! from what the server sends and accepts.

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

use crate::chat::{ClientFrame, ServerFrame};

/// Where the frame schemas live in the document (the JSON pointer the `$ref`s use).
pub const SCHEMAS_PATH: &str = "/components/schemas/";

/// One WebSocket close code the server uses, and why.
#[derive(Debug, Clone, Copy)]
pub struct CloseCode {
    pub code: u16,
    pub reason: &'static str,
    pub description: &'static str,
}

/// The AsyncAPI 3 document: two channels (the WebSocket, both ways; the SSE stream, server to
/// client), the `ClientFrame` and `ServerFrame` schemas and everything they use, and the close
/// codes of the WebSocket.
pub fn document(version: &str, close_codes: &[CloseCode]) -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = SCHEMAS_PATH.into())
        .into_generator();
    let client = generator.subschema_for::<ClientFrame>();
    let server = generator.subschema_for::<ServerFrame>();
    let schemas = generator.take_definitions(true);
    let closes: Vec<Value> = close_codes
        .iter()
        .map(|c| json!({"code": c.code, "reason": c.reason, "description": c.description}))
        .collect();
    let close_text: String = close_codes
        .iter()
        .map(|c| format!("\n- `{}` `{}`: {}", c.code, c.reason, c.description))
        .collect();
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "nats-mesh realtime protocol",
            "version": version,
            "description": "JSON frames, one object per WebSocket text frame or SSE event, \
                each with a `type` naming its kind. Authenticate with `Authorization: Bearer`, \
                the subprotocol `bearer, <token>`, a first `auth` frame (WebSocket: any \
                other frame first is answered `error` `unauthorized` and the socket closed \
                4401) or `?access_token=` (SSE). A client resends a message with the same \
                `client_id` until it sees `ack` `stored` (or `rejected`); resends are never \
                stored twice. \
                A sender's messages in a conversation are stored in the order they were \
                accepted; after `rejected` `service_unavailable` or `overloaded` (the \
                conversation's partition has too much accepted but not stored; wait \
                `retry_after_ms`), the connection refuses every later `send` \
                `service_unavailable` (with the same `retry_after_ms`) until that message is \
                sent again, so a client that resends its refused messages in their original \
                order keeps its order. A connection reads no further frames while 32 of its \
                sends wait their turn to be admitted (up to 32 more, admitted, may wait for \
                JetStream meanwhile; their acks come in send order). While the store \
                is behind, a send is answered (`accepted`, or `rejected` `overloaded`) within \
                about half a second of being read, its wait behind the connection's earlier \
                sends included; a client keeping at most 32 sends unanswered so hears about \
                every one promptly. \
                SSE events carry no `event:` name: every frame reaches `onmessage`."
        },
        "defaultContentType": "application/json",
        "channels": {
            "websocket": {
                "address": "/v1/ws",
                "title": "WebSocket",
                "messages": {
                    "clientFrame": {"$ref": "#/components/messages/clientFrame"},
                    "serverFrame": {"$ref": "#/components/messages/serverFrame"}
                },
                "x-close-codes": closes,
                "description": format!("Close codes the server uses:{close_text}")
            },
            "events": {
                "address": "/v1/events",
                "title": "Server-sent events",
                "messages": {
                    "serverFrame": {"$ref": "#/components/messages/serverFrame"}
                }
            }
        },
        "operations": {
            "sendFrame": {
                "action": "receive",
                "summary": "A frame a client sends over the WebSocket.",
                "channel": {"$ref": "#/channels/websocket"},
                "messages": [{"$ref": "#/channels/websocket/messages/clientFrame"}]
            },
            "receiveFrame": {
                "action": "send",
                "summary": "A frame the server pushes over the WebSocket.",
                "channel": {"$ref": "#/channels/websocket"},
                "messages": [{"$ref": "#/channels/websocket/messages/serverFrame"}]
            },
            "receiveEvent": {
                "action": "send",
                "summary": "A frame the server pushes as a server-sent event.",
                "channel": {"$ref": "#/channels/events"},
                "messages": [{"$ref": "#/channels/events/messages/serverFrame"}]
            }
        },
        "components": {
            "messages": {
                "clientFrame": {"name": "ClientFrame", "payload": client},
                "serverFrame": {"name": "ServerFrame", "payload": server}
            },
            "schemas": schemas
        }
    })
}

/// The schema of any frame type, as a standalone JSON Schema whose `$ref`s resolve inside
/// `document` (for validators).
pub fn frame_schema<T: JsonSchema>(document: &Value) -> Value {
    json!({
        "$ref": format!("#{SCHEMAS_PATH}{}", T::schema_name()),
        "components": document["components"]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_schema_is_in_the_document() {
        let doc = document("test", &[]);
        assert_eq!(doc["asyncapi"], "3.0.0");
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for name in [
            "ClientFrame",
            "ServerFrame",
            "ChatMessage",
            "SendAck",
            "Presence",
        ] {
            assert!(schemas.contains_key(name), "{name} missing");
        }
        // Every reference points inside the document.
        let text = doc.to_string();
        assert!(!text.contains("#/$defs/"), "a $ref escapes the document");
    }
}
