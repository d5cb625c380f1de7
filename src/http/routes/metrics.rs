//! Prometheus scrape endpoint, on the operator listener only.

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};

use crate::http::AppState;

pub fn operator_router() -> Router<AppState> {
    Router::new().route("/metrics", get(get_metrics))
}

/// Request counts, latency histograms and engine counters in the Prometheus
/// text format.
async fn get_metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
