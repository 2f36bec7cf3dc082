//! Turns a batch of accepted messages into stored ones: drops resends, then numbers the rest
//! per conversation, continuing each conversation's last seq without gaps.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use uuid::Uuid;

/// What makes two messages the same message: a sender's client id within a conversation.
pub type DedupKey<'a> = (&'a str, Uuid, &'a str);

/// What happens to one message of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Stored now with this seq.
    New { seq: i64 },
    /// Already stored by an earlier batch.
    Stored,
    /// A resend of the message at this index of the same batch.
    SameAs(usize),
}

/// Plans a batch. `already_stored(key)` says whether an earlier batch stored that message;
/// `last_seq` holds each conversation's current last seq (absent means 0) and is advanced.
pub fn plan<'a>(
    keys: &[DedupKey<'a>],
    already_stored: impl Fn(&DedupKey<'a>) -> bool,
    last_seq: &mut HashMap<String, i64>,
) -> Vec<Slot> {
    let mut first_seen: HashMap<DedupKey<'a>, usize> = HashMap::with_capacity(keys.len());
    keys.iter()
        .enumerate()
        .map(|(index, key)| {
            if already_stored(key) {
                return Slot::Stored;
            }
            match first_seen.entry(*key) {
                Entry::Occupied(first) => Slot::SameAs(*first.get()),
                Entry::Vacant(slot) => {
                    slot.insert(index);
                    let last = last_seq.entry(key.0.to_owned()).or_insert(0);
                    *last += 1;
                    Slot::New { seq: *last }
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn numbers_each_conversation_without_gaps_in_arrival_order() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let keys = [
            ("c1", a, "1"),
            ("c2", b, "1"),
            ("c1", a, "2"),
            ("c1", b, "1"),
        ];
        let mut last = HashMap::from([("c1".to_owned(), 7)]);
        let slots = plan(&keys, |_| false, &mut last);
        assert_eq!(
            slots,
            vec![
                Slot::New { seq: 8 },
                Slot::New { seq: 1 },
                Slot::New { seq: 9 },
                Slot::New { seq: 10 },
            ]
        );
        assert_eq!(last["c1"], 10);
        assert_eq!(last["c2"], 1);
    }

    #[test]
    fn resends_take_no_seq() {
        let a = Uuid::now_v7();
        let keys = [("c", a, "1"), ("c", a, "2"), ("c", a, "1"), ("c", a, "3")];
        let stored: HashSet<DedupKey> = HashSet::from([("c", a, "2")]);
        let mut last = HashMap::from([("c".to_owned(), 4)]);
        let slots = plan(&keys, |k| stored.contains(k), &mut last);
        assert_eq!(
            slots,
            vec![
                Slot::New { seq: 5 },
                Slot::Stored,
                Slot::SameAs(0),
                Slot::New { seq: 6 },
            ]
        );
        assert_eq!(last["c"], 6);
    }
}
