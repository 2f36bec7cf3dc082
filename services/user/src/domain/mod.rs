//! The user service's rules: parsing of every input and the session-token state machine.
//! Nothing here does I/O.

pub mod fields;
pub mod login_throttle;
pub mod refresh;
pub mod roles;

use mesh_contracts::{ErrorCode, ServiceError};

/// A field failed to parse: 400 `validation_failed` naming the field.
pub fn invalid(field: &str, why: &str) -> ServiceError {
    ServiceError::new(ErrorCode::ValidationFailed, format!("{field}: {why}"))
}

pub use mesh_service_kit::paging;
