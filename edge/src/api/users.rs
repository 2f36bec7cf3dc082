//! `/v1/users/*`: own profile, other users, search.

use mesh_contracts::ErrorCode;
use mesh_contracts::user::{
    Empty, FindUsers, FindUsersRequest, GetMe, GetUser, GetUserRequest, MAX_LOOKUP_IDS, PublicUser,
    PublicUserPage, UpdateProfile, UpdateProfileRequest, UserProfile,
};
use poem_openapi::OpenApi;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use uuid::Uuid;

use super::Tag;
use crate::caller::{BearerAuth, Call};
use crate::problem::{ApiError, ApiResult};

pub struct UsersApi;

/// Parses `ids=a,b,c`.
fn parse_ids(raw: &str) -> Result<Vec<Uuid>, ApiError> {
    let ids: Vec<&str> = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if ids.len() > MAX_LOOKUP_IDS {
        return Err(ApiError::new(
            ErrorCode::ValidationFailed,
            format!("ids: at most {MAX_LOOKUP_IDS}"),
        ));
    }
    ids.iter()
        .map(|id| {
            Uuid::parse_str(id).map_err(|_| {
                ApiError::new(ErrorCode::ValidationFailed, "ids: not a list of user ids")
            })
        })
        .collect()
}

#[OpenApi(prefix_path = "/v1/users", tag = "Tag::Users")]
impl UsersApi {
    /// The caller's own profile.
    #[oai(path = "/me", method = "get", operation_id = "get_me")]
    async fn me(&self, call: Call, auth: BearerAuth) -> ApiResult<UserProfile> {
        Ok(Json(
            call.on_behalf_of(&auth).send::<GetMe>(&Empty {}).await?,
        ))
    }

    /// Change the caller's nickname, avatar or sex; absent fields stay as they are.
    #[oai(path = "/me", method = "patch", operation_id = "update_me")]
    async fn update_me(
        &self,
        call: Call,
        auth: BearerAuth,
        body: Json<UpdateProfileRequest>,
    ) -> ApiResult<UserProfile> {
        Ok(Json(
            call.on_behalf_of(&auth)
                .send::<UpdateProfile>(&body.0)
                .await?,
        ))
    }

    /// Another user's public profile.
    #[oai(path = "/:user_id", method = "get", operation_id = "get_user")]
    async fn get(
        &self,
        call: Call,
        auth: BearerAuth,
        user_id: Path<Uuid>,
    ) -> ApiResult<PublicUser> {
        Ok(Json(
            call.on_behalf_of(&auth)
                .send::<GetUser>(&GetUserRequest { user_id: user_id.0 })
                .await?,
        ))
    }

    /// Find users by exactly one of: exact `phone`, `nickname` substring, or `ids`
    /// (comma-separated, at most 100). Paged: `limit` 1-100 (default 20), `cursor` from the
    /// previous page's `next_cursor`.
    #[oai(path = "/", method = "get", operation_id = "find_users")]
    #[allow(clippy::too_many_arguments)]
    async fn find(
        &self,
        call: Call,
        auth: BearerAuth,
        #[oai(validator(max_length = 16))] phone: Query<Option<String>>,
        #[oai(validator(max_length = 32))] nickname: Query<Option<String>>,
        #[oai(validator(max_length = 4000))] ids: Query<Option<String>>,
        limit: Query<Option<u32>>,
        #[oai(validator(max_length = 64))] cursor: Query<Option<String>>,
    ) -> ApiResult<PublicUserPage> {
        let ids = ids.0.as_deref().map(parse_ids).transpose()?;
        let request = FindUsersRequest {
            phone: phone.0,
            nickname: nickname.0,
            ids,
            limit: limit.0,
            cursor: cursor.0,
        };
        Ok(Json(
            call.on_behalf_of(&auth).send::<FindUsers>(&request).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_or_refuse() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        assert_eq!(parse_ids(&format!("{a}, {b},")).unwrap(), vec![a, b]);
        assert!(parse_ids("x").is_err());
        let many: Vec<String> = (0..=MAX_LOOKUP_IDS)
            .map(|_| Uuid::now_v7().to_string())
            .collect();
        assert!(parse_ids(&many.join(",")).is_err());
    }
}
