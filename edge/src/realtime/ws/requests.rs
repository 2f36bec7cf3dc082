//! What a WebSocket client asks of the mesh (`send`, `read`, `sync`, `typing`), run inside the
//! connection's task while it keeps reading and forwarding: sends are checked and admitted one
//! at a time in arrival order, then handed to their partition's publisher, where several wait
//! for JetStream at once and keep their order (so a burst of a client's messages shares
//! publishes, and their acks go out together, in send order); the others run concurrently.
//! All are bounded, and the connection stops reading while they are full.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::StreamExt;
use futures::stream::{FuturesOrdered, FuturesUnordered};
use mesh_contracts::Rpc;
use mesh_contracts::chat::{
    ConversationRef, DEFAULT_HISTORY_LIMIT, History, HistoryRequest, MarkRead, MarkReadRequest,
    SendAck, SendMessage, ServerFrame, Typing,
};
use mesh_nats::{CallContext, RpcError};
use uuid::Uuid;

use crate::SharedState;
use crate::limits::{OverLimit, chat_page_limit};
use crate::problem::ApiError;
use crate::rejection::{Rejection, count_rejection};
use crate::send::{Arrived, SendVia, admit};
use crate::send_order::SendOrder;

/// Sends read but not yet handed to the publisher.
const MAX_QUEUED_SENDS: usize = 32;
/// Sends handed to the publisher whose JetStream acks are awaited.
const MAX_PUBLISHING: usize = 32;
/// Other requests in flight at once.
const MAX_CONCURRENT: usize = 8;

/// A request in flight; resolves to the frame to answer with, if any.
type Reply = Pin<Box<dyn Future<Output = Option<ServerFrame>> + Send>>;
/// A send being checked and admitted; resolves to its reply (ready when it was refused).
type Admitting = Pin<Box<dyn Future<Output = Reply> + Send>>;

pub struct Requests {
    state: SharedState,
    user: Uuid,
    /// Who is calling, for RPCs; each call gets its own request id.
    ctx: CallContext,
    queued_sends: VecDeque<Arrived>,
    admitting: Option<Admitting>,
    /// Sends admitted (or refused), answered in the order they were read.
    publishing: FuturesOrdered<Reply>,
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
            admitting: None,
            publishing: FuturesOrdered::new(),
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
        self.queued_sends.push_back(Arrived::now(message));
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
        self.poll_admitting(cx);
        if !self.publishing.is_empty()
            && let Poll::Ready(Some(reply)) = self.publishing.poll_next_unpin(cx)
        {
            return Poll::Ready(reply);
        }
        if !self.others.is_empty()
            && let Poll::Ready(Some(reply)) = self.others.poll_next_unpin(cx)
        {
            return Poll::Ready(reply);
        }
        Poll::Pending
    }

    /// Admits the sends read, one at a time and in order, while fewer than [`MAX_PUBLISHING`]
    /// wait for JetStream.
    fn poll_admitting(&mut self, cx: &mut Context<'_>) {
        loop {
            if self.admitting.is_none() {
                if self.publishing.len() >= MAX_PUBLISHING {
                    return;
                }
                let Some(next) = self.queued_sends.pop_front() else {
                    return;
                };
                self.admitting = Some(self.admit(next));
            }
            let Some(admitting) = self.admitting.as_mut() else {
                return;
            };
            let Poll::Ready(reply) = admitting.as_mut().poll(cx) else {
                return;
            };
            self.admitting = None;
            self.publishing.push_back(reply);
        }
    }

    /// Checks and admits one send and hands it to its partition's publisher; its reply waits
    /// for JetStream, or is the refusal.
    #[expect(
        clippy::async_yields_async,
        reason = "admitting ends by handing over a reply that then waits for JetStream"
    )]
    fn admit(&self, arrived: Arrived) -> Admitting {
        let (state, user, order) = (self.state.clone(), self.user, self.order.clone());
        Box::pin(async move {
            let client_id = arrived.message.client_id.clone();
            if let Some(held) = order.hold_back(&client_id) {
                count_rejection(&held);
                return answered(&order, client_id, Err(held));
            }
            match admit(&state, user, arrived, SendVia::WebSocket, Some(&order)).await {
                Ok(accepting) => Box::pin(async move {
                    let result = accepting.accepted(&state).await;
                    ack(&order, client_id, result)
                }),
                Err(rejection) => answered(&order, client_id, Err(rejection)),
            }
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

/// The `ack` of a send that ended with `result`, noted in the connection's order.
fn ack(
    order: &SendOrder,
    client_id: String,
    result: Result<SendAck, Rejection>,
) -> Option<ServerFrame> {
    order.settle(&client_id, &result);
    let ack = result.unwrap_or_else(|rejection| rejection.ack(client_id));
    Some(ServerFrame::Ack(ack))
}

/// A reply that is already there: the `ack` of a send refused before it was handed over.
fn answered(order: &SendOrder, client_id: String, result: Result<SendAck, Rejection>) -> Reply {
    Box::pin(std::future::ready(ack(order, client_id, result)))
}

/// An RPC failure as an `error` frame, with the same code and text a REST client would get.
fn failure(err: RpcError) -> ServerFrame {
    let err = ApiError::from(err);
    ServerFrame::Error {
        code: err.code().to_owned(),
        message: err.detail().to_owned(),
    }
}
