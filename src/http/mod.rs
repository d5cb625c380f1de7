//! The HTTP API: routes (one file per resource under `routes/`), extractors,
//! the error model, and [`router`], which assembles them with the middleware
//! stack. Tests call [`router`] directly and serve it on port 0.

mod error;
pub mod error_code;
pub mod extract;
mod openapi;
pub mod rate_limit;
pub mod readiness;
pub mod request_metrics;
mod response_shape;
pub mod routes;
mod security;
mod state;
mod unread_body;

use axum::{
    Router,
    extract::DefaultBodyLimit,
    handler::Handler,
    http::{HeaderName, StatusCode},
};
use tower::ServiceBuilder;
use tower_http::{
    ServiceBuilderExt, request_id::MakeRequestUuid, timeout::TimeoutLayer, trace::TraceLayer,
};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

pub use error::{ApiError, ErrorBody, ErrorDetail};

/// The header that carries a request's id: nginx sets it, a node makes one
/// when it is missing, and every log line, error body and audit row quotes it.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub use error_code::ErrorCode;
pub use openapi::ApiDoc;
pub use state::{AppServices, AppState};

use crate::config::{AuthMode, HttpSettings};

/// Every public route of a node in this auth mode, documented; `openapi()`
/// and `router()` both start here so the document cannot miss an endpoint.
/// The development login and payment exist only in `dev` mode.
fn documented_routes(mode: AuthMode) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::health::router())
        .merge(routes::auth::router(mode))
        .merge(routes::sale_status::router())
        .merge(routes::events::router())
        .merge(routes::purchase::router())
        .merge(routes::payments::router(mode))
        .merge(routes::waitlist::router())
        .merge(routes::stats::router())
        .merge(routes::products::router())
        .merge(routes::flash_sales::router())
        .merge(routes::users::router())
}

/// The OpenAPI document a node in this auth mode serves at `/api/openapi.json`.
pub fn openapi(mode: AuthMode) -> utoipa::openapi::OpenApi {
    documented_routes(mode).into_openapi()
}

/// What a path no route serves answers.
async fn not_found() -> ApiError {
    ApiError::for_status(StatusCode::NOT_FOUND)
}

/// The public application with its middleware.
pub fn router(state: AppState, settings: &HttpSettings) -> Router {
    let (routes, openapi) = documented_routes(state.auth.mode()).split_for_parts();
    let request_metrics = request_metrics::RequestMetricsLayer::new(state.clone());
    let app = Router::new()
        .merge(routes)
        .merge(routes::pages::router())
        .merge(SwaggerUi::new("/api/docs").url("/api/openapi.json", openapi))
        // Per-route metrics need the matched route, so this layer sits on the
        // routes (inside routing) rather than in the stack above; the
        // fallback carries it too, so paths no route serves are counted
        // (as `unmatched`).
        .fallback(not_found.layer(request_metrics.clone()))
        .route_layer(request_metrics)
        .with_state(state);
    with_middleware(app, settings)
}

/// What the operator listener serves: `/metrics`, the per-dependency
/// `/api/health` and the probes. Never routed to by nginx.
pub fn operator_router(state: AppState, settings: &HttpSettings) -> Router {
    let app = Router::new()
        .merge(routes::health::operator_router())
        .merge(routes::metrics::operator_router())
        .fallback(|| async {
            ApiError::new(
                ErrorCode::NotFound,
                "the operator listener serves /metrics, /api/health, /api/health/live and /api/health/ready",
            )
        })
        .with_state(state);
    with_middleware(app, settings)
}

/// Wraps routes in the middleware every response of a node passes through
/// (public for the benchmark of what it costs).
pub fn with_middleware(app: Router, settings: &HttpSettings) -> Router {
    // Outermost first. The request id is set before anything logs, so every
    // line and every error body carries it; errors are rendered inside the
    // trace span but outside the timeout, so a timeout also gets the JSON
    // shape; panics become a 500 in that shape instead of a dropped
    // connection (all three, with the security headers, in one hand-written
    // layer: `response_shape`). CORS sits inside it, so the preflights it
    // answers get the security headers too; the price is that a panic's
    // 500, made outside CORS, carries no CORS headers. A body nobody read is
    // read to its end by a task of its own, so the connection stays open
    // (`unread_body`).
    let body_limit = settings.max_body_bytes;
    let middleware = ServiceBuilder::new()
        .set_request_id(REQUEST_ID, MakeRequestUuid)
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
                let id = request
                    .headers()
                    .get(REQUEST_ID)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or("");
                tracing::info_span!("request", request_id = %id, method = %request.method(), uri = %request.uri())
            }),
        )
        .propagate_request_id(REQUEST_ID)
        .layer(response_shape::ShapeResponsesLayer)
        .option_layer(security::cors(settings))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            settings.request_timeout,
        ))
        .map_request(move |request| unread_body::read_to_end_if_dropped(request, body_limit))
        .layer(DefaultBodyLimit::max(body_limit));
    app.layer(middleware)
}
