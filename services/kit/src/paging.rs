//! Page sizes and cursors. A cursor is the id of the last item of the previous page; ids are
//! UUIDv7, so ordering by id is ordering by creation.

use mesh_contracts::ServiceError;
use mesh_contracts::page::{DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT};
use uuid::Uuid;

use crate::fault::invalid;

/// A page request parsed and bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: u32,
    pub after: Option<Uuid>,
}

impl Page {
    pub fn parse(limit: Option<u32>, cursor: Option<&str>) -> Result<Self, ServiceError> {
        let limit = limit.unwrap_or(DEFAULT_PAGE_LIMIT);
        if limit == 0 || limit > MAX_PAGE_LIMIT {
            return Err(invalid("limit", &format!("must be 1 to {MAX_PAGE_LIMIT}")));
        }
        let after = match cursor.filter(|c| !c.is_empty()) {
            None => None,
            Some(c) => Some(
                Uuid::parse_str(c)
                    .map_err(|_| invalid("cursor", "not a cursor returned by this API"))?,
            ),
        };
        Ok(Self { limit, after })
    }

    /// Rows to fetch: one more than the page, to learn whether another page follows.
    pub fn fetch(&self) -> i64 {
        i64::from(self.limit) + 1
    }

    /// Cuts the extra row off and returns the cursor of the next page, if there is one.
    pub fn finish<T>(&self, mut rows: Vec<T>, id: impl Fn(&T) -> Uuid) -> (Vec<T>, Option<String>) {
        if rows.len() > self.limit as usize {
            rows.truncate(self.limit as usize);
            let next = rows.last().map(|row| id(row).to_string());
            (rows, next)
        } else {
            (rows, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_bounded() {
        assert_eq!(Page::parse(None, None).unwrap().limit, DEFAULT_PAGE_LIMIT);
        assert_eq!(
            Page::parse(Some(MAX_PAGE_LIMIT), None).unwrap().limit,
            MAX_PAGE_LIMIT
        );
        assert!(Page::parse(Some(0), None).is_err());
        assert!(Page::parse(Some(MAX_PAGE_LIMIT + 1), None).is_err());
        assert!(Page::parse(None, Some("nope")).is_err());
        assert_eq!(Page::parse(None, Some("")).unwrap().after, None);
    }

    #[test]
    fn finish_reports_a_next_cursor_only_when_more_rows_exist() {
        let page = Page::parse(Some(2), None).unwrap();
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let (rows, next) = page.finish(ids.clone(), |id| *id);
        assert_eq!(rows, ids[..2]);
        assert_eq!(next, Some(ids[1].to_string()));
        let (rows, next) = page.finish(ids[..2].to_vec(), |id| *id);
        assert_eq!(rows.len(), 2);
        assert_eq!(next, None);
    }
}
