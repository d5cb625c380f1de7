//! How settings are parsed. Each value is checked where clap parses it (a
//! range, a shape), so a bad one stops the binary at boot with the
//! setting's name and what it accepts, and nothing re-checks it later.

use std::{ops::RangeBounds, time::Duration};

use axum::http::HeaderValue;
use clap::builder::TypedValueParser;

/// Milliseconds within `range`, read as a duration.
pub fn millis(range: impl RangeBounds<u64>) -> impl TypedValueParser<Value = Duration> {
    clap::value_parser!(u64)
        .range(range)
        .map(Duration::from_millis)
}

/// Seconds within `range`, read as a duration.
pub fn secs(range: impl RangeBounds<u64>) -> impl TypedValueParser<Value = Duration> {
    clap::value_parser!(u64)
        .range(range)
        .map(Duration::from_secs)
}

/// A count within `range`.
pub fn count(range: impl RangeBounds<u64>) -> impl TypedValueParser<Value = usize> {
    clap::value_parser!(u64)
        .range(range)
        .map(|count| usize::try_from(count).unwrap_or(usize::MAX))
}

/// A key prefix: braces would break the per-sale hash tag.
pub fn redis_prefix(prefix: &str) -> Result<String, String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.');
    if (1..=64).contains(&prefix.len()) && prefix.chars().all(allowed) {
        Ok(prefix.to_owned())
    } else {
        Err(
            "must be 1-64 characters of letters, digits, '-', '_', ':' or '.' \
             (braces would break the per-sale hash tag)"
                .into(),
        )
    }
}

/// Browser origins allowed to call the API cross-origin; empty, none.
#[derive(Debug, Clone, Default)]
pub struct CorsOrigins(pub Vec<HeaderValue>);

impl std::ops::Deref for CorsOrigins {
    type Target = Vec<HeaderValue>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// Comma-separated origins; blank entries (an empty setting) are none.
pub fn cors_origins(list: &str) -> Result<CorsOrigins, String> {
    list.split(',')
        .map(str::trim)
        .filter(|origin| !origin.is_empty())
        .map(cors_origin)
        .collect::<Result<_, _>>()
        .map(CorsOrigins)
}

/// Comma-separated `whsec_` secrets, at most two; blank entries are none.
pub fn webhook_secrets(list: &str) -> Result<super::WebhookSecrets, String> {
    use crate::payments::{WebhookSecret, signature::MAX_SECRETS};
    let secrets: Vec<WebhookSecret> = list
        .split(',')
        .map(str::trim)
        .filter(|secret| !secret.is_empty())
        .map(WebhookSecret::parse)
        .collect::<Result<_, _>>()?;
    if secrets.len() > MAX_SECRETS {
        return Err(format!(
            "at most {MAX_SECRETS} webhook secrets (the current and the next), got {}",
            secrets.len()
        ));
    }
    Ok(super::WebhookSecrets(secrets))
}

/// A bare browser origin (scheme, host, optional port): a path or a
/// wildcard is refused because a browser compares origins exactly.
pub fn cors_origin(origin: &str) -> Result<HeaderValue, String> {
    let origin = origin.trim();
    let (scheme, rest) = origin.split_once("://").unwrap_or(("", origin));
    let bare = matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && !rest.contains(['/', '*', '?', '#', ' ']);
    bare.then(|| HeaderValue::from_str(origin).ok())
        .flatten()
        .ok_or_else(|| {
            format!("{origin:?} is not an origin such as https://shop.example.com (no path, no wildcard)")
        })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::config::HttpSettings;

    #[derive(Parser)]
    struct Http {
        #[command(flatten)]
        http: HttpSettings,
    }

    #[test]
    fn values_out_of_range_stop_the_parse_with_the_settings_name() {
        let refused = Http::try_parse_from(["api", "--max-body-bytes", "10"])
            .err()
            .expect("10 bytes refused");
        let message = refused.to_string();
        assert!(message.contains("FLASHSALE_MAX_BODY_BYTES"), "{message}");
        assert!(message.contains("256"), "{message}");
        let parsed = Http::try_parse_from(["api", "--request-timeout-ms", "250"]).unwrap();
        assert_eq!(parsed.http.request_timeout, Duration::from_millis(250));
    }

    #[test]
    fn an_empty_cors_setting_means_no_cross_origin_access() {
        for empty in ["", " ", ","] {
            let parsed = Http::try_parse_from(["api", "--cors-origins", empty])
                .unwrap_or_else(|error| panic!("{empty:?} refused: {error}"));
            assert!(parsed.http.cors_origins.is_empty(), "{empty:?}");
        }
        let two = Http::try_parse_from([
            "api",
            "--cors-origins",
            "https://a.example, https://b.example",
        ])
        .unwrap();
        assert_eq!(two.http.cors_origins.len(), 2);
    }

    #[test]
    fn cors_origins_are_bare_origins() {
        assert!(cors_origin("https://shop.example.com").is_ok());
        assert!(cors_origin("http://localhost:8080").is_ok());
        for bad in [
            "*",
            "https://shop.example.com/",
            "shop.example.com",
            "https://*.x",
        ] {
            assert!(cors_origin(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn a_redis_prefix_with_braces_is_refused() {
        assert!(redis_prefix("fs{x}").is_err());
        assert!(redis_prefix("").is_err());
        assert_eq!(redis_prefix("fs-test.1").unwrap(), "fs-test.1");
    }
}
