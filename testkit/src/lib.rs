//! Test support as a library, shared by the API's tests, the worker's tests
//! and the benches (instead of each including the others' files by path):
//!
//! - [`services`]: where the project's test PostgreSQL and Redis are, and
//!   polling until something holds;
//! - [`idp`]: a local OpenID Connect provider that signs real tokens;
//! - [`node`]: a real API node in-process, for the worker's tests;
//! - [`payments`]: a payment provider that signs real webhooks;
//! - [`sse`]: a reader of the API's event streams;
//! - [`worker`]: a sale in a fresh database, reservations through the real
//!   Lua script, worker processes from the real binary, and the invariants.

pub mod idp;
pub mod node;
pub mod payments;
pub mod services;
pub mod sse;
pub mod worker;
