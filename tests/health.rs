//! Probes: liveness, readiness flipping with PostgreSQL and Redis, the health
//! report, metrics and the OpenAPI document.

mod common;

use std::time::{Duration, Instant};

use common::{Route, TestApp, proxy::FaultProxy, spawn_app, spawn_app_routed};
use flashsale::{
    config::{DatabaseSettings, Secret},
    store::{StoreError, postgres::Db},
};
use reqwest::StatusCode;
use sqlx::PgPool;

/// Long enough for pools to notice a restored dependency, short enough that
/// a hang fails the test.
const RECOVERY: Duration = Duration::from_secs(15);

async fn app_behind_proxies(pg: PgPool) -> (TestApp, FaultProxy, FaultProxy) {
    let pg_proxy = FaultProxy::in_front_of_postgres(&pg).await;
    let redis_proxy = FaultProxy::start(common::proxy::socket_of(&common::redis_url())).await;
    let route = Route {
        postgres: Some(pg_proxy.addr),
        redis: Some(redis_proxy.addr),
        queue: None,
    };
    (spawn_app_routed(pg, route).await, pg_proxy, redis_proxy)
}

/// The readiness probe answers 503 (quickly, in the error shape, with
/// Retry-After) while `proxy` is cut, and 200 again once it is restored.
async fn assert_readiness_follows(app: &TestApp, proxy: &FaultProxy) {
    app.wait_for_status("/api/health/ready", StatusCode::OK, RECOVERY)
        .await;

    proxy.cut();
    let started = Instant::now();
    let reply = app.get("/api/health/ready", None).await;
    reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE");
    assert_eq!(reply.headers.get("retry-after").unwrap(), "1");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "readiness hung for {:?} with a dependency down",
        started.elapsed()
    );
    let live = app.get("/api/health/live", None).await;
    assert_eq!(
        live.status,
        StatusCode::OK,
        "liveness must not depend on dependencies"
    );

    proxy.restore();
    app.wait_for_status("/api/health/ready", StatusCode::OK, RECOVERY)
        .await;
}

#[sqlx::test]
async fn readiness_is_503_while_redis_is_unreachable_and_recovers_by_itself(pg: PgPool) {
    let (app, _pg_proxy, redis_proxy) = app_behind_proxies(pg).await;
    assert_readiness_follows(&app, &redis_proxy).await;
}

#[sqlx::test]
async fn readiness_is_503_while_postgres_is_unreachable_and_recovers_by_itself(pg: PgPool) {
    let (app, pg_proxy, _redis_proxy) = app_behind_proxies(pg).await;
    assert_readiness_follows(&app, &pg_proxy).await;
}

#[sqlx::test]
async fn a_request_needing_a_down_dependency_answers_503_not_500(pg: PgPool) {
    let (app, pg_proxy, _redis_proxy) = app_behind_proxies(pg).await;
    app.wait_for_status("/api/health/ready", StatusCode::OK, RECOVERY)
        .await;
    pg_proxy.cut();
    let reply = app
        .post(
            "/api/auth/login",
            None,
            serde_json::json!({"email": "ann@example.com"}),
        )
        .await;
    reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE");
    assert!(
        !reply.body.to_string().to_lowercase().contains("sqlx"),
        "internal text leaked: {}",
        reply.body
    );
}

#[sqlx::test]
async fn the_health_report_names_the_dependency_that_is_down(pg: PgPool) {
    let (app, _pg_proxy, redis_proxy) = app_behind_proxies(pg).await;
    app.wait_for_status("/api/health/ready", StatusCode::OK, RECOVERY)
        .await;
    let healthy = app.operator_get("/api/health").await;
    assert_eq!(healthy.body["status"], "ok", "{}", healthy.body);
    assert_eq!(healthy.body["postgres"]["status"], "up");

    redis_proxy.cut();
    let degraded = app.operator_get("/api/health").await;
    assert_eq!(degraded.status, StatusCode::OK);
    assert_eq!(degraded.body["status"], "degraded", "{}", degraded.body);
    assert_eq!(degraded.body["redis"]["status"], "down");
    assert_eq!(degraded.body["postgres"]["status"], "up");
}

#[sqlx::test]
async fn metrics_count_requests_by_route_and_status(pg: PgPool) {
    let app = spawn_app(pg).await;
    app.get("/api/health/live", None).await;
    // A path no route serves counts too, under one label whatever the path
    // (a scan of a thousand paths must show, and must not make a thousand
    // series).
    app.get("/api/no-such-endpoint", None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    let response = app
        .client
        .get(format!("{}/metrics", app.operator_base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    let counted = |route: &str, status: u16| {
        text.lines().any(|line| {
            line.starts_with("http_requests_total")
                && line.contains(&format!("route=\"{route}\""))
                && line.contains(&format!("status=\"{status}\""))
        })
    };
    assert!(
        counted("/api/health/live", 200),
        "no request counter for /api/health/live in:\n{text}"
    );
    assert!(
        counted("unmatched", 404),
        "no request counter for unmatched paths in:\n{text}"
    );
    assert!(
        !text.contains("no-such-endpoint"),
        "a raw path became a label"
    );
    assert!(
        text.contains("http_request_duration_seconds_bucket"),
        "no latency histogram"
    );
}

#[sqlx::test]
async fn metrics_and_the_health_report_are_served_to_operators_only(pg: PgPool) {
    let app = spawn_app(pg).await;
    for path in ["/metrics", "/api/health"] {
        app.get(path, None)
            .await
            .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
        assert_eq!(
            app.operator_get(path).await.status,
            StatusCode::OK,
            "{path}"
        );
    }
    // Load balancers probe the public listener.
    for path in ["/api/health/live", "/api/health/ready"] {
        assert_eq!(app.get(path, None).await.status, StatusCode::OK, "{path}");
    }
    let document = app.get("/api/openapi.json", None).await;
    let paths = document.body["paths"].as_object().unwrap();
    assert!(!paths.contains_key("/metrics") && !paths.contains_key("/api/health"));
}

#[sqlx::test]
async fn the_openapi_document_covers_every_endpoint_and_the_docs_ui_is_served(pg: PgPool) {
    let app = spawn_app(pg).await;
    let document = app.get("/api/openapi.json", None).await;
    assert_eq!(document.status, StatusCode::OK);
    let paths = document.body["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/api/auth/login", "post"),
        ("/api/flash-sale/status", "get"),
        ("/api/admin/products", "post"),
        ("/api/admin/flash-sales", "post"),
        ("/api/admin/flash-sales/{id}", "get"),
        ("/api/admin/flash-sales/{id}", "patch"),
        ("/api/purchase/attempt", "post"),
        ("/api/purchase/status", "get"),
        ("/api/purchase/user/{user_id}", "get"),
        ("/api/flash-sale/stats", "get"),
        ("/api/admin/flash-sales/{id}/stats", "get"),
        ("/api/admin/users/{id}", "get"),
        ("/api/admin/users/{id}/ban", "post"),
        ("/api/admin/users/{id}/unban", "post"),
        ("/api/admin/audit", "get"),
        ("/api/auth/config", "get"),
        ("/api/health/live", "get"),
        ("/api/health/ready", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|item| item.get(method)).is_some(),
            "{method} {path} undocumented"
        );
    }
    assert!(document.body["components"]["securitySchemes"]["bearer"].is_object());
    // Error responses are built from the code list: each names its codes
    // and points at the one error shape.
    let attempt = &paths["/api/purchase/attempt"]["post"]["responses"];
    for (status, code) in [
        ("410", "SOLD_OUT"),
        ("429", "RATE_LIMITED"),
        ("409", "SALE_NOT_ACTIVE"),
    ] {
        let described = attempt[status]["description"].as_str().unwrap_or_default();
        assert!(
            described.contains(code),
            "{status} of the attempt does not name {code}: {described:?}"
        );
        assert_eq!(
            attempt[status]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody"
        );
    }
    let codes = &document.body["components"]["schemas"]["ErrorCode"]["enum"];
    assert!(
        codes.as_array().is_some_and(|codes| codes.len() > 20),
        "{codes}"
    );

    let ui = app
        .client
        .get(format!("{}/api/docs/", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ui.status(), StatusCode::OK);
    assert!(
        ui.text().await.unwrap().contains("swagger"),
        "docs UI is not Swagger UI"
    );
}

#[sqlx::test]
async fn responses_carry_a_request_id_and_safe_headers(pg: PgPool) {
    let app = spawn_app(pg).await;
    let reply = app.get("/api/health/live", None).await;
    assert!(reply.headers.get("x-request-id").is_some());
    assert_eq!(
        reply.headers.get("x-content-type-options").unwrap(),
        "nosniff"
    );
    assert_eq!(reply.headers.get("cache-control").unwrap(), "no-store");
}

#[sqlx::test]
async fn with_postgres_unreachable_the_sale_keeps_selling_from_redis(pg: PgPool) {
    let (app, pg_proxy, _redis_proxy) = app_behind_proxies(pg).await;
    let admin = app.admin_token().await;
    let sale = app.open_sale(&admin, 5, 1).await;
    let status_path = format!("/api/flash-sale/status?sale_id={sale}");
    app.wait_for_status(&status_path, StatusCode::OK, RECOVERY)
        .await;
    // The node must have loaded the sale into its snapshot before
    // PostgreSQL goes (a 200 above may have come from PostgreSQL itself).
    let sale_id: uuid::Uuid = sale.parse().unwrap();
    common::eventually(RECOVERY, "the node's snapshot holds the sale", || async {
        app.state.snapshot.lookup(Some(sale_id)).is_some()
    })
    .await;

    pg_proxy.cut();
    // Past several catalog reloads (one a second), each failing.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let status = app.get(&status_path, None).await;
    assert_eq!(status.status, StatusCode::OK, "{}", status.body);
    assert_eq!(status.body["remaining"], 5);
    let (_, shopper) = app.shopper();
    let bought = app
        .attempt(&shopper, "pg-down", serde_json::json!({"sale_id": sale}))
        .await;
    assert_eq!(bought.status, StatusCode::ACCEPTED, "{}", bought.body);
    app.get("/api/health/ready", None)
        .await
        .assert_error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE");

    pg_proxy.restore();
    app.wait_for_status("/api/health/ready", StatusCode::OK, RECOVERY)
        .await;
}

/// A client that goes quiet inside a transaction (a stalled process, or a
/// call cancelled mid-BEGIN that leaves its session in a transaction) kept
/// its locks for as long as its connection lived: a product's lock, and
/// with it every purchase settlement and payment of that product. Its
/// session now ends after twice the bound, the lock goes, and the client's
/// next call is a dependency failure (503), not an internal error.
#[sqlx::test]
async fn postgres_ends_a_session_left_idle_in_a_transaction_and_its_locks_go(pg: PgPool) {
    let bound = Duration::from_millis(250);
    let settings = DatabaseSettings {
        database_url: Secret::new(common::database_url(&pg)),
        pg_max_connections: 2,
    };
    let db = Db::connect_lazy(&settings, bound).unwrap();
    let mut quiet = db.pool().begin().await.unwrap();
    sqlx::query("select pg_advisory_xact_lock(42)")
        .execute(&mut *quiet)
        .await
        .unwrap();

    let started = Instant::now();
    let mut waiting = pg.begin().await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        sqlx::query("select pg_advisory_xact_lock(42)").execute(&mut *waiting),
    )
    .await
    .expect("the lock is still held 10 s later")
    .unwrap();
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "the lock went only after {waited:?}"
    );

    let next_call = sqlx::query("select 1")
        .execute(&mut *quiet)
        .await
        .unwrap_err();
    assert!(
        matches!(StoreError::from(next_call), StoreError::Unavailable { .. }),
        "the ended session's next call is a dependency failure"
    );
}
