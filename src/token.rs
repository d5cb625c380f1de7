//! `flashsale-api token`: an operator with shell access (and so with the
//! deployment's secrets) mints a token; nobody can obtain an admin token
//! over HTTP.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use flashsale::{
    auth::{self, LocalTokens},
    config::{DatabaseSettings, DependencySettings, LocalTokenSettings},
    domain::{Email, Role},
    store::postgres::Db,
};
use validator::ValidateEmail;

/// Longest lifetime of a minted token.
const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Grant the admin role.
    #[arg(long)]
    admin: bool,

    /// The account's email: a local user, created if new.
    #[arg(long)]
    email: String,

    /// Lifetime, e.g. `30m`, `1h`, `7d` (at most 7 days).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,

    #[command(flatten)]
    signing: LocalTokenSettings,

    #[command(flatten)]
    database: DatabaseSettings,

    #[command(flatten)]
    dependencies: DependencySettings,
}

/// Prints the token alone on stdout (`TOKEN=$(flashsale-api token ...)`);
/// what it is for goes to the log on stderr.
pub async fn mint(args: TokenArgs) -> anyhow::Result<()> {
    if !args.email.trim().validate_email() {
        anyhow::bail!("--email {:?} is not an email address", args.email);
    }
    if args.ttl.is_zero() || args.ttl > MAX_TTL {
        anyhow::bail!("--ttl must be between 1 second and 7 days");
    }
    let tokens = LocalTokens::new(
        args.signing.secret()?,
        &args.signing.jwt_issuer,
        &args.signing.jwt_audience,
    );
    let role = if args.admin {
        Role::Admin
    } else {
        Role::Shopper
    };
    let db = Db::connect_lazy(&args.database, args.dependencies.dependency_timeout)?;
    let email = Email::normalize(&args.email);
    let (user, issued) = auth::mint(&db, &tokens, &email, role, args.ttl.as_secs().max(1))
        .await
        .context("could not record the token's user in PostgreSQL (FLASHSALE_DATABASE_URL)")?;
    tracing::info!(user_id = %user.id, %role, expires_at = issued.expires_at, "token minted");
    println!("{}", issued.token);
    Ok(())
}
