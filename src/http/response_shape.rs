//! What every response of a node passes through, as one tower layer inside
//! the trace and request-id layers and outside CORS: a panic becomes a 500,
//! every 4xx/5xx gets the JSON error body with the request id
//! ([`error::render`]), and the browser-safety headers are set
//! ([`security::set_default_headers`]), on the CORS layer's preflight
//! answers too. A panic's 500 is made outside CORS, so it carries no CORS
//! headers (a browser then reports a CORS error for a request that hit a
//! bug).
//!
//! Written by hand because the stock parts cost allocations on every
//! request (issue 19): axum's `from_fn` boxes the inner service and the
//! future, `map_response` boxes the future and the body, and tower-http's
//! `CatchPanicLayer` boxes every body. This layer keeps a clone of the
//! request id's header value and changes the response in place; the
//! allocations it saves are counted in BENCHMARKS.md. A deviation from
//! DESIGN.md §2's "tower-http first" (docs/decisions.md).

use std::{
    any::Any,
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    task::{Context, Poll, ready},
};

use axum::{extract::Request, http::HeaderValue, response::Response};
use futures::{
    FutureExt,
    future::{CatchUnwind, Either, Ready},
};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::{REQUEST_ID, error, security};

/// Wraps a service in [`ShapeResponses`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ShapeResponsesLayer;

impl<S> Layer<S> for ShapeResponsesLayer {
    type Service = ShapeResponses<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ShapeResponses { inner }
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct ShapeResponses<S> {
    inner: S,
}

type Panic = Box<dyn Any + Send + 'static>;

/// The inner call, caught whether it panics while making its future or
/// while the future runs.
type Caught<F> =
    Either<CatchUnwind<AssertUnwindSafe<F>>, Ready<Result<<F as Future>::Output, Panic>>>;

impl<S> Service<Request> for ShapeResponses<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ShapedResponse<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // Read again only for an error, after the request has moved on.
        let request_id = request.headers().get(REQUEST_ID).cloned();
        let inner = self.call_caught(request);
        ShapedResponse { inner, request_id }
    }
}

impl<S> ShapeResponses<S>
where
    S: Service<Request, Response = Response>,
{
    fn call_caught(&mut self, request: Request) -> Caught<S::Future> {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
            Ok(future) => Either::Left(AssertUnwindSafe(future).catch_unwind()),
            Err(panic) => Either::Right(futures::future::ready(Err(panic))),
        }
    }
}

pin_project! {
    /// The response of [`ShapeResponses`].
    pub struct ShapedResponse<F: Future> {
        #[pin]
        inner: Caught<F>,
        request_id: Option<HeaderValue>,
    }
}

impl<F, E> Future for ShapedResponse<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match ready!(this.inner.poll(cx)) {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => return Poll::Ready(Err(error)),
            Err(panic) => panicked(panic),
        };
        let mut response = error::render(response, this.request_id.take());
        security::set_default_headers(&mut response);
        Poll::Ready(Ok(response))
    }
}

/// Logs what a handler panicked with; the client gets a 500 in the usual
/// JSON shape, never the message.
fn panicked(panic: Panic) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(not a string)");
    tracing::error!(panic = message, "a handler panicked");
    let mut response = Response::default();
    *response.status_mut() = axum::http::StatusCode::INTERNAL_SERVER_ERROR;
    response
}

#[cfg(test)]
mod tests {
    use axum::{
        Router,
        body::{Body, to_bytes},
        http::{StatusCode, header},
        routing::get,
    };
    use tower::{ServiceBuilder, ServiceExt};

    use super::*;

    fn request(path: &str) -> Request {
        Request::get(path)
            .header(REQUEST_ID, "request-7")
            .body(Body::empty())
            .unwrap()
    }

    async fn json_of(response: Response) -> serde_json::Value {
        serde_json::from_slice(&to_bytes(response.into_body(), 1 << 16).await.unwrap()).unwrap()
    }

    fn shaped(router: Router) -> Router {
        router.layer(ShapeResponsesLayer)
    }

    #[tokio::test]
    async fn a_handler_that_panics_answers_500_in_the_error_shape() {
        let app = shaped(Router::new().route(
            "/boom",
            get(|| async {
                panic!("the handler's secret");
                #[allow(unreachable_code)]
                ""
            }),
        ));
        let response = app.oneshot(request("/boom")).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            response.headers()[header::X_CONTENT_TYPE_OPTIONS],
            "nosniff"
        );
        let body = json_of(response).await;
        assert_eq!(body["error"]["code"], "INTERNAL");
        assert_eq!(body["error"]["request_id"], "request-7");
        assert!(!body.to_string().contains("secret"), "{body}");
    }

    #[tokio::test]
    async fn a_service_that_panics_before_its_future_answers_500_too() {
        let service = ServiceBuilder::new().layer(ShapeResponsesLayer).service_fn(
            |_: Request| -> futures::future::Ready<Result<Response, std::convert::Infallible>> {
                panic!("while making the future")
            },
        );
        let response = service.oneshot(request("/")).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(json_of(response).await["error"]["code"], "INTERNAL");
    }

    #[tokio::test]
    async fn a_success_keeps_its_body_and_gains_the_headers() {
        let app = shaped(Router::new().route("/ok", get(|| async { "fine" })));
        let response = app.oneshot(request("/ok")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(response.headers()[header::X_FRAME_OPTIONS], "DENY");
        let body = to_bytes(response.into_body(), 64).await.unwrap();
        assert_eq!(&body[..], b"fine");
    }

    #[tokio::test]
    async fn an_error_made_outside_the_handlers_gets_the_json_shape() {
        let app = shaped(Router::new());
        let response = app.oneshot(request("/nowhere")).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body = json_of(response).await;
        assert_eq!(body["error"]["code"], "NOT_FOUND");
        assert_eq!(body["error"]["request_id"], "request-7");
    }
}
