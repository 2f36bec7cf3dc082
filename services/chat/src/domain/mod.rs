//! Chat rules without I/O: what a valid inbound message is, who may post, how a batch becomes
//! stored messages, which worker should own which partition, and who is notified of what.

pub mod assignment;
pub mod authorize;
pub mod batch;
pub mod cursor;
pub mod inbound;
pub mod notices;

use mesh_contracts::{ErrorCode, ServiceError};

pub fn not_found(what: &str) -> ServiceError {
    ServiceError::new(ErrorCode::NotFound, format!("no such {what}"))
}

pub fn invalid(detail: impl Into<String>) -> ServiceError {
    ServiceError::new(ErrorCode::ValidationFailed, detail)
}
