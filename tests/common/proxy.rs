//! A TCP proxy in front of a real PostgreSQL or Redis that a test can cut
//! (drop every connection and refuse new ones) and restore: the dependency
//! "goes down" for one app under test without disturbing the others sharing
//! the same server.

use std::net::SocketAddr;

use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

pub struct FaultProxy {
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, watching) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *watching.borrow() {
                    continue; // dropped: the client sees the connection close
                }
                tokio::spawn(pipe(client, upstream, watching.clone()));
            }
        });
        Self { addr, cut }
    }

    /// The dependency is down: open connections drop, new ones close at once.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

async fn pipe(mut client: TcpStream, upstream: SocketAddr, mut cut: watch::Receiver<bool>) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = cut.wait_for(|cut| *cut) => {}
    }
}

/// `host:port` of a `scheme://host:port/...` URL.
pub fn socket_of(url: &str) -> SocketAddr {
    let after_scheme = url.split("://").nth(1).unwrap();
    let host_port = after_scheme
        .rsplit('@')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    host_port.parse().unwrap_or_else(|_| {
        let (host, port) = host_port.rsplit_once(':').unwrap();
        let host = if host == "localhost" {
            "127.0.0.1"
        } else {
            host
        };
        format!("{host}:{port}").parse().unwrap()
    })
}
