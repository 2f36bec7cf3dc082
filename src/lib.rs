//! The `mesh` binary's library half: typed configuration and the role launcher, so that tests
//! start exactly what `main` starts.

pub mod config;
pub mod console_flags;
pub mod flags;
pub mod guard_flags;
pub mod nats_config;
pub mod private_file;
pub mod roles;
pub mod telemetry;

pub use config::{Role, Settings};
