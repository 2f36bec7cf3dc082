//! One ingest batch on its way through the partition owner's steps, as plain data: each
//! message is ready to store, refused with a reason the sender is told, or set aside as
//! unreadable. The steps that ask others (social, Postgres, NATS) live in `steps`; what they
//! decide is applied here, so every transition can be tested without them.

use std::collections::{HashMap, HashSet};

use mesh_contracts::ErrorCode;
use mesh_contracts::chat::{ConversationId, Inbound, SendAck};
use uuid::Uuid;

use crate::domain::inbound::{self, Refused, Valid};
use crate::store::messages::NewMessage;

/// Who posts where: the unit social is asked about.
pub type Poster = (ConversationId, Uuid);

/// One message of a batch.
#[derive(Debug)]
enum Item {
    Ready(Valid),
    Refused {
        inbound: Box<Inbound>,
        code: ErrorCode,
    },
    /// Not a chat message at all: set aside as a dead letter, nobody to answer.
    Unreadable,
}

/// The messages of one batch, in stream order.
#[derive(Debug)]
pub struct Batch {
    items: Vec<Item>,
}

impl Batch {
    /// Checks every payload's shape (the edge's rules, again: NATS clients can publish
    /// without it).
    pub fn read<'a>(payloads: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let items = payloads
            .into_iter()
            .map(|payload| match inbound::check(payload) {
                Ok(valid) => Item::Ready(valid),
                Err(Refused::Message { code, inbound }) => Item::Refused { inbound, code },
                Err(Refused::Unreadable) => Item::Unreadable,
            })
            .collect();
        Self { items }
    }

    /// Positions of the unreadable payloads.
    pub fn unreadable(&self) -> impl Iterator<Item = usize> + '_ {
        self.items
            .iter()
            .enumerate()
            .filter(|(_, item)| matches!(item, Item::Unreadable))
            .map(|(index, _)| index)
    }

    /// Each (conversation, sender) of the messages still ready, once.
    pub fn posters(&self) -> Vec<Poster> {
        let mut seen = HashSet::new();
        self.ready()
            .map(|(_, valid)| (valid.conversation, valid.inbound.sender_id))
            .filter(|poster| seen.insert(*poster))
            .collect()
    }

    /// Refuses every ready message whose poster social refused (`Err(code)`); a poster without
    /// a verdict keeps its messages ready.
    pub fn apply(&mut self, verdicts: &HashMap<Poster, Result<(), ErrorCode>>) {
        for item in &mut self.items {
            let Item::Ready(valid) = item else { continue };
            if let Some(Err(code)) = verdicts.get(&(valid.conversation, valid.inbound.sender_id)) {
                *item = Item::Refused {
                    inbound: Box::new(valid.inbound.clone()),
                    code: *code,
                };
            }
        }
    }

    /// The messages to store, in order, with their positions in the batch.
    pub fn to_store(&self) -> (Vec<NewMessage>, Vec<usize>) {
        self.ready()
            .map(|(index, valid)| {
                let message = NewMessage {
                    conversation: valid.conversation,
                    sender: valid.inbound.sender_id,
                    client_id: valid.inbound.client_id.clone(),
                    kind: valid.inbound.kind,
                    body: valid.inbound.body.clone(),
                };
                (message, index)
            })
            .unzip()
    }

    /// The ready message at `index`, if it is one.
    pub fn valid(&self, index: usize) -> Option<&Valid> {
        match self.items.get(index) {
            Some(Item::Ready(valid)) => Some(valid),
            _ => None,
        }
    }

    /// Refuses the message at `index` (one the store could not take).
    pub fn refuse(&mut self, index: usize, code: ErrorCode) {
        if let Some(item) = self.items.get_mut(index)
            && let Item::Ready(valid) = item
        {
            *item = Item::Refused {
                inbound: Box::new(valid.inbound.clone()),
                code,
            };
        }
    }

    /// Each refused message: its position, its sender, the reason, and what the sender is told.
    pub fn refusals(&self) -> impl Iterator<Item = (usize, Uuid, ErrorCode, SendAck)> + '_ {
        self.items
            .iter()
            .enumerate()
            .filter_map(|(index, item)| match item {
                Item::Refused { inbound, code } => Some((
                    index,
                    inbound.sender_id,
                    *code,
                    SendAck::rejected(
                        inbound.client_id.clone(),
                        Some(inbound.conversation_id.clone()),
                        *code,
                    ),
                )),
                _ => None,
            })
    }

    fn ready(&self) -> impl Iterator<Item = (usize, &Valid)> {
        self.items
            .iter()
            .enumerate()
            .filter_map(|(index, item)| match item {
                Item::Ready(valid) => Some((index, valid)),
                _ => None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_contracts::chat::MessageKind;

    fn payload(conversation: ConversationId, sender: Uuid, client_id: &str) -> Vec<u8> {
        serde_json::to_vec(&Inbound {
            conversation_id: conversation.to_string(),
            sender_id: sender,
            client_id: client_id.into(),
            kind: MessageKind::Text,
            body: "hello".into(),
            accepted_at_ms: 0,
        })
        .unwrap()
    }

    fn batch(payloads: &[Vec<u8>]) -> Batch {
        Batch::read(payloads.iter().map(Vec::as_slice))
    }

    #[test]
    fn a_batch_is_read_in_order_and_each_poster_is_asked_once() {
        let (ann, bob, cy) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let ab = ConversationId::private(ann, bob);
        let ac = ConversationId::private(ann, cy);
        let batch = batch(&[
            payload(ab, ann, "1"),
            b"not json".to_vec(),
            payload(ab, ann, "2"),
            payload(ab, bob, "3"),
            payload(ac, bob, "4"),
        ]);
        assert_eq!(batch.unreadable().collect::<Vec<_>>(), vec![1]);
        assert_eq!(batch.posters(), vec![(ab, ann), (ab, bob)]);
        let (messages, positions) = batch.to_store();
        assert_eq!(positions, vec![0, 2, 3]);
        let ids: Vec<_> = messages.iter().map(|m| m.client_id.as_str()).collect();
        assert_eq!(ids, ["1", "2", "3"]);
        let refused: Vec<_> = batch.refusals().collect();
        assert_eq!(
            refused.len(),
            1,
            "bob is no party of ann and cy's conversation"
        );
        assert_eq!((refused[0].0, refused[0].1), (4, bob));
    }

    #[test]
    fn refused_posters_and_unstorable_messages_are_answered_and_not_stored() {
        let (ann, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let ab = ConversationId::private(ann, bob);
        let mut batch = batch(&[
            payload(ab, ann, "1"),
            payload(ab, bob, "2"),
            payload(ab, ann, "3"),
        ]);
        let verdicts = HashMap::from([((ab, ann), Err(ErrorCode::Blocked)), ((ab, bob), Ok(()))]);
        batch.apply(&verdicts);
        let (messages, positions) = batch.to_store();
        assert_eq!(positions, vec![1]);
        assert_eq!(messages[0].sender, bob);
        batch.refuse(1, ErrorCode::Unstorable);
        assert!(batch.to_store().0.is_empty());
        assert!(batch.valid(1).is_none());
        let positions: Vec<_> = batch.refusals().map(|(at, ..)| at).collect();
        assert_eq!(positions, [0, 1, 2]);
        let codes: Vec<_> = batch.refusals().map(|(_, _, code, _)| code).collect();
        assert_eq!(
            codes,
            [
                ErrorCode::Blocked,
                ErrorCode::Unstorable,
                ErrorCode::Blocked
            ]
        );
    }
}
