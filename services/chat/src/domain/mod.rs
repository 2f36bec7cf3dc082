//! Chat rules without I/O: what a valid inbound message is, who may post, how a batch becomes
//! stored messages, which worker should own which partition, and who is notified of what.

pub mod assignment;
pub mod authorize;
pub mod batch;
pub mod cursor;
pub mod inbound;
pub mod notices;

pub use mesh_service_kit::{invalid, not_found};
