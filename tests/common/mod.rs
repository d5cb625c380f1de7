//! Test harness: the real router on port 0 against the project's own
//! PostgreSQL (a fresh database per test, from `#[sqlx::test]`) and Redis (a
//! fresh key prefix per test), plus typed helpers for the HTTP calls.
#![allow(dead_code)] // each test binary uses a different subset

pub mod proxy;

pub use flashsale_testkit::{idp, services::*, sse};

use std::{net::SocketAddr, time::Duration};

use flashsale::{
    auth::{self, LocalTokens},
    config::{ApiSettings, AuthMode, OidcSettings, RedisSettings, Secret},
    domain::{Email, Role},
    http::{AppState, routes::flash_sales::FlashSaleResponse},
    jobs::PurchaseQueue,
    server,
    store::{
        postgres::Db,
        redis::{RedisStore, SaleKeys},
    },
};
use redis::AsyncCommands;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

/// The operator whose admin tokens tests mint (as `flashsale-api token
/// --admin` does); logging in with this email gives a shopper token.
pub const ADMIN_EMAIL: &str = "admin@flashsale.test";
/// The one browser origin the test apps allow cross-origin.
pub const CORS_ORIGIN: &str = "https://shop.example.com";
pub const JWT_SECRET: &str = "test-secret-that-is-at-least-32-bytes-long";
/// The bound on dependency calls of a node (and of the stores tests use
/// themselves) that reaches PostgreSQL and Redis directly. Generous: such a
/// node is never meant to answer 503, and the suite's own churn stalls
/// PostgreSQL's commits on a 2-core machine (every `sqlx::test` creates and
/// drops a database, each forcing a checkpoint, while other tests run;
/// commits of 0.5 s and drops of 1.4 s are in its log).
pub const DEPENDENCY_TIMEOUT: Duration = Duration::from_secs(5);
/// The bound of a node whose dependencies run through a fault proxy:
/// short, so a cut or stalled dependency is answered 503 quickly.
pub const FAULT_TIMEOUT: Duration = Duration::from_millis(500);

/// The settings of an API node under test, parsed from flags the way
/// `flashsale-api serve` parses them (so every default and range is the
/// binary's own); only what a test needs differently is given.
pub fn settings(redis_url: String, prefix: &str) -> ApiSettings {
    #[derive(clap::Parser)]
    struct Node {
        #[command(flatten)]
        settings: ApiSettings,
    }
    let timeout_ms = DEPENDENCY_TIMEOUT.as_millis().to_string();
    let flags = [
        ("--bind", "127.0.0.1:0"),
        ("--operator-bind", "127.0.0.1:0"),
        ("--shutdown-grace-secs", "1"),
        ("--cors-origins", CORS_ORIGIN),
        // Unused: tests hand the app a pool for their own database.
        ("--database-url", "postgres://unused"),
        ("--pg-max-connections", "8"),
        ("--redis-url", &redis_url),
        ("--redis-prefix", prefix),
        ("--dependency-timeout-ms", &timeout_ms),
        ("--auth-mode", "dev"),
        ("--jwt-secret", JWT_SECRET),
        ("--token-ttl-secs", "600"),
        // Generous, so concurrency tests measure the engine, not the
        // limiter; the rate-limit test sets its own.
        ("--user-rate-per-sec", "10000"),
        ("--user-burst", "10000"),
        ("--snapshot-refresh-ms", "50"),
        ("--stats-cache-ms", "0"),
        ("--ready-cache-ms", "0"),
    ];
    let args = std::iter::once("flashsale-api")
        .chain(flags.iter().flat_map(|(flag, value)| [*flag, *value]));
    parse_without_environment::<Node>(args).settings
}

/// Parses flags as the binary does, but ignoring the environment: a
/// `FLASHSALE_*` exported in the developer's shell must not reach the app
/// under test.
fn parse_without_environment<'a, T: clap::Parser>(args: impl IntoIterator<Item = &'a str>) -> T {
    let matches = T::command()
        .mut_args(|arg| arg.env(None::<&str>))
        .try_get_matches_from(args)
        .expect("the test flags parse");
    T::from_arg_matches(&matches).expect("the test flags parse")
}

/// The provider settings' defaults (unused in `dev` mode; tests of `oidc`
/// mode fill in their provider).
pub fn oidc_defaults() -> OidcSettings {
    #[derive(clap::Parser)]
    struct Defaults {
        #[command(flatten)]
        oidc: OidcSettings,
    }
    parse_without_environment::<Defaults>(["test"]).oidc
}

/// Where the app under test reaches its dependencies: directly, or through
/// fault proxies the test can cut.
#[derive(Default)]
pub struct Route {
    pub postgres: Option<SocketAddr>,
    pub redis: Option<SocketAddr>,
    /// The purchase queue's Redis connection, separately.
    pub queue: Option<SocketAddr>,
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    /// The test's own database, connected directly (never through a proxy).
    pub pg: PgPool,
    /// Direct Redis connection for arranging and asserting.
    pub redis: redis::aio::MultiplexedConnection,
    pub prefix: String,
    /// Signs tokens as the deployment does (shoppers without a database row).
    pub tokens: LocalTokens,
    /// The node's operator listener: `/metrics`, `/api/health`.
    pub operator_base: String,
    /// The node's state, to look inside (open event streams).
    pub state: AppState,
    /// What the node was started with.
    pub settings: ApiSettings,
    _stop: DropGuard,
}

pub async fn spawn_app(pg: PgPool) -> TestApp {
    spawn_app_routed(pg, Route::default()).await
}

/// The app with one Redis connection (its store or its purchase queue)
/// behind a fault proxy the test can cut or stall.
pub async fn spawn_app_behind_redis_proxy(
    pg: PgPool,
    connection: RedisConnection,
) -> (TestApp, proxy::FaultProxy) {
    let proxy = proxy::FaultProxy::start(proxy::socket_of(&redis_url())).await;
    let route = match connection {
        RedisConnection::Store => Route {
            redis: Some(proxy.addr),
            ..Route::default()
        },
        RedisConnection::Queue => Route {
            queue: Some(proxy.addr),
            ..Route::default()
        },
    };
    (spawn_app_routed(pg, route).await, proxy)
}

/// The app with its PostgreSQL pool behind a fault proxy the test can cut
/// or stall.
pub async fn spawn_app_behind_postgres_proxy(pg: PgPool) -> (TestApp, proxy::FaultProxy) {
    let proxy = proxy::FaultProxy::in_front_of_postgres(&pg).await;
    let route = Route {
        postgres: Some(proxy.addr),
        ..Route::default()
    };
    (spawn_app_routed(pg, route).await, proxy)
}

/// Which of the app's Redis connections a proxy stands in front of.
pub enum RedisConnection {
    Store,
    Queue,
}

pub async fn spawn_app_routed(pg: PgPool, route: Route) -> TestApp {
    spawn_app_with(pg, route, |_| {}).await
}

/// Spawns the app after `adjust` changed its settings.
pub async fn spawn_app_with(
    pg: PgPool,
    route: Route,
    adjust: impl FnOnce(&mut ApiSettings),
) -> TestApp {
    let prefix = format!("test-{}", Uuid::now_v7().simple());
    spawn_node(pg, route, prefix, adjust).await
}

/// A node in `oidc` mode trusting `idp`, after `adjust`.
pub async fn spawn_oidc_app(
    pg: PgPool,
    idp: &idp::FakeIdp,
    adjust: impl FnOnce(&mut ApiSettings),
) -> TestApp {
    let issuer = idp.issuer.clone();
    spawn_app_with(pg, Route::default(), move |settings| {
        settings.auth.auth_mode = AuthMode::Oidc;
        settings.auth.oidc.oidc_issuer = Some(issuer);
        settings.auth.oidc.oidc_audiences = vec![idp::AUDIENCE.into()];
        adjust(settings);
    })
    .await
}

/// A client for the tests' HTTP calls (reqwest needs the process's TLS
/// provider installed first, even for plain HTTP).
pub fn http_client() -> reqwest::Client {
    flashsale::tls::install_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// URL-safe base64 without padding, as JWTs use.
pub fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A second API node of `first`'s deployment: the same settings, database
/// and Redis prefix (reached directly, never through `first`'s proxies, so
/// with the direct bound), its own snapshot, hub and pub/sub connection.
pub async fn spawn_second_node(first: &TestApp) -> TestApp {
    spawn_second_node_with(first, |_| {}).await
}

/// The same, after `adjust` changed the second node's settings (an
/// operator who reconfigured one node of a running deployment).
pub async fn spawn_second_node_with(
    first: &TestApp,
    adjust: impl FnOnce(&mut ApiSettings),
) -> TestApp {
    spawn_node(
        first.pg.clone(),
        Route::default(),
        first.prefix.clone(),
        |settings| {
            let direct = settings.redis.redis_url.clone();
            *settings = first.settings.clone();
            settings.redis.redis_url = direct;
            settings.dependencies.dependency_timeout = DEPENDENCY_TIMEOUT;
            adjust(settings);
        },
    )
    .await
}

async fn spawn_node(
    pg: PgPool,
    route: Route,
    prefix: String,
    adjust: impl FnOnce(&mut ApiSettings),
) -> TestApp {
    let through = |proxy: Option<SocketAddr>| match proxy {
        Some(proxy) => format!("redis://{proxy}"),
        None => redis_url(),
    };
    let mut settings = settings(through(route.redis), &prefix);
    adjust(&mut settings);
    // A dependency behind a fault proxy gets the short bound; the others
    // keep the node's. The node's own Redis connections (its events
    // subscriber) go where its store's go.
    let bound = |proxy: Option<SocketAddr>| {
        proxy.map_or(settings.dependencies.dependency_timeout, |_| FAULT_TIMEOUT)
    };
    let (postgres_bound, redis_bound, queue_bound) = (
        bound(route.postgres),
        bound(route.redis),
        bound(route.queue),
    );
    settings.dependencies.dependency_timeout = redis_bound;
    let local = &settings.auth.local;
    let tokens = LocalTokens::new(
        local.jwt_secret.as_ref().expect("tests sign with a key"),
        &local.jwt_issuer,
        &local.jwt_audience,
    );
    let mut options = (*pg.connect_options()).clone();
    if let Some(proxy) = route.postgres {
        options = options.host(&proxy.ip().to_string()).port(proxy.port());
    }
    let queue = PurchaseQueue::connect_lazy(
        &through(route.queue),
        &prefix,
        settings.queue.queue_idempotency_ttl,
        queue_bound,
    )
    .unwrap();
    let state = server::build_state_with(
        &settings,
        Db::connect_lazy_with(
            options,
            settings.database.pg_max_connections,
            postgres_bound,
        ),
        RedisStore::connect_lazy(&settings.redis, redis_bound).unwrap(),
        queue,
    )
    .unwrap();
    let node_state = state.clone();
    let node_settings = settings.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let operator_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let operator_address = operator_listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let serving = stop.clone();
    tokio::spawn(async move {
        server::serve(&settings, state, listener, operator_listener, serving).await
    });

    // A node refuses tokens until it has loaded the banned accounts (a
    // moment after start); tests begin once it has, or once it is clear it
    // cannot (a test that starts with PostgreSQL cut off).
    let loading = tokio::time::Instant::now() + Duration::from_secs(3);
    while !node_state.auth.revocations().is_loaded() && tokio::time::Instant::now() < loading {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let redis = redis_connection().await;
    TestApp {
        base: format!("http://{address}"),
        operator_base: format!("http://{operator_address}"),
        client: http_client(),
        pg,
        redis,
        prefix,
        tokens,
        state: node_state,
        settings: node_settings,
        _stop: stop.drop_guard(),
    }
}

/// A response read whole: status, headers, JSON body (Null if not JSON).
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The body as the API's own response type (tests of the wire shape
    /// itself read `body`).
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_value(self.body.clone())
            .unwrap_or_else(|error| panic!("{error}: {}", self.body))
    }

    /// Asserts the one error shape with this status and code.
    pub fn assert_error(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "body: {}", self.body);
        assert_eq!(self.body["error"]["code"], code, "body: {}", self.body);
        assert!(
            self.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "error without a message: {}",
            self.body
        );
        let request_id = self
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok());
        assert!(request_id.is_some(), "no x-request-id header");
        assert_eq!(
            self.body["error"]["request_id"].as_str(),
            request_id,
            "request id differs"
        );
    }
}

impl TestApp {
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        Self::read(request.send().await.expect("request failed")).await
    }

    pub async fn read(response: reqwest::Response) -> Reply {
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        Reply {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.request(Method::GET, path, token, None).await
    }

    /// `GET path` on the node's operator listener.
    pub async fn operator_get(&self, path: &str) -> Reply {
        let response = self
            .client
            .get(format!("{}{path}", self.operator_base))
            .send()
            .await
            .expect("request failed");
        Self::read(response).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.request(Method::POST, path, token, Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.request(Method::PATCH, path, token, Some(body)).await
    }

    /// An operator's change sent with an `Idempotency-Key`.
    pub async fn keyed(
        &self,
        method: Method,
        path: &str,
        token: &str,
        key: &str,
        body: Value,
    ) -> Reply {
        let request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(&body);
        Self::read(request.send().await.expect("request failed")).await
    }

    /// A shopper's id and token, minted without a database round trip
    /// (tokens are all the purchase path checks).
    pub fn shopper(&self) -> (Uuid, String) {
        let id = Uuid::now_v7();
        (id, self.tokens.issue(id, Role::Shopper, 600).token)
    }

    /// Writes `count` confirmed orders of `user_id` straight into
    /// PostgreSQL, a second apart, newest first; returns their reservation
    /// ids.
    pub async fn insert_orders(&self, user_id: Uuid, sale: &str, count: usize) -> Vec<Uuid> {
        let mut reservations = Vec::with_capacity(count);
        for index in 0..count {
            let reservation = Uuid::now_v7();
            sqlx::query(
                "insert into orders (id, reservation_id, flash_sale_id, user_id, quantity, unit_price, idempotency_key, created_at)
                 values ($1, $2, $3::uuid, $4, 1, 4999, $5, now() - make_interval(secs => $6))",
            )
            .bind(Uuid::now_v7())
            .bind(reservation)
            .bind(sale)
            .bind(user_id)
            .bind(format!("key-{index}"))
            .bind(index as f64)
            .execute(&self.pg)
            .await
            .unwrap();
            reservations.push(reservation);
        }
        reservations
    }

    /// `POST /api/purchase/attempt` with an Idempotency-Key.
    pub async fn attempt(&self, token: &str, key: &str, body: Value) -> Reply {
        let response = self
            .client
            .post(format!("{}/api/purchase/attempt", self.base))
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(&body)
            .send()
            .await
            .expect("request failed");
        Self::read(response).await
    }

    /// A store on this test's Redis prefix, to act as the worker would.
    pub fn redis_store(&self) -> RedisStore {
        let settings = RedisSettings {
            redis_url: Secret::new(redis_url()),
            redis_prefix: self.prefix.clone(),
        };
        RedisStore::connect_lazy(&settings, DEPENDENCY_TIMEOUT).unwrap()
    }

    /// The sale's Redis keys, as the store names them.
    pub fn sale_keys(&self, sale_id: &str) -> SaleKeys {
        SaleKeys::new(&self.prefix, sale_id.parse().expect("a sale id"))
    }

    /// Jobs sitting in the purchase queue.
    pub async fn queued_jobs(&self) -> i64 {
        let key = format!("{}:data", flashsale::jobs::queue_name(&self.prefix));
        redis::cmd("HLEN")
            .arg(key)
            .query_async(&mut self.redis.clone())
            .await
            .unwrap()
    }

    /// The reservations the queued jobs carry, sorted, one entry per time
    /// queued (the outbox pushes a few milliseconds after the answer).
    pub async fn queued_reservations(&self) -> Vec<Uuid> {
        let key = format!("{}:data", flashsale::jobs::queue_name(&self.prefix));
        let jobs: Vec<Vec<u8>> = redis::cmd("HVALS")
            .arg(key)
            .query_async(&mut self.redis.clone())
            .await
            .unwrap();
        let mut reservations: Vec<Uuid> = jobs
            .iter()
            .flat_map(|job| {
                serde_json::from_slice::<flashsale::jobs::SettlementJob>(job)
                    .expect("a queued job is a SettlementJob")
                    .purchases
            })
            .map(|purchase| purchase.reservation_id)
            .collect();
        reservations.sort_unstable();
        reservations
    }

    /// Waits until the queued jobs carry exactly these reservations.
    pub async fn await_queued(&self, expected: impl IntoIterator<Item = Uuid>) {
        let mut expected: Vec<Uuid> = expected.into_iter().collect();
        expected.sort_unstable();
        let what = format!("the outbox queued the {} purchases", expected.len());
        eventually(Duration::from_secs(5), &what, || async {
            self.queued_reservations().await == expected
        })
        .await;
    }

    /// A sale open now for an hour with this stock and per-user limit.
    pub async fn open_sale(&self, admin: &str, stock: i64, per_user_limit: i64) -> String {
        let product = self.create_product(admin, stock.max(1)).await;
        let mut body = Self::sale_body(product, stock);
        body["per_user_limit"] = json!(per_user_limit);
        let reply = self.post("/api/admin/flash-sales", Some(admin), body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.body["id"].as_str().unwrap().to_string()
    }

    pub async fn login(&self, email: &str) -> String {
        let reply = self
            .post("/api/auth/login", None, json!({ "email": email }))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "login failed: {}", reply.body);
        reply.body["token"].as_str().unwrap().to_string()
    }

    /// An operator's admin token, minted the way `flashsale-api token
    /// --admin` mints it (the user is created in PostgreSQL).
    pub async fn admin_token(&self) -> String {
        self.mint_token(ADMIN_EMAIL, Role::Admin).await
    }

    /// A token for the local user of `email`, as the token command mints it.
    pub async fn mint_token(&self, email: &str, role: Role) -> String {
        let db = Db::new(self.pg.clone(), DEPENDENCY_TIMEOUT);
        let (_, issued) = auth::mint(&db, &self.tokens, &Email::normalize(email), role, 600)
            .await
            .unwrap();
        issued.token
    }

    pub async fn create_product(&self, admin: &str, stock: i64) -> Uuid {
        let sku = format!("SKU-{}", Uuid::now_v7().simple());
        let reply = self
            .post(
                "/api/admin/products",
                Some(admin),
                json!({ "sku": sku, "name": "Sneaker", "price": 12_999, "currency": "EUR", "stock": stock }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.body["id"].as_str().unwrap().parse().unwrap()
    }

    /// A sale open now for an hour.
    pub fn sale_body(product_id: Uuid, stock: i64) -> Value {
        let now = chrono::Utc::now();
        json!({
            "product_id": product_id,
            "price": 4_999,
            "starts_at": now - chrono::Duration::minutes(1),
            "ends_at": now + chrono::Duration::hours(1),
            "per_user_limit": 2,
            "stock": stock,
        })
    }

    pub async fn create_sale(
        &self,
        admin: &str,
        product_id: Uuid,
        stock: i64,
    ) -> FlashSaleResponse {
        let reply = self
            .post(
                "/api/admin/flash-sales",
                Some(admin),
                Self::sale_body(product_id, stock),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.json()
    }

    pub async fn redis_stock(&self, sale_id: &str) -> Option<i64> {
        self.redis
            .clone()
            .hget(self.sale_keys(sale_id).meta, "stock")
            .await
            .unwrap()
    }

    pub async fn redis_meta(&self, sale_id: &str, field: &str) -> Option<String> {
        self.redis
            .clone()
            .hget(self.sale_keys(sale_id).meta, field)
            .await
            .unwrap()
    }

    /// Every key this test's app wrote.
    pub async fn redis_keys(&self) -> Vec<String> {
        let mut connection = self.redis.clone();
        let mut keys: Vec<String> = Vec::new();
        let mut iter: redis::AsyncIter<String> = connection
            .scan_match(format!("{}:*", self.prefix))
            .await
            .unwrap();
        while let Some(key) = iter.next_item().await {
            keys.push(key.unwrap());
        }
        keys
    }

    /// Deletes this test's keys: what a Redis restart without persistence does.
    pub async fn wipe_redis(&self) {
        let keys = self.redis_keys().await;
        if !keys.is_empty() {
            let _: () = self.redis.clone().del(keys).await.unwrap();
        }
    }

    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("select count(*) from {table}")))
            .fetch_one(&self.pg)
            .await
            .unwrap()
    }

    /// Polls `GET path` until it answers `status`, or panics after `deadline`.
    pub async fn wait_for_status(
        &self,
        path: &str,
        status: StatusCode,
        deadline: Duration,
    ) -> Reply {
        self.wait_for_status_as(path, None, status, deadline).await
    }

    /// [`Self::wait_for_status`] as the caller of `token`.
    pub async fn wait_for_status_as(
        &self,
        path: &str,
        token: Option<&str>,
        status: StatusCode,
        deadline: Duration,
    ) -> Reply {
        let give_up = tokio::time::Instant::now() + deadline;
        loop {
            let reply = self.get(path, token).await;
            if reply.status == status {
                return reply;
            }
            assert!(
                tokio::time::Instant::now() < give_up,
                "{path} still answers {} after {deadline:?}: {}",
                reply.status,
                reply.body
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl TestApp {
    /// Opens `GET /api/flash-sale/events` for a sale, as `token` if given.
    pub async fn events(&self, sale_id: &str, token: Option<&str>) -> sse::EventReader {
        let mut request = self
            .client
            .get(format!(
                "{}/api/flash-sale/events?sale_id={sale_id}",
                self.base
            ))
            // The stream is endless: only the connection is bounded.
            .timeout(Duration::from_secs(3600));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        sse::EventReader::new(request.send().await.expect("events request failed"))
    }
}
