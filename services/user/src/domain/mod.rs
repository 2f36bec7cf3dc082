//! The user service's rules: parsing of every input and the session-token state machine.
//! Nothing here does I/O.

pub mod failed_keys;
pub mod fields;
pub mod login_throttle;
pub mod refresh;
pub mod roles;
pub mod sessions;

pub use mesh_service_kit::{invalid, not_found};

pub use mesh_service_kit::paging;
