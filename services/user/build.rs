//! Rebuilds the crate when a migration is added: `sqlx::migrate!` embeds the files it found at
//! compile time, and on stable Rust a new file alone would not make Cargo compile it again.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
