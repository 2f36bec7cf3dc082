//! How much one page may carry. A page (of history, of the conversation list) is one NATS reply,
//! and the server refuses a message over its `max_payload` (1 MiB by default): a reply that
//! does not fit is never delivered and the caller times out, at the same place every time. A
//! count limit alone does not bound it (200 messages of 16 KiB, escaped to twice that in JSON,
//! are over 6 MiB), so a page also stops at a byte budget, measured as the items will be
//! encoded, and says that more follow.

use serde::Serialize;

/// The most bytes of encoded items one page carries: well under NATS's default `max_payload`
/// (1 MiB), leaving room for the page's other fields and the reply's headers. One item is
/// always at most about 33 KiB (a 16 KiB body that escapes to twice its size, plus its
/// fields), so a page of at least one item always fits.
pub const PAGE_BYTES: usize = 512 * 1024;

/// The budget of a page on a server that takes messages of up to `max_payload` bytes:
/// [`PAGE_BYTES`], or half of `max_payload` where the server takes less (0, not known, counts
/// as the default).
pub fn budget(max_payload: usize) -> usize {
    if max_payload == 0 {
        PAGE_BYTES
    } else {
        PAGE_BYTES.min(max_payload / 2)
    }
}

/// Keeps the longest prefix of `items` whose JSON encoding (as `serde_json` writes it, with
/// the separating commas) fits in `budget` bytes, and always the first item. True when items
/// were dropped: the page then says more follow, and its continuation (the last kept item's
/// seq or cursor) leads to the first dropped one.
pub fn fit<T: Serialize>(items: &mut Vec<T>, budget: usize) -> bool {
    let mut used = 0usize;
    for (index, item) in items.iter().enumerate() {
        used = used.saturating_add(encoded_len(item) + usize::from(index > 0));
        if index > 0 && used > budget {
            items.truncate(index);
            return true;
        }
    }
    false
}

/// The length of `item` encoded as compact JSON. An item that cannot be encoded counts as
/// empty: encoding the reply then fails and says so.
pub fn encoded_len<T: Serialize>(item: &T) -> usize {
    let mut counter = Counter(0);
    match serde_json::to_writer(&mut counter, item) {
        Ok(()) => counter.0,
        Err(_) => 0,
    }
}

/// Counts the bytes written to it and keeps none.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_measure_is_the_encoded_length() {
        let quotes = "\"".repeat(100);
        assert_eq!(
            encoded_len(&quotes),
            serde_json::to_vec(&quotes).unwrap().len()
        );
        assert_eq!(encoded_len(&quotes), 202);
        let items = vec!["a".to_owned(), quotes, "b\n".to_owned()];
        let whole = serde_json::to_vec(&items).unwrap().len();
        // The items and their commas: the list's brackets are the page's.
        let measured: usize = items.iter().map(encoded_len).sum::<usize>() + items.len() - 1;
        assert_eq!(measured + 2, whole);
    }

    #[test]
    fn a_page_stops_at_its_budget_and_keeps_at_least_one_item() {
        let item = "x".repeat(98); // 100 bytes encoded
        let mut items = vec![item.clone(); 10];
        // Three items and two commas: 302 bytes.
        assert!(fit(&mut items, 302));
        assert_eq!(items.len(), 3);
        let mut items = vec![item.clone(); 10];
        assert!(fit(&mut items, 301));
        assert_eq!(items.len(), 2);
        // Everything fits: nothing dropped.
        let mut items = vec![item.clone(); 10];
        assert!(!fit(&mut items, 10_000));
        assert_eq!(items.len(), 10);
        // One item over the budget still makes a page.
        let mut items = vec![item.clone(); 3];
        assert!(fit(&mut items, 10));
        assert_eq!(items.len(), 1);
        let mut single = vec![item];
        assert!(!fit(&mut single, 10));
        let mut none: Vec<String> = Vec::new();
        assert!(!fit(&mut none, 10));
    }

    #[test]
    fn escaping_counts() {
        // 16 KiB of quotes escape to 32 KiB: a 512 KiB page holds fewer than 16 of them.
        let body = "\"".repeat(16 * 1024);
        let mut items = vec![body; 100];
        assert!(fit(&mut items, PAGE_BYTES));
        assert_eq!(items.len(), 15);
        let encoded = serde_json::to_vec(&items).unwrap().len();
        assert!(encoded <= PAGE_BYTES, "{encoded}");
    }

    #[test]
    fn the_budget_follows_a_smaller_server_limit() {
        assert_eq!(budget(1024 * 1024), PAGE_BYTES);
        assert_eq!(budget(8 * 1024 * 1024), PAGE_BYTES);
        assert_eq!(budget(256 * 1024), 128 * 1024);
        assert_eq!(budget(0), PAGE_BYTES);
    }
}
