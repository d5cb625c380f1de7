//! Typed settings read from the environment (12-factor), with defaults.
//! Every field is also a command-line flag, so `flashsale-api --help`
//! documents the whole configuration, and each value is checked as it is
//! parsed ([`parse`]): a setting out of range stops the binary at boot with
//! its name, and the code reads typed values (durations, non-zero counts,
//! header values) without checking again. Identity settings are in
//! [`auth`]; the list of every setting is [`documented`] (`listing`).

mod auth;
mod listing;
pub mod parse;

pub use auth::{AuthMode, AuthSettings, LocalTokenSettings, OIDC_ALGORITHMS, OidcSettings};
pub use listing::{Setting, documented, settings_of};
pub use parse::CorsOrigins;

use std::{fmt, net::SocketAddr, num::NonZeroU32, str::FromStr, time::Duration};

use clap::Args;
use parse::{count, millis, secs};

/// A value that must never be printed: `Debug` and `Display` redact it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s))
    }
}

/// Where PostgreSQL is and how hard we may lean on it.
#[derive(Debug, Clone, Args)]
pub struct DatabaseSettings {
    /// PostgreSQL connection URL (may carry a password, so it is a secret).
    #[arg(
        long = "database-url",
        env = "FLASHSALE_DATABASE_URL",
        value_name = "FLASHSALE_DATABASE_URL"
    )]
    pub database_url: Secret,

    /// Upper bound of the connection pool per process.
    #[arg(
        long,
        env = "FLASHSALE_PG_MAX_CONNECTIONS",
        value_name = "FLASHSALE_PG_MAX_CONNECTIONS",
        default_value = "16",
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub pg_max_connections: u32,
}

/// Where Redis is, how keys are namespaced, and the pool bounds.
#[derive(Debug, Clone, Args)]
pub struct RedisSettings {
    /// Redis URL (may carry a password, so it is a secret).
    #[arg(
        long = "redis-url",
        env = "FLASHSALE_REDIS_URL",
        value_name = "FLASHSALE_REDIS_URL"
    )]
    pub redis_url: Secret,

    /// Prefix of every key this deployment writes, so several deployments
    /// (or parallel tests) can share one Redis.
    #[arg(
        long,
        env = "FLASHSALE_REDIS_PREFIX",
        value_name = "FLASHSALE_REDIS_PREFIX",
        default_value = "fs",
        value_parser = parse::redis_prefix
    )]
    pub redis_prefix: String,
}

/// How long any single call to PostgreSQL or Redis may take before the
/// request answers 503 instead of hanging.
#[derive(Debug, Clone, Copy, Args)]
pub struct DependencySettings {
    #[arg(
        long = "dependency-timeout-ms",
        env = "FLASHSALE_DEPENDENCY_TIMEOUT_MS",
        value_name = "FLASHSALE_DEPENDENCY_TIMEOUT_MS",
        default_value = "1000",
        value_parser = millis(10..=60_000)
    )]
    pub dependency_timeout: Duration,
}

/// What an API node serves to operators only, on its own listener.
#[derive(Debug, Clone, Args)]
pub struct OperatorSettings {
    /// Address of the operator listener: `/metrics`, `/api/health` and the
    /// probes. Keep it off the public network; nginx never routes to it.
    #[arg(
        long,
        env = "FLASHSALE_OPERATOR_BIND",
        value_name = "FLASHSALE_OPERATOR_BIND",
        default_value = "127.0.0.1:3001"
    )]
    pub operator_bind: SocketAddr,

    /// How long a node reuses its readiness verdict, so a flood of probes
    /// costs one check per period.
    #[arg(
        long = "ready-cache-ms",
        env = "FLASHSALE_READY_CACHE_MS",
        value_name = "FLASHSALE_READY_CACHE_MS",
        default_value = "1000",
        value_parser = millis(0..=60_000)
    )]
    pub ready_cache: Duration,
}

/// The HTTP side of an API node.
#[derive(Debug, Clone, Args)]
pub struct HttpSettings {
    /// Address the API node listens on (port 0 picks a free port).
    #[arg(
        long,
        env = "FLASHSALE_BIND",
        value_name = "FLASHSALE_BIND",
        default_value = "127.0.0.1:3000"
    )]
    pub bind: SocketAddr,

    /// Largest request body accepted, in bytes; larger bodies get 413.
    #[arg(
        long,
        env = "FLASHSALE_MAX_BODY_BYTES",
        value_name = "FLASHSALE_MAX_BODY_BYTES",
        default_value = "16384",
        value_parser = count(256..=10 * 1024 * 1024)
    )]
    pub max_body_bytes: usize,

    /// Backstop for a whole request; dependency calls have their own, shorter bound.
    #[arg(
        long = "request-timeout-ms",
        env = "FLASHSALE_REQUEST_TIMEOUT_MS",
        value_name = "FLASHSALE_REQUEST_TIMEOUT_MS",
        default_value = "5000",
        value_parser = millis(10..)
    )]
    pub request_timeout: Duration,

    /// How long in-flight requests may take to finish after SIGTERM.
    #[arg(
        long = "shutdown-grace-secs",
        env = "FLASHSALE_SHUTDOWN_GRACE_SECS",
        value_name = "FLASHSALE_SHUTDOWN_GRACE_SECS",
        default_value = "10",
        value_parser = secs(..)
    )]
    pub shutdown_grace: Duration,

    /// A connection whose writes make no progress this long (the client
    /// stopped reading) is closed, live event streams included.
    #[arg(
        long = "write-stall-timeout-ms",
        env = "FLASHSALE_WRITE_STALL_TIMEOUT_MS",
        value_name = "FLASHSALE_WRITE_STALL_TIMEOUT_MS",
        default_value = "30000",
        value_parser = millis(100..)
    )]
    pub write_stall_timeout: Duration,

    /// Comma-separated browser origins (`https://shop.example.com`) allowed
    /// to call the API cross-origin. Empty: no cross-origin access; the
    /// pages served by the API itself are same-origin and need none.
    #[arg(
        long,
        env = "FLASHSALE_CORS_ORIGINS",
        value_name = "FLASHSALE_CORS_ORIGINS",
        default_value = "",
        value_parser = parse::cors_origins
    )]
    pub cors_origins: CorsOrigins,
}

/// The purchase path: per-user limits, the queue, caches.
#[derive(Debug, Clone, Args)]
pub struct PurchaseSettings {
    /// Purchase attempts one user may make per second on one node.
    #[arg(
        long,
        env = "FLASHSALE_USER_RATE_PER_SEC",
        value_name = "FLASHSALE_USER_RATE_PER_SEC",
        default_value = "5"
    )]
    pub user_rate_per_sec: NonZeroU32,

    /// Attempts one user may make at once before the per-second rate applies.
    #[arg(
        long,
        env = "FLASHSALE_USER_BURST",
        value_name = "FLASHSALE_USER_BURST",
        default_value = "10"
    )]
    pub user_burst: NonZeroU32,

    /// How often each node refreshes its snapshot of open sales from Redis.
    #[arg(
        long = "snapshot-refresh-ms",
        env = "FLASHSALE_SNAPSHOT_REFRESH_MS",
        value_name = "FLASHSALE_SNAPSHOT_REFRESH_MS",
        default_value = "100",
        value_parser = millis(10..=10_000)
    )]
    pub snapshot_refresh: Duration,

    /// Lifetime of a user's cached order pages in Redis.
    #[arg(
        long,
        env = "FLASHSALE_ORDERS_CACHE_TTL_SECS",
        value_name = "FLASHSALE_ORDERS_CACHE_TTL_SECS",
        default_value = "30",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub orders_cache_ttl_secs: u64,

    /// How long a node reuses computed sale stats.
    #[arg(
        long = "stats-cache-ms",
        env = "FLASHSALE_STATS_CACHE_MS",
        value_name = "FLASHSALE_STATS_CACHE_MS",
        default_value = "2000",
        value_parser = millis(..)
    )]
    pub stats_cache: Duration,
}

/// Checkout holds and the payment webhook.
#[derive(Debug, Clone, Args)]
pub struct PaymentSettings {
    /// Comma-separated payment webhook signing secrets, `whsec_<base64>`
    /// (Standard Webhooks); two at once while a provider rotates its
    /// secret. Empty: the webhook answers 404 and no payment is taken.
    #[arg(
        long,
        env = "FLASHSALE_WEBHOOK_SECRETS",
        value_name = "FLASHSALE_WEBHOOK_SECRETS",
        default_value = "",
        value_parser = parse::webhook_secrets
    )]
    pub webhook_secrets: WebhookSecrets,

    /// How far a webhook's timestamp may be from this node's clock.
    #[arg(
        long = "webhook-tolerance-secs",
        env = "FLASHSALE_WEBHOOK_TOLERANCE_SECS",
        value_name = "FLASHSALE_WEBHOOK_TOLERANCE_SECS",
        default_value = "300",
        value_parser = secs(1..=3600)
    )]
    pub webhook_tolerance: Duration,

    /// Shortest checkout hold (`hold_seconds`) a sale may be created with.
    #[arg(
        long,
        env = "FLASHSALE_HOLD_MIN_SECS",
        value_name = "FLASHSALE_HOLD_MIN_SECS",
        default_value = "60",
        value_parser = clap::value_parser!(i32).range(1..=i64::from(crate::domain::MAX_HOLD_SECONDS))
    )]
    pub hold_min_secs: i32,
}

/// The accepted webhook secrets (none, one, or two during a rotation).
#[derive(Debug, Clone, Default)]
pub struct WebhookSecrets(pub Vec<crate::payments::WebhookSecret>);

/// The purchase queue, shared by API nodes (which push) and workers (which
/// consume).
#[derive(Debug, Clone, Args)]
pub struct QueueSettings {
    /// Redis holding the purchase queue; defaults to FLASHSALE_REDIS_URL.
    #[arg(
        long = "queue-redis-url",
        env = "FLASHSALE_QUEUE_REDIS_URL",
        value_name = "FLASHSALE_QUEUE_REDIS_URL"
    )]
    pub queue_redis_url: Option<Secret>,

    /// How long a second push of the same job is ignored by the queue.
    #[arg(
        long = "queue-idempotency-ttl-secs",
        env = "FLASHSALE_QUEUE_IDEMPOTENCY_TTL_SECS",
        value_name = "FLASHSALE_QUEUE_IDEMPOTENCY_TTL_SECS",
        default_value = "3600",
        value_parser = secs(1..)
    )]
    pub queue_idempotency_ttl: Duration,
}

impl QueueSettings {
    /// The queue's Redis: its own URL if given, else the main Redis.
    pub fn url<'a>(&'a self, redis: &'a RedisSettings) -> &'a Secret {
        self.queue_redis_url.as_ref().unwrap_or(&redis.redis_url)
    }
}

/// Everything an API node needs.
#[derive(Debug, Clone, Args)]
pub struct ApiSettings {
    #[command(flatten)]
    pub http: HttpSettings,
    #[command(flatten)]
    pub database: DatabaseSettings,
    #[command(flatten)]
    pub redis: RedisSettings,
    #[command(flatten)]
    pub dependencies: DependencySettings,
    #[command(flatten)]
    pub auth: AuthSettings,
    #[command(flatten)]
    pub purchase: PurchaseSettings,
    #[command(flatten)]
    pub payments: PaymentSettings,
    #[command(flatten)]
    pub queue: QueueSettings,
    #[command(flatten)]
    pub operator: OperatorSettings,
}

/// Log output shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, for machines.
    Json,
    /// Human-readable lines, for a terminal.
    Pretty,
}

/// Logging, shared by every binary.
#[derive(Debug, Clone, Args)]
pub struct LogSettings {
    /// `tracing` filter directives, e.g. `info,flashsale=debug`.
    #[arg(
        long,
        env = "FLASHSALE_LOG",
        value_name = "FLASHSALE_LOG",
        default_value = "info"
    )]
    pub log: String,

    #[arg(long, env = "FLASHSALE_LOG_FORMAT", value_name = "FLASHSALE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
}

/// The process's Tokio runtime, shared by every binary.
#[derive(Debug, Clone, Args)]
pub struct RuntimeSettings {
    /// Threads running requests or jobs; unset, one per core. Processes
    /// sharing cores (several API nodes and a worker on one machine) each
    /// do better with their share: on two shared cores, one thread per
    /// process cut an API node's CPU per purchase by a third (fewer
    /// cross-thread wake-ups; BENCHMARKS.md, issue 19).
    #[arg(
        long,
        env = "FLASHSALE_RUNTIME_THREADS",
        value_name = "FLASHSALE_RUNTIME_THREADS"
    )]
    pub runtime_threads: Option<std::num::NonZeroUsize>,
}

impl RuntimeSettings {
    /// A multi-threaded runtime with the configured number of threads.
    pub fn build(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if let Some(threads) = self.runtime_threads {
            builder.worker_threads(threads.get());
        }
        builder.enable_all().build()
    }
}

/// A setting that parsed but makes no sense; startup stops with this message.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {name} {problem}")]
pub struct ConfigError {
    pub name: &'static str,
    pub problem: String,
}

pub(crate) fn invalid(name: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        name,
        problem: problem.into(),
    }
}

impl ApiSettings {
    /// What no single value can say: the identity settings that go
    /// together (each value was checked as it was parsed).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.auth.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
    }
}
