//! Why the edge refused a chat message: the error code, the text, the conversation and the
//! wait a client is asked for, as a WebSocket `rejected` ack or a REST problem.

use std::time::Duration;

use mesh_contracts::ErrorCode;
use mesh_contracts::chat::SendAck;
use mesh_observability::metrics::CHAT_REJECTED;

use crate::problem::ApiError;

/// Why the edge refused a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: ErrorCode,
    pub detail: &'static str,
    /// The conversation, when the message named one the edge could read.
    pub conversation_id: Option<String>,
    /// How long the client should wait before sending again, when the edge knows.
    pub retry_after: Option<Duration>,
}

impl Rejection {
    pub fn new(code: ErrorCode, detail: &'static str, conversation_id: Option<String>) -> Self {
        Self {
            code,
            detail,
            conversation_id,
            retry_after: None,
        }
    }

    /// The `rejected` ack a WebSocket client gets for `client_id`.
    pub fn ack(self, client_id: String) -> SendAck {
        let mut ack = SendAck::rejected(client_id, self.conversation_id, self.code);
        ack.retry_after_ms = self
            .retry_after
            .and_then(|wait| u64::try_from(wait.as_millis()).ok());
        ack
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        ApiError::new(rejection.code, rejection.detail)
    }
}

/// Counts a refusal by its code.
pub fn count_rejection(rejection: &Rejection) {
    CHAT_REJECTED
        .with_label_values(&[rejection.code.as_str()])
        .inc();
}
