//! Groups: roles and their rights, join policies, and how joining, inviting, leaving,
//! kicking, muting, role changes and transfers are decided.

use mesh_contracts::social::{GroupRole, JoinPolicy, JoinRequestStatus};
use mesh_contracts::{ErrorCode, ServiceError};

use super::{invalid, refuse};

pub fn role_str(role: GroupRole) -> &'static str {
    match role {
        GroupRole::Owner => "owner",
        GroupRole::Admin => "admin",
        GroupRole::Member => "member",
    }
}

/// Reads a stored role; the table's CHECK constraint admits nothing else.
pub fn role_from_str(raw: &str) -> GroupRole {
    match raw {
        "owner" => GroupRole::Owner,
        "admin" => GroupRole::Admin,
        _ => GroupRole::Member,
    }
}

pub fn policy_str(policy: JoinPolicy) -> &'static str {
    match policy {
        JoinPolicy::Open => "open",
        JoinPolicy::Approval => "approval",
        JoinPolicy::InviteOnly => "invite_only",
    }
}

pub fn policy_from_str(raw: &str) -> JoinPolicy {
    match raw {
        "open" => JoinPolicy::Open,
        "invite_only" => JoinPolicy::InviteOnly,
        _ => JoinPolicy::Approval,
    }
}

pub fn join_status_str(status: JoinRequestStatus) -> &'static str {
    match status {
        JoinRequestStatus::Pending => "pending",
        JoinRequestStatus::Approved => "approved",
        JoinRequestStatus::Rejected => "rejected",
    }
}

pub fn join_status_from_str(raw: &str) -> JoinRequestStatus {
    match raw {
        "approved" => JoinRequestStatus::Approved,
        "rejected" => JoinRequestStatus::Rejected,
        _ => JoinRequestStatus::Pending,
    }
}

/// The caller's role, or `not_member` when they do not belong to the group.
pub fn member(role: Option<GroupRole>) -> Result<GroupRole, ServiceError> {
    role.ok_or_else(|| refuse(ErrorCode::NotMember, "you are not a member of this group"))
}

/// The caller's role if they are the owner or an admin.
pub fn manager(role: Option<GroupRole>) -> Result<GroupRole, ServiceError> {
    match member(role)? {
        GroupRole::Member => Err(refuse(
            ErrorCode::Forbidden,
            "only the owner and admins may do this",
        )),
        role => Ok(role),
    }
}

/// Succeeds if the caller owns the group.
pub fn owner(role: Option<GroupRole>) -> Result<(), ServiceError> {
    match member(role)? {
        GroupRole::Owner => Ok(()),
        _ => Err(refuse(ErrorCode::Forbidden, "only the owner may do this")),
    }
}

/// Whether `actor` may act on `target` (kick, mute): the owner on anyone else, an admin on
/// plain members only.
pub fn outranks(actor: GroupRole, target: GroupRole) -> bool {
    matches!(
        (actor, target),
        (GroupRole::Owner, GroupRole::Admin | GroupRole::Member)
            | (GroupRole::Admin, GroupRole::Member)
    )
}

/// How a user gets in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Becomes a member at once.
    Join,
    /// A pending join request is stored for an owner or admin to decide.
    Request,
}

/// What the user asking to join gets.
pub fn decide_join(
    policy: JoinPolicy,
    already_member: bool,
    pending: bool,
) -> Result<Admission, ServiceError> {
    if already_member {
        return Err(refuse(
            ErrorCode::AlreadyMember,
            "you are already a member of this group",
        ));
    }
    match policy {
        JoinPolicy::Open => Ok(Admission::Join),
        JoinPolicy::InviteOnly => Err(refuse(
            ErrorCode::InviteOnly,
            "this group admits members by invitation only",
        )),
        JoinPolicy::Approval if pending => Err(refuse(
            ErrorCode::DuplicateRequest,
            "you already asked to join this group",
        )),
        JoinPolicy::Approval => Ok(Admission::Request),
    }
}

/// What inviting a user achieves: owners and admins add members at once; a plain member adds
/// them to an open group, asks for approval in an approval group, and may not invite into an
/// invite-only group.
pub fn decide_invite(
    inviter: Option<GroupRole>,
    policy: JoinPolicy,
    invitee_member: bool,
    pending: bool,
) -> Result<Admission, ServiceError> {
    let inviter = member(inviter)?;
    if invitee_member {
        return Err(refuse(
            ErrorCode::AlreadyMember,
            "the user is already a member of this group",
        ));
    }
    match (inviter, policy) {
        (GroupRole::Owner | GroupRole::Admin, _) | (GroupRole::Member, JoinPolicy::Open) => {
            Ok(Admission::Join)
        }
        (GroupRole::Member, JoinPolicy::Approval) if pending => Err(refuse(
            ErrorCode::DuplicateRequest,
            "the user already has a pending request to join this group",
        )),
        (GroupRole::Member, JoinPolicy::Approval) => Ok(Admission::Request),
        (GroupRole::Member, JoinPolicy::InviteOnly) => Err(refuse(
            ErrorCode::Forbidden,
            "only the owner and admins may invite into an invite-only group",
        )),
    }
}

/// Refuses a new member when the group is full.
pub fn has_room(member_count: u32, max_members: u32) -> Result<(), ServiceError> {
    if member_count >= max_members {
        return Err(refuse(
            ErrorCode::GroupFull,
            &format!("the group is full ({max_members} members)"),
        ));
    }
    Ok(())
}

/// Only a pending join request can be approved or rejected.
pub fn still_pending(status: JoinRequestStatus) -> Result<(), ServiceError> {
    if status != JoinRequestStatus::Pending {
        return Err(refuse(
            ErrorCode::RequestHandled,
            &format!("the request was already {}", join_status_str(status)),
        ));
    }
    Ok(())
}

/// Anyone but the owner may leave; the owner transfers ownership (or dissolves) first.
pub fn decide_leave(role: GroupRole) -> Result<(), ServiceError> {
    if role == GroupRole::Owner {
        return Err(refuse(
            ErrorCode::OwnerMustTransfer,
            "the owner must transfer ownership before leaving",
        ));
    }
    Ok(())
}

/// Kicking and muting: the owner acts on anyone else, admins on plain members.
pub fn decide_discipline(
    actor: GroupRole,
    target: GroupRole,
    what: &str,
) -> Result<(), ServiceError> {
    if outranks(actor, target) {
        return Ok(());
    }
    let why = match target {
        GroupRole::Owner => format!("nobody may {what} the owner"),
        _ => format!("admins may only {what} plain members"),
    };
    Err(refuse(ErrorCode::Forbidden, &why))
}

/// The owner makes members admins and admins members; ownership moves only by transfer.
pub fn decide_set_role(actor: Option<GroupRole>, new_role: GroupRole) -> Result<(), ServiceError> {
    owner(actor)?;
    if new_role == GroupRole::Owner {
        return Err(invalid(
            "role",
            "use the transfer operation to make someone the owner",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use GroupRole::{Admin, Member, Owner};

    #[test]
    fn stored_spellings_round_trip() {
        for role in [Owner, Admin, Member] {
            assert_eq!(role_from_str(role_str(role)), role);
        }
        for policy in [
            JoinPolicy::Open,
            JoinPolicy::Approval,
            JoinPolicy::InviteOnly,
        ] {
            assert_eq!(policy_from_str(policy_str(policy)), policy);
        }
        for status in [
            JoinRequestStatus::Pending,
            JoinRequestStatus::Approved,
            JoinRequestStatus::Rejected,
        ] {
            assert_eq!(join_status_from_str(join_status_str(status)), status);
        }
    }

    #[test]
    fn rights_by_role() {
        assert_eq!(member(None).unwrap_err().code, ErrorCode::NotMember);
        assert_eq!(manager(None).unwrap_err().code, ErrorCode::NotMember);
        assert_eq!(
            manager(Some(Member)).unwrap_err().code,
            ErrorCode::Forbidden
        );
        assert_eq!(manager(Some(Admin)).unwrap(), Admin);
        assert_eq!(owner(Some(Admin)).unwrap_err().code, ErrorCode::Forbidden);
        assert!(owner(Some(Owner)).is_ok());
    }

    #[test]
    fn joining_follows_the_policy() {
        assert_eq!(
            decide_join(JoinPolicy::Open, false, false).unwrap(),
            Admission::Join
        );
        assert_eq!(
            decide_join(JoinPolicy::Approval, false, false).unwrap(),
            Admission::Request
        );
        let code = |p, m, r| decide_join(p, m, r).unwrap_err().code;
        assert_eq!(
            code(JoinPolicy::Approval, false, true),
            ErrorCode::DuplicateRequest
        );
        assert_eq!(
            code(JoinPolicy::InviteOnly, false, false),
            ErrorCode::InviteOnly
        );
        assert_eq!(
            code(JoinPolicy::Open, true, false),
            ErrorCode::AlreadyMember
        );
    }

    #[test]
    fn inviting_depends_on_the_inviter_and_the_policy() {
        for policy in [
            JoinPolicy::Open,
            JoinPolicy::Approval,
            JoinPolicy::InviteOnly,
        ] {
            for role in [Owner, Admin] {
                assert_eq!(
                    decide_invite(Some(role), policy, false, false).unwrap(),
                    Admission::Join
                );
            }
        }
        assert_eq!(
            decide_invite(Some(Member), JoinPolicy::Open, false, false).unwrap(),
            Admission::Join
        );
        assert_eq!(
            decide_invite(Some(Member), JoinPolicy::Approval, false, false).unwrap(),
            Admission::Request
        );
        let code = |r, p, m, q| decide_invite(r, p, m, q).unwrap_err().code;
        assert_eq!(
            code(Some(Member), JoinPolicy::InviteOnly, false, false),
            ErrorCode::Forbidden
        );
        assert_eq!(
            code(Some(Member), JoinPolicy::Approval, false, true),
            ErrorCode::DuplicateRequest
        );
        assert_eq!(
            code(None, JoinPolicy::Open, false, false),
            ErrorCode::NotMember
        );
        assert_eq!(
            code(Some(Owner), JoinPolicy::Open, true, false),
            ErrorCode::AlreadyMember
        );
    }

    #[test]
    fn capacity_is_enforced() {
        assert!(has_room(1, 2).is_ok());
        assert_eq!(has_room(2, 2).unwrap_err().code, ErrorCode::GroupFull);
    }

    #[test]
    fn only_pending_requests_are_handled() {
        assert!(still_pending(JoinRequestStatus::Pending).is_ok());
        for done in [JoinRequestStatus::Approved, JoinRequestStatus::Rejected] {
            assert_eq!(
                still_pending(done).unwrap_err().code,
                ErrorCode::RequestHandled
            );
        }
    }

    #[test]
    fn the_owner_cannot_leave() {
        assert_eq!(
            decide_leave(Owner).unwrap_err().code,
            ErrorCode::OwnerMustTransfer
        );
        assert!(decide_leave(Admin).is_ok());
        assert!(decide_leave(Member).is_ok());
    }

    #[test]
    fn discipline_follows_rank() {
        assert!(decide_discipline(Owner, Admin, "kick").is_ok());
        assert!(decide_discipline(Owner, Member, "kick").is_ok());
        assert!(decide_discipline(Admin, Member, "kick").is_ok());
        for (actor, target) in [
            (Admin, Owner),
            (Admin, Admin),
            (Member, Member),
            (Member, Owner),
            (Owner, Owner),
        ] {
            assert_eq!(
                decide_discipline(actor, target, "kick").unwrap_err().code,
                ErrorCode::Forbidden,
                "{actor:?} on {target:?}"
            );
        }
    }

    #[test]
    fn only_the_owner_sets_roles_and_never_to_owner() {
        assert!(decide_set_role(Some(Owner), Admin).is_ok());
        assert!(decide_set_role(Some(Owner), Member).is_ok());
        assert_eq!(
            decide_set_role(Some(Admin), Admin).unwrap_err().code,
            ErrorCode::Forbidden
        );
        assert_eq!(
            decide_set_role(None, Admin).unwrap_err().code,
            ErrorCode::NotMember
        );
        assert_eq!(
            decide_set_role(Some(Owner), Owner).unwrap_err().code,
            ErrorCode::ValidationFailed
        );
    }
}
