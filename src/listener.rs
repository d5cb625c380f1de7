//! The API node's listener: every accepted connection is closed once a
//! write to it has made no progress for the stall timeout.
//!
//! A client that stops reading (a frozen tab, a dead phone behind a NAT
//! that still ACKs) would otherwise hold its connection, and everything
//! buffered for it, forever: hyper has no write timeout, and an event
//! stream is never "done". nginx cuts such clients on its side
//! (`send_timeout`); this does the same for a node reached directly.

use std::{io, net::SocketAddr, pin::Pin, time::Duration};

use axum::serve::Listener;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_io_timeout::TimeoutStream;

/// Connections the kernel may hold for the node before it accepts them
/// (capped by `net.core.somaxconn`, 4096 on current kernels). Tokio's
/// default of 1,024 overflowed when 2,000 shoppers opened their event
/// streams at once: nginx's connects to the node timed out, nginx marked
/// both nodes down, and the whole cluster answered 503 for seconds.
const LISTEN_BACKLOG: u32 = 4096;

/// Listens on `address` like `TcpListener::bind` (with `SO_REUSEADDR`), with
/// room for a crowd's connection burst.
pub fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

pub struct StallGuardedListener {
    inner: TcpListener,
    write_stall_timeout: Duration,
}

impl StallGuardedListener {
    pub fn new(inner: TcpListener, write_stall_timeout: Duration) -> Self {
        Self {
            inner,
            write_stall_timeout,
        }
    }
}

impl Listener for StallGuardedListener {
    type Io = Pin<Box<TimeoutStream<TcpStream>>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, address) = Listener::accept(&mut self.inner).await;
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let mut guarded = TimeoutStream::new(stream);
        guarded.set_write_timeout(Some(self.write_stall_timeout));
        (Box::pin(guarded), address)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::TcpStream;

    use super::*;

    /// More than tokio's default backlog of 1,024 connect while the node
    /// accepts none: every one completes its handshake in the kernel's queue.
    /// (Needs `net.core.somaxconn` of at least 1,500, as on current kernels;
    /// below that the kernel caps the backlog and the node's too.)
    #[tokio::test]
    async fn a_burst_beyond_the_default_backlog_is_queued_not_dropped() {
        const BURST: usize = 1_500;
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let address = listener.local_addr().unwrap();
        let connects = (0..BURST)
            .map(|_| tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(address)));
        let results = futures::future::join_all(connects).await;
        let connected = results
            .iter()
            .filter(|result| matches!(result, Ok(Ok(_))))
            .count();
        assert_eq!(
            connected, BURST,
            "connections queued before the first accept"
        );
    }
}
