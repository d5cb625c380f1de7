//! `sqlx::migrate!` embeds `migrations/` at compile time, but on stable Rust
//! cargo does not know the macro read that directory: without this, a new
//! migration is left out of the binaries until something else in the crate
//! changes.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
