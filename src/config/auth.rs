//! Identity settings (DESIGN.md §10): the mode, this deployment's own
//! token key, and the shop's OpenID Connect provider.

use std::time::Duration;

use clap::{Args, builder::NonEmptyStringValueParser};

use super::{
    ConfigError, Secret, invalid,
    parse::{count, millis, secs},
};

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
        default_value = "3600",
        value_parser = clap::value_parser!(u64).range(1..=7 * 24 * 3600)
    )]
    pub token_ttl_secs: u64,

    /// Longest bearer token accepted, in bytes; longer ones get 401 before
    /// any parsing.
    #[arg(
        long,
        env = "FLASHSALE_MAX_TOKEN_BYTES",
        value_name = "FLASHSALE_MAX_TOKEN_BYTES",
        default_value = "8192",
        value_parser = count(512..=65_536)
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
        default_value = "flashsale",
        value_parser = NonEmptyStringValueParser::new()
    )]
    pub jwt_issuer: String,

    /// `aud` claim of this deployment's own tokens, written and required.
    #[arg(
        long,
        env = "FLASHSALE_JWT_AUDIENCE",
        value_name = "FLASHSALE_JWT_AUDIENCE",
        default_value = "flashsale-api",
        value_parser = NonEmptyStringValueParser::new()
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
        default_value = "30"
    )]
    pub oidc_leeway_secs: u64,

    /// How often each node fetches the provider's keys again.
    #[arg(
        long = "oidc-keys-refresh-secs",
        env = "FLASHSALE_OIDC_KEYS_REFRESH_SECS",
        value_name = "FLASHSALE_OIDC_KEYS_REFRESH_SECS",
        default_value = "300",
        value_parser = secs(..)
    )]
    pub oidc_keys_refresh: Duration,

    /// A token with an unknown `kid` triggers a fetch at most this often per
    /// node; every token waiting meanwhile shares it.
    #[arg(
        long = "oidc-keys-min-refetch-secs",
        env = "FLASHSALE_OIDC_KEYS_MIN_REFETCH_SECS",
        value_name = "FLASHSALE_OIDC_KEYS_MIN_REFETCH_SECS",
        default_value = "30",
        value_parser = secs(..)
    )]
    pub oidc_keys_min_refetch: Duration,

    /// How long the last keys fetched keep working while the provider
    /// cannot be reached; past it tokens answer 503 and the node is not ready.
    #[arg(
        long = "oidc-keys-max-stale-secs",
        env = "FLASHSALE_OIDC_KEYS_MAX_STALE_SECS",
        value_name = "FLASHSALE_OIDC_KEYS_MAX_STALE_SECS",
        default_value = "43200",
        value_parser = secs(..)
    )]
    pub oidc_keys_max_stale: Duration,

    /// Bound of one request to the provider (discovery or keys).
    #[arg(
        long = "oidc-fetch-timeout-ms",
        env = "FLASHSALE_OIDC_FETCH_TIMEOUT_MS",
        value_name = "FLASHSALE_OIDC_FETCH_TIMEOUT_MS",
        default_value = "5000",
        value_parser = millis(..)
    )]
    pub oidc_fetch_timeout: Duration,
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
        if self.auth_mode == AuthMode::Oidc {
            self.oidc.validate(&self.local.jwt_issuer)?;
        }
        Ok(())
    }
}

impl LocalTokenSettings {
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
        // The provider's settings are checked here, in oidc mode only: a
        // dev-mode node ignores them, whatever they hold.
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
        let refresh = self.oidc_keys_refresh;
        let one_day = Duration::from_secs(86_400);
        if !(Duration::from_secs(1)..=one_day).contains(&refresh)
            || !(Duration::from_secs(1)..=refresh).contains(&self.oidc_keys_min_refetch)
            || self.oidc_keys_max_stale < refresh
        {
            return Err(invalid(
                "FLASHSALE_OIDC_KEYS_*",
                "need 1 <= MIN_REFETCH_SECS <= REFRESH_SECS <= 86400 and MAX_STALE_SECS >= REFRESH_SECS",
            ));
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(60))
            .contains(&self.oidc_fetch_timeout)
        {
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
    fn dev_mode_ignores_the_provider_settings_as_before() {
        let secret = "k".repeat(32);
        let odd = [
            "test",
            "--auth-mode",
            "dev",
            "--jwt-secret",
            &secret,
            "--oidc-leeway-secs",
            "999",
            "--oidc-fetch-timeout-ms",
            "5",
            "--oidc-keys-refresh-secs",
            "0",
            "--oidc-keys-min-refetch-secs",
            "0",
            "--oidc-keys-max-stale-secs",
            "0",
            "--oidc-admin-value",
            "",
        ];
        let settings = TestCli::try_parse_from(odd)
            .unwrap_or_else(|error| panic!("dev mode refused provider settings: {error}"))
            .auth;
        assert!(settings.validate().is_ok());
        for (flag, value) in [
            ("--oidc-leeway-secs", "301"),
            ("--oidc-fetch-timeout-ms", "99"),
            ("--oidc-keys-refresh-secs", "0"),
            ("--oidc-admin-value", ""),
        ] {
            let error = oidc_auth(&[flag, value]).validate().unwrap_err();
            assert!(
                error.to_string().contains("FLASHSALE_OIDC_"),
                "{flag}: {error}"
            );
        }
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
}
