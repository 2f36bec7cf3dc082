//! Friend requests and friendships: who may send, accept, reject or cancel, and what sending
//! does given the state between two users.

use mesh_contracts::social::FriendRequestStatus;
use mesh_contracts::{ErrorCode, ServiceError};
use uuid::Uuid;

use super::{not_found, refuse};

/// The stored spelling of a request status.
pub fn status_str(status: FriendRequestStatus) -> &'static str {
    match status {
        FriendRequestStatus::Pending => "pending",
        FriendRequestStatus::Accepted => "accepted",
        FriendRequestStatus::Rejected => "rejected",
        FriendRequestStatus::Cancelled => "cancelled",
    }
}

/// Reads a stored status; the table's CHECK constraint admits nothing else.
pub fn status_from_str(raw: &str) -> FriendRequestStatus {
    match raw {
        "accepted" => FriendRequestStatus::Accepted,
        "rejected" => FriendRequestStatus::Rejected,
        "cancelled" => FriendRequestStatus::Cancelled,
        _ => FriendRequestStatus::Pending,
    }
}

/// The key of the transaction-scoped advisory lock that serializes every change between two
/// users (requests, friendship, blocks), whichever of them acts. A collision between two
/// pairs only serializes them needlessly.
pub fn pair_key(a: Uuid, b: Uuid) -> i64 {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    let mixed = lo.as_u128() ^ hi.as_u128().rotate_left(64);
    ((mixed >> 64) as u64 ^ mixed as u64) as i64
}

/// Refuses operations aimed at the caller themselves.
pub fn not_self(caller: Uuid, target: Uuid, what: &str) -> Result<(), ServiceError> {
    if caller == target {
        return Err(refuse(
            ErrorCode::SelfTarget,
            &format!("you cannot {what} yourself"),
        ));
    }
    Ok(())
}

/// What stands between the caller and the user they ask to be friends with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PairState {
    /// Either of the two blocked the other.
    pub blocked: bool,
    pub friends: bool,
    /// The caller's own pending request to the other user.
    pub pending_from_caller: bool,
    /// The other user's pending request to the caller.
    pub pending_to_caller: Option<Uuid>,
}

/// What sending a friend request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendDecision {
    /// Store a new pending request.
    Create,
    /// The other user already asked: accept their request, the two become friends.
    AcceptTheirs(Uuid),
}

pub fn decide_send(state: PairState) -> Result<SendDecision, ServiceError> {
    if state.blocked {
        return Err(refuse(
            ErrorCode::Blocked,
            "a block between you and this user prevents friend requests",
        ));
    }
    if state.friends {
        return Err(refuse(ErrorCode::AlreadyFriends, "you are already friends"));
    }
    if state.pending_from_caller {
        return Err(refuse(
            ErrorCode::DuplicateRequest,
            "you already have a pending request to this user",
        ));
    }
    Ok(match state.pending_to_caller {
        Some(theirs) => SendDecision::AcceptTheirs(theirs),
        None => SendDecision::Create,
    })
}

/// What the caller wants to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    Accept,
    Reject,
    Cancel,
}

/// The parts of a stored request the rules look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestFacts {
    pub from: Uuid,
    pub to: Uuid,
    pub status: FriendRequestStatus,
}

/// The status a request moves to when `caller` handles it, or why they may not.
///
/// Only the addressee accepts or rejects, only the sender cancels, and only a pending request
/// can be handled. Users outside the request do not learn that it exists.
pub fn decide_handling(
    facts: RequestFacts,
    caller: Uuid,
    handling: Handling,
) -> Result<FriendRequestStatus, ServiceError> {
    if caller != facts.from && caller != facts.to {
        return Err(not_found("friend request"));
    }
    let (allowed, next, who) = match handling {
        Handling::Accept => (
            caller == facts.to,
            FriendRequestStatus::Accepted,
            "only the addressee may accept a request",
        ),
        Handling::Reject => (
            caller == facts.to,
            FriendRequestStatus::Rejected,
            "only the addressee may reject a request",
        ),
        Handling::Cancel => (
            caller == facts.from,
            FriendRequestStatus::Cancelled,
            "only the sender may cancel a request",
        ),
    };
    if !allowed {
        return Err(refuse(ErrorCode::Forbidden, who));
    }
    if facts.status != FriendRequestStatus::Pending {
        return Err(refuse(
            ErrorCode::RequestHandled,
            &format!("the request was already {}", status_str(facts.status)),
        ));
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip() {
        for status in [
            FriendRequestStatus::Pending,
            FriendRequestStatus::Accepted,
            FriendRequestStatus::Rejected,
            FriendRequestStatus::Cancelled,
        ] {
            assert_eq!(status_from_str(status_str(status)), status);
        }
    }

    #[test]
    fn pair_keys_ignore_order_and_differ_between_pairs() {
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(pair_key(a, b), pair_key(b, a));
        assert_ne!(pair_key(a, b), pair_key(a, c));
    }

    #[test]
    fn self_is_refused() {
        let a = Uuid::now_v7();
        assert_eq!(
            not_self(a, a, "befriend").unwrap_err().code,
            ErrorCode::SelfTarget
        );
        assert!(not_self(a, Uuid::now_v7(), "befriend").is_ok());
    }

    #[test]
    fn sending_depends_on_the_pair() {
        let code = |state| decide_send(state).unwrap_err().code;
        let blocked = PairState {
            blocked: true,
            friends: true,
            ..PairState::default()
        };
        assert_eq!(code(blocked), ErrorCode::Blocked);
        let friends = PairState {
            friends: true,
            ..PairState::default()
        };
        assert_eq!(code(friends), ErrorCode::AlreadyFriends);
        let mine = PairState {
            pending_from_caller: true,
            ..PairState::default()
        };
        assert_eq!(code(mine), ErrorCode::DuplicateRequest);
        let theirs = Uuid::now_v7();
        let crossed = PairState {
            pending_to_caller: Some(theirs),
            ..PairState::default()
        };
        assert_eq!(
            decide_send(crossed).unwrap(),
            SendDecision::AcceptTheirs(theirs)
        );
        assert_eq!(
            decide_send(PairState::default()).unwrap(),
            SendDecision::Create
        );
    }

    #[test]
    fn only_the_right_party_handles_a_pending_request() {
        let (from, to, stranger) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let pending = RequestFacts {
            from,
            to,
            status: FriendRequestStatus::Pending,
        };
        assert_eq!(
            decide_handling(pending, to, Handling::Accept).unwrap(),
            FriendRequestStatus::Accepted
        );
        assert_eq!(
            decide_handling(pending, to, Handling::Reject).unwrap(),
            FriendRequestStatus::Rejected
        );
        assert_eq!(
            decide_handling(pending, from, Handling::Cancel).unwrap(),
            FriendRequestStatus::Cancelled
        );
        let code = |facts, who, h| decide_handling(facts, who, h).unwrap_err().code;
        assert_eq!(code(pending, from, Handling::Accept), ErrorCode::Forbidden);
        assert_eq!(code(pending, from, Handling::Reject), ErrorCode::Forbidden);
        assert_eq!(code(pending, to, Handling::Cancel), ErrorCode::Forbidden);
        for h in [Handling::Accept, Handling::Reject, Handling::Cancel] {
            assert_eq!(code(pending, stranger, h), ErrorCode::NotFound);
        }
        let done = RequestFacts {
            status: FriendRequestStatus::Accepted,
            ..pending
        };
        assert_eq!(code(done, to, Handling::Accept), ErrorCode::RequestHandled);
        assert_eq!(code(done, to, Handling::Reject), ErrorCode::RequestHandled);
        assert_eq!(
            code(done, from, Handling::Cancel),
            ErrorCode::RequestHandled
        );
    }
}
