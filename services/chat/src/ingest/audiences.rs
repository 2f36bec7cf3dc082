//! Who receives each conversation's messages in one store round: a group's audience comes
//! from the roster its senders were authorized by, so a round asks social for a group's
//! roster once (authorizing), not again for its inbox rows or its pushes.

use std::collections::HashMap;
use std::sync::Arc;

use mesh_contracts::chat::ConversationId;
use uuid::Uuid;

use crate::store::messages::NewMessage;

/// The audiences of the groups a round's authorization asked social about.
#[derive(Default)]
pub struct Audiences(HashMap<ConversationId, Arc<[Uuid]>>);

impl Audiences {
    pub fn known(audiences: HashMap<ConversationId, Arc<[Uuid]>>) -> Self {
        Self(audiences)
    }

    /// The audience of `conversation`: a private conversation's two users, or a group's
    /// members as the round's authorization learnt them. `None` for a group it did not ask
    /// about (never one with a message to store: every such group's senders were authorized).
    pub fn of(&self, conversation: ConversationId) -> Option<Arc<[Uuid]>> {
        match conversation {
            ConversationId::Private(a, b) => Some(Arc::from([a, b])),
            ConversationId::Group(_) => self.0.get(&conversation).cloned(),
        }
    }

    /// The audience of each group `messages` are posted to.
    pub fn of_groups(&self, messages: &[NewMessage]) -> HashMap<ConversationId, Arc<[Uuid]>> {
        messages
            .iter()
            .filter(|message| matches!(message.conversation, ConversationId::Group(_)))
            .filter_map(|message| Some((message.conversation, self.of(message.conversation)?)))
            .collect()
    }
}
