//! Checks an ingest message again on the worker: NATS clients can publish without the edge.

use mesh_contracts::ErrorCode;
use mesh_contracts::chat::{ConversationId, Inbound, check_body, check_client_id};

/// A message whose shape is valid; who may post it is decided later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Valid {
    pub conversation: ConversationId,
    pub inbound: Inbound,
}

/// Parses and checks an ingest payload. `Err` carries the reason and, when known, the fields
/// needed to tell the sender.
pub fn check(payload: &[u8]) -> Result<Valid, Refused> {
    let inbound: Inbound = serde_json::from_slice(payload).map_err(|_| Refused::Unreadable)?;
    let refuse = |code| Refused::Message {
        code,
        inbound: Box::new(inbound.clone()),
    };
    if let Err(violation) = check_client_id(&inbound.client_id).and(check_body(&inbound.body)) {
        return Err(refuse(violation.code));
    }
    let Some(conversation) = ConversationId::parse(&inbound.conversation_id) else {
        return Err(refuse(ErrorCode::UnknownConversation));
    };
    if matches!(conversation, ConversationId::Private(..))
        && !conversation.is_party(inbound.sender_id)
    {
        return Err(refuse(ErrorCode::NotMember));
    }
    Ok(Valid {
        conversation,
        inbound,
    })
}

/// Why an ingest payload is dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Not an `Inbound` at all: nobody to tell.
    Unreadable,
    /// A message the sender is told about.
    Message {
        code: ErrorCode,
        inbound: Box<Inbound>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_contracts::chat::{MAX_BODY_BYTES, MAX_CLIENT_ID_LEN, MessageKind};
    use uuid::Uuid;

    fn inbound(conversation: String, sender: Uuid) -> Inbound {
        Inbound {
            conversation_id: conversation,
            sender_id: sender,
            client_id: "c-1".into(),
            kind: MessageKind::Text,
            body: "hello".into(),
            accepted_at_ms: 0,
        }
    }

    fn code(result: Result<Valid, Refused>) -> Option<ErrorCode> {
        match result {
            Ok(_) => None,
            Err(Refused::Message { code, .. }) => Some(code),
            Err(Refused::Unreadable) => Some(ErrorCode::BadRequest),
        }
    }

    #[test]
    fn valid_and_refused_messages() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let private = ConversationId::private(a, b).to_string();
        let ok = inbound(private.clone(), a);
        assert_eq!(code(check(&serde_json::to_vec(&ok).unwrap())), None);

        let outsider = inbound(private.clone(), Uuid::now_v7());
        assert_eq!(
            code(check(&serde_json::to_vec(&outsider).unwrap())),
            Some(ErrorCode::NotMember)
        );
        let mut big = ok.clone();
        big.body = "x".repeat(MAX_BODY_BYTES + 1);
        assert_eq!(
            code(check(&serde_json::to_vec(&big).unwrap())),
            Some(ErrorCode::MessageTooLarge)
        );
        let mut unknown = ok.clone();
        unknown.conversation_id = "x:1".into();
        assert_eq!(
            code(check(&serde_json::to_vec(&unknown).unwrap())),
            Some(ErrorCode::UnknownConversation)
        );
        for bad_id in ["", "has space", &"x".repeat(MAX_CLIENT_ID_LEN + 1)] {
            let mut m = ok.clone();
            m.client_id = bad_id.to_owned();
            assert_eq!(
                code(check(&serde_json::to_vec(&m).unwrap())),
                Some(ErrorCode::ValidationFailed),
                "{bad_id:?}"
            );
        }
        let mut nul = ok.clone();
        nul.body = "nul\u{0}inside".into();
        assert_eq!(
            code(check(&serde_json::to_vec(&nul).unwrap())),
            Some(ErrorCode::InvalidText)
        );
        assert_eq!(code(check(b"not json")), Some(ErrorCode::BadRequest));
    }
}
