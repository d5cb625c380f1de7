//! Typed settings read from the environment (12-factor), with defaults and
//! validation at boot. Every field is also a command-line flag, so
//! `flashsale-api --help` documents the whole configuration.

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

/// Where shoppers' and operators' identities come from (DESIGN.md §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Production: access tokens from the shop's OpenID Connect provider.
    Oidc,
    /// Development: `POST /api/auth/login` with any email gives a shopper
    /// token. Never for a shop on the internet: anyone can be anyone.
    Dev,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Oidc => "oidc",
            AuthMode::Dev => "dev",
        }
    }
}

/// Access tokens: which kinds a node accepts, and the key it signs its own
/// (development logins and operator tokens from `flashsale-api token`).
#[derive(Debug, Clone, Args)]
pub struct AuthSettings {
    /// `oidc` (tokens from the shop's identity provider) or `dev` (the email
    /// login, for local development and tests).
    #[arg(
        long,
        env = "FLASHSALE_AUTH_MODE",
        value_name = "FLASHSALE_AUTH_MODE",
        value_enum,
        default_value_t = AuthMode::Oidc
    )]
    pub auth_mode: AuthMode,

    #[command(flatten)]
    pub local: LocalTokenSettings,

    /// Lifetime of tokens issued by `POST /api/auth/login` (dev mode), in seconds.
    #[arg(
        long,
        env = "FLASHSALE_TOKEN_TTL_SECS",
        value_name = "FLASHSALE_TOKEN_TTL_SECS",
        default_value_t = 3600
    )]
    pub token_ttl_secs: u64,

    /// Longest bearer token accepted, in bytes; longer ones get 401 before
    /// any parsing.
    #[arg(
        long,
        env = "FLASHSALE_MAX_TOKEN_BYTES",
        value_name = "FLASHSALE_MAX_TOKEN_BYTES",
        default_value_t = 8192
    )]
    pub max_token_bytes: usize,

    #[command(flatten)]
    pub oidc: OidcSettings,
}

/// This deployment's own tokens: the key and claims it signs them with.
#[derive(Debug, Clone, Args)]
pub struct LocalTokenSettings {
    /// HS256 key of the tokens this deployment signs itself, at least 32
    /// bytes: required in `dev` mode; in `oidc` mode it enables operator
    /// tokens minted from the shell (`flashsale-api token`). No default: a
    /// guessable key would let anyone mint admin tokens.
    #[arg(
        long = "jwt-secret",
        env = "FLASHSALE_JWT_SECRET",
        value_name = "FLASHSALE_JWT_SECRET"
    )]
    pub jwt_secret: Option<Secret>,

    /// `iss` claim of this deployment's own tokens, written and required.
    #[arg(
        long,
        env = "FLASHSALE_JWT_ISSUER",
        value_name = "FLASHSALE_JWT_ISSUER",
        default_value = "flashsale"
    )]
    pub jwt_issuer: String,

    /// `aud` claim of this deployment's own tokens, written and required.
    #[arg(
        long,
        env = "FLASHSALE_JWT_AUDIENCE",
        value_name = "FLASHSALE_JWT_AUDIENCE",
        default_value = "flashsale-api"
    )]
    pub jwt_audience: String,
}

/// The shop's OpenID Connect provider (`FLASHSALE_AUTH_MODE=oidc`).
#[derive(Debug, Clone, Args)]
pub struct OidcSettings {
    /// The provider's issuer URL, exactly as its tokens' `iss` claim says;
    /// its keys are found through `<issuer>/.well-known/openid-configuration`
    /// unless FLASHSALE_OIDC_JWKS_URL or FLASHSALE_OIDC_JWKS_FILE is set.
    #[arg(
        long,
        env = "FLASHSALE_OIDC_ISSUER",
        value_name = "FLASHSALE_OIDC_ISSUER"
    )]
    pub oidc_issuer: Option<String>,

    /// Comma-separated audiences accepted in the tokens' `aud` claim (the
    /// API's identifier at the provider).
    #[arg(
        long,
        env = "FLASHSALE_OIDC_AUDIENCES",
        value_name = "FLASHSALE_OIDC_AUDIENCES",
        default_value = "",
        value_delimiter = ','
    )]
    pub oidc_audiences: Vec<String>,

    /// The provider's JWKS URL, for providers without discovery.
    #[arg(
        long,
        env = "FLASHSALE_OIDC_JWKS_URL",
        value_name = "FLASHSALE_OIDC_JWKS_URL"
    )]
    pub oidc_jwks_url: Option<String>,

    /// A local JWKS file instead of fetching keys; re-read on every refresh,
    /// so replacing the file rotates keys without a restart.
    #[arg(
        long,
        env = "FLASHSALE_OIDC_JWKS_FILE",
        value_name = "FLASHSALE_OIDC_JWKS_FILE"
    )]
    pub oidc_jwks_file: Option<std::path::PathBuf>,

    /// Comma-separated signature algorithms accepted: RS256, RS384, RS512,
    /// PS256, PS384, PS512, ES256, ES384, EdDSA. HS* and `none` are refused
    /// at boot (a shared secret is not a provider's key).
    #[arg(
        long,
        env = "FLASHSALE_OIDC_ALGORITHMS",
        value_name = "FLASHSALE_OIDC_ALGORITHMS",
        default_value = "RS256,ES256,EdDSA",
        value_delimiter = ','
    )]
    pub oidc_algorithms: Vec<String>,

    /// The claim that carries roles (a dotted path such as
    /// `realm_access.roles` reaches into objects); a string or a list.
    #[arg(
        long,
        env = "FLASHSALE_OIDC_ADMIN_CLAIM",
        value_name = "FLASHSALE_OIDC_ADMIN_CLAIM",
        default_value = "roles"
    )]
    pub oidc_admin_claim: String,

    /// The value of that claim that makes a caller an admin.
    #[arg(
        long,
        env = "FLASHSALE_OIDC_ADMIN_VALUE",
        value_name = "FLASHSALE_OIDC_ADMIN_VALUE",
        default_value = "flashsale:admin"
    )]
    pub oidc_admin_value: String,

    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    #[arg(
        long,
        env = "FLASHSALE_OIDC_LEEWAY_SECS",
        value_name = "FLASHSALE_OIDC_LEEWAY_SECS",
        default_value_t = 30
    )]
    pub oidc_leeway_secs: u64,

    /// How often each node fetches the provider's keys again.
    #[arg(
        long,
        env = "FLASHSALE_OIDC_KEYS_REFRESH_SECS",
        value_name = "FLASHSALE_OIDC_KEYS_REFRESH_SECS",
        default_value_t = 300
    )]
    pub oidc_keys_refresh_secs: u64,

    /// A token with an unknown `kid` triggers a fetch at most this often per
    /// node; every token waiting meanwhile shares it.
    #[arg(
        long,
        env = "FLASHSALE_OIDC_KEYS_MIN_REFETCH_SECS",
        value_name = "FLASHSALE_OIDC_KEYS_MIN_REFETCH_SECS",
        default_value_t = 30
    )]
    pub oidc_keys_min_refetch_secs: u64,

    /// How long the last keys fetched keep working while the provider
    /// cannot be reached; past it tokens answer 503 and the node is not ready.
    #[arg(
        long,
        env = "FLASHSALE_OIDC_KEYS_MAX_STALE_SECS",
        value_name = "FLASHSALE_OIDC_KEYS_MAX_STALE_SECS",
        default_value_t = 43_200
    )]
    pub oidc_keys_max_stale_secs: u64,

    /// Bound of one request to the provider (discovery or keys).
    #[arg(
        long,
        env = "FLASHSALE_OIDC_FETCH_TIMEOUT_MS",
        value_name = "FLASHSALE_OIDC_FETCH_TIMEOUT_MS",
        default_value_t = 5000
    )]
    pub oidc_fetch_timeout_ms: u64,
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

fn invalid(name: &'static str, problem: impl Into<String>) -> ConfigError {
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

/// Signature algorithms a provider's token may use.
pub const OIDC_ALGORITHMS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

impl AuthSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        match (&self.local.jwt_secret, self.auth_mode) {
            (None, AuthMode::Dev) => {
                return Err(invalid(
                    "FLASHSALE_JWT_SECRET",
                    "is required in dev mode (try: openssl rand -hex 32)",
                ));
            }
            (Some(secret), _) if secret.expose().len() < 32 => {
                return Err(invalid(
                    "FLASHSALE_JWT_SECRET",
                    "must be at least 32 bytes (try: openssl rand -hex 32)",
                ));
            }
            _ => {}
        }
        if self.token_ttl_secs == 0 || self.token_ttl_secs > 7 * 24 * 3600 {
            return Err(invalid(
                "FLASHSALE_TOKEN_TTL_SECS",
                "must be between 1 second and 7 days",
            ));
        }
        self.local.validate()?;
        if !(512..=65_536).contains(&self.max_token_bytes) {
            return Err(invalid(
                "FLASHSALE_MAX_TOKEN_BYTES",
                "must be between 512 and 65536",
            ));
        }
        if self.auth_mode == AuthMode::Oidc {
            self.oidc.validate(&self.local.jwt_issuer)?;
        }
        Ok(())
    }
}

impl LocalTokenSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.jwt_issuer.is_empty() || self.jwt_audience.is_empty() {
            return Err(invalid(
                "FLASHSALE_JWT_ISSUER/FLASHSALE_JWT_AUDIENCE",
                "must not be empty",
            ));
        }
        Ok(())
    }

    /// The signing key, required by whoever signs (the token command).
    pub fn secret(&self) -> Result<&Secret, ConfigError> {
        match &self.jwt_secret {
            Some(secret) if secret.expose().len() >= 32 => Ok(secret),
            _ => Err(invalid(
                "FLASHSALE_JWT_SECRET",
                "must be set to this deployment's signing key (at least 32 bytes)",
            )),
        }
    }
}

impl OidcSettings {
    fn validate(&self, local_issuer: &str) -> Result<(), ConfigError> {
        let issuer = self.issuer().ok_or_else(|| {
            invalid(
                "FLASHSALE_OIDC_ISSUER",
                "is required in oidc mode (the shop's provider, e.g. https://login.example.com/realms/shop); \
                 for local development set FLASHSALE_AUTH_MODE=dev",
            )
        })?;
        check_fetch_url("FLASHSALE_OIDC_ISSUER", issuer)?;
        if issuer == local_issuer {
            return Err(invalid(
                "FLASHSALE_OIDC_ISSUER",
                "must differ from FLASHSALE_JWT_ISSUER (this deployment's own tokens)",
            ));
        }
        if self.audiences().is_empty() {
            return Err(invalid(
                "FLASHSALE_OIDC_AUDIENCES",
                "is required in oidc mode: the audience the provider writes for this API",
            ));
        }
        match (self.jwks_url(), self.jwks_file()) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "FLASHSALE_OIDC_JWKS_URL/FLASHSALE_OIDC_JWKS_FILE",
                    "set one of them, not both",
                ));
            }
            (Some(url), None) => check_fetch_url("FLASHSALE_OIDC_JWKS_URL", url)?,
            _ => {}
        }
        self.algorithms()?;
        if self.oidc_admin_claim.trim().is_empty() || self.oidc_admin_value.is_empty() {
            return Err(invalid(
                "FLASHSALE_OIDC_ADMIN_CLAIM/FLASHSALE_OIDC_ADMIN_VALUE",
                "must not be empty",
            ));
        }
        if self.oidc_leeway_secs > 300 {
            return Err(invalid(
                "FLASHSALE_OIDC_LEEWAY_SECS",
                "must be at most 300 seconds",
            ));
        }
        let refresh = self.oidc_keys_refresh_secs;
        if !(1..=86_400).contains(&refresh)
            || !(1..=refresh).contains(&self.oidc_keys_min_refetch_secs)
            || self.oidc_keys_max_stale_secs < refresh
        {
            return Err(invalid(
                "FLASHSALE_OIDC_KEYS_*",
                "need 1 <= MIN_REFETCH_SECS <= REFRESH_SECS <= 86400 and MAX_STALE_SECS >= REFRESH_SECS",
            ));
        }
        if !(100..=60_000).contains(&self.oidc_fetch_timeout_ms) {
            return Err(invalid(
                "FLASHSALE_OIDC_FETCH_TIMEOUT_MS",
                "must be between 100 and 60000 milliseconds",
            ));
        }
        Ok(())
    }

    pub fn issuer(&self) -> Option<&str> {
        self.oidc_issuer
            .as_deref()
            .map(str::trim)
            .filter(|issuer| !issuer.is_empty())
    }

    /// The JWKS URL, when one is set (an empty value is none).
    pub fn jwks_url(&self) -> Option<&str> {
        self.oidc_jwks_url
            .as_deref()
            .map(str::trim)
            .filter(|url| !url.is_empty())
    }

    /// The local JWKS file, when one is set.
    pub fn jwks_file(&self) -> Option<&std::path::Path> {
        self.oidc_jwks_file
            .as_deref()
            .filter(|path| !path.as_os_str().is_empty())
    }

    pub fn audiences(&self) -> Vec<String> {
        self.oidc_audiences
            .iter()
            .map(|audience| audience.trim().to_owned())
            .filter(|audience| !audience.is_empty())
            .collect()
    }

    /// The accepted algorithms; HS*, `none` and unknown names are errors.
    pub fn algorithms(&self) -> Result<Vec<jsonwebtoken::Algorithm>, ConfigError> {
        let names: Vec<&str> = self
            .oidc_algorithms
            .iter()
            .map(|name| name.trim())
            .filter(|name| !name.is_empty())
            .collect();
        if names.is_empty() {
            return Err(invalid(
                "FLASHSALE_OIDC_ALGORITHMS",
                "must name at least one algorithm",
            ));
        }
        names
            .into_iter()
            .map(|name| {
                if !OIDC_ALGORITHMS.contains(&name) {
                    return Err(invalid(
                        "FLASHSALE_OIDC_ALGORITHMS",
                        format!(
                            "{name} is not accepted in oidc mode (allowed: {}; HS* and none never)",
                            OIDC_ALGORITHMS.join(", ")
                        ),
                    ));
                }
                name.parse::<jsonwebtoken::Algorithm>()
                    .map_err(|_| invalid("FLASHSALE_OIDC_ALGORITHMS", format!("{name} is unknown")))
            })
            .collect()
    }

    pub fn keys_refresh(&self) -> Duration {
        Duration::from_secs(self.oidc_keys_refresh_secs)
    }

    pub fn keys_min_refetch(&self) -> Duration {
        Duration::from_secs(self.oidc_keys_min_refetch_secs)
    }

    pub fn keys_max_stale(&self) -> Duration {
        Duration::from_secs(self.oidc_keys_max_stale_secs)
    }

    pub fn fetch_timeout(&self) -> Duration {
        Duration::from_millis(self.oidc_fetch_timeout_ms)
    }
}

/// Keys are fetched over HTTPS; plain HTTP only from this machine (a
/// provider on loopback, as in the tests).
fn check_fetch_url(name: &'static str, url: &str) -> Result<(), ConfigError> {
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|prefix| {
            url.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/']))
        });
    if url.starts_with("https://") || loopback {
        Ok(())
    } else {
        Err(invalid(
            name,
            "must be an https:// URL (http:// only on 127.0.0.1 or localhost)",
        ))
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
    use clap::Parser;

    use super::*;

    fn dev_auth(secret: &str) -> AuthSettings {
        let cli = TestCli::parse_from(["test", "--auth-mode", "dev", "--jwt-secret", secret]);
        cli.auth
    }

    fn oidc_auth(extra: &[&str]) -> AuthSettings {
        let mut args = vec![
            "test",
            "--oidc-issuer",
            "https://login.example.com",
            "--oidc-audiences",
            "flashsale",
        ];
        args.extend_from_slice(extra);
        TestCli::parse_from(args).auth
    }

    #[derive(clap::Parser)]
    struct TestCli {
        #[command(flatten)]
        auth: AuthSettings,
    }

    #[test]
    fn a_short_jwt_secret_is_rejected_with_the_variable_name() {
        let error = dev_auth("short").validate().unwrap_err();
        assert!(error.to_string().contains("FLASHSALE_JWT_SECRET"));
    }

    #[test]
    fn dev_mode_needs_a_jwt_secret_and_oidc_mode_does_not() {
        let no_secret = TestCli::parse_from(["test", "--auth-mode", "dev"]).auth;
        assert!(no_secret.validate().is_err());
        assert!(dev_auth(&"k".repeat(32)).validate().is_ok());
        assert!(oidc_auth(&[]).validate().is_ok());
    }

    #[test]
    fn oidc_mode_refuses_symmetric_and_unknown_algorithms_at_boot() {
        for algorithms in ["HS256", "RS256,HS512", "none", "ES512"] {
            let error = oidc_auth(&["--oidc-algorithms", algorithms])
                .validate()
                .unwrap_err();
            assert!(
                error.to_string().contains("FLASHSALE_OIDC_ALGORITHMS"),
                "{algorithms}: {error}"
            );
        }
        assert!(
            oidc_auth(&["--oidc-algorithms", "RS256,ES256,EdDSA"])
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn oidc_mode_needs_an_issuer_an_audience_and_https() {
        let bare = TestCli::parse_from(["test"]).auth;
        assert!(
            bare.validate()
                .unwrap_err()
                .to_string()
                .contains("FLASHSALE_OIDC_ISSUER")
        );
        let plain = TestCli::parse_from([
            "test",
            "--oidc-issuer",
            "http://login.example.com",
            "--oidc-audiences",
            "a",
        ])
        .auth;
        assert!(plain.validate().is_err());
        let loopback = TestCli::parse_from([
            "test",
            "--oidc-issuer",
            "http://127.0.0.1:9000/realm",
            "--oidc-audiences",
            "a",
        ])
        .auth;
        assert!(loopback.validate().is_ok());
        let no_audience = TestCli::parse_from(["test", "--oidc-issuer", "https://x.example"]).auth;
        assert!(no_audience.validate().is_err());
    }

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
