//! The social service's rules: parsing of every input, who may do what, and the state
//! transitions of friend and join requests. Nothing here does I/O.

pub mod fields;
pub mod friends;
pub mod groups;

use mesh_contracts::{ErrorCode, ServiceError};

/// A field failed to parse: 400 `validation_failed` naming the field.
pub fn invalid(field: &str, why: &str) -> ServiceError {
    ServiceError::new(ErrorCode::ValidationFailed, format!("{field}: {why}"))
}

/// A refusal with a stable code and a message safe to show the caller.
pub fn refuse(code: ErrorCode, why: &str) -> ServiceError {
    ServiceError::new(code, why)
}

/// Something the caller named does not exist (or is not theirs to see).
pub fn not_found(what: &str) -> ServiceError {
    ServiceError::new(ErrorCode::NotFound, format!("no such {what}"))
}

pub use mesh_service_kit::paging;
