//! Everything that talks to PostgreSQL or Redis, shared by the API and the
//! worker. Callers get [`StoreError`]: a domain error, "dependency
//! unavailable" (answer 503 and retry) or an unexpected failure.

pub mod arming;
pub mod closing;
pub mod holds;
pub mod postgres;
pub mod redis;

use std::{fmt, future::Future, time::Duration};

use crate::domain::DomainError;

/// Which dependency failed, for messages, logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    Postgres,
    Redis,
}

impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dependency::Postgres => "postgres",
            Dependency::Redis => "redis",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Domain(#[from] DomainError),

    /// Timed out, refused, pool exhausted, connection lost: worth a retry.
    #[error("{dependency} unavailable: {detail}")]
    Unavailable {
        dependency: Dependency,
        detail: String,
    },

    /// Anything else: a bug or a broken invariant. Logged, never shown.
    #[error("unexpected {dependency} error: {detail}")]
    Unexpected {
        dependency: Dependency,
        detail: String,
    },
}

impl StoreError {
    pub fn unavailable(dependency: Dependency, detail: impl fmt::Display) -> Self {
        Self::Unavailable {
            dependency,
            detail: detail.to_string(),
        }
    }

    pub fn unexpected(dependency: Dependency, detail: impl fmt::Display) -> Self {
        Self::Unexpected {
            dependency,
            detail: detail.to_string(),
        }
    }
}

/// Runs one dependency call with an upper bound on its duration: a stalled
/// dependency must turn into a quick 503, never a hung request.
pub async fn bounded<T, E>(
    dependency: Dependency,
    limit: Duration,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, StoreError>
where
    StoreError: From<E>,
{
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result.map_err(StoreError::from),
        Err(_) => Err(StoreError::unavailable(
            dependency,
            format_args!("no answer within {} ms", limit.as_millis()),
        )),
    }
}
