//! Chat rules without I/O: what a valid inbound message is, who may post, how a batch becomes
//! stored messages, and which worker should own which partition.

pub mod assignment;
pub mod authorize;
pub mod batch;
pub mod cursor;
pub mod inbound;

use mesh_contracts::{ErrorCode, ServiceError};

pub fn not_found(what: &str) -> ServiceError {
    ServiceError::new(ErrorCode::NotFound, format!("no such {what}"))
}

pub fn invalid(detail: impl Into<String>) -> ServiceError {
    ServiceError::new(ErrorCode::ValidationFailed, detail)
}
