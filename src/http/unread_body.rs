//! A request body its handler left unread is read to its end by a task of
//! its own, so the node keeps the client's connection.
//!
//! hyper reuses a connection only once it has read the request's body.
//! When a request is answered without its body being read (a 401 from the
//! token check, a 404, a 429), axum drops the body; hyper then takes what
//! has already arrived and, when that is not all of it, closes the
//! connection after the response (hyper's `poll_drain_or_close_read`). A
//! client that writes its headers and its body separately then finds its
//! next request on a closed connection, and nginx does not retry a POST it
//! sent on an upstream connection the node had just closed (the shopper
//! gets a 503). A body of known length within the node's body limit is read
//! here instead, for at most [`DRAIN_WAIT`]; a larger one, one of unknown
//! length or one that does not arrive in time is dropped as before.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use http_body::{Body as HttpBody, Frame, SizeHint};

/// How long a task waits for the rest of a body nobody read. A client
/// sends its body right after its headers; one that does not is not worth
/// its connection.
pub const DRAIN_WAIT: Duration = Duration::from_secs(1);

/// Gives `request` a body that is read to its end if dropped unread, when
/// it declared a length of at most `limit` bytes.
pub fn read_to_end_if_dropped(request: Request, limit: usize) -> Request {
    request.map(|body| {
        if body.is_end_stream() {
            body
        } else {
            Body::new(DrainedOnDrop {
                body: Some(body),
                ended: false,
                limit,
            })
        }
    })
}

struct DrainedOnDrop {
    /// Taken by `drop`.
    body: Option<Body>,
    /// Whether a reader saw its end (or its error).
    ended: bool,
    limit: usize,
}

impl HttpBody for DrainedOnDrop {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            this.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for DrainedOnDrop {
    fn drop(&mut self) {
        let Some(body) = self.body.take() else {
            return;
        };
        let small = body
            .size_hint()
            .upper()
            .is_some_and(|length| length <= self.limit as u64);
        if self.ended || body.is_end_stream() || !small {
            return;
        }
        let limit = self.limit;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                // What it says is of no interest: reading it is the point.
                let _ = tokio::time::timeout(DRAIN_WAIT, axum::body::to_bytes(body, limit)).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_without_a_body_keeps_its_own() {
        let request = read_to_end_if_dropped(Request::new(Body::empty()), 1024);
        assert!(request.body().is_end_stream());
        assert_eq!(request.body().size_hint().exact(), Some(0));
    }

    #[tokio::test]
    async fn a_body_read_by_its_handler_reads_the_same() {
        let request = read_to_end_if_dropped(Request::new(Body::from("{\"quantity\":1}")), 1024);
        let read = axum::body::to_bytes(request.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(read, Bytes::from_static(b"{\"quantity\":1}"));
    }
}
