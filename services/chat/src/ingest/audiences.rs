//! Who receives each conversation's messages in one store round: a group's audience comes
//! from the roster its senders were authorized by, so a round asks social for a group's
//! roster once (authorizing), not again for its inbox rows or its pushes.

use std::collections::HashMap;
use std::sync::Arc;

use mesh_contracts::chat::ConversationId;
use uuid::Uuid;

use crate::state::State;
use crate::store::messages::NewMessage;

/// The audiences a round knows, by conversation; `None` for one that could not be resolved.
#[derive(Default)]
pub struct Audiences(HashMap<ConversationId, Option<Arc<[Uuid]>>>);

impl Audiences {
    /// Audiences already known (the groups' rosters the authorization asked for).
    pub fn known(audiences: HashMap<ConversationId, Arc<[Uuid]>>) -> Self {
        Self(
            audiences
                .into_iter()
                .map(|(conversation, audience)| (conversation, Some(audience)))
                .collect(),
        )
    }

    /// The audience of `conversation`, or `None` when it cannot be resolved (the message is
    /// stored anyway; members catch up by sync). A private conversation's is its two users; a
    /// group not known yet is asked of social (or of the projection when social does not
    /// answer) once per round.
    pub async fn of(&mut self, state: &State, conversation: ConversationId) -> Option<Arc<[Uuid]>> {
        if let ConversationId::Private(a, b) = conversation {
            return Some(Arc::from([a, b]));
        }
        if let Some(known) = self.0.get(&conversation) {
            return known.clone();
        }
        let audience = match state.membership().audience(conversation).await {
            Ok(audience) => Some(audience),
            Err(err) => {
                tracing::warn!(error = %err, "cannot resolve the audience; push skipped");
                None
            }
        };
        self.0.insert(conversation, audience.clone());
        audience
    }

    /// The audience of each group `messages` are posted to, where it can be resolved.
    pub async fn of_groups(
        &mut self,
        state: &State,
        messages: &[NewMessage],
    ) -> HashMap<ConversationId, Arc<[Uuid]>> {
        let mut groups = HashMap::new();
        for message in messages {
            let conversation = message.conversation;
            if matches!(conversation, ConversationId::Private(..))
                || groups.contains_key(&conversation)
            {
                continue;
            }
            if let Some(audience) = self.of(state, conversation).await {
                groups.insert(conversation, audience);
            }
        }
        groups
    }
}
