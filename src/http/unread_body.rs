//! A request body nobody read is read to its end by a task of its own, so
//! the node keeps the client's connection.
//!
//! hyper reuses a connection only once it has read the request's body.
//! When a request is answered without its body being read (a 401 from the
//! token check, a 404, a 415), axum drops the body; hyper then takes what
//! has already arrived and, when that is not all of it, closes the
//! connection after the response (hyper's `poll_drain_or_close_read`). A
//! client that writes its headers and its body separately then finds its
//! next request on a closed connection. A body nobody polled, of a declared
//! length within the node's body limit, is read here instead, for at most
//! [`DRAIN_WAIT`], its bytes thrown away as they come. A body a reader
//! started (cut off by the body limit or the request timeout), one of
//! unknown length, one a client asked permission to send (`Expect:
//! 100-continue`) and one whose connection closes anyway are dropped as
//! before.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::Request,
    http::{Version, header},
};
use http_body::{Body as HttpBody, Frame, SizeHint};

/// How long a task waits for the rest of a body nobody read. A client
/// sends its body right after its headers; one that does not is not worth
/// its connection.
pub const DRAIN_WAIT: Duration = Duration::from_secs(1);

/// Gives `request` a body that is read to its end if dropped unpolled, when
/// keeping its connection is worth it.
pub fn read_to_end_if_dropped(request: Request, limit: usize) -> Request {
    // Most requests (every GET) have no body: nothing more to look at.
    if request.body().is_end_stream() {
        return request;
    }
    let headers = request.headers();
    // `Expect`: reading would invite a body the node already refused;
    // `Connection: close` and HTTP/1.0: the connection ends anyway.
    let keeps_connection = request.version() == Version::HTTP_11
        && !headers.contains_key(header::EXPECT)
        && !headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|value| value.as_bytes().eq_ignore_ascii_case(b"close"));
    if !keeps_connection {
        return request;
    }
    request.map(|body| {
        Body::new(DrainedOnDrop {
            body: Some(body),
            polled: false,
            limit: u64::try_from(limit).unwrap_or(u64::MAX),
        })
    })
}

struct DrainedOnDrop {
    /// Taken by `drop`.
    body: Option<Body>,
    /// Whether anyone started reading it: then its reader decided.
    polled: bool,
    limit: u64,
}

impl HttpBody for DrainedOnDrop {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        this.polled = true;
        match this.body.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
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
        let Some(mut body) = self.body.take() else {
            return;
        };
        let declared_within_limit = body
            .size_hint()
            .upper()
            .is_some_and(|length| length <= self.limit);
        if self.polled || !declared_within_limit {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let to_the_end = async {
                    while let Some(Ok(_)) =
                        std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
                    {
                    }
                };
                // Done or not, the body is dropped here; hyper then keeps
                // or closes the connection.
                let _ = tokio::time::timeout(DRAIN_WAIT, to_the_end).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    };

    use super::*;

    /// A body of `length` declared bytes that sends them all at once, or
    /// never, and tells what was done with it.
    #[derive(Clone, Default)]
    struct Watched {
        polls: Arc<AtomicUsize>,
        read_to_end: Arc<AtomicBool>,
        dropped: Arc<AtomicBool>,
    }

    struct WatchedBody {
        watched: Watched,
        length: u64,
        arrives: bool,
        sent: bool,
    }

    impl HttpBody for WatchedBody {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.watched.polls.fetch_add(1, Ordering::SeqCst);
            if !self.arrives {
                return Poll::Pending;
            }
            if self.sent {
                self.watched.read_to_end.store(true, Ordering::SeqCst);
                return Poll::Ready(None);
            }
            self.sent = true;
            let bytes = Bytes::from(vec![b'x'; usize::try_from(self.length).unwrap()]);
            Poll::Ready(Some(Ok(Frame::data(bytes))))
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(if self.sent { 0 } else { self.length })
        }
    }

    impl Drop for WatchedBody {
        fn drop(&mut self) {
            self.watched.dropped.store(true, Ordering::SeqCst);
        }
    }

    impl Watched {
        fn body(&self, length: u64, arrives: bool) -> WatchedBody {
            WatchedBody {
                watched: self.clone(),
                length,
                arrives,
                sent: false,
            }
        }
    }

    /// A request of `length` declared bytes through the layer, with a
    /// limit of 1,024.
    fn request_with(length: u64, arrives: bool) -> (Request, Watched) {
        let watched = Watched::default();
        let body = Body::new(watched.body(length, arrives));
        let request = read_to_end_if_dropped(Request::new(body), 1024);
        (request, watched)
    }

    /// Lets the spawned task run (the test's runtime has one thread, so
    /// the task runs while the test sleeps).
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    /// A request of `length` declared bytes dropped before anyone read it,
    /// once the task it may have started had a moment to run.
    async fn dropped_unread(length: u64, arrives: bool) -> Watched {
        let (request, watched) = request_with(length, arrives);
        drop(request);
        settle().await;
        watched
    }

    #[tokio::test]
    async fn a_body_dropped_unread_is_read_to_its_end() {
        let watched = dropped_unread(100, true).await;
        assert!(watched.read_to_end.load(Ordering::SeqCst));
        assert!(watched.dropped.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_body_declared_over_the_limit_is_dropped_unread() {
        let watched = dropped_unread(4096, true).await;
        assert_eq!(watched.polls.load(Ordering::SeqCst), 0);
        assert!(watched.dropped.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_body_that_never_comes_is_given_up_after_the_wait() {
        let watched = dropped_unread(100, false).await;
        assert!(watched.polls.load(Ordering::SeqCst) > 0, "it is being read");
        assert!(!watched.dropped.load(Ordering::SeqCst));
        tokio::time::sleep(DRAIN_WAIT).await;
        settle().await;
        assert!(watched.dropped.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_body_its_reader_started_is_left_to_it() {
        let (request, watched) = request_with(100, true);
        let mut body = request.into_body();
        let first = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        assert!(first.is_some_and(|frame| frame.is_ok()));
        drop(body);
        settle().await;
        assert_eq!(watched.polls.load(Ordering::SeqCst), 1, "not read on");
        assert!(watched.dropped.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_body_read_by_its_handler_reads_the_same() {
        let request = read_to_end_if_dropped(Request::new(Body::from("{\"quantity\":1}")), 1024);
        let read = axum::body::to_bytes(request.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(read, Bytes::from_static(b"{\"quantity\":1}"));
    }

    #[tokio::test]
    async fn a_request_whose_connection_ends_anyway_is_left_as_it_is() {
        let asking = |request: &mut Request| {
            request
                .headers_mut()
                .insert(header::EXPECT, "100-continue".parse().unwrap());
        };
        let closing = |request: &mut Request| {
            request
                .headers_mut()
                .insert(header::CONNECTION, "Close".parse().unwrap());
        };
        let old = |request: &mut Request| *request.version_mut() = Version::HTTP_10;
        for (case, change) in [
            ("Expect", &asking as &dyn Fn(&mut Request)),
            ("Connection: close", &closing),
            ("HTTP/1.0", &old),
        ] {
            let watched = Watched::default();
            let mut request = Request::new(Body::new(watched.body(100, true)));
            change(&mut request);
            drop(read_to_end_if_dropped(request, 1024));
            settle().await;
            assert_eq!(watched.polls.load(Ordering::SeqCst), 0, "{case}");
            assert!(watched.dropped.load(Ordering::SeqCst), "{case}");
        }
    }
}
