//! `flashsale-worker`: the background side of the engine.
//!
//! For now it connects to PostgreSQL and Redis, refuses to run against a
//! schema older than its own, and idles until SIGTERM. The purchase-queue
//! consumer, group commit and reconciler land here next (issue 4).

use std::time::Duration;

use anyhow::bail;
use clap::Parser;
use flashsale::{
    config::{DatabaseSettings, DependencySettings, LogSettings, RedisSettings},
    shutdown,
    store::{postgres::Db, redis::RedisStore},
    telemetry,
};

#[derive(Parser)]
#[command(
    version,
    about = "flashsale worker: every flag can also be set by its environment variable"
)]
struct Cli {
    #[command(flatten)]
    log: LogSettings,
    #[command(flatten)]
    database: DatabaseSettings,
    #[command(flatten)]
    redis: RedisSettings,
    #[command(flatten)]
    dependencies: DependencySettings,
}

/// How long to keep retrying dependencies at start before giving up.
const STARTUP_DEADLINE: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init_logging(&cli.log)?;
    cli.database.validate()?;
    cli.redis.validate()?;
    cli.dependencies.validate()?;
    let timeout = cli.dependencies.timeout();
    let db = Db::connect_lazy(&cli.database, timeout)?;
    let redis = RedisStore::connect_lazy(&cli.redis, timeout)?;
    let shutdown = shutdown::on_signal();

    let deadline = tokio::time::Instant::now() + STARTUP_DEADLINE;
    let pending = loop {
        match tokio::try_join!(db.pending_migrations(), redis.ping()) {
            Ok((pending, ())) => break pending,
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(%error, "dependencies not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => bail!("dependencies unreachable for {STARTUP_DEADLINE:?}: {error}"),
        }
    };
    if !pending.is_empty() {
        bail!("the database is missing migrations {pending:?}; run `flashsale-api migrate` first");
    }
    tracing::info!("flashsale-worker connected; idle until the purchase consumer lands");
    shutdown.cancelled().await;
    tracing::info!("flashsale-worker stopped");
    Ok(())
}
