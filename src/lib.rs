//! flashsale: a high-concurrency flash-sale purchase engine.
//!
//! The library holds everything the binaries share, so tests, benches and the
//! worker reuse the exact code the API runs:
//! - [`config`]: typed settings from the environment, validated at boot;
//! - [`domain`]: ids, money, sale rules and domain errors (no I/O);
//! - [`app`]: the use cases (purchases, sales, stats) between the callers
//!   and the stores;
//! - [`auth`]: who is calling: this deployment's tokens and the shop's
//!   identity provider's, bans pushed to every node, admin rights;
//! - [`store`]: PostgreSQL and Redis access, Lua scripts, arming;
//! - [`http`]: routes, extractors, the error model and the middleware stack;
//! - [`jobs`]: the purchase job and queue shared with the worker;
//! - [`latency`]: the purchase latency histogram every node shares;
//! - [`snapshot`]: each node's in-memory view of open sales;
//! - [`live`]: each node's fan-out of sale changes and purchase outcomes
//!   to event streams;
//! - [`listener`]: the API node's listener, which closes stalled connections;
//! - [`server`]: wiring pools and the router into a running API node;
//! - [`telemetry`]: structured logs and the Prometheus recorder;
//! - [`tls`]: the process's TLS stack (rustls on ring) for outgoing HTTPS.

pub mod app;
pub mod auth;
pub mod config;
pub mod domain;
pub mod http;
pub mod jobs;
pub mod latency;
pub mod listener;
pub mod live;
pub mod payments;
pub mod server;
pub mod shutdown;
pub mod snapshot;
pub mod store;
pub mod telemetry;
pub mod tls;
