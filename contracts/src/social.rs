//! The social service's wire types: friend requests, friends, blocks, groups, membership and
//! join requests, its RPC operations, and the names of the events it writes to its outbox.
//!
//! Field limits are declared here for the OpenAPI document; the social service enforces them
//! again when it parses requests into domain types, since NATS callers bypass the edge.

use poem_openapi::{Enum, Object};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::rpc;
use crate::rpc::Service;
use crate::user::Empty;

/// Longest message attached to a friend or join request, in characters.
pub const MAX_REQUEST_MESSAGE_CHARS: usize = 200;
/// Longest remark (the caller's private name for a friend), in characters.
pub const MAX_REMARK_CHARS: usize = 32;
/// Longest group name, in characters.
pub const MAX_GROUP_NAME_CHARS: usize = 64;
/// Longest group icon URL, in bytes.
pub const MAX_GROUP_ICON_LEN: usize = 512;
/// Longest group announcement, in characters.
pub const MAX_ANNOUNCEMENT_CHARS: usize = 2000;
/// Smallest allowed member limit of a group.
pub const MIN_GROUP_MEMBERS: u32 = 2;
/// Largest allowed member limit of a group.
pub const MAX_GROUP_MEMBERS: u32 = 5000;
/// Member limit of a group created without one.
pub const DEFAULT_GROUP_MEMBERS: u32 = 500;
/// Longest mute, in seconds (a year).
pub const MAX_MUTE_SECS: u64 = 366 * 24 * 3600;

/// Where a friend request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Enum, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
pub enum FriendRequestStatus {
    Pending,
    Accepted,
    Rejected,
    Cancelled,
}

/// Which friend requests to list: sent to the caller, or sent by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Enum)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
pub enum RequestDirection {
    Incoming,
    Outgoing,
}

/// How people become members of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Enum)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
pub enum JoinPolicy {
    /// Anyone may join at once.
    Open,
    /// Joining needs an owner's or admin's approval.
    Approval,
    /// Only owners and admins add members, by invitation.
    InviteOnly,
}

/// A member's rights in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Enum, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
pub enum GroupRole {
    Owner,
    Admin,
    Member,
}

/// Where a request to join a group is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Enum, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
pub enum JoinRequestStatus {
    Pending,
    Approved,
    Rejected,
}

/// What a join or an invitation achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Enum)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
pub enum JoinOutcome {
    /// The user is a member now.
    Joined,
    /// A join request waits for an owner or admin.
    Pending,
}

// ---- friend requests -------------------------------------------------------------------

/// Asks another user to become friends.
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct SendFriendRequest {
    /// The user to ask.
    pub user_id: Uuid,
    /// A greeting shown to the addressee, at most 200 characters.
    #[oai(validator(max_length = 200))]
    pub message: Option<String>,
}

/// A friend request between two users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Object, JsonSchema)]
pub struct FriendRequest {
    pub id: Uuid,
    /// Who asked.
    pub from_user_id: Uuid,
    /// Who was asked.
    pub to_user_id: Uuid,
    pub message: Option<String>,
    pub status: FriendRequestStatus,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(schema_with = "crate::formats::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was accepted, rejected or cancelled.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schemars(schema_with = "crate::formats::rfc3339_or_null")]
    pub handled_at: Option<OffsetDateTime>,
}

/// The result of sending a friend request.
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct FriendRequestOutcome {
    /// The new pending request; or, when the other user had already asked the caller, their
    /// request, now accepted.
    pub request: FriendRequest,
    /// True when the users are friends now.
    pub became_friends: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListFriendRequestsRequest {
    pub direction: RequestDirection,
    pub status: Option<FriendRequestStatus>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// A page of friend requests, newest last; pass `next_cursor` back to read the next page.
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct FriendRequestPage {
    pub items: Vec<FriendRequest>,
    pub next_cursor: Option<String>,
}

/// Names one friend request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FriendRequestId {
    pub request_id: Uuid,
}

// ---- friends -----------------------------------------------------------------------------

/// One of the caller's friends.
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct Friend {
    pub user_id: Uuid,
    /// The caller's private name for this friend.
    pub remark: Option<String>,
    /// When the friendship began.
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListPageRequest {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// A page of friends, oldest friendship first.
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct FriendPage {
    pub items: Vec<Friend>,
    pub next_cursor: Option<String>,
}

/// Sets the caller's remark for a friend; absent or empty clears it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, Object)]
pub struct SetRemarkBody {
    /// At most 32 characters.
    #[oai(validator(max_length = 32))]
    pub remark: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetRemarkRequest {
    pub user_id: Uuid,
    pub remark: Option<String>,
}

/// Names another user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRef {
    pub user_id: Uuid,
}

/// Asks whether two users are friends and whether either blocked the other (for other
/// services, e.g. chat deciding whether a private message may be sent).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckFriendshipRequest {
    pub user_id: Uuid,
    pub other_id: Uuid,
}

/// The most pairs one `check_friendships` call may ask about.
pub const MAX_FRIENDSHIP_CHECKS: usize = 512;

/// Asks `check_friendship` about many pairs at once (chat, authorizing a batch of private
/// messages): at most `MAX_FRIENDSHIP_CHECKS`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckFriendshipsRequest {
    pub pairs: Vec<CheckFriendshipRequest>,
}

/// One answer per asked pair, in the order asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FriendshipChecks {
    pub checks: Vec<FriendshipCheck>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FriendshipCheck {
    pub friends: bool,
    /// Either user blocked the other.
    pub blocked: bool,
}

// ---- blocks ------------------------------------------------------------------------------

/// A user the caller blocked.
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct Block {
    pub user_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A page of blocked users, oldest block first.
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct BlockPage {
    pub items: Vec<Block>,
    pub next_cursor: Option<String>,
}

// ---- groups ------------------------------------------------------------------------------

/// Creates a group owned by the caller.
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct CreateGroupRequest {
    /// 1 to 64 characters, not blank.
    #[oai(validator(max_length = 64))]
    pub name: String,
    /// An http(s) URL of at most 512 bytes.
    #[oai(validator(max_length = 512))]
    pub icon: Option<String>,
    /// At most 2000 characters.
    #[oai(validator(max_length = 2000))]
    pub announcement: Option<String>,
    /// Default `approval`.
    pub join_policy: Option<JoinPolicy>,
    /// 2 to 2000, default 500; the owner counts.
    pub max_members: Option<u32>,
}

/// A group as the caller sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Object)]
pub struct Group {
    pub id: Uuid,
    pub name: String,
    pub icon: Option<String>,
    pub announcement: Option<String>,
    pub join_policy: JoinPolicy,
    pub max_members: u32,
    pub member_count: u32,
    pub owner_id: Uuid,
    /// The caller's role, absent when the caller is not a member.
    pub my_role: Option<GroupRole>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// Names one group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupRef {
    pub group_id: Uuid,
}

/// Changes a group's name, icon or announcement; absent fields stay as they are, an empty
/// icon or announcement clears it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, Object)]
pub struct UpdateGroupBody {
    #[oai(validator(max_length = 64))]
    pub name: Option<String>,
    #[oai(validator(max_length = 512))]
    pub icon: Option<String>,
    #[oai(validator(max_length = 2000))]
    pub announcement: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateGroupRequest {
    pub group_id: Uuid,
    pub name: Option<String>,
    pub icon: Option<String>,
    pub announcement: Option<String>,
}

/// A page of groups, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct GroupPage {
    pub items: Vec<Group>,
    pub next_cursor: Option<String>,
}

/// One member of a group.
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct GroupMember {
    pub group_id: Uuid,
    pub user_id: Uuid,
    pub role: GroupRole,
    #[serde(with = "time::serde::rfc3339")]
    pub joined_at: OffsetDateTime,
    /// Until when the member may not post; absent when not muted.
    #[serde(with = "time::serde::rfc3339::option")]
    pub muted_until: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListMembersRequest {
    pub group_id: Uuid,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// A page of members, in the order they joined.
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct MemberPage {
    pub items: Vec<GroupMember>,
    pub next_cursor: Option<String>,
}

/// Asks to join a group.
#[derive(Debug, Clone, Default, Serialize, Deserialize, Object)]
pub struct JoinGroupBody {
    /// Shown to the group's owner and admins, at most 200 characters.
    #[oai(validator(max_length = 200))]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinGroupRequest {
    pub group_id: Uuid,
    pub message: Option<String>,
}

/// Invites a user into a group.
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct InviteBody {
    pub user_id: Uuid,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InviteRequest {
    pub group_id: Uuid,
    pub user_id: Uuid,
}

/// A request to join a group, made by the user or by a member inviting them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Object, JsonSchema)]
pub struct GroupJoinRequest {
    pub id: Uuid,
    pub group_id: Uuid,
    /// Who would join.
    pub user_id: Uuid,
    /// The member who invited them, if any.
    pub inviter_id: Option<Uuid>,
    pub message: Option<String>,
    pub status: JoinRequestStatus,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(schema_with = "crate::formats::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schemars(schema_with = "crate::formats::rfc3339_or_null")]
    pub handled_at: Option<OffsetDateTime>,
    /// The owner or admin who approved or rejected it.
    pub handled_by: Option<Uuid>,
}

/// What a join or an invitation achieved.
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct JoinReply {
    pub outcome: JoinOutcome,
    /// The membership, when `joined`.
    pub member: Option<GroupMember>,
    /// The waiting request, when `pending`.
    pub request: Option<GroupJoinRequest>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListJoinRequestsRequest {
    pub group_id: Uuid,
    pub status: Option<JoinRequestStatus>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// A page of join requests, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct JoinRequestPage {
    pub items: Vec<GroupJoinRequest>,
    pub next_cursor: Option<String>,
}

/// Names one join request of one group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequestRef {
    pub group_id: Uuid,
    pub request_id: Uuid,
}

/// Names one member of one group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberRef {
    pub group_id: Uuid,
    pub user_id: Uuid,
}

/// Gives a member another role: `admin` or `member` (ownership moves by transfer).
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct SetRoleBody {
    pub role: GroupRole,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetRoleRequest {
    pub group_id: Uuid,
    pub user_id: Uuid,
    pub role: GroupRole,
}

/// Names the member who becomes the owner; the old owner becomes an admin.
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct TransferBody {
    pub user_id: Uuid,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransferRequest {
    pub group_id: Uuid,
    pub user_id: Uuid,
}

/// Mutes a member for `duration_secs` (1 s to 366 days), or unmutes them.
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct MuteBody {
    pub muted: bool,
    /// Required when `muted` is true.
    pub duration_secs: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MuteRequest {
    pub group_id: Uuid,
    pub user_id: Uuid,
    pub muted: bool,
    pub duration_secs: Option<u64>,
}

/// Asks whether a user belongs to a group (for other services, e.g. chat).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MembershipRequest {
    pub group_id: Uuid,
    pub user_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// None when the user is not a member (or the group does not exist).
    pub role: Option<GroupRole>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub muted_until: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserIdRequest {
    pub user_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserIds {
    pub ids: Vec<Uuid>,
}

/// One member in a roster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterEntry {
    pub user_id: Uuid,
    pub role: GroupRole,
    #[serde(with = "time::serde::rfc3339::option")]
    pub muted_until: Option<OffsetDateTime>,
}

/// All members of a group; `exists` is false for an unknown or dissolved group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roster {
    pub exists: bool,
    pub members: Vec<RosterEntry>,
}

// ---- operations --------------------------------------------------------------------------

rpc!(
    /// Sends a friend request (or accepts the addressee's own pending request to the caller).
    SendFriend, Service::Social, "send_friend_request", SendFriendRequest => FriendRequestOutcome
);
rpc!(
    /// Lists friend requests to or from the caller.
    ListFriendRequests, Service::Social, "list_friend_requests", ListFriendRequestsRequest => FriendRequestPage
);
rpc!(
    /// The addressee accepts a pending request: both users become friends.
    AcceptFriendRequest, Service::Social, "accept_friend_request", FriendRequestId => FriendRequest
);
rpc!(
    /// The addressee rejects a pending request.
    RejectFriendRequest, Service::Social, "reject_friend_request", FriendRequestId => FriendRequest
);
rpc!(
    /// The sender withdraws a pending request.
    CancelFriendRequest, Service::Social, "cancel_friend_request", FriendRequestId => FriendRequest
);
rpc!(
    /// Lists the caller's friends.
    ListFriends, Service::Social, "list_friends", ListPageRequest => FriendPage
);
rpc!(
    /// Sets the caller's remark for a friend.
    SetRemark, Service::Social, "set_remark", SetRemarkRequest => Friend
);
rpc!(
    /// Ends a friendship, for both users.
    RemoveFriend, Service::Social, "remove_friend", UserRef => Empty
);
rpc!(
    /// Whether two users are friends and whether a block stands between them.
    CheckFriendship, Service::Social, "check_friendship", CheckFriendshipRequest => FriendshipCheck
);
rpc!(
    /// `check_friendship` for many pairs in one call and one read.
    CheckFriendships, Service::Social, "check_friendships", CheckFriendshipsRequest => FriendshipChecks
);
rpc!(
    /// Blocks a user: ends the friendship and stops requests between the two.
    BlockUser, Service::Social, "block_user", UserRef => Block
);
rpc!(
    /// Lifts a block.
    UnblockUser, Service::Social, "unblock_user", UserRef => Empty
);
rpc!(
    /// Lists the users the caller blocked.
    ListBlocks, Service::Social, "list_blocks", ListPageRequest => BlockPage
);
rpc!(
    /// Creates a group owned by the caller.
    CreateGroup, Service::Social, "create_group", CreateGroupRequest => Group
);
rpc!(
    /// Reads a group.
    GetGroup, Service::Social, "get_group", GroupRef => Group
);
rpc!(
    /// Owner or admin: changes name, icon or announcement.
    UpdateGroup, Service::Social, "update_group", UpdateGroupRequest => Group
);
rpc!(
    /// Owner: dissolves the group, removing every member.
    DissolveGroup, Service::Social, "dissolve_group", GroupRef => Empty
);
rpc!(
    /// The groups the caller belongs to.
    MyGroups, Service::Social, "my_groups", ListPageRequest => GroupPage
);
rpc!(
    /// Members of a group the caller belongs to.
    ListMembers, Service::Social, "list_members", ListMembersRequest => MemberPage
);
rpc!(
    /// Joins a group or asks to, by its join policy.
    JoinGroup, Service::Social, "join_group", JoinGroupRequest => JoinReply
);
rpc!(
    /// Invites a user into a group.
    InviteMember, Service::Social, "invite_member", InviteRequest => JoinReply
);
rpc!(
    /// Owner or admin: lists a group's join requests.
    ListJoinRequests, Service::Social, "list_join_requests", ListJoinRequestsRequest => JoinRequestPage
);
rpc!(
    /// Owner or admin: approves a join request; the user becomes a member.
    ApproveJoinRequest, Service::Social, "approve_join_request", JoinRequestRef => GroupJoinRequest
);
rpc!(
    /// Owner or admin: rejects a join request.
    RejectJoinRequest, Service::Social, "reject_join_request", JoinRequestRef => GroupJoinRequest
);
rpc!(
    /// Leaves a group; the owner must transfer ownership first.
    LeaveGroup, Service::Social, "leave_group", GroupRef => Empty
);
rpc!(
    /// Removes a member: admins remove members, the owner removes anyone.
    KickMember, Service::Social, "kick_member", MemberRef => Empty
);
rpc!(
    /// Owner: makes a member an admin or an admin a member.
    SetMemberRole, Service::Social, "set_member_role", SetRoleRequest => GroupMember
);
rpc!(
    /// Owner: hands ownership to another member.
    TransferOwnership, Service::Social, "transfer_ownership", TransferRequest => Group
);
rpc!(
    /// Owner or admin: mutes or unmutes a member.
    MuteMember, Service::Social, "mute_member", MuteRequest => GroupMember
);
rpc!(
    /// A user's role in a group, if any.
    GetMembership, Service::Social, "get_membership", MembershipRequest => Membership
);
rpc!(
    /// Internal (no user, or the user themselves): every friend of a user, for presence fan-out.
    FriendIds, Service::Social, "friend_ids", UserIdRequest => UserIds
);
rpc!(
    /// Internal: every member of a group with role and mute, for chat authorization and fan-out.
    GroupRoster, Service::Social, "group_roster", GroupRef => Roster
);
rpc!(
    /// Answers when the service and its database are usable.
    Health, Service::Social, "health", Empty => Empty
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_use_snake_case_on_the_wire() {
        assert_eq!(
            serde_json::to_string(&JoinPolicy::InviteOnly).unwrap(),
            "\"invite_only\""
        );
        assert_eq!(
            serde_json::to_string(&FriendRequestStatus::Cancelled).unwrap(),
            "\"cancelled\""
        );
        assert_eq!(
            serde_json::from_str::<GroupRole>("\"admin\"").unwrap(),
            GroupRole::Admin
        );
    }

    #[test]
    fn optional_times_round_trip() {
        let member = GroupMember {
            group_id: Uuid::now_v7(),
            user_id: Uuid::now_v7(),
            role: GroupRole::Member,
            joined_at: OffsetDateTime::UNIX_EPOCH,
            muted_until: None,
        };
        let json = serde_json::to_string(&member).unwrap();
        let back: GroupMember = serde_json::from_str(&json).unwrap();
        assert_eq!(back.muted_until, None);
        assert_eq!(back.user_id, member.user_id);
    }
}
