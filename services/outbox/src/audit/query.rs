//! An admin's audit query, parsed once at the boundary: filters and a page, newest first.

use mesh_contracts::ServiceError;
use mesh_contracts::audit::{ListAuditRequest, MAX_AUDIT_ACTION_LEN};
use mesh_service_kit::Page;
use time::OffsetDateTime;
use uuid::Uuid;

/// Which records to read: all filters are optional and combine with AND.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    pub actor: Option<Uuid>,
    /// An operation id: ASCII letters, digits and `_`.
    pub action: Option<String>,
    /// Inclusive.
    pub from: Option<OffsetDateTime>,
    /// Exclusive.
    pub to: Option<OffsetDateTime>,
    /// The cursor is the id of the last record of the previous page.
    pub page: Page,
}

use mesh_service_kit::invalid;

impl TryFrom<ListAuditRequest> for AuditQuery {
    type Error = ServiceError;

    fn try_from(req: ListAuditRequest) -> Result<Self, ServiceError> {
        let page = Page::parse(req.limit, req.cursor.as_deref())?;
        let action = req.action.filter(|action| !action.is_empty());
        if let Some(action) = &action {
            let plain = action
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !plain || action.len() > MAX_AUDIT_ACTION_LEN {
                return Err(invalid(
                    "action",
                    &format!(
                        "an operation id: at most {MAX_AUDIT_ACTION_LEN} letters, digits or _"
                    ),
                ));
            }
        }
        if let (Some(from), Some(to)) = (req.from, req.to)
            && to < from
        {
            return Err(invalid("to", "must not be before from"));
        }
        Ok(Self {
            actor: req.user_id,
            action,
            from: req.from,
            to: req.to,
            page,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_contracts::ErrorCode;
    use time::macros::datetime;

    fn parse(req: ListAuditRequest) -> Result<AuditQuery, ServiceError> {
        AuditQuery::try_from(req)
    }

    #[test]
    fn an_empty_request_reads_the_newest_page() {
        let query = parse(ListAuditRequest::default()).unwrap();
        assert_eq!(query.actor, None);
        assert_eq!(query.action, None);
        assert_eq!(query.page.after, None);
    }

    #[test]
    fn actions_must_look_like_operation_ids() {
        let with = |action: &str| {
            parse(ListAuditRequest {
                action: Some(action.into()),
                ..Default::default()
            })
        };
        assert_eq!(
            with("send_friend_request").unwrap().action.as_deref(),
            Some("send_friend_request")
        );
        assert_eq!(with("").unwrap().action, None);
        for bad in ["drop table", "a%", &"a".repeat(65)] {
            assert_eq!(with(bad).unwrap_err().code, ErrorCode::ValidationFailed);
        }
    }

    #[test]
    fn ranges_and_pages_are_checked() {
        let backwards = ListAuditRequest {
            from: Some(datetime!(2025-01-02 00:00 UTC)),
            to: Some(datetime!(2025-01-01 00:00 UTC)),
            ..Default::default()
        };
        assert_eq!(
            parse(backwards).unwrap_err().code,
            ErrorCode::ValidationFailed
        );
        for (limit, cursor) in [(Some(0), None), (Some(101), None), (None, Some("nope"))] {
            let req = ListAuditRequest {
                limit,
                cursor: cursor.map(str::to_owned),
                ..Default::default()
            };
            assert_eq!(parse(req).unwrap_err().code, ErrorCode::ValidationFailed);
        }
    }
}
