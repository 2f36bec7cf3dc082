//! Chat rules without I/O: what a valid inbound message is, who may post, how a batch becomes
//! stored messages, which worker should own which partition, what a claim makes of a
//! partition's record of a stream or bucket that no longer exists, who is notified of what,
//! and how much one page may carry.

pub mod assignment;
pub mod authorize;
pub mod batch;
pub mod cursor;
pub mod inbound;
pub mod incarnation;
pub mod notices;
pub mod page;

pub use mesh_service_kit::{invalid, not_found};
