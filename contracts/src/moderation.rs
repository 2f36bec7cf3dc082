//! Moderation on the wire: what holders of `messages:moderate` and `groups:moderate` do to
//! other users' messages and groups. The edge checks the permission; only edges may call these
//! operations, and each act is recorded in the audit log and reaches the affected users.

use poem_openapi::Object;
use serde::{Deserialize, Serialize};

use crate::chat::{HistoryRequest, MessagePage, MessageRef};
use crate::rpc;
use crate::rpc::Service;
use crate::social::{Group, GroupPage, GroupRef, ListPageRequest, MemberRef};
use crate::user::Empty;

/// Reads a conversation's history for a report: a page like `history`'s, and why.
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct ReportRequest {
    /// Messages with a seq greater than this, oldest first.
    pub after_seq: Option<i64>,
    /// Messages with a seq lower than this, newest first (the default: the latest messages).
    pub before_seq: Option<i64>,
    #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
    pub limit: Option<u32>,
    /// Why the history is read (the report being handled); written to the edge's log.
    #[oai(validator(min_length = 1, max_length = 200))]
    pub reason: String,
}

rpc!(
    /// Moderation: recalls any message; its members see it recalled by moderation.
    ModerateRecall, Service::Chat, "moderate_recall", MessageRef => Empty
);
rpc!(
    /// Moderation: a page of any conversation's history.
    ModerateHistory, Service::Chat, "moderate_history", HistoryRequest => MessagePage
);
rpc!(
    /// Moderation: every group, oldest first.
    ModerateListGroups, Service::Social, "moderate_list_groups", ListPageRequest => GroupPage
);
rpc!(
    /// Moderation: any group.
    ModerateGetGroup, Service::Social, "moderate_get_group", GroupRef => Group
);
rpc!(
    /// Moderation: removes a member (not the owner) from any group.
    ModerateRemoveMember, Service::Social, "moderate_remove_member", MemberRef => Empty
);
rpc!(
    /// Moderation: dissolves any group.
    ModerateDissolveGroup, Service::Social, "moderate_dissolve_group", GroupRef => Empty
);
