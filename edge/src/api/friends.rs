//! `/v1/friend-requests`, `/v1/friends`, `/v1/blocks`: friendships between users. The social
//! service checks every right; these handlers only translate.

use mesh_contracts::social::{
    AcceptFriendRequest, Block, BlockPage, BlockUser, CancelFriendRequest, Friend, FriendPage,
    FriendRequest, FriendRequestId, FriendRequestOutcome, FriendRequestPage, FriendRequestStatus,
    ListBlocks, ListFriendRequests, ListFriendRequestsRequest, ListFriends, ListPageRequest,
    RejectFriendRequest, RemoveFriend, RequestDirection, SendFriend, SendFriendRequest, SetRemark,
    SetRemarkBody, SetRemarkRequest, UnblockUser, UserRef,
};
use mesh_contracts::user::Empty;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};
use uuid::Uuid;

use super::Tag;
use crate::caller::{BearerAuth, Call};
use crate::problem::{ApiError, ApiResult};

pub struct FriendsApi;

#[derive(ApiResponse)]
pub enum SentResponse {
    /// A new pending request was stored.
    #[oai(status = 201)]
    Created(Json<FriendRequestOutcome>),
    /// The other user had already asked the caller: their request was accepted and the two
    /// are friends now.
    #[oai(status = 200)]
    BecameFriends(Json<FriendRequestOutcome>),
}

#[OpenApi(tag = "Tag::Friends")]
impl FriendsApi {
    /// Ask a user to become friends, with an optional message (at most 200 characters).
    ///
    /// If that user already asked the caller, their request is accepted instead and the two
    /// become friends (200). Refused with `self_target` (400), `not_found` (404) for an
    /// unknown user, `blocked` (403) when either blocked the other, `already_friends` (409),
    /// or `duplicate_request` (409) when the caller's request is still pending, and
    /// `quota_exceeded` (429) once the caller sent as many requests today as their plan allows.
    #[oai(
        path = "/v1/friend-requests",
        method = "post",
        operation_id = "send_friend_request"
    )]
    async fn send(
        &self,
        call: Call,
        auth: BearerAuth,
        body: Json<SendFriendRequest>,
    ) -> Result<SentResponse, ApiError> {
        let outcome = call.on_behalf_of(&auth).send::<SendFriend>(&body.0).await?;
        Ok(if outcome.became_friends {
            SentResponse::BecameFriends(Json(outcome))
        } else {
            SentResponse::Created(Json(outcome))
        })
    }

    /// List friend requests sent to the caller (`direction=incoming`, the default) or by the
    /// caller (`outgoing`), optionally only those with `status`. Oldest first; paged with
    /// `limit` 1-100 (default 20) and the previous page's `next_cursor`.
    #[oai(
        path = "/v1/friend-requests",
        method = "get",
        operation_id = "list_friend_requests"
    )]
    async fn list_requests(
        &self,
        call: Call,
        auth: BearerAuth,
        direction: Query<Option<RequestDirection>>,
        status: Query<Option<FriendRequestStatus>>,
        limit: Query<Option<u32>>,
        #[oai(validator(max_length = 64))] cursor: Query<Option<String>>,
    ) -> ApiResult<FriendRequestPage> {
        let request = ListFriendRequestsRequest {
            direction: direction.0.unwrap_or(RequestDirection::Incoming),
            status: status.0,
            limit: limit.0,
            cursor: cursor.0,
        };
        Ok(Json(
            call.on_behalf_of(&auth)
                .send::<ListFriendRequests>(&request)
                .await?,
        ))
    }

    /// Accept a pending request sent to the caller: both become friends.
    ///
    /// Only the addressee may accept (`forbidden`, 403); a request already accepted, rejected
    /// or cancelled gives `request_handled` (409).
    #[oai(
        path = "/v1/friend-requests/:request_id/accept",
        method = "post",
        operation_id = "accept_friend_request"
    )]
    async fn accept(
        &self,
        call: Call,
        auth: BearerAuth,
        request_id: Path<Uuid>,
    ) -> ApiResult<FriendRequest> {
        let request = FriendRequestId {
            request_id: request_id.0,
        };
        Ok(Json(
            call.on_behalf_of(&auth)
                .send::<AcceptFriendRequest>(&request)
                .await?,
        ))
    }

    /// Reject a pending request sent to the caller. Only the addressee may reject.
    #[oai(
        path = "/v1/friend-requests/:request_id/reject",
        method = "post",
        operation_id = "reject_friend_request"
    )]
    async fn reject(
        &self,
        call: Call,
        auth: BearerAuth,
        request_id: Path<Uuid>,
    ) -> ApiResult<FriendRequest> {
        let request = FriendRequestId {
            request_id: request_id.0,
        };
        Ok(Json(
            call.on_behalf_of(&auth)
                .send::<RejectFriendRequest>(&request)
                .await?,
        ))
    }

    /// Withdraw a pending request the caller sent. Only the sender may cancel.
    #[oai(
        path = "/v1/friend-requests/:request_id/cancel",
        method = "post",
        operation_id = "cancel_friend_request"
    )]
    async fn cancel(
        &self,
        call: Call,
        auth: BearerAuth,
        request_id: Path<Uuid>,
    ) -> ApiResult<FriendRequest> {
        let request = FriendRequestId {
            request_id: request_id.0,
        };
        Ok(Json(
            call.on_behalf_of(&auth)
                .send::<CancelFriendRequest>(&request)
                .await?,
        ))
    }

    /// List the caller's friends with the caller's remarks, oldest friendship first. Paged.
    #[oai(path = "/v1/friends", method = "get", operation_id = "list_friends")]
    async fn list_friends(
        &self,
        call: Call,
        auth: BearerAuth,
        limit: Query<Option<u32>>,
        #[oai(validator(max_length = 64))] cursor: Query<Option<String>>,
    ) -> ApiResult<FriendPage> {
        let request = ListPageRequest {
            limit: limit.0,
            cursor: cursor.0,
        };
        Ok(Json(
            call.on_behalf_of(&auth)
                .send::<ListFriends>(&request)
                .await?,
        ))
    }

    /// Set the caller's private remark (at most 32 characters) for a friend; an absent or
    /// empty remark clears it. `not_found` (404) unless the user is a friend.
    #[oai(
        path = "/v1/friends/:user_id/remark",
        method = "put",
        operation_id = "set_friend_remark"
    )]
    async fn set_remark(
        &self,
        call: Call,
        auth: BearerAuth,
        user_id: Path<Uuid>,
        body: Json<SetRemarkBody>,
    ) -> ApiResult<Friend> {
        let request = SetRemarkRequest {
            user_id: user_id.0,
            remark: body.0.remark,
        };
        Ok(Json(
            call.on_behalf_of(&auth).send::<SetRemark>(&request).await?,
        ))
    }

    /// End a friendship, for both users. `not_found` (404) unless the user is a friend.
    #[oai(
        path = "/v1/friends/:user_id",
        method = "delete",
        operation_id = "remove_friend"
    )]
    async fn remove(&self, call: Call, auth: BearerAuth, user_id: Path<Uuid>) -> ApiResult<Empty> {
        let request = UserRef { user_id: user_id.0 };
        Ok(Json(
            call.on_behalf_of(&auth)
                .send::<RemoveFriend>(&request)
                .await?,
        ))
    }

    /// Block a user: any friendship ends, a pending request between the two ends, and
    /// neither can send the other friend requests until the block is lifted. Blocking twice
    /// returns the existing block.
    #[oai(
        path = "/v1/blocks/:user_id",
        method = "post",
        operation_id = "block_user"
    )]
    async fn block(&self, call: Call, auth: BearerAuth, user_id: Path<Uuid>) -> ApiResult<Block> {
        let request = UserRef { user_id: user_id.0 };
        Ok(Json(
            call.on_behalf_of(&auth).send::<BlockUser>(&request).await?,
        ))
    }

    /// Lift a block. `not_found` (404) when the caller had not blocked the user.
    #[oai(
        path = "/v1/blocks/:user_id",
        method = "delete",
        operation_id = "unblock_user"
    )]
    async fn unblock(&self, call: Call, auth: BearerAuth, user_id: Path<Uuid>) -> ApiResult<Empty> {
        let request = UserRef { user_id: user_id.0 };
        Ok(Json(
            call.on_behalf_of(&auth)
                .send::<UnblockUser>(&request)
                .await?,
        ))
    }

    /// List the users the caller blocked, oldest block first. Paged.
    #[oai(path = "/v1/blocks", method = "get", operation_id = "list_blocks")]
    async fn list_blocks(
        &self,
        call: Call,
        auth: BearerAuth,
        limit: Query<Option<u32>>,
        #[oai(validator(max_length = 64))] cursor: Query<Option<String>>,
    ) -> ApiResult<BlockPage> {
        let request = ListPageRequest {
            limit: limit.0,
            cursor: cursor.0,
        };
        Ok(Json(
            call.on_behalf_of(&auth)
                .send::<ListBlocks>(&request)
                .await?,
        ))
    }
}
