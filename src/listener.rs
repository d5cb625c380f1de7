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
use tokio::net::{TcpListener, TcpStream};
use tokio_io_timeout::TimeoutStream;

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
