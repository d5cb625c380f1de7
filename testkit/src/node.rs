//! A real API node, in-process, on a [`Harness`]'s database and Redis
//! prefix: the worker's tests drive it over HTTP while the worker runs as a
//! process.

use std::{net::SocketAddr, num::NonZeroUsize, time::Duration};

use clap::Parser;
use flashsale::{
    auth::LocalTokens,
    config::{ApiSettings, RuntimeSettings},
    domain::Role,
    server,
};
use tokio::{net::TcpListener, sync::oneshot};
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

use crate::{
    services::{database_url, eventually, redis_url},
    worker::Harness,
};

const JWT_SECRET: &str = "worker-test-secret-at-least-32-bytes-long";

/// Threads of a node's runtime: two, like the cores of the machines the
/// suite runs on (CI's included), rather than one per core of whatever
/// machine, so a node's share does not change with the host. The test's
/// thread, the worker process and PostgreSQL share the same cores.
const NODE_THREADS: NonZeroUsize = NonZeroUsize::new(2).unwrap();

/// Serves a node until `stop` on a runtime of its own, built as the
/// binary builds it, and answers the address it listens on. On the test's
/// one thread, a node shared every poll with the test's own clients: a
/// burst of a thousand payments slowed each of its PostgreSQL round trips
/// by the whole burst, so its transactions ran past the 1 s bound and its
/// pool never refilled (a CI run: 656 payments still 503 after a minute).
async fn serve_on_its_own_runtime(settings: ApiSettings, stop: CancellationToken) -> SocketAddr {
    let (listening, address) = oneshot::channel();
    std::thread::Builder::new()
        .name("api-node".to_owned())
        .spawn(move || {
            let runtime = RuntimeSettings {
                runtime_threads: Some(NODE_THREADS),
            }
            .build()
            .expect("a runtime for the node");
            runtime.block_on(async move {
                let state = match server::build_state(&settings) {
                    Ok(state) => state,
                    Err(error) => {
                        let _ = listening.send(Err(format!("{error:#}")));
                        return;
                    }
                };
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let operator_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let _ = listening.send(Ok(listener.local_addr().unwrap()));
                if let Err(error) =
                    server::serve(&settings, state, listener, operator_listener, stop).await
                {
                    eprintln!("the test's API node stopped: {error:#}");
                }
            })
        })
        .expect("a thread for the node");
    match address.await {
        Ok(Ok(address)) => address,
        Ok(Err(error)) => panic!("the node did not start: {error}"),
        Err(_) => panic!("the node's thread ended before it listened (see its panic above)"),
    }
}

/// An API node's settings, read the way the binary reads them.
#[derive(Parser)]
struct ApiArgs {
    #[command(flatten)]
    settings: ApiSettings,
}

/// A serving node; it stops when dropped.
pub struct ApiNode {
    pub base: String,
    pub client: reqwest::Client,
    tokens: LocalTokens,
    _stop: DropGuard,
}

impl ApiNode {
    /// Starts a node in `dev` mode with `extra` flags (`--name=value`) and
    /// waits until it is ready.
    pub async fn start(harness: &Harness, extra: &[&str]) -> Self {
        let mut args = vec![
            "flashsale-api".to_owned(),
            "--bind=127.0.0.1:0".to_owned(),
            format!("--database-url={}", database_url(&harness.pg)),
            format!("--redis-url={}", redis_url()),
            format!("--redis-prefix={}", harness.prefix),
            "--auth-mode=dev".to_owned(),
            format!("--jwt-secret={JWT_SECRET}"),
            // Stopped soon after its test: dropping the test's database waits
            // up to 5 s for the node's sessions to end (later, the database
            // is left behind, with a warning).
            "--shutdown-grace-secs=1".to_owned(),
        ];
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        let settings = ApiArgs::parse_from(args).settings;
        // Guarded before anything can fail: a start that panics (not ready
        // in time) stops its node instead of leaving it serving.
        let stop = CancellationToken::new();
        let guard = stop.clone().drop_guard();
        let address = serve_on_its_own_runtime(settings.clone(), stop).await;
        let base = format!("http://{address}");
        let local = &settings.auth.local;
        let tokens = LocalTokens::new(
            local.jwt_secret.as_ref().unwrap(),
            &local.jwt_issuer,
            &local.jwt_audience,
        );
        flashsale::tls::install_provider();
        let client = reqwest::Client::new();
        // The node judges tokens once it has loaded the banned accounts.
        eventually(Duration::from_secs(10), "the node is ready", || async {
            let ready = client.get(format!("{base}/api/health/ready")).send().await;
            ready.is_ok_and(|reply| reply.status().is_success())
        })
        .await;
        Self {
            base,
            client,
            tokens,
            _stop: guard,
        }
    }

    /// A token for `user_id` in `role`, valid for ten minutes.
    pub fn token(&self, user_id: Uuid, role: Role) -> String {
        self.tokens.issue(user_id, role, 600).token
    }

    /// `PATCH /api/admin/flash-sales/{id}` of the harness's sale, as its
    /// operator: an action (`{"action": "cancel"}`) or added stock.
    pub async fn change_sale(
        &self,
        harness: &Harness,
        change: serde_json::Value,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let admin = self.token(harness.admin.actor_id, Role::Admin);
        let reply = self
            .client
            .patch(format!(
                "{}/api/admin/flash-sales/{}",
                self.base, harness.sale.id
            ))
            .bearer_auth(admin)
            .json(&change)
            .send()
            .await
            .unwrap();
        let status = reply.status();
        (status, reply.json().await.unwrap_or_default())
    }
}
