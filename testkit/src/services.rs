//! Where the project's test services are (`scripts/test` starts them), and
//! polling.

use std::{future::Future, time::Duration};

use sqlx::PgPool;

/// The project's test Redis (`scripts/test` starts it).
pub fn redis_url() -> String {
    std::env::var("FLASHSALE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:56379".into())
}

/// A plain connection to the test Redis, for looking at keys directly.
pub async fn redis_connection() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("the test Redis must be running: start it with scripts/test")
}

/// The URL of a test's own database, for a child process.
pub fn database_url(pg: &PgPool) -> String {
    let options = pg.connect_options();
    format!(
        "postgres://{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap()
    )
}

/// Polls `check` until it holds; panics naming `what` after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let give_up = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < give_up,
            "{what}: not true after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
