//! A TCP proxy in front of a real PostgreSQL or Redis that a test can cut
//! (drop every connection and refuse new ones), stall (keep connections open
//! but never answer, like a paused server) and restore: the dependency fails
//! for one app under test without disturbing the others sharing the server.

use std::net::SocketAddr;

use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Pass,
    Cut,
    Stall,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, watching) = watch::channel(Mode::Pass);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let current = *watching.borrow();
                match current {
                    Mode::Cut => {} // dropped: the client sees the connection close
                    Mode::Stall => {
                        tokio::spawn(hold_silently(client, watching.clone()));
                    }
                    Mode::Pass => {
                        tokio::spawn(pipe(client, upstream, watching.clone()));
                    }
                }
            }
        });
        Self { addr, mode }
    }

    /// A proxy in front of the PostgreSQL server holding `pg`'s database.
    pub async fn in_front_of_postgres(pg: &sqlx::PgPool) -> Self {
        let options = pg.connect_options();
        let upstream = format!("{}:{}", options.get_host(), options.get_port());
        let address = tokio::net::lookup_host(upstream)
            .await
            .unwrap()
            .next()
            .unwrap();
        Self::start(address).await
    }

    /// The dependency is down: open connections drop, new ones close at once.
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// The dependency hangs: connections stay open and nothing ever answers.
    pub fn stall(&self) {
        self.mode.send_replace(Mode::Stall);
    }

    pub fn restore(&self) {
        self.mode.send_replace(Mode::Pass);
    }
}

async fn pipe(mut client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let next = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
        next = mode.wait_for(|mode| *mode != Mode::Pass) => next.map(|mode| *mode),
    };
    drop(server);
    if matches!(next, Ok(Mode::Stall)) {
        hold_silently(client, mode).await;
    }
}

/// Keeps the client connected and unanswered until the stall ends, then
/// drops it (its protocol state is lost; the client must reconnect).
async fn hold_silently(client: TcpStream, mut mode: watch::Receiver<Mode>) {
    let _ = mode.wait_for(|mode| *mode != Mode::Stall).await;
    drop(client);
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
