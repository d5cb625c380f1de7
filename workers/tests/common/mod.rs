//! The worker's tests use the shared test support (flashsale-testkit) with
//! this package's binary.
#![allow(dead_code, unused_imports)] // each test binary uses a different subset

mod holds_due;
mod shop;

pub use flashsale_testkit::{services::*, worker::*};
pub use holds_due::{hold_with_a_stopped_worker, make_holds_due};
pub use shop::{Shop, order_id, pay_by};

/// The worker binary the harness starts.
pub const WORKER: &str = env!("CARGO_BIN_EXE_flashsale-worker");
