//! Paging: every list is read in pages of a bounded size with an opaque cursor.

use serde::{Deserialize, Serialize};

/// The page size used when a client does not ask for one.
pub const DEFAULT_PAGE_LIMIT: u32 = 20;
/// The largest page a client may ask for.
pub const MAX_PAGE_LIMIT: u32 = 100;

/// Which page of a list to read: at most `limit` items after `cursor`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRequest {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}
