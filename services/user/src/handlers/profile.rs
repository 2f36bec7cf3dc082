//! Own profile, other users' public profiles, and user search.

use mesh_contracts::events::UserEvent;
use mesh_contracts::user::{
    Empty, FindUsersRequest, GetUserRequest, MAX_LOOKUP_IDS, PublicUser, PublicUserPage,
    UpdateProfileRequest, UserProfile,
};
use mesh_contracts::{ErrorCode, ServiceError};
use mesh_nats::CallContext;
use mesh_service_kit::Fault;

use super::{State, caller, not_found, own_account};
use crate::domain::fields::{Avatar, Nickname, Phone};
use crate::domain::invalid;
use crate::domain::paging::Page;
use crate::store::accounts::{self, Filter, ProfileChange};
use crate::store::outbox;

pub async fn get_me(
    state: State,
    ctx: CallContext,
    _req: Empty,
) -> Result<UserProfile, ServiceError> {
    let (user, _) = caller(&ctx)?;
    Ok(own_account(&state, user).await?.profile())
}

pub async fn update(
    state: State,
    ctx: CallContext,
    req: UpdateProfileRequest,
) -> Result<UserProfile, Fault> {
    let (user, _) = caller(&ctx)?;
    let nickname = req.nickname.as_deref().map(Nickname::parse).transpose()?;
    let avatar = req
        .avatar
        .as_deref()
        .map(Avatar::parse)
        .transpose()?
        .map(Avatar::into_inner);
    let change = ProfileChange {
        nickname: nickname.as_ref().map(Nickname::as_str),
        avatar: avatar.as_ref().map(Option::as_deref),
        sex: req.sex,
    };
    let mut tx = state.pool.begin().await?;
    let row = accounts::update_profile(&mut tx, user, &change)
        .await?
        .ok_or_else(|| {
            ServiceError::new(ErrorCode::Unauthorized, "the account no longer exists")
        })?;
    outbox::append(
        &mut tx,
        user,
        &UserEvent::ProfileUpdated { user: row.public() },
    )
    .await?;
    tx.commit().await?;
    Ok(row.profile())
}

pub async fn get_user(
    state: State,
    ctx: CallContext,
    req: GetUserRequest,
) -> Result<PublicUser, Fault> {
    caller(&ctx)?;
    match accounts::by_id(&state.pool, req.user_id).await? {
        Some(row) if !row.disabled => Ok(row.public()),
        _ => Err(not_found("user").into()),
    }
}

pub async fn find(
    state: State,
    ctx: CallContext,
    req: FindUsersRequest,
) -> Result<PublicUserPage, Fault> {
    caller(&ctx)?;
    let page = Page::parse(req.limit, req.cursor.as_deref())?;
    let given = [
        req.phone.is_some(),
        req.nickname.is_some(),
        req.ids.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if given != 1 {
        return Err(invalid("query", "give exactly one of phone, nickname or ids").into());
    }
    let phone;
    let nickname;
    let filter = if let Some(raw) = &req.phone {
        phone = Phone::parse(raw)?;
        Filter::Phone(phone.as_str())
    } else if let Some(raw) = &req.nickname {
        nickname = Nickname::parse(raw)?;
        Filter::NicknameContains(nickname.as_str())
    } else {
        let ids = req.ids.as_deref().unwrap_or_default();
        if ids.is_empty() || ids.len() > MAX_LOOKUP_IDS {
            return Err(invalid("ids", &format!("give 1 to {MAX_LOOKUP_IDS} ids")).into());
        }
        Filter::Ids(ids)
    };
    let rows = accounts::list(&state.pool, filter, false, page).await?;
    let (rows, next_cursor) = page.finish(rows, |row| row.id);
    Ok(PublicUserPage {
        items: rows.iter().map(|r| r.public()).collect(),
        next_cursor,
    })
}
