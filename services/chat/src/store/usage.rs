//! The daily message quota, charged in the batch's storing transaction: only a sender's new
//! messages are charged (a resend is found by its unique row first, so a redelivery or a
//! client's retry is never charged twice), and the counter row's lock decides concurrent
//! batches of one sender one after another, so the `>=` check cannot be raced.

use std::collections::{BTreeMap, HashSet};

use mesh_contracts::usage::Metric;
use mesh_service_kit::quota;
use sqlx::PgConnection;
use uuid::Uuid;

use super::SCHEMA;
use crate::domain::batch::{self, DedupKey, Slot};

/// Plans a batch like `batch::plan`, after charging each sender's new messages to their
/// messages-per-day quota in `conn`'s transaction: a message over the quota gets `None` (and
/// no seq, so seqs stay gap-free), as does any resend of it within the batch.
pub async fn plan_within_quota<'a>(
    conn: &mut PgConnection,
    keys: &[DedupKey<'a>],
    already_stored: impl Fn(&DedupKey<'a>) -> bool,
    last_seq: &mut std::collections::HashMap<String, i64>,
) -> sqlx::Result<Vec<Option<Slot>>> {
    let mut seen: HashSet<DedupKey<'a>> = HashSet::with_capacity(keys.len());
    let mut wanted: BTreeMap<Uuid, Vec<usize>> = BTreeMap::new();
    for (index, key) in keys.iter().enumerate() {
        if !already_stored(key) && seen.insert(*key) {
            wanted.entry(key.1).or_default().push(index);
        }
    }
    let charges: Vec<quota::Charge> = wanted
        .iter()
        .map(|(sender, indices)| quota::Charge {
            user: *sender,
            wanted: u32::try_from(indices.len()).unwrap_or(u32::MAX),
        })
        .collect();
    let granted = quota::charge_today(conn, SCHEMA, Metric::MessagesPerDay, &charges).await?;
    let mut refused: HashSet<DedupKey<'a>> = HashSet::new();
    for (indices, got) in wanted.values().zip(&granted) {
        let granted = usize::try_from(got.granted).unwrap_or(usize::MAX);
        refused.extend(indices.iter().skip(granted).map(|i| keys[*i]));
    }
    let kept: Vec<usize> = (0..keys.len())
        .filter(|i| !refused.contains(&keys[*i]))
        .collect();
    let kept_keys: Vec<DedupKey<'a>> = kept.iter().map(|i| keys[*i]).collect();
    let mut slots = vec![None; keys.len()];
    for (at, slot) in batch::plan(&kept_keys, already_stored, last_seq)
        .into_iter()
        .enumerate()
    {
        slots[kept[at]] = Some(match slot {
            Slot::SameAs(first) => Slot::SameAs(kept[first]),
            other => other,
        });
    }
    Ok(slots)
}
