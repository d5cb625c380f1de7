//! What every response carries for the browser's sake: headers that stop
//! sniffing, framing, referrer leaks and caching (a route may set its own
//! instead), and CORS for the configured origins only.

use std::time::Duration;

use axum::{
    http::{HeaderName, HeaderValue, Method, header},
    response::Response,
};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::HttpSettings;

/// Set on every response that lacks them. frame-ancestors and
/// X-Frame-Options (for browsers that predate it) stop clickjacking of the
/// buy button; no-store keeps purchases and tokens out of shared caches.
const DEFAULT_HEADERS: [(HeaderName, &str); 5] = [
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::CACHE_CONTROL, "no-store"),
    (header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "no-referrer"),
];

pub fn set_default_headers(response: &mut Response) {
    let headers = response.headers_mut();
    for (name, value) in DEFAULT_HEADERS {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
}

/// Cross-origin access for the configured origins; none configured, no
/// layer (and no CORS headers at all). Sits outside the routes so a
/// preflight is answered without touching them; an origin not listed gets
/// no CORS headers, and the browser refuses the response.
pub fn cors(settings: &HttpSettings) -> Option<CorsLayer> {
    let origins = settings.cors_origins.0.clone();
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::PATCH])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
            ])
            .expose_headers([header::RETRY_AFTER, super::REQUEST_ID])
            .max_age(Duration::from_secs(600)),
    )
}
