//! Request counts and latency histograms per route, for `/metrics`, and
//! the purchase endpoint's latency for the operators' stats (`crate::latency`).

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::Response,
};

use super::AppState;

/// The route whose latency the nodes also share for the dashboard.
const PURCHASE_ROUTE: &str = "/api/purchase/attempt";

pub async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    // The route template (`/api/admin/flash-sales/{id}`), never the raw path,
    // so ids do not explode the label cardinality.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    if route == PURCHASE_ROUTE && method == "POST" {
        state.purchase_latency.record(started.elapsed());
    }
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
