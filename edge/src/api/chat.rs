//! `/v1/messages`, `/v1/conversations`, `/v1/presence`: chat over REST. Sending shares the
//! WebSocket's send path; everything else is forwarded to the chat service, which checks every
//! right (membership, friendship, sender of a recall).

use mesh_contracts::chat::{
    ConversationPage, ConversationSettings, DeleteForMe, GetPresence, History, HistoryRequest,
    ListConversations, ListConversationsRequest, MarkRead, MarkReadBody, MarkReadRequest,
    MessagePage, MessageRef, PresenceList, PresenceRequest, ReadState, Recall, SendAck,
    SendMessage, SettingsBody, UpdateSettings, UpdateSettingsRequest,
};
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};
use time::OffsetDateTime;
use uuid::Uuid;

use super::Tag;
use crate::SharedState;
use crate::caller::{BearerAuth, Call};
use crate::limits::{chat_page_limit, user_id_list};
use crate::problem::{ApiError, ApiResult};
use crate::send::{Arrived, SendVia, send};

pub struct ChatApi;

#[derive(ApiResponse)]
pub enum Accepted {
    /// The message is on its way: stored in the ingest stream, to be checked and stored by
    /// the chat service (WebSocket clients then get a `stored` or `rejected` ack).
    #[oai(status = 202)]
    Accepted(Json<SendAck>),
}

#[derive(ApiResponse)]
pub enum Done {
    /// Done.
    #[oai(status = 204)]
    NoContent,
}

#[OpenApi(tag = "Tag::Chat")]
impl ChatApi {
    /// Send a message to a conversation (`conversation_id`) or privately to a user (`to`).
    ///
    /// `client_id` (1-64 characters of `A-Z a-z 0-9 _ . : -`) identifies the message: a
    /// resend with the same id is never stored twice. Refused at once with
    /// `validation_failed` (400: bad `client_id`, both or neither target, empty body),
    /// `self_target` (400), `unknown_conversation` (404), `not_member` (403: a private
    /// conversation of others), `message_too_large` (413: body over 16 KiB) or
    /// `service_unavailable` (503). Friendship, blocks and mutes are checked after
    /// acceptance; over the WebSocket a refused message then gets a `rejected` ack
    /// (`not_friends`, `blocked`, `not_member`, `muted`).
    #[oai(path = "/v1/messages", method = "post", operation_id = "send_message")]
    async fn send(
        &self,
        state: Data<&SharedState>,
        auth: BearerAuth,
        body: Json<SendMessage>,
    ) -> Result<Accepted, ApiError> {
        let ack = send(&state, auth.0.user_id, Arrived::now(body.0), SendVia::Rest).await?;
        Ok(Accepted::Accepted(Json(ack)))
    }

    /// List the caller's conversations, most recently changed first, each with its last
    /// message, `last_seq`, `read_seq` and unread count. Paged with `limit` 1-200 (default
    /// 50) and the previous page's `next_cursor`; `since` (RFC 3339) keeps only conversations
    /// changed after that instant. A page holds at most `limit` conversations, fewer (never
    /// none) when their last messages are large: it carries at most 512 KiB of them. Follow
    /// `next_cursor` until it is null. `validation_failed` (400) for a bad limit, instant or
    /// cursor (one this API did not write).
    #[oai(
        path = "/v1/conversations",
        method = "get",
        operation_id = "list_conversations"
    )]
    async fn list(
        &self,
        call: Call,
        auth: BearerAuth,
        limit: Query<Option<u32>>,
        #[oai(validator(max_length = 128))] cursor: Query<Option<String>>,
        since: Query<Option<OffsetDateTime>>,
    ) -> ApiResult<ConversationPage> {
        let request = ListConversationsRequest {
            limit: chat_page_limit(limit.0)?,
            cursor: cursor.0,
            since: since.0,
        };
        Ok(Json(
            call.on_behalf_of(&auth)
                .send::<ListConversations>(&request)
                .await?,
        ))
    }

    /// Read a conversation's messages by sequence number: `after_seq` gives the messages
    /// after it, oldest first (gap filling); `before_seq`, or neither, the latest ones, newest
    /// first. `limit` 1-200 (default 50). A page holds at most `limit` messages, fewer (never
    /// none) when they are large: it carries at most 512 KiB of them, and `has_more` then says
    /// more follow from the last one's `seq`. `unknown_conversation` (404) for an id that is not
    /// a conversation, `not_member` (403) unless the caller belongs to it.
    #[oai(
        path = "/v1/conversations/:conversation_id/messages",
        method = "get",
        operation_id = "conversation_history"
    )]
    async fn history(
        &self,
        call: Call,
        auth: BearerAuth,
        #[oai(validator(max_length = 80))] conversation_id: Path<String>,
        #[oai(validator(minimum(value = "0")))] after_seq: Query<Option<i64>>,
        #[oai(validator(minimum(value = "1")))] before_seq: Query<Option<i64>>,
        limit: Query<Option<u32>>,
    ) -> ApiResult<MessagePage> {
        let request = HistoryRequest {
            conversation_id: conversation_id.0,
            after_seq: after_seq.0,
            before_seq: before_seq.0,
            limit: chat_page_limit(limit.0)?,
        };
        Ok(Json(
            call.on_behalf_of(&auth).send::<History>(&request).await?,
        ))
    }

    /// Mark a conversation read up to `seq`; the read position never moves back. The other
    /// side of a private conversation and the caller's other devices get a `read` frame.
    /// `unknown_conversation` (404), `not_member` (403).
    #[oai(
        path = "/v1/conversations/:conversation_id/read",
        method = "post",
        operation_id = "mark_conversation_read"
    )]
    async fn mark_read(
        &self,
        call: Call,
        auth: BearerAuth,
        #[oai(validator(max_length = 80))] conversation_id: Path<String>,
        body: Json<MarkReadBody>,
    ) -> ApiResult<ReadState> {
        let request = MarkReadRequest {
            conversation_id: conversation_id.0,
            seq: body.0.seq,
        };
        Ok(Json(
            call.on_behalf_of(&auth).send::<MarkRead>(&request).await?,
        ))
    }

    /// Recall a message the caller sent: its body is removed for everyone and members get a
    /// `recall` frame. `not_found` (404) for an unknown message, `forbidden` (403) unless the
    /// caller sent it, `recall_window_passed` (409) when it is too old.
    #[oai(
        path = "/v1/conversations/:conversation_id/messages/:message_id/recall",
        method = "post",
        operation_id = "recall_message"
    )]
    async fn recall(
        &self,
        call: Call,
        auth: BearerAuth,
        #[oai(validator(max_length = 80))] conversation_id: Path<String>,
        message_id: Path<Uuid>,
    ) -> Result<Done, ApiError> {
        let request = MessageRef {
            conversation_id: conversation_id.0,
            message_id: message_id.0,
        };
        call.on_behalf_of(&auth).send::<Recall>(&request).await?;
        Ok(Done::NoContent)
    }

    /// Delete a message from the caller's own history; others still see it. `not_found`
    /// (404) for an unknown message, `not_member` (403).
    #[oai(
        path = "/v1/conversations/:conversation_id/messages/:message_id",
        method = "delete",
        operation_id = "delete_message_for_me"
    )]
    async fn delete_for_me(
        &self,
        call: Call,
        auth: BearerAuth,
        #[oai(validator(max_length = 80))] conversation_id: Path<String>,
        message_id: Path<Uuid>,
    ) -> Result<Done, ApiError> {
        let request = MessageRef {
            conversation_id: conversation_id.0,
            message_id: message_id.0,
        };
        call.on_behalf_of(&auth)
            .send::<DeleteForMe>(&request)
            .await?;
        Ok(Done::NoContent)
    }

    /// Change the caller's own settings of a conversation (`muted`, `pinned`, `hidden`);
    /// absent fields stay as they are. `unknown_conversation` (404), `not_member` (403).
    #[oai(
        path = "/v1/conversations/:conversation_id/settings",
        method = "patch",
        operation_id = "update_conversation_settings"
    )]
    async fn settings(
        &self,
        call: Call,
        auth: BearerAuth,
        #[oai(validator(max_length = 80))] conversation_id: Path<String>,
        body: Json<SettingsBody>,
    ) -> ApiResult<ConversationSettings> {
        let request = UpdateSettingsRequest {
            conversation_id: conversation_id.0,
            settings: body.0,
        };
        Ok(Json(
            call.on_behalf_of(&auth)
                .send::<UpdateSettings>(&request)
                .await?,
        ))
    }

    /// Whether users are online, and when they were last seen: `user_ids` is a
    /// comma-separated list of 1-200 user ids (`validation_failed`, 400, otherwise). Only the
    /// caller and their friends may be asked about: any other id answers `hidden` (403).
    #[oai(path = "/v1/presence", method = "get", operation_id = "get_presence")]
    async fn presence(
        &self,
        call: Call,
        auth: BearerAuth,
        user_ids: Query<String>,
    ) -> ApiResult<PresenceList> {
        let request = PresenceRequest {
            user_ids: user_id_list(&user_ids.0)?,
        };
        Ok(Json(
            call.on_behalf_of(&auth)
                .send::<GetPresence>(&request)
                .await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    /// Every chat route is documented, with the statuses it can answer.
    #[test]
    fn chat_routes_are_described_in_the_openapi_document() {
        let spec: serde_json::Value = serde_json::from_str(&crate::openapi_json()).unwrap();
        let paths = spec["paths"].as_object().unwrap();
        let chat = ["/v1/messages", "/v1/conversations", "/v1/presence"];
        let mut operations = 0;
        for (path, methods) in paths {
            if !chat.iter().any(|p| path.starts_with(p)) {
                continue;
            }
            for (method, op) in methods.as_object().unwrap() {
                operations += 1;
                assert!(op["operationId"].is_string(), "{method} {path}");
                assert!(
                    op["summary"].is_string() || op["description"].is_string(),
                    "{method} {path} has no description"
                );
            }
        }
        assert_eq!(operations, 8, "every chat operation is routed");
        let send = &paths["/v1/messages"]["post"]["responses"];
        assert!(send["202"].is_object(), "sending answers 202");
        let recall = &paths["/v1/conversations/{conversation_id}/messages/{message_id}/recall"];
        assert!(recall["post"]["responses"]["204"].is_object());
        let description = spec["info"]["description"].as_str().unwrap();
        assert!(description.contains("/v1/ws") && description.contains("/v1/events"));
    }
}
