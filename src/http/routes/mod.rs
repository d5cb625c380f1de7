//! One file per resource; each exposes `router()` with its documented routes.

pub mod auth;
pub mod events;
pub mod flash_sales;
pub mod health;
pub mod metrics;
pub mod pages;
pub mod payments;
pub mod products;
pub mod purchase;
pub mod sale_status;
pub mod stats;
pub mod users;
pub mod waitlist;
