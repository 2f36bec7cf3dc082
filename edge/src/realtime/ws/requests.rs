//! What a WebSocket client asks of the mesh (`send`, `read`, `sync`, `typing`), run inside the
//! connection's task while it keeps reading and forwarding: sends one at a time in arrival
//! order (so a client's messages keep their order), the others concurrently; both bounded, and
//! the connection stops reading while they are full.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use mesh_contracts::Rpc;
use mesh_contracts::chat::{
    ConversationRef, DEFAULT_HISTORY_LIMIT, History, HistoryRequest, MarkRead, MarkReadRequest,
    SendMessage, ServerFrame, Typing,
};
use mesh_nats::{CallContext, RpcError};
use uuid::Uuid;

use crate::SharedState;
use crate::limits::{OverLimit, chat_page_limit};
use crate::problem::ApiError;
use crate::send::{Arrived, SendOrder, SendVia, send_in_order};

/// Sends waiting behind the one being published.
const MAX_QUEUED_SENDS: usize = 32;
/// Other requests in flight at once.
const MAX_CONCURRENT: usize = 8;

/// A request in flight; resolves to the frame to answer with, if any.
type Reply = Pin<Box<dyn Future<Output = Option<ServerFrame>> + Send>>;

pub struct Requests {
    state: SharedState,
    user: Uuid,
    /// Who is calling, for RPCs; each call gets its own request id.
    ctx: CallContext,
    queued_sends: VecDeque<Arrived>,
    sending: Option<Reply>,
    /// Keeps this connection's sends in order across a transient refusal.
    order: std::sync::Arc<SendOrder>,
    others: FuturesUnordered<Reply>,
}

impl Requests {
    pub fn new(state: SharedState, user: Uuid, session: Uuid, ctx: CallContext) -> Self {
        Self {
            state,
            user,
            ctx: ctx.with_user(user, session),
            queued_sends: VecDeque::new(),
            sending: None,
            order: std::sync::Arc::default(),
            others: FuturesUnordered::new(),
        }
    }

    /// Later calls are made on behalf of `session`.
    pub fn set_session(&mut self, session: Uuid) {
        self.ctx.session_id = Some(session);
    }

    /// False while the client has as many requests pending as it may.
    pub fn has_room(&self) -> bool {
        self.queued_sends.len() < MAX_QUEUED_SENDS && self.others.len() < MAX_CONCURRENT
    }

    /// Sends a message; answered with an `ack`. However long it waits behind the sends read
    /// before it, its admission hold counts from now.
    pub fn send(&mut self, message: SendMessage) {
        let arrived = Arrived::now(message);
        if self.sending.is_none() {
            self.sending = Some(self.publish(arrived));
        } else {
            self.queued_sends.push_back(arrived);
        }
    }

    /// Marks a conversation read; answered only on failure.
    pub fn mark_read(&mut self, conversation_id: String, seq: i64) {
        let request = MarkReadRequest {
            conversation_id,
            seq,
        };
        self.call::<MarkRead>(request, |_| None);
    }

    /// Asks for the messages after `after_seq`; answered with a `sync` frame.
    pub fn sync(
        &mut self,
        conversation_id: String,
        after_seq: i64,
        limit: Option<u32>,
    ) -> Result<(), OverLimit> {
        let limit = chat_page_limit(limit)?;
        let request = HistoryRequest {
            conversation_id: conversation_id.clone(),
            after_seq: Some(after_seq),
            before_seq: None,
            limit: Some(limit.unwrap_or(DEFAULT_HISTORY_LIMIT)),
        };
        self.call::<History>(request, move |page| {
            Some(ServerFrame::Sync {
                conversation_id,
                messages: page.items,
                has_more: page.has_more,
            })
        });
        Ok(())
    }

    /// Tells the conversation the caller is typing; answered only on failure.
    pub fn typing(&mut self, conversation_id: String) {
        self.call::<Typing>(ConversationRef { conversation_id }, |_| None);
    }

    /// Waits for the next request to finish; its answer, if it has one.
    pub async fn next_reply(&mut self) -> Option<ServerFrame> {
        std::future::poll_fn(|cx| self.poll_reply(cx)).await
    }

    fn poll_reply(&mut self, cx: &mut Context<'_>) -> Poll<Option<ServerFrame>> {
        if let Some(sending) = self.sending.as_mut()
            && let Poll::Ready(reply) = sending.as_mut().poll(cx)
        {
            self.sending = self.queued_sends.pop_front().map(|next| self.publish(next));
            return Poll::Ready(reply);
        }
        if !self.others.is_empty()
            && let Poll::Ready(Some(reply)) = self.others.poll_next_unpin(cx)
        {
            return Poll::Ready(reply);
        }
        Poll::Pending
    }

    fn publish(&self, arrived: Arrived) -> Reply {
        let (state, user, order) = (self.state.clone(), self.user, self.order.clone());
        Box::pin(async move {
            let client_id = arrived.message.client_id.clone();
            let ack = send_in_order(&state, user, arrived, SendVia::WebSocket, &order)
                .await
                .unwrap_or_else(|rejection| rejection.ack(client_id));
            Some(ServerFrame::Ack(ack))
        })
    }

    fn call<R: Rpc>(
        &mut self,
        request: R::Request,
        answer: impl FnOnce(R::Reply) -> Option<ServerFrame> + Send + 'static,
    ) {
        let state = self.state.clone();
        let mut ctx = self.ctx.clone();
        ctx.request_id = Uuid::now_v7().to_string();
        self.others.push(Box::pin(async move {
            match state.rpc.call::<R>(&ctx, &request).await {
                Ok(reply) => answer(reply),
                Err(err) => Some(failure(err)),
            }
        }));
    }
}

/// An RPC failure as an `error` frame, with the same code and text a REST client would get.
fn failure(err: RpcError) -> ServerFrame {
    let err = ApiError::from(err);
    ServerFrame::Error {
        code: err.code().to_owned(),
        message: err.detail().to_owned(),
    }
}
