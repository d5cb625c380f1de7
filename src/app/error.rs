//! The one error of the use cases: a business refusal or a store failure
//! (both carried by [`StoreError`]), or a request the rules refuse before
//! any store is asked.

use std::{borrow::Cow, time::Duration};

use crate::{domain::DomainError, store::StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),

    /// The shopper is over the cluster's per-user attempt rate.
    #[error("too many attempts; retry in {0:?}")]
    RateLimited(Duration),

    /// The request cannot be served as asked; the message says what to change.
    #[error("{0}")]
    Invalid(Cow<'static, str>),
}

impl From<DomainError> for AppError {
    fn from(error: DomainError) -> Self {
        Self::Store(StoreError::Domain(error))
    }
}
