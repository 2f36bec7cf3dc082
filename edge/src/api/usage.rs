//! Usage quotas: a user's usage and limits (their own, or anyone's with `quotas:read`), and
//! an administrator's plan and overrides for a user (`quotas:write`). Chat and social each
//! count their own metrics; the edge asks both and lists their items side by side.

use mesh_contracts::usage::{
    ChatSetQuota, ChatUsage, QuotaSetting, SetQuotaRequest, SocialSetQuota, SocialUsage, Usage,
    UsageRequest,
};
use poem_openapi::OpenApi;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use uuid::Uuid;

use super::Tag;
use crate::caller::{BearerAuth, Call};
use crate::problem::{ApiError, ApiResult};

pub struct UsageApi;

#[OpenApi(tag = "Tag::Users")]
impl UsageApi {
    /// The caller's plan, overrides, and each limited quantity's use and limit (messages and
    /// friend requests today, UTC; groups owned; the largest owned group's size).
    #[oai(
        path = "/v1/users/me/usage",
        method = "get",
        operation_id = "get_my_usage"
    )]
    async fn mine(&self, call: Call, auth: BearerAuth) -> ApiResult<Usage> {
        let user_id = auth.0.user_id;
        Ok(Json(usage_of(&call.on_behalf_of(&auth), user_id).await?))
    }

    /// Anyone's usage and limits.
    #[oai(
        path = "/v1/admin/users/:user_id/usage",
        method = "get",
        operation_id = "admin_get_usage",
        tag = "Tag::Admin"
    )]
    async fn of_user(&self, call: Call, auth: BearerAuth, user_id: Path<Uuid>) -> ApiResult<Usage> {
        let call = call.permitted(&auth, "admin_get_usage").await?;
        Ok(Json(usage_of(&call, user_id.0).await?))
    }

    /// Set a user's plan (`free`, `pro`) and per-limit overrides, replacing earlier ones;
    /// answers the usage under the new limits. An unknown plan is `validation_failed` (400).
    #[oai(
        path = "/v1/admin/users/:user_id/quota",
        method = "put",
        operation_id = "admin_set_quota",
        tag = "Tag::Admin"
    )]
    async fn set(
        &self,
        call: Call,
        auth: BearerAuth,
        user_id: Path<Uuid>,
        body: Json<QuotaSetting>,
    ) -> ApiResult<Usage> {
        let call = call.permitted(&auth, "admin_set_quota").await?;
        let request = SetQuotaRequest {
            user_id: user_id.0,
            setting: body.0,
        };
        call.send::<ChatSetQuota>(&request).await?;
        call.send::<SocialSetQuota>(&request).await?;
        Ok(Json(usage_of(&call, user_id.0).await?))
    }
}

/// Chat's and social's usage of `user_id`, as one.
async fn usage_of(call: &Call, user_id: Uuid) -> Result<Usage, ApiError> {
    let request = UsageRequest { user_id };
    let (chat, social) = tokio::try_join!(
        call.send::<ChatUsage>(&request),
        call.send::<SocialUsage>(&request)
    )?;
    Ok(Usage {
        items: chat.items.into_iter().chain(social.items).collect(),
        ..chat
    })
}
