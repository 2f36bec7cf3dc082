//! The `/v1` REST API: thin handlers that forward each request to its RPC.

mod admin;
mod admin_health;
mod admin_sessions;
mod auth;
mod chat;
mod friends;
mod groups;
mod moderation;
mod roles;
mod sessions;
mod usage;
mod users;

use poem_openapi::Tags;

#[derive(Tags)]
pub enum Tag {
    /// Registration, login, token refresh and logout.
    Auth,
    /// Signed-in devices.
    Sessions,
    /// Profiles and user search.
    Users,
    /// Administration and moderation (each route names the permission it needs).
    Admin,
    /// Friend requests, friends and blocks.
    Friends,
    /// Groups, members and join requests.
    Groups,
    /// Messages, conversations, read state and presence.
    Chat,
}

pub type Api = (
    auth::AuthApi,
    sessions::SessionsApi,
    users::UsersApi,
    admin::AdminApi,
    admin_sessions::AdminSessionsApi,
    admin_health::AdminHealthApi,
    roles::RolesApi,
    moderation::ModerationApi,
    usage::UsageApi,
    friends::FriendsApi,
    groups::GroupsApi,
    chat::ChatApi,
);

pub fn apis() -> Api {
    (
        auth::AuthApi,
        sessions::SessionsApi,
        users::UsersApi,
        admin::AdminApi,
        admin_sessions::AdminSessionsApi,
        admin_health::AdminHealthApi,
        roles::RolesApi,
        moderation::ModerationApi,
        usage::UsageApi,
        friends::FriendsApi,
        groups::GroupsApi,
        chat::ChatApi,
    )
}
