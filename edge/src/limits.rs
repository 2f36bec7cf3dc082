//! Request limits the edge enforces itself so that an oversized page or list is a clear 400
//! (`validation_failed`) before any service is asked.

use mesh_contracts::ErrorCode;
use mesh_contracts::chat::{MAX_HISTORY_LIMIT, MAX_PRESENCE_USERS};
use uuid::Uuid;

use crate::problem::ApiError;

/// A limit the client broke, with a message that says how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverLimit(pub String);

impl OverLimit {
    pub const CODE: ErrorCode = ErrorCode::ValidationFailed;
}

impl From<OverLimit> for ApiError {
    fn from(over: OverLimit) -> Self {
        ApiError::new(OverLimit::CODE, over.0)
    }
}

/// A page size of history or of the conversation list: 1 to `MAX_HISTORY_LIMIT`, or absent.
pub fn chat_page_limit(limit: Option<u32>) -> Result<Option<u32>, OverLimit> {
    match limit {
        Some(n) if n == 0 || n > MAX_HISTORY_LIMIT => Err(OverLimit(format!(
            "limit must be between 1 and {MAX_HISTORY_LIMIT}"
        ))),
        other => Ok(other),
    }
}

/// A comma-separated list of 1 to `MAX_PRESENCE_USERS` user ids.
pub fn user_id_list(raw: &str) -> Result<Vec<Uuid>, OverLimit> {
    let ids = raw
        .split(',')
        .map(|part| Uuid::try_parse(part.trim()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| OverLimit("user_ids must be comma-separated user ids".into()))?;
    if ids.len() > MAX_PRESENCE_USERS {
        return Err(OverLimit(format!(
            "at most {MAX_PRESENCE_USERS} user ids per request"
        )));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_limits_are_bounded() {
        assert_eq!(chat_page_limit(None), Ok(None));
        assert_eq!(chat_page_limit(Some(1)), Ok(Some(1)));
        assert_eq!(
            chat_page_limit(Some(MAX_HISTORY_LIMIT)),
            Ok(Some(MAX_HISTORY_LIMIT))
        );
        assert!(chat_page_limit(Some(0)).is_err());
        assert!(chat_page_limit(Some(MAX_HISTORY_LIMIT + 1)).is_err());
    }

    #[test]
    fn user_id_lists_are_parsed_and_bounded() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(user_id_list(&format!("{a}, {b}")), Ok(vec![a, b]));
        assert!(user_id_list("").is_err());
        assert!(user_id_list(&format!("{a},,{b}")).is_err());
        assert!(user_id_list("not-a-uuid").is_err());
        let max = vec![a.to_string(); MAX_PRESENCE_USERS].join(",");
        assert_eq!(
            user_id_list(&max).map(|ids| ids.len()),
            Ok(MAX_PRESENCE_USERS)
        );
        let over = vec![a.to_string(); MAX_PRESENCE_USERS + 1].join(",");
        assert!(user_id_list(&over).is_err());
    }
}
