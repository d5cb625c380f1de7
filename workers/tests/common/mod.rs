//! The worker's tests use the shared test support (flashsale-testkit) with
//! this package's binary.
#![allow(dead_code, unused_imports)] // each test binary uses a different subset

pub use flashsale_testkit::{services::*, worker::*};

/// The worker binary the harness starts.
pub const WORKER: &str = env!("CARGO_BIN_EXE_flashsale-worker");
