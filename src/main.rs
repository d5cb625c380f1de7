//! `flashsale-api`: serve the HTTP API, apply the database migrations, or
//! mint a token with this deployment's key (operators, from the shell).

mod token;

/// mimalloc instead of glibc's malloc: under a purchase stampede a node's
/// allocations and frees on several threads took a fifth of its CPU in
/// glibc (BENCHMARKS.md, issue 19).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use flashsale::{
    config::{ApiSettings, DatabaseSettings, DependencySettings, LogSettings, RuntimeSettings},
    server, shutdown,
    store::postgres::{Db, MIGRATOR},
    telemetry,
};

#[derive(Parser)]
#[command(
    version,
    about = "flashsale API node: every flag can also be set by its environment variable"
)]
struct Cli {
    #[command(flatten)]
    log: LogSettings,
    #[command(flatten)]
    runtime: RuntimeSettings,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve(Box<ApiSettings>),
    /// Apply pending migrations, then exit. Run once per deploy, not per replica.
    Migrate {
        #[command(flatten)]
        database: DatabaseSettings,
        #[command(flatten)]
        dependencies: DependencySettings,
    },
    /// Mint an access token signed with FLASHSALE_JWT_SECRET and print it:
    /// how operators get admin tokens (there is no admin login over HTTP),
    /// and how tests and benches get tokens. Creates the local user of the
    /// email if it is new.
    Token(Box<token::TokenArgs>),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.runtime
        .build()
        .context("cannot start the Tokio runtime")?
        .block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    telemetry::init_logging(&cli.log)?;
    match cli.command {
        Command::Serve(settings) => {
            settings.validate()?;
            server::run(*settings, shutdown::on_signal()).await
        }
        Command::Migrate {
            database,
            dependencies,
        } => {
            let db = Db::connect_for_migrations(&database, dependencies.dependency_timeout)?;
            MIGRATOR.run(db.pool()).await.context("migrations failed")?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Token(args) => token::mint(*args).await,
    }
}
