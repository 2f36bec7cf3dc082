//! `/v1/admin/conversations` and `/v1/admin/groups`: moderation. Recalling any message and
//! reading a conversation for a report need `messages:moderate`; listing, inspecting,
//! removing members from and dissolving any group need `groups:moderate`. Every act is a POST
//! or DELETE, so it lands in the audit log, and the affected users are told (a `recall` frame
//! and a `message_moderated` notification; `kicked`; `group_dissolved`).

use mesh_contracts::chat::{HistoryRequest, MessagePage, MessageRef};
use mesh_contracts::moderation::{
    ModerateDissolveGroup, ModerateGetGroup, ModerateHistory, ModerateListGroups, ModerateRecall,
    ModerateRemoveMember, ReportRequest,
};
use mesh_contracts::social::{Group, GroupPage, GroupRef, ListPageRequest, MemberRef};
use mesh_contracts::user::Empty;
use poem_openapi::OpenApi;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use uuid::Uuid;

use super::Tag;
use crate::caller::{BearerAuth, Call};
use crate::problem::ApiResult;

pub struct ModerationApi;

#[OpenApi(prefix_path = "/v1/admin", tag = "Tag::Admin")]
impl ModerationApi {
    /// Recall any message. Members see it recalled (`recall` frame with `by_moderation`,
    /// `moderated: true` in history) and its sender gets a `message_moderated` notification.
    #[oai(
        path = "/conversations/:conversation_id/messages/:message_id/recall",
        method = "post",
        operation_id = "moderate_recall_message"
    )]
    async fn recall(
        &self,
        call: Call,
        auth: BearerAuth,
        #[oai(validator(max_length = 100))] conversation_id: Path<String>,
        message_id: Path<Uuid>,
    ) -> ApiResult<Empty> {
        let call = call.permitted(&auth, "moderate_recall_message").await?;
        let request = MessageRef {
            conversation_id: conversation_id.0,
            message_id: message_id.0,
        };
        Ok(Json(call.send::<ModerateRecall>(&request).await?))
    }

    /// Read a page of any conversation's history to handle a report (`reason` says which).
    /// A POST, so every read is in the audit log. Paged like the conversation's history: at
    /// most `limit` messages and at most 512 KiB of them, `has_more` when more follow.
    #[oai(
        path = "/conversations/:conversation_id/report",
        method = "post",
        operation_id = "moderate_conversation_report"
    )]
    async fn report(
        &self,
        call: Call,
        auth: BearerAuth,
        #[oai(validator(max_length = 100))] conversation_id: Path<String>,
        body: Json<ReportRequest>,
    ) -> ApiResult<MessagePage> {
        let call = call
            .permitted(&auth, "moderate_conversation_report")
            .await?;
        tracing::info!(moderator = %auth.0.user_id, conversation = %conversation_id.0, reason = %body.0.reason, "conversation read for a report");
        let request = HistoryRequest {
            conversation_id: conversation_id.0,
            after_seq: body.0.after_seq,
            before_seq: body.0.before_seq,
            limit: body.0.limit,
        };
        Ok(Json(call.send::<ModerateHistory>(&request).await?))
    }

    /// Every group, oldest first, paged with `limit` and `cursor`.
    #[oai(
        path = "/groups",
        method = "get",
        operation_id = "moderate_list_groups"
    )]
    async fn list_groups(
        &self,
        call: Call,
        auth: BearerAuth,
        limit: Query<Option<u32>>,
        #[oai(validator(max_length = 64))] cursor: Query<Option<String>>,
    ) -> ApiResult<GroupPage> {
        let call = call.permitted(&auth, "moderate_list_groups").await?;
        let request = ListPageRequest {
            limit: limit.0,
            cursor: cursor.0,
        };
        Ok(Json(call.send::<ModerateListGroups>(&request).await?))
    }

    /// Any group.
    #[oai(
        path = "/groups/:group_id",
        method = "get",
        operation_id = "moderate_get_group"
    )]
    async fn get_group(
        &self,
        call: Call,
        auth: BearerAuth,
        group_id: Path<Uuid>,
    ) -> ApiResult<Group> {
        let call = call.permitted(&auth, "moderate_get_group").await?;
        let request = GroupRef {
            group_id: group_id.0,
        };
        Ok(Json(call.send::<ModerateGetGroup>(&request).await?))
    }

    /// Remove a member from any group (they get a `kicked` notification). The owner cannot be
    /// removed (409 `owner_must_transfer`): dissolve the group instead.
    #[oai(
        path = "/groups/:group_id/members/:user_id",
        method = "delete",
        operation_id = "moderate_remove_member"
    )]
    async fn remove_member(
        &self,
        call: Call,
        auth: BearerAuth,
        group_id: Path<Uuid>,
        user_id: Path<Uuid>,
    ) -> ApiResult<Empty> {
        let call = call.permitted(&auth, "moderate_remove_member").await?;
        let request = MemberRef {
            group_id: group_id.0,
            user_id: user_id.0,
        };
        Ok(Json(call.send::<ModerateRemoveMember>(&request).await?))
    }

    /// Dissolve any group (every member gets a `group_dissolved` notification).
    #[oai(
        path = "/groups/:group_id",
        method = "delete",
        operation_id = "moderate_dissolve_group"
    )]
    async fn dissolve(
        &self,
        call: Call,
        auth: BearerAuth,
        group_id: Path<Uuid>,
    ) -> ApiResult<Empty> {
        let call = call.permitted(&auth, "moderate_dissolve_group").await?;
        let request = GroupRef {
            group_id: group_id.0,
        };
        Ok(Json(call.send::<ModerateDissolveGroup>(&request).await?))
    }
}
