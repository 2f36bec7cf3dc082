//! One push to many users in a single NATS message (`<prefix>.push.many`): the users it is
//! for and the frame each of them receives.
//!
//! A group's message would otherwise cost one publish per member, and one NATS message per
//! member into every edge. Every edge subscribes to `push.many` once and hands the frame to
//! those of the listed users it holds connections for. The recipients are chosen by the chat
//! worker as before; the edge only routes.
//!
//! Layout (binary, so a frame travels as the client's JSON text without re-encoding):
//! `version: u8 = 1`, `count: u16` big-endian (1..=[`MAX_USERS`]), `count` user ids of 16
//! bytes each, then the frame to the end of the message.

use uuid::Uuid;

/// The layout's version; anything else is refused.
pub const VERSION: u8 = 1;

/// Users named in one message at most (64 KiB of ids); larger audiences take several.
pub const MAX_USERS: usize = 4096;

const HEADER: usize = 3;
const ID: usize = 16;

/// A decoded push: who receives it and what.
#[derive(Debug, PartialEq, Eq)]
pub struct ManyPush<'a> {
    pub users: Vec<Uuid>,
    /// The frame as the client receives it (JSON text).
    pub frame: &'a [u8],
}

/// Why a `push.many` message was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadManyPush {
    #[error("shorter than its header")]
    Short,
    #[error("unknown layout version {0}")]
    Version(u8),
    #[error("names no user, or more than {MAX_USERS}")]
    Count(usize),
    #[error("ends inside its user ids")]
    Truncated,
}

/// The messages that carry `frame` to `users`: one per [`MAX_USERS`] users, none for nobody.
pub fn encode(users: &[Uuid], frame: &[u8]) -> Vec<Vec<u8>> {
    users
        .chunks(MAX_USERS)
        .map(|chunk| {
            let mut out = Vec::with_capacity(HEADER + chunk.len() * ID + frame.len());
            out.push(VERSION);
            let count = u16::try_from(chunk.len()).expect("MAX_USERS fits in u16");
            out.extend_from_slice(&count.to_be_bytes());
            for user in chunk {
                out.extend_from_slice(user.as_bytes());
            }
            out.extend_from_slice(frame);
            out
        })
        .collect()
}

/// Reads one message; the frame borrows from `payload`.
pub fn decode(payload: &[u8]) -> Result<ManyPush<'_>, BadManyPush> {
    let Some((header, rest)) = payload.split_first_chunk::<HEADER>() else {
        return Err(BadManyPush::Short);
    };
    if header[0] != VERSION {
        return Err(BadManyPush::Version(header[0]));
    }
    let count = usize::from(u16::from_be_bytes([header[1], header[2]]));
    if count == 0 || count > MAX_USERS {
        return Err(BadManyPush::Count(count));
    }
    let Some((ids, frame)) = rest.split_at_checked(count * ID) else {
        return Err(BadManyPush::Truncated);
    };
    let users = ids
        .chunks_exact(ID)
        .map(|id| Uuid::from_bytes(id.try_into().expect("chunks of 16")))
        .collect();
    Ok(ManyPush { users, frame })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(n: usize) -> Vec<Uuid> {
        (0..n).map(|_| Uuid::now_v7()).collect()
    }

    #[test]
    fn a_push_round_trips() {
        let to = users(3);
        let frame = br#"{"type":"message"}"#;
        let messages = encode(&to, frame);
        assert_eq!(messages.len(), 1);
        let push = decode(&messages[0]).unwrap();
        assert_eq!(push.users, to);
        assert_eq!(push.frame, frame);
    }

    #[test]
    fn a_large_audience_takes_several_messages_each_with_the_frame() {
        let to = users(MAX_USERS * 2 + 5);
        let messages = encode(&to, b"f");
        assert_eq!(messages.len(), 3);
        let mut seen = Vec::new();
        for message in &messages {
            let push = decode(message).unwrap();
            assert_eq!(push.frame, b"f");
            seen.extend(push.users);
        }
        assert_eq!(seen, to);
        assert!(encode(&[], b"f").is_empty());
    }

    #[test]
    fn malformed_messages_are_refused() {
        let good = encode(&users(2), b"{}").remove(0);
        assert_eq!(decode(&good[..2]), Err(BadManyPush::Short));
        let mut other = good.clone();
        other[0] = 2;
        assert_eq!(decode(&other), Err(BadManyPush::Version(2)));
        assert_eq!(decode(&[VERSION, 0, 0]), Err(BadManyPush::Count(0)));
        let too_many = u16::try_from(MAX_USERS + 1).unwrap().to_be_bytes();
        assert_eq!(
            decode(&[VERSION, too_many[0], too_many[1]]),
            Err(BadManyPush::Count(MAX_USERS + 1))
        );
        assert_eq!(decode(&good[..3 + 20]), Err(BadManyPush::Truncated));
    }
}
