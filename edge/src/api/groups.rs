//! `/v1/groups`: groups, membership and join requests. The social service checks every
//! right (owner, admin, member); these handlers only translate.

use mesh_contracts::social::{
    ApproveJoinRequest, CreateGroup, CreateGroupRequest, DissolveGroup, GetGroup, Group,
    GroupJoinRequest, GroupMember, GroupPage, GroupRef, InviteBody, InviteMember, InviteRequest,
    JoinGroup, JoinGroupBody, JoinGroupRequest, JoinReply, JoinRequestPage, JoinRequestRef,
    JoinRequestStatus, KickMember, LeaveGroup, ListJoinRequests, ListJoinRequestsRequest,
    ListMembers, ListMembersRequest, ListPageRequest, MemberPage, MemberRef, MuteBody, MuteMember,
    MuteRequest, MyGroups, RejectJoinRequest, SetMemberRole, SetRoleBody, SetRoleRequest,
    TransferBody, TransferOwnership, TransferRequest, UpdateGroup, UpdateGroupBody,
    UpdateGroupRequest,
};
use mesh_contracts::user::Empty;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};
use uuid::Uuid;

use super::Tag;
use crate::caller::{BearerAuth, Call};
use crate::problem::{ApiError, ApiResult};

pub struct GroupsApi;

#[derive(ApiResponse)]
pub enum GroupCreated {
    /// The group was created; the caller is its owner.
    #[oai(status = 201)]
    Created(Json<Group>),
}

#[OpenApi(prefix_path = "/v1/groups", tag = "Tag::Groups")]
impl GroupsApi {
    /// Create a group owned by the caller: a name (1-64 characters), optional icon URL and
    /// announcement, a join policy (`open`, `approval` (default) or `invite_only`) and a
    /// member limit (2-5000, default 500, the owner included). Refused with
    /// `quota_exceeded` (429) when the caller owns as many groups as their plan allows or the
    /// member limit exceeds the plan's group size.
    #[oai(path = "/", method = "post", operation_id = "create_group")]
    async fn create(
        &self,
        call: Call,
        auth: BearerAuth,
        body: Json<CreateGroupRequest>,
    ) -> Result<GroupCreated, ApiError> {
        Ok(GroupCreated::Created(Json(
            call.on_behalf_of(&auth)
                .send::<CreateGroup>(&body.0)
                .await?,
        )))
    }

    /// List the groups the caller belongs to, with the caller's role in each, oldest group
    /// first. Paged with `limit` 1-100 (default 20) and the previous page's `next_cursor`.
    #[oai(path = "/", method = "get", operation_id = "my_groups")]
    async fn mine(
        &self,
        call: Call,
        auth: BearerAuth,
        limit: Query<Option<u32>>,
        #[oai(validator(max_length = 64))] cursor: Query<Option<String>>,
    ) -> ApiResult<GroupPage> {
        let request = ListPageRequest {
            limit: limit.0,
            cursor: cursor.0,
        };
        Ok(Json(
            call.on_behalf_of(&auth).send::<MyGroups>(&request).await?,
        ))
    }

    /// Read a group's profile; `my_role` is the caller's role, absent for non-members.
    #[oai(path = "/:group_id", method = "get", operation_id = "get_group")]
    async fn get(&self, call: Call, auth: BearerAuth, group_id: Path<Uuid>) -> ApiResult<Group> {
        let request = GroupRef {
            group_id: group_id.0,
        };
        Ok(Json(
            call.on_behalf_of(&auth).send::<GetGroup>(&request).await?,
        ))
    }

    /// Owner or admin: change the name, icon or announcement; absent fields stay as they
    /// are, an empty icon or announcement clears it.
    #[oai(path = "/:group_id", method = "patch", operation_id = "update_group")]
    async fn update(
        &self,
        call: Call,
        auth: BearerAuth,
        group_id: Path<Uuid>,
        body: Json<UpdateGroupBody>,
    ) -> ApiResult<Group> {
        let request = UpdateGroupRequest {
            group_id: group_id.0,
            name: body.0.name,
            icon: body.0.icon,
            announcement: body.0.announcement,
        };
        Ok(Json(
            call.on_behalf_of(&auth)
                .send::<UpdateGroup>(&request)
                .await?,
        ))
    }

    /// Owner: dissolve the group. Every member is removed and the group is gone.
    #[oai(
        path = "/:group_id",
        method = "delete",
        operation_id = "dissolve_group"
    )]
    async fn dissolve(
        &self,
        call: Call,
        auth: BearerAuth,
        group_id: Path<Uuid>,
    ) -> ApiResult<Empty> {
        let request = GroupRef {
            group_id: group_id.0,
        };
        Ok(Json(
            call.on_behalf_of(&auth)
                .send::<DissolveGroup>(&request)
                .await?,
        ))
    }

    /// List a group's members with their roles and mutes, in the order they joined. Members
    /// only (`not_member`, 403). Paged.
    #[oai(
        path = "/:group_id/members",
        method = "get",
        operation_id = "list_group_members"
    )]
    async fn members(
        &self,
        call: Call,
        auth: BearerAuth,
        group_id: Path<Uuid>,
        limit: Query<Option<u32>>,
        #[oai(validator(max_length = 64))] cursor: Query<Option<String>>,
    ) -> ApiResult<MemberPage> {
        let request = ListMembersRequest {
            group_id: group_id.0,
            limit: limit.0,
            cursor: cursor.0,
        };
        Ok(Json(
            call.on_behalf_of(&auth)
                .send::<ListMembers>(&request)
                .await?,
        ))
    }

    /// Join a group. An `open` group admits the caller at once (`joined`); an `approval`
    /// group stores a join request for its owner and admins (`pending`); an `invite_only`
    /// group refuses (`invite_only`, 403). Send `{}` or a `message` of at most 200
    /// characters. A full group gives `group_full` (409).
    #[oai(path = "/:group_id/join", method = "post", operation_id = "join_group")]
    async fn join(
        &self,
        call: Call,
        auth: BearerAuth,
        group_id: Path<Uuid>,
        body: Json<JoinGroupBody>,
    ) -> ApiResult<JoinReply> {
        let request = JoinGroupRequest {
            group_id: group_id.0,
            message: body.0.message,
        };
        Ok(Json(
            call.on_behalf_of(&auth).send::<JoinGroup>(&request).await?,
        ))
    }

    /// Invite a user. Owners and admins add them at once; a plain member adds them to an
    /// `open` group, stores a pending request in an `approval` group, and may not invite into
    /// an `invite_only` group (`forbidden`, 403).
    #[oai(
        path = "/:group_id/invite",
        method = "post",
        operation_id = "invite_member"
    )]
    async fn invite(
        &self,
        call: Call,
        auth: BearerAuth,
        group_id: Path<Uuid>,
        body: Json<InviteBody>,
    ) -> ApiResult<JoinReply> {
        let request = InviteRequest {
            group_id: group_id.0,
            user_id: body.0.user_id,
        };
        Ok(Json(
            call.on_behalf_of(&auth)
                .send::<InviteMember>(&request)
                .await?,
        ))
    }

    /// Owner or admin: list the group's join requests, optionally only those with `status`,
    /// oldest first. Paged.
    #[oai(
        path = "/:group_id/requests",
        method = "get",
        operation_id = "list_join_requests"
    )]
    async fn requests(
        &self,
        call: Call,
        auth: BearerAuth,
        group_id: Path<Uuid>,
        status: Query<Option<JoinRequestStatus>>,
        limit: Query<Option<u32>>,
        #[oai(validator(max_length = 64))] cursor: Query<Option<String>>,
    ) -> ApiResult<JoinRequestPage> {
        let request = ListJoinRequestsRequest {
            group_id: group_id.0,
            status: status.0,
            limit: limit.0,
            cursor: cursor.0,
        };
        Ok(Json(
            call.on_behalf_of(&auth)
                .send::<ListJoinRequests>(&request)
                .await?,
        ))
    }

    /// Owner or admin: approve a pending join request; the user becomes a member.
    /// `request_handled` (409) if it was already decided, `group_full` (409) if there is no
    /// room.
    #[oai(
        path = "/:group_id/requests/:request_id/approve",
        method = "post",
        operation_id = "approve_join_request"
    )]
    async fn approve(
        &self,
        call: Call,
        auth: BearerAuth,
        group_id: Path<Uuid>,
        request_id: Path<Uuid>,
    ) -> ApiResult<GroupJoinRequest> {
        let request = JoinRequestRef {
            group_id: group_id.0,
            request_id: request_id.0,
        };
        Ok(Json(
            call.on_behalf_of(&auth)
                .send::<ApproveJoinRequest>(&request)
                .await?,
        ))
    }

    /// Owner or admin: reject a pending join request.
    #[oai(
        path = "/:group_id/requests/:request_id/reject",
        method = "post",
        operation_id = "reject_join_request"
    )]
    async fn reject(
        &self,
        call: Call,
        auth: BearerAuth,
        group_id: Path<Uuid>,
        request_id: Path<Uuid>,
    ) -> ApiResult<GroupJoinRequest> {
        let request = JoinRequestRef {
            group_id: group_id.0,
            request_id: request_id.0,
        };
        Ok(Json(
            call.on_behalf_of(&auth)
                .send::<RejectJoinRequest>(&request)
                .await?,
        ))
    }

    /// Leave the group. The owner must transfer ownership first (`owner_must_transfer`, 409).
    #[oai(
        path = "/:group_id/leave",
        method = "post",
        operation_id = "leave_group"
    )]
    async fn leave(&self, call: Call, auth: BearerAuth, group_id: Path<Uuid>) -> ApiResult<Empty> {
        let request = GroupRef {
            group_id: group_id.0,
        };
        Ok(Json(
            call.on_behalf_of(&auth)
                .send::<LeaveGroup>(&request)
                .await?,
        ))
    }

    /// Remove a member: admins remove plain members, the owner removes anyone else.
    #[oai(
        path = "/:group_id/members/:user_id/kick",
        method = "post",
        operation_id = "kick_member"
    )]
    async fn kick(
        &self,
        call: Call,
        auth: BearerAuth,
        group_id: Path<Uuid>,
        user_id: Path<Uuid>,
    ) -> ApiResult<Empty> {
        let request = MemberRef {
            group_id: group_id.0,
            user_id: user_id.0,
        };
        Ok(Json(
            call.on_behalf_of(&auth)
                .send::<KickMember>(&request)
                .await?,
        ))
    }

    /// Owner: make a member an `admin` or an admin a plain `member`. Ownership moves only by
    /// transfer.
    #[oai(
        path = "/:group_id/members/:user_id/role",
        method = "put",
        operation_id = "set_member_role"
    )]
    async fn set_role(
        &self,
        call: Call,
        auth: BearerAuth,
        group_id: Path<Uuid>,
        user_id: Path<Uuid>,
        body: Json<SetRoleBody>,
    ) -> ApiResult<GroupMember> {
        let request = SetRoleRequest {
            group_id: group_id.0,
            user_id: user_id.0,
            role: body.0.role,
        };
        Ok(Json(
            call.on_behalf_of(&auth)
                .send::<SetMemberRole>(&request)
                .await?,
        ))
    }

    /// Owner: hand the group to another member; the old owner stays on as an admin.
    #[oai(
        path = "/:group_id/transfer",
        method = "post",
        operation_id = "transfer_group_ownership"
    )]
    async fn transfer(
        &self,
        call: Call,
        auth: BearerAuth,
        group_id: Path<Uuid>,
        body: Json<TransferBody>,
    ) -> ApiResult<Group> {
        let request = TransferRequest {
            group_id: group_id.0,
            user_id: body.0.user_id,
        };
        Ok(Json(
            call.on_behalf_of(&auth)
                .send::<TransferOwnership>(&request)
                .await?,
        ))
    }

    /// Owner or admin: mute a member for `duration_secs` (`muted: true`), or unmute them
    /// (`muted: false`). Admins mute plain members only; nobody mutes the owner.
    #[oai(
        path = "/:group_id/members/:user_id/mute",
        method = "put",
        operation_id = "mute_member"
    )]
    async fn mute(
        &self,
        call: Call,
        auth: BearerAuth,
        group_id: Path<Uuid>,
        user_id: Path<Uuid>,
        body: Json<MuteBody>,
    ) -> ApiResult<GroupMember> {
        let request = MuteRequest {
            group_id: group_id.0,
            user_id: user_id.0,
            muted: body.0.muted,
            duration_secs: body.0.duration_secs,
        };
        Ok(Json(
            call.on_behalf_of(&auth)
                .send::<MuteMember>(&request)
                .await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    /// Every social route is documented: an operation id and a description for each.
    #[test]
    fn social_routes_are_described_in_the_openapi_document() {
        let spec: serde_json::Value = serde_json::from_str(&crate::openapi_json()).unwrap();
        let paths = spec["paths"].as_object().unwrap();
        let social = [
            "/v1/friend-requests",
            "/v1/friends",
            "/v1/blocks",
            "/v1/groups",
        ];
        let mut operations = 0;
        for (path, methods) in paths {
            if !social.iter().any(|p| path.starts_with(p)) {
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
        assert_eq!(operations, 27, "every social operation is routed");
    }
}
