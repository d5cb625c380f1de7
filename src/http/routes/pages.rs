//! The two pages (web/): the shopper page at `/` and the operator dashboard
//! at `/admin`, with their scripts and styles under `/assets/`. They are
//! compiled into the binary, so a node serves them with no files to deploy,
//! and they call the same JSON API as everyone else. Not part of the
//! OpenAPI document.

use axum::{
    Router,
    extract::Path,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};

use crate::http::{ApiError, AppState, ErrorCode};

/// Pages load only their own scripts and styles and talk only to their own
/// origin; no inline script, no framing.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// Assets may be cached briefly; a deploy reaches every browser within a minute.
const ASSET_CACHING: &str = "public, max-age=60";

const ASSETS: [(&str, &str, &str); 4] = [
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/api.js"),
    ),
    (
        "shop.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/shop.js"),
    ),
    (
        "admin.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/admin.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../../../web/app.css"),
    ),
];

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/",
            get(|| async { page(include_str!("../../../web/shop.html")) }),
        )
        .route(
            "/admin",
            get(|| async { page(include_str!("../../../web/admin.html")) }),
        )
        .route("/assets/{name}", get(asset))
}

fn page(html: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, PAGE_POLICY),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        html,
    )
        .into_response()
}

async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    let (_, content_type, body) = ASSETS
        .iter()
        .find(|(asset, _, _)| *asset == name)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such asset"))?;
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(ASSET_CACHING),
    );
    Ok(response)
}
