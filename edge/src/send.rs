//! The one send path of chat messages, shared by `POST /v1/messages` and the WebSocket `send`
//! frame: check the message's shape, then publish it to its conversation's ingest partition.
//!
//! Only what needs no state is checked here (ids, sizes, the caller being a party of a private
//! conversation); friendships, blocks, memberships and mutes are the chat worker's to decide.

use std::sync::Arc;

use bytes::Bytes;
use mesh_contracts::ErrorCode;
use mesh_contracts::chat::{
    ConversationId, FindMessage, FindMessageRequest, FoundMessage, Inbound, SendAck, SendMessage,
    ServerFrame, check_body, check_client_id,
};
use mesh_nats::{Bus, CallContext, RpcClient};
use mesh_observability::metrics::{CHAT_ACCEPTED, CHAT_DUPLICATES};
use tokio::time::Instant;
use uuid::Uuid;

use crate::EdgeState;
use crate::admission;
use crate::clock::unix_millis;
use crate::ingest_publisher::{Handed, Keeper};
use crate::rejection::{Rejection, count_rejection};
use crate::send_order::SendOrder;

/// Which door a message came through (the `transport` label of the accepted counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendVia {
    WebSocket,
    Rest,
}

impl SendVia {
    fn label(self) -> &'static str {
        match self {
            SendVia::WebSocket => "ws",
            SendVia::Rest => "rest",
        }
    }
}

/// A message and when the edge read it: the admission hold counts from that moment.
pub struct Arrived {
    pub message: SendMessage,
    pub at: Instant,
}

impl Arrived {
    /// A message read just now.
    pub fn now(message: SendMessage) -> Self {
        Self {
            message,
            at: Instant::now(),
        }
    }
}

/// Checks the message from `sender` and publishes it; answers the `accepted` ack once
/// JetStream stored it (a resend JetStream recognises as a duplicate is accepted again).
pub async fn send(
    state: &EdgeState,
    sender: Uuid,
    arrived: Arrived,
    via: SendVia,
) -> Result<SendAck, Rejection> {
    admit(state, sender, arrived, via, None)
        .await?
        .accepted(state)
        .await
}

/// Checks the message from `sender`, waits for its partition to admit it, and hands it to the
/// partition's publisher, behind what was handed before; `order`, for a connection whose
/// sends keep their order, may hold it back (see [`SendOrder`]). Answers the message on its
/// way: [`Accepting::accepted`] waits for JetStream.
pub async fn admit(
    state: &EdgeState,
    sender: Uuid,
    arrived: Arrived,
    via: SendVia,
    order: Option<&Arc<SendOrder>>,
) -> Result<Accepting, Rejection> {
    let Arrived { message, at } = arrived;
    if !state.limits.chat_send(&sender.to_string()).taken.allowed {
        return Err(Rejection::new(
            ErrorCode::RateLimited,
            "too many messages; slow down",
            None,
        ));
    }
    let conversation = check(sender, &message).inspect_err(count_rejection)?;
    let partition = conversation.partition(state.chat_partitions);
    if !state
        .admission
        .admitted_by(partition, at + admission::HOLD)
        .await
    {
        let rejection = Rejection {
            retry_after: Some(admission::RETRY_AFTER),
            ..Rejection::new(
                ErrorCode::Overloaded,
                "the conversation's messages are not stored as fast as they come; send again after a moment",
                Some(conversation.to_string()),
            )
        };
        count_rejection(&rejection);
        return Err(rejection);
    }
    let inbound = inbound(sender, conversation, message, unix_millis());
    let payload = Bytes::from(serde_json::to_vec(&inbound).expect("inbound messages serialize"));
    let keeper = order.map(|order| Keeper {
        order: order.clone(),
        client_id: inbound.client_id.clone(),
    });
    let msg_id = inbound.msg_id();
    let handed = state
        .ingest
        .hand(
            &state.bus,
            partition,
            state
                .bus
                .chat_line(partition, msg_id.clone(), payload.clone()),
            keeper,
        )
        .inspect_err(count_rejection)?;
    Ok(Accepting {
        handed,
        via,
        resend: Resend {
            sender,
            partition,
            msg_id,
            payload,
            find: FindMessageRequest {
                conversation_id: inbound.conversation_id,
                client_id: inbound.client_id,
            },
        },
    })
}

/// A message handed to its partition's publisher, on its way to JetStream.
pub struct Accepting {
    handed: Handed,
    via: SendVia,
    /// What answering it as a resend needs.
    resend: Resend,
}

impl Accepting {
    /// Waits for JetStream's ack: the `accepted` ack, or why it was not accepted.
    pub async fn accepted(self, state: &EdgeState) -> Result<SendAck, Rejection> {
        let Accepting {
            handed,
            via,
            resend,
        } = self;
        let (client_id, conversation_id) = (
            resend.find.client_id.clone(),
            resend.find.conversation_id.clone(),
        );
        match handed.published().await {
            Ok(duplicate) => {
                CHAT_ACCEPTED.with_label_values(&[via.label()]).inc();
                if duplicate {
                    // JetStream dropped the resend: answer it from the store, or publish it
                    // again when the store does not have it (see `answer_resend`).
                    CHAT_DUPLICATES.with_label_values(&["jetstream"]).inc();
                    tokio::spawn(answer_resend(state.rpc.clone(), state.bus.clone(), resend));
                }
                Ok(SendAck::accepted(client_id, conversation_id))
            }
            Err(_) => {
                // The partition's publisher logged why, once for every message of the publish.
                let rejection = Rejection::new(
                    ErrorCode::ServiceUnavailable,
                    "the message could not be accepted; send it again",
                    Some(conversation_id),
                );
                count_rejection(&rejection);
                Err(rejection)
            }
        }
    }
}

/// A resend JetStream dropped as a duplicate of a message published earlier.
struct Resend {
    sender: Uuid,
    partition: u32,
    msg_id: String,
    payload: Bytes,
    find: FindMessageRequest,
}

/// Answers a resend JetStream dropped: the `stored` ack when the store has the message;
/// otherwise (not stored, or the store cannot say) the message is published again under a
/// fresh id, so JetStream's duplicate window never swallows a resend of a message that is not
/// stored. The copy is harmless: if the original is still queued ahead of it, the copy is
/// recognised as a resend and answered `stored`; if the original was refused, the copy is
/// refused again and its sender hears why.
async fn answer_resend(rpc: RpcClient, bus: Bus, resend: Resend) {
    let mut ctx = CallContext::new(Uuid::now_v7().to_string());
    ctx.user_id = Some(resend.sender);
    match rpc.call::<FindMessage>(&ctx, &resend.find).await {
        Ok(FoundMessage {
            message: Some(message),
        }) => {
            let frame = ServerFrame::Ack(SendAck::stored(&message)).to_json();
            bus.push(resend.sender, Bytes::from(frame)).await;
            return;
        }
        Ok(_) => {}
        Err(err) => tracing::debug!(error = %err, "cannot look up a resent message"),
    }
    let fresh = format!("{}:{}", resend.msg_id, Uuid::now_v7());
    if let Err(err) = bus
        .publish_chat(resend.partition, &fresh, resend.payload)
        .await
    {
        // The client resends until it hears `stored`; the next resend tries again.
        tracing::warn!(error = %err, "cannot publish a resend again");
    }
}

/// The shape rules of a message, in the order a client would fix them; answers the
/// conversation the message goes to.
pub fn check(sender: Uuid, message: &SendMessage) -> Result<ConversationId, Rejection> {
    let refuse = |code, detail, conversation: Option<ConversationId>| {
        Rejection::new(code, detail, conversation.map(|c| c.to_string()))
    };
    if let Err(violation) = check_client_id(&message.client_id) {
        return Err(refuse(violation.code, violation.detail, None));
    }
    let conversation = match (&message.conversation_id, message.to) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(refuse(
                ErrorCode::ValidationFailed,
                "give exactly one of conversation_id and to",
                None,
            ));
        }
        (None, Some(to)) if to == sender => {
            return Err(refuse(
                ErrorCode::SelfTarget,
                "a message cannot be sent to oneself",
                None,
            ));
        }
        (None, Some(to)) => ConversationId::private(sender, to),
        (Some(raw), None) => ConversationId::parse(raw).ok_or_else(|| {
            refuse(
                ErrorCode::UnknownConversation,
                "conversation_id is not a conversation",
                None,
            )
        })?,
    };
    if matches!(conversation, ConversationId::Private(..)) && !conversation.is_party(sender) {
        return Err(refuse(
            ErrorCode::NotMember,
            "the caller is not in this conversation",
            Some(conversation),
        ));
    }
    if let Err(violation) = check_body(&message.body) {
        return Err(refuse(violation.code, violation.detail, Some(conversation)));
    }
    Ok(conversation)
}

fn inbound(
    sender: Uuid,
    conversation: ConversationId,
    message: SendMessage,
    accepted_at_ms: i64,
) -> Inbound {
    Inbound {
        conversation_id: conversation.to_string(),
        sender_id: sender,
        client_id: message.client_id,
        kind: message.kind,
        body: message.body,
        accepted_at_ms,
    }
}

#[cfg(test)]
mod tests {
    use mesh_contracts::chat::MessageKind;

    use super::*;
    use mesh_contracts::chat::MAX_BODY_BYTES;

    fn to(user: Uuid, body: &str) -> SendMessage {
        SendMessage {
            client_id: "c-1".into(),
            conversation_id: None,
            to: Some(user),
            kind: MessageKind::Text,
            body: body.into(),
        }
    }

    fn code(sender: Uuid, message: &SendMessage) -> Option<ErrorCode> {
        check(sender, message).err().map(|r| r.code)
    }

    #[test]
    fn a_message_to_a_user_goes_to_their_private_conversation() {
        let (me, friend) = (Uuid::now_v7(), Uuid::now_v7());
        let conversation = check(me, &to(friend, "hi")).unwrap();
        assert_eq!(conversation, ConversationId::private(me, friend));
        let group = ConversationId::Group(Uuid::now_v7());
        let mut message = to(friend, "hi");
        message.to = None;
        message.conversation_id = Some(group.to_string());
        assert_eq!(check(me, &message).unwrap(), group);
    }

    #[test]
    fn client_ids_are_short_and_plain() {
        let (me, friend) = (Uuid::now_v7(), Uuid::now_v7());
        for good in ["a", "A-z_0.9:x", &"x".repeat(64)] {
            let mut message = to(friend, "hi");
            message.client_id = good.into();
            assert_eq!(code(me, &message), None, "{good}");
        }
        for bad in ["", "with space", "é", "a/b", &"x".repeat(65)] {
            let mut message = to(friend, "hi");
            message.client_id = bad.into();
            assert_eq!(
                code(me, &message),
                Some(ErrorCode::ValidationFailed),
                "{bad}"
            );
        }
    }

    #[test]
    fn exactly_one_target() {
        let (me, friend) = (Uuid::now_v7(), Uuid::now_v7());
        let mut both = to(friend, "hi");
        both.conversation_id = Some(ConversationId::private(me, friend).to_string());
        assert_eq!(code(me, &both), Some(ErrorCode::ValidationFailed));
        let mut neither = to(friend, "hi");
        neither.to = None;
        assert_eq!(code(me, &neither), Some(ErrorCode::ValidationFailed));
    }

    #[test]
    fn targets_must_be_reachable() {
        let (me, a, b) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(code(me, &to(me, "hi")), Some(ErrorCode::SelfTarget));
        let mut garbage = to(a, "hi");
        garbage.to = None;
        garbage.conversation_id = Some("p:nope".into());
        assert_eq!(code(me, &garbage), Some(ErrorCode::UnknownConversation));
        let mut others = to(a, "hi");
        others.to = None;
        others.conversation_id = Some(ConversationId::private(a, b).to_string());
        let refused = check(me, &others).unwrap_err();
        assert_eq!(refused.code, ErrorCode::NotMember);
        assert_eq!(
            refused.conversation_id,
            Some(ConversationId::private(a, b).to_string())
        );
    }

    #[test]
    fn bodies_are_not_empty_and_at_most_16_kib() {
        let (me, friend) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(code(me, &to(friend, "")), Some(ErrorCode::ValidationFailed));
        let full = "x".repeat(MAX_BODY_BYTES);
        assert_eq!(code(me, &to(friend, &full)), None);
        let over = "é".repeat(MAX_BODY_BYTES / 2 + 1);
        assert_eq!(
            code(me, &to(friend, &over)),
            Some(ErrorCode::MessageTooLarge)
        );
    }

    #[test]
    fn the_inbound_message_names_sender_and_canonical_conversation() {
        let (me, friend) = (Uuid::now_v7(), Uuid::now_v7());
        let conversation = ConversationId::private(me, friend);
        let inbound = inbound(me, conversation, to(friend, "hi"), 42);
        assert_eq!(inbound.conversation_id, conversation.to_string());
        assert_eq!(inbound.sender_id, me);
        assert_eq!(inbound.msg_id(), format!("{me}:c-1"));
        assert_eq!(inbound.accepted_at_ms, 42);
        let rejected = check(me, &to(me, "hi")).unwrap_err().ack("c-1".into());
        assert_eq!(rejected.reason.as_deref(), Some("self_target"));
    }
}
