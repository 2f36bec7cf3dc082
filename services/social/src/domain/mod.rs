//! The social service's rules: parsing of every input, who may do what, and the state
//! transitions of friend and join requests. Nothing here does I/O.

pub mod fields;
pub mod friends;
pub mod groups;

use mesh_contracts::{ErrorCode, ServiceError};

pub use mesh_service_kit::{invalid, not_found};

/// A refusal with a stable code and a message safe to show the caller.
pub fn refuse(code: ErrorCode, why: &str) -> ServiceError {
    ServiceError::new(code, why)
}

pub use mesh_service_kit::paging;
