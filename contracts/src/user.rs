//! The user service's wire types: accounts, sessions, tokens, and its RPC operations.
//!
//! Field limits are declared here for the OpenAPI document; the user service enforces them
//! again when it parses requests into domain types, since NATS callers bypass the edge.

use poem_openapi::{Enum, Object};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::rpc;
use crate::rpc::Service;

/// Longest accepted password, in characters (argon2 input stays bounded).
pub const MAX_PASSWORD_CHARS: usize = 128;
/// Shortest accepted password, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest nickname, in characters.
pub const MAX_NICKNAME_CHARS: usize = 32;
/// Longest avatar URL, in bytes.
pub const MAX_AVATAR_LEN: usize = 512;
/// Longest device name, in characters.
pub const MAX_DEVICE_NAME_CHARS: usize = 64;
/// Most ids in one lookup by ids.
pub const MAX_LOOKUP_IDS: usize = 100;
/// Longest administrator account search (`q`), in characters.
pub const MAX_ACCOUNT_QUERY_CHARS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Enum)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
pub enum Sex {
    Unspecified,
    Male,
    Female,
    Other,
}

/// Creates an account.
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct RegisterRequest {
    /// Phone number in international form: optional `+`, then 6 to 15 digits.
    #[oai(validator(max_length = 16, pattern = r"^\+?[0-9]{6,15}$"))]
    pub phone: String,
    /// 8 to 128 characters.
    #[oai(validator(min_length = 8, max_length = 128))]
    pub password: String,
    /// 1 to 32 characters, not blank.
    #[oai(validator(min_length = 1, max_length = 32, pattern = r"\S"))]
    pub nickname: String,
    /// An http(s) URL of at most 512 bytes.
    #[oai(validator(max_length = 512))]
    pub avatar: Option<String>,
    pub sex: Option<Sex>,
    /// A name for this device, shown in the session list (the session registering opens).
    #[oai(validator(max_length = 64))]
    #[serde(default)]
    pub device_name: Option<String>,
}

/// A new account and its first session: the profile's fields and the token pair's fields side by
/// side, so a client is signed in at once without logging in again.
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct Registered {
    #[serde(flatten)]
    #[oai(flatten)]
    pub profile: UserProfile,
    #[serde(flatten)]
    #[oai(flatten)]
    pub session: TokenPair,
}

/// Exchanges phone and password for a new session.
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct LoginRequest {
    #[oai(validator(max_length = 16))]
    pub phone: String,
    #[oai(validator(max_length = 128))]
    pub password: String,
    /// A name for this device, shown in the session list.
    #[oai(validator(max_length = 64))]
    pub device_name: Option<String>,
    /// The `device_token` of an earlier sign-in on this device: lets its owner sign in while
    /// the account is locked by failed attempts from elsewhere.
    #[oai(validator(max_length = 1024))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_token: Option<String>,
}

/// Exchanges a refresh token for a new token pair; the old refresh token stops working.
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct RefreshRequest {
    #[oai(validator(max_length = 128))]
    pub refresh_token: String,
}

/// An OAuth 2.0 style token response.
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct TokenPair {
    /// A JWT to send as `Authorization: Bearer`.
    pub access_token: String,
    /// An opaque token for `/v1/auth/refresh`; single use.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    pub user_id: Uuid,
    pub session_id: Uuid,
    /// On sign-in only: keep it on the device and send it with later sign-ins (see
    /// `LoginRequest.device_token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_token: Option<String>,
}

/// The caller's own account.
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct UserProfile {
    pub id: Uuid,
    pub phone: String,
    pub nickname: String,
    pub avatar: Option<String>,
    pub sex: Sex,
    /// Role names, `user` first.
    pub roles: Vec<String>,
    pub disabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// What anyone may see of another user.
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct PublicUser {
    pub id: Uuid,
    pub nickname: String,
    pub avatar: Option<String>,
    pub sex: Sex,
}

/// Changes the caller's profile; absent fields stay as they are. An empty avatar clears it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, Object)]
pub struct UpdateProfileRequest {
    #[oai(validator(max_length = 32))]
    pub nickname: Option<String>,
    #[oai(validator(max_length = 512))]
    pub avatar: Option<String>,
    pub sex: Option<Sex>,
}

/// One signed-in device.
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct SessionInfo {
    pub id: Uuid,
    pub device_name: Option<String>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_used_at: OffsetDateTime,
    /// True for the session that made this request.
    pub current: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct SessionList {
    pub items: Vec<SessionInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct RevokeSessionRequest {
    pub session_id: Uuid,
}

/// How many sessions a logout ended.
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct LogoutReply {
    pub revoked_sessions: u32,
}

/// No fields.
#[derive(Debug, Clone, Default, Serialize, Deserialize, Object)]
pub struct Empty {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetUserRequest {
    pub user_id: Uuid,
}

/// Finds users by exactly one of: exact phone, nickname substring, list of ids.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FindUsersRequest {
    pub phone: Option<String>,
    pub nickname: Option<String>,
    pub ids: Option<Vec<Uuid>>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// A page of users; pass `next_cursor` back to read the next page.
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct PublicUserPage {
    pub items: Vec<PublicUser>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AdminListUsersRequest {
    pub disabled: Option<bool>,
    /// Matches a phone prefix, a nickname substring (any case) or an exact id; blank means
    /// every account. Wildcards (`%`, `_`) match literally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct UserProfilePage {
    pub items: Vec<UserProfile>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminSetDisabledRequest {
    pub user_id: Uuid,
    pub disabled: bool,
}

/// Replaces a user's roles; `user` is always kept. Each must exist, and the caller must hold
/// every permission of the roles it adds or removes.
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct SetRolesRequest {
    #[oai(validator(max_items = 16))]
    pub roles: Vec<String>,
}

/// Admin: whose sessions to list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminListSessionsRequest {
    pub user_id: Uuid,
}

/// Admin: ends one of `user_id`'s sessions, or all of them when `session_id` is absent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminRevokeSessionsRequest {
    pub user_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<Uuid>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminSetRolesRequest {
    pub user_id: Uuid,
    pub roles: Vec<String>,
}

rpc!(
    /// Creates an account.
    Register, Service::User, "register", RegisterRequest => Registered
);
rpc!(
    /// Opens a session.
    Login, Service::User, "login", LoginRequest => TokenPair
);
rpc!(
    /// Rotates a refresh token.
    Refresh, Service::User, "refresh", RefreshRequest => TokenPair
);
rpc!(
    /// Ends the caller's session.
    Logout, Service::User, "logout", Empty => LogoutReply
);
rpc!(
    /// Ends every session of the caller.
    LogoutAll, Service::User, "logout_all", Empty => LogoutReply
);
rpc!(
    /// Lists the caller's active sessions.
    ListSessions, Service::User, "list_sessions", Empty => SessionList
);
rpc!(
    /// Ends one of the caller's sessions.
    RevokeSession, Service::User, "revoke_session", RevokeSessionRequest => LogoutReply
);
rpc!(
    /// The caller's profile.
    GetMe, Service::User, "get_me", Empty => UserProfile
);
rpc!(
    /// Changes the caller's profile.
    UpdateProfile, Service::User, "update_profile", UpdateProfileRequest => UserProfile
);
rpc!(
    /// Another user's public profile.
    GetUser, Service::User, "get_user", GetUserRequest => PublicUser
);
rpc!(
    /// Finds users.
    FindUsers, Service::User, "find_users", FindUsersRequest => PublicUserPage
);
rpc!(
    /// Admin: lists accounts.
    AdminListUsers, Service::User, "admin_list_users", AdminListUsersRequest => UserProfilePage
);
rpc!(
    /// Admin: disables or enables an account; disabling revokes every session.
    AdminSetDisabled, Service::User, "admin_set_disabled", AdminSetDisabledRequest => UserProfile
);
rpc!(
    /// Admin: lists another account's active sessions.
    AdminListSessions, Service::User, "admin_list_sessions", AdminListSessionsRequest => SessionList
);
rpc!(
    /// Admin: ends one or every session of another account.
    AdminRevokeSessions, Service::User, "admin_revoke_sessions", AdminRevokeSessionsRequest => LogoutReply
);
rpc!(
    /// Admin: replaces an account's roles.
    AdminSetRoles, Service::User, "admin_set_roles", AdminSetRolesRequest => UserProfile
);
rpc!(
    /// Answers when the service and its database are usable.
    Health, Service::User, "health", Empty => Empty
);
