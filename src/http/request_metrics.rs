//! Request counts and latency histograms per route, for `/metrics`, and
//! the purchase endpoint's latency for the operators' stats (`crate::latency`).

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::LazyLock,
    task::{Context, Poll, ready},
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request},
    http::Method,
    response::Response,
};
use metrics::{Counter, Histogram};
use parking_lot::RwLock;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::AppState;

/// The route whose latency the nodes also share for the dashboard.
const PURCHASE_ROUTE: &str = "/api/purchase/attempt";

/// The label of requests no route matched.
const UNMATCHED: &str = "unmatched";

/// Records each request's count and latency per route, method and status
/// ([`RouteMetrics`]), and the purchase endpoint's latency for the
/// operators' stats. A tower layer on the routes (the matched route is
/// known only there) and on the fallback (`unmatched`), written by hand
/// for the reason `response_shape` is: axum's `from_fn_with_state` boxes
/// the inner service and the future on every request.
#[derive(Clone)]
pub struct RequestMetricsLayer {
    state: AppState,
}

impl RequestMetricsLayer {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

impl<S> Layer<S> for RequestMetricsLayer {
    type Service = RequestMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestMetrics {
            inner,
            state: self.state.clone(),
        }
    }
}

/// See [`RequestMetricsLayer`].
#[derive(Clone)]
pub struct RequestMetrics<S> {
    inner: S,
    state: AppState,
}

impl<S> Service<Request> for RequestMetrics<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = RequestMetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        let method = request.method().clone();
        // The route template (`/api/admin/flash-sales/{id}`), never the raw
        // path, so ids do not explode the label cardinality. `MatchedPath`
        // shares the router's string: cloning it allocates nothing.
        let route = request.extensions().get::<MatchedPath>().cloned();
        RequestMetricsFuture {
            inner: self.inner.call(request),
            state: self.state.clone(),
            started,
            method,
            route,
        }
    }
}

pin_project! {
    /// The response of [`RequestMetrics`].
    pub struct RequestMetricsFuture<F> {
        #[pin]
        inner: F,
        state: AppState,
        started: Instant,
        method: Method,
        route: Option<MatchedPath>,
    }
}

impl<F, E> Future for RequestMetricsFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let elapsed = this.started.elapsed();
        let route = this.route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
        if route == PURCHASE_ROUTE && *this.method == Method::POST {
            this.state.purchase_latency.record(elapsed);
        }
        this.state.route_metrics.record(
            this.method,
            route,
            response.status().as_u16(),
            elapsed.as_secs_f64(),
        );
        Poll::Ready(Ok(response))
    }
}

/// The metric handles of each route, method and status, made on first use.
/// A `metrics` macro with labels builds, hashes and looks up an owned key
/// on every call: about a dozen allocations per request, the largest share
/// of a request's allocations in the middleware (issue 19). A handle found
/// here costs a read lock and two short scans.
#[derive(Default)]
pub struct RouteMetrics {
    routes: RwLock<HashMap<Box<str>, Vec<MethodMetrics>>>,
}

struct MethodMetrics {
    method: Method,
    duration: Histogram,
    by_status: Vec<(u16, Counter)>,
}

impl MethodMetrics {
    fn counter(&self, status: u16) -> Option<&Counter> {
        self.by_status
            .iter()
            .find(|(known, _)| *known == status)
            .map(|(_, counter)| counter)
    }
}

/// The label of methods HTTP does not define: hyper passes any token as a
/// method, and one series per invented method would let a scan grow
/// `/metrics` (and this map) without bound.
static OTHER_METHOD: LazyLock<Method> =
    LazyLock::new(|| Method::from_bytes(b"OTHER").expect("a method token"));

/// The method as labelled: itself if HTTP defines it, else `OTHER`.
fn method_label(method: &Method) -> &Method {
    const DEFINED: [Method; 9] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    if DEFINED.contains(method) {
        method
    } else {
        &OTHER_METHOD
    }
}

impl RouteMetrics {
    fn record(&self, method: &Method, route: &str, status: u16, seconds: f64) {
        let method = method_label(method);
        {
            let routes = self.routes.read();
            let known = routes
                .get(route)
                .and_then(|methods| methods.iter().find(|entry| entry.method == *method))
                .and_then(|entry| entry.counter(status).map(|counter| (entry, counter)));
            if let Some((entry, counter)) = known {
                counter.increment(1);
                entry.duration.record(seconds);
                return;
            }
        }
        let mut routes = self.routes.write();
        let methods = routes.entry(route.into()).or_default();
        let position = match methods.iter().position(|entry| entry.method == *method) {
            Some(position) => position,
            None => {
                methods.push(MethodMetrics {
                    method: method.clone(),
                    duration: metrics::histogram!("http_request_duration_seconds",
                        "method" => method.to_string(), "route" => route.to_owned()),
                    by_status: Vec::new(),
                });
                methods.len() - 1
            }
        };
        let entry = &mut methods[position];
        if entry.counter(status).is_none() {
            let counter = metrics::counter!("http_requests_total",
                "method" => method.to_string(), "route" => route.to_owned(), "status" => status.to_string());
            entry.by_status.push((status, counter));
        }
        let counter = entry.counter(status).expect("just made");
        counter.increment(1);
        entry.duration.record(seconds);
    }
}

#[cfg(test)]
mod tests {
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;

    #[test]
    fn each_route_method_and_status_counts_apart_and_times_per_route_and_method() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let metrics = RouteMetrics::default();
            metrics.record(&Method::POST, PURCHASE_ROUTE, 202, 0.001);
            metrics.record(&Method::POST, PURCHASE_ROUTE, 202, 0.002);
            metrics.record(&Method::POST, PURCHASE_ROUTE, 410, 0.001);
            metrics.record(&Method::GET, PURCHASE_ROUTE, 405, 0.001);
            metrics.record(&Method::GET, UNMATCHED, 404, 0.001);
        });
        let text = handle.render();
        for line in [
            r#"http_requests_total{method="POST",route="/api/purchase/attempt",status="202"} 2"#,
            r#"http_requests_total{method="POST",route="/api/purchase/attempt",status="410"} 1"#,
            r#"http_requests_total{method="GET",route="/api/purchase/attempt",status="405"} 1"#,
            r#"http_requests_total{method="GET",route="unmatched",status="404"} 1"#,
            r#"http_request_duration_seconds_count{method="POST",route="/api/purchase/attempt"} 3"#,
            r#"http_request_duration_seconds_count{method="GET",route="unmatched"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn methods_http_does_not_define_share_one_label() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let metrics = RouteMetrics::default();
        metrics::with_local_recorder(&recorder, || {
            for invented in ["SCAN1", "SCAN2", "SCAN3"] {
                let method = Method::from_bytes(invented.as_bytes()).unwrap();
                metrics.record(&method, UNMATCHED, 404, 0.001);
            }
        });
        let text = handle.render();
        assert!(
            text.contains(
                r#"http_requests_total{method="OTHER",route="unmatched",status="404"} 3"#
            ),
            "{text}"
        );
        assert!(
            !text.contains("SCAN"),
            "an invented method became a label:\n{text}"
        );
        assert_eq!(metrics.routes.read()[UNMATCHED].len(), 1, "one entry kept");
    }
}
