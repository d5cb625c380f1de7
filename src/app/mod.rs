//! The use cases, between their callers (HTTP handlers, benches, tests) and
//! the stores. Each service is cheap to clone (pools and `Arc`s), owns the
//! order of its steps (commit in PostgreSQL, then arm in Redis, then tell
//! the snapshot) and answers in domain and store types and one [`AppError`].

mod error;
pub mod payments;
pub mod purchases;
pub mod sales;
pub mod stats;
pub mod waitlist;

pub use error::AppError;
pub use payments::Payments;
pub use purchases::Purchases;
pub use sales::Sales;
pub use stats::Stats;
pub use waitlist::Waitlist;
