//! The pieces every worker shares, so each service writes only its own rules: Postgres pools
//! and migrations, outbox writes, the handlers' error type (`Fault`), and paging.

pub mod dead_letter;
pub mod events;
pub mod fault;
pub mod outbox;
pub mod paging;
pub mod postgres;
pub mod quota;
pub mod stop;

pub use fault::{Fault, invalid, not_found};
pub use paging::Page;
pub use postgres::{db_error, internal_error, is_permanent, is_unique_violation};
pub use stop::pause;
