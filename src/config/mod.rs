//! Typed settings read from the environment (12-factor), with defaults and
//! validation at boot. Every field is also a command-line flag, so
//! `flashsale-api --help` documents the whole configuration. Identity
//! settings are in [`auth`].

mod auth;

pub use auth::{AuthMode, AuthSettings, LocalTokenSettings, OIDC_ALGORITHMS, OidcSettings};

use std::{fmt, net::SocketAddr, str::FromStr, time::Duration};

use clap::Args;

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
        default_value_t = 16
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
        default_value = "fs"
    )]
    pub redis_prefix: String,
}

/// How long any single call to PostgreSQL or Redis may take before the
/// request answers 503 instead of hanging.
#[derive(Debug, Clone, Copy, Args)]
pub struct DependencySettings {
    #[arg(
        long,
        env = "FLASHSALE_DEPENDENCY_TIMEOUT_MS",
        value_name = "FLASHSALE_DEPENDENCY_TIMEOUT_MS",
        default_value_t = 1000
    )]
    pub dependency_timeout_ms: u64,
}

impl DependencySettings {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.dependency_timeout_ms)
    }
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
        long,
        env = "FLASHSALE_READY_CACHE_MS",
        value_name = "FLASHSALE_READY_CACHE_MS",
        default_value_t = 1000
    )]
    pub ready_cache_ms: u64,
}

impl OperatorSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.ready_cache_ms > 60_000 {
            return Err(invalid(
                "FLASHSALE_READY_CACHE_MS",
                "must be at most 60000 milliseconds",
            ));
        }
        Ok(())
    }

    pub fn ready_cache(&self) -> Duration {
        Duration::from_millis(self.ready_cache_ms)
    }
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
    #[arg(long, env = "FLASHSALE_MAX_BODY_BYTES", value_name = "FLASHSALE_MAX_BODY_BYTES", default_value_t = 16 * 1024)]
    pub max_body_bytes: usize,

    /// Backstop for a whole request; dependency calls have their own, shorter bound.
    #[arg(
        long,
        env = "FLASHSALE_REQUEST_TIMEOUT_MS",
        value_name = "FLASHSALE_REQUEST_TIMEOUT_MS",
        default_value_t = 5000
    )]
    pub request_timeout_ms: u64,

    /// How long in-flight requests may take to finish after SIGTERM.
    #[arg(
        long,
        env = "FLASHSALE_SHUTDOWN_GRACE_SECS",
        value_name = "FLASHSALE_SHUTDOWN_GRACE_SECS",
        default_value_t = 10
    )]
    pub shutdown_grace_secs: u64,

    /// A connection whose writes make no progress this long (the client
    /// stopped reading) is closed, live event streams included.
    #[arg(
        long,
        env = "FLASHSALE_WRITE_STALL_TIMEOUT_MS",
        value_name = "FLASHSALE_WRITE_STALL_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub write_stall_timeout_ms: u64,

    /// Comma-separated browser origins (`https://shop.example.com`) allowed
    /// to call the API cross-origin. Empty: no cross-origin access; the
    /// pages served by the API itself are same-origin and need none.
    #[arg(
        long,
        env = "FLASHSALE_CORS_ORIGINS",
        value_name = "FLASHSALE_CORS_ORIGINS",
        default_value = "",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,
}

/// The purchase path: per-user limits, the queue, caches.
#[derive(Debug, Clone, Args)]
pub struct PurchaseSettings {
    /// Purchase attempts one user may make per second on one node.
    #[arg(
        long,
        env = "FLASHSALE_USER_RATE_PER_SEC",
        value_name = "FLASHSALE_USER_RATE_PER_SEC",
        default_value_t = 5
    )]
    pub user_rate_per_sec: u32,

    /// Attempts one user may make at once before the per-second rate applies.
    #[arg(
        long,
        env = "FLASHSALE_USER_BURST",
        value_name = "FLASHSALE_USER_BURST",
        default_value_t = 10
    )]
    pub user_burst: u32,

    /// How often each node refreshes its snapshot of open sales from Redis.
    #[arg(
        long,
        env = "FLASHSALE_SNAPSHOT_REFRESH_MS",
        value_name = "FLASHSALE_SNAPSHOT_REFRESH_MS",
        default_value_t = 100
    )]
    pub snapshot_refresh_ms: u64,

    /// Lifetime of a user's cached order pages in Redis.
    #[arg(
        long,
        env = "FLASHSALE_ORDERS_CACHE_TTL_SECS",
        value_name = "FLASHSALE_ORDERS_CACHE_TTL_SECS",
        default_value_t = 30
    )]
    pub orders_cache_ttl_secs: u64,

    /// How long a node reuses computed sale stats.
    #[arg(
        long,
        env = "FLASHSALE_STATS_CACHE_MS",
        value_name = "FLASHSALE_STATS_CACHE_MS",
        default_value_t = 2000
    )]
    pub stats_cache_ms: u64,
}

impl PurchaseSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.user_rate_per_sec == 0 || self.user_burst == 0 {
            return Err(invalid(
                "FLASHSALE_USER_RATE_PER_SEC/FLASHSALE_USER_BURST",
                "must be at least 1",
            ));
        }
        if !(10..=10_000).contains(&self.snapshot_refresh_ms) {
            return Err(invalid(
                "FLASHSALE_SNAPSHOT_REFRESH_MS",
                "must be between 10 and 10000 milliseconds",
            ));
        }
        if self.orders_cache_ttl_secs == 0 {
            return Err(invalid(
                "FLASHSALE_ORDERS_CACHE_TTL_SECS",
                "must be at least 1 second",
            ));
        }
        Ok(())
    }

    pub fn snapshot_refresh(&self) -> Duration {
        Duration::from_millis(self.snapshot_refresh_ms)
    }

    pub fn stats_cache(&self) -> Duration {
        Duration::from_millis(self.stats_cache_ms)
    }
}

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

    /// How long a second push of the same reservation is ignored by the queue.
    #[arg(
        long,
        env = "FLASHSALE_QUEUE_IDEMPOTENCY_TTL_SECS",
        value_name = "FLASHSALE_QUEUE_IDEMPOTENCY_TTL_SECS",
        default_value_t = 3600
    )]
    pub queue_idempotency_ttl_secs: u64,
}

impl QueueSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.queue_idempotency_ttl_secs == 0 {
            return Err(invalid(
                "FLASHSALE_QUEUE_IDEMPOTENCY_TTL_SECS",
                "must be at least 1 second",
            ));
        }
        Ok(())
    }

    /// The queue's Redis: its own URL if given, else the main Redis.
    pub fn url<'a>(&'a self, redis: &'a RedisSettings) -> &'a Secret {
        self.queue_redis_url.as_ref().unwrap_or(&redis.redis_url)
    }

    pub fn idempotency_ttl(&self) -> Duration {
        Duration::from_secs(self.queue_idempotency_ttl_secs)
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

impl RedisSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let prefix_ok = !self.redis_prefix.is_empty()
            && self.redis_prefix.len() <= 64
            && self
                .redis_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'));
        if !prefix_ok {
            return Err(invalid(
                "FLASHSALE_REDIS_PREFIX",
                "must be 1-64 characters of letters, digits, '-', '_', ':' or '.' \
                 (braces would break the per-sale hash tag)",
            ));
        }
        Ok(())
    }
}

impl DatabaseSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.pg_max_connections == 0 {
            return Err(invalid(
                "FLASHSALE_PG_MAX_CONNECTIONS",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

impl DependencySettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(10..=60_000).contains(&self.dependency_timeout_ms) {
            return Err(invalid(
                "FLASHSALE_DEPENDENCY_TIMEOUT_MS",
                "must be between 10 and 60000 milliseconds",
            ));
        }
        Ok(())
    }
}

impl HttpSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(256..=10 * 1024 * 1024).contains(&self.max_body_bytes) {
            return Err(invalid(
                "FLASHSALE_MAX_BODY_BYTES",
                "must be between 256 bytes and 10 MiB",
            ));
        }
        if self.request_timeout_ms < 10 {
            return Err(invalid(
                "FLASHSALE_REQUEST_TIMEOUT_MS",
                "must be at least 10",
            ));
        }
        if self.write_stall_timeout_ms < 100 {
            return Err(invalid(
                "FLASHSALE_WRITE_STALL_TIMEOUT_MS",
                "must be at least 100",
            ));
        }
        self.cors_origins()?;
        Ok(())
    }

    /// The configured CORS origins as header values. Each must be a bare
    /// origin (scheme, host, optional port): a path or a wildcard is refused
    /// because a browser compares origins exactly.
    pub fn cors_origins(&self) -> Result<Vec<axum::http::HeaderValue>, ConfigError> {
        self.cors_origins
            .iter()
            .map(|origin| origin.trim())
            .filter(|origin| !origin.is_empty())
            .map(|origin| {
                let (scheme, rest) = origin.split_once("://").unwrap_or(("", origin));
                let bare = matches!(scheme, "http" | "https")
                    && !rest.is_empty()
                    && !rest.contains(['/', '*', '?', '#', ' ']);
                bare.then(|| axum::http::HeaderValue::from_str(origin).ok())
                    .flatten()
                    .ok_or_else(|| {
                        invalid(
                            "FLASHSALE_CORS_ORIGINS",
                            "each entry must be an origin such as https://shop.example.com (no path, no wildcard)",
                        )
                    })
            })
            .collect()
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    pub fn write_stall_timeout(&self) -> Duration {
        Duration::from_millis(self.write_stall_timeout_ms)
    }
}

impl ApiSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.http.validate()?;
        self.database.validate()?;
        self.redis.validate()?;
        self.dependencies.validate()?;
        self.purchase.validate()?;
        self.queue.validate()?;
        self.operator.validate()?;
        self.auth.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_prefix_with_braces_is_rejected() {
        let settings = RedisSettings {
            redis_url: Secret::new("redis://127.0.0.1"),
            redis_prefix: "fs{x}".into(),
        };
        assert!(settings.validate().is_err());
    }

    #[test]
    fn secrets_never_print() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
    }
}
