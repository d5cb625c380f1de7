//! PostgreSQL: the pool, migrations, error classification, and one file per
//! table family (`users`, `products`, `sales`, `orders`, `settlement`), each
//! adding methods to [`Db`].

mod attempts;
mod audit;
mod holds;
mod orders;
mod payments;
mod products;
mod sale_changes;
mod sales;
mod settlement;
mod stats;
mod users;
mod waitlist;

use std::{future::Future, str::FromStr, time::Duration};

use sqlx::{
    PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

pub use audit::{AdminAct, AuditRow};
pub use holds::{Cancelled, EndedHold};
pub use orders::{CommittedOrder, OrderRow, SettledPurchase};
pub use payments::{PaidOrder, PaymentRecorded};
pub use products::{NewProduct, ProductRow};
pub use sales::{NewSale, SaleRow};
pub use settlement::{ReservationToSettle, SettledBatch};
pub use stats::CheckoutCounts;
pub use users::UserRow;
pub use waitlist::{Offer, WaitlistPlace};

use super::{Dependency, StoreError, bounded};
use crate::{
    config::DatabaseSettings,
    domain::{Currency, DomainError, Money, Quantity},
};

/// The schema, embedded at compile time from `migrations/`.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// The PostgreSQL handle: a pool plus the bound on every call. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: PgPool,
    timeout: Duration,
}

impl Db {
    /// Builds the pool without connecting: the process starts even while
    /// PostgreSQL is down, reports not-ready, and recovers when it returns.
    ///
    /// Each session is told the bound too. Dropping a call's future stops
    /// only the caller: PostgreSQL would finish the statement, holding its
    /// locks (a product's lock, for the sweep) for nobody, while the next
    /// caller waits for them out of its own bound. So a statement running
    /// longer than the bound is cancelled by the server, and a session idle
    /// in a transaction for twice the bound (its client stuck or gone) is
    /// ended.
    pub fn connect_lazy(settings: &DatabaseSettings, timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self::connect_lazy_with(
            url_options(settings)?,
            settings.pg_max_connections,
            timeout,
        ))
    }

    /// The same from connect options (the tests' nodes reach their own
    /// database, some through a fault proxy).
    pub fn connect_lazy_with(
        options: PgConnectOptions,
        max_connections: u32,
        timeout: Duration,
    ) -> Self {
        let millis = timeout.as_millis().to_string();
        let idle_millis = (2 * timeout).as_millis().to_string();
        let options = named(options).options([
            ("statement_timeout", millis.as_str()),
            ("idle_in_transaction_session_timeout", idle_millis.as_str()),
        ]);
        Self::pool_of(options, max_connections, timeout)
    }

    /// The same without the server-side bounds, for migrations: a schema
    /// change may rightly run longer than a request.
    pub fn connect_for_migrations(
        settings: &DatabaseSettings,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let options = named(url_options(settings)?);
        Ok(Self::pool_of(options, settings.pg_max_connections, timeout))
    }

    fn pool_of(options: PgConnectOptions, max_connections: u32, timeout: Duration) -> Self {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(timeout)
            .connect_lazy_with(options);
        Self::new(pool, timeout)
    }

    pub fn new(pool: PgPool, timeout: Duration) -> Self {
        Self { pool, timeout }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The bound on every call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn bounded<T, E>(&self, call: impl Future<Output = Result<T, E>>) -> Result<T, StoreError>
    where
        StoreError: From<E>,
    {
        bounded(Dependency::Postgres, self.timeout, call).await
    }

    /// A trivial round trip, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.bounded(sqlx::query("select 1").execute(&self.pool))
            .await
            .map(drop)
    }

    /// Migrations embedded in this binary that the database has not applied.
    pub async fn pending_migrations(&self) -> Result<Vec<String>, StoreError> {
        let applied: Vec<i64> = self
            .bounded(
                sqlx::query_scalar("select version from _sqlx_migrations where success")
                    .fetch_all(&self.pool),
            )
            .await?;
        Ok(MIGRATOR
            .iter()
            .filter(|migration| !applied.contains(&migration.version))
            .map(|migration| format!("{}_{}", migration.version, migration.description))
            .collect())
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        use sqlx::Error;
        match &error {
            Error::PoolTimedOut | Error::PoolClosed | Error::Io(_) | Error::Tls(_) => {
                StoreError::unavailable(Dependency::Postgres, &error)
            }
            Error::Database(db) if is_transient(db.code().as_deref()) => {
                StoreError::unavailable(Dependency::Postgres, &error)
            }
            _ => StoreError::unexpected(Dependency::Postgres, &error),
        }
    }
}

/// SQLSTATEs that mean "try again later": connection exceptions (08),
/// shutdown/cannot-connect-now (57P0x), too many connections (53300),
/// serialization failures and deadlocks (40001, 40P01), and the session
/// bounds of [`Db::connect_lazy`]: a statement cancelled past the bound
/// (57014) and a session ended idle in a transaction (25P03).
fn is_transient(code: Option<&str>) -> bool {
    code.is_some_and(|code| {
        // 08P01 (protocol violation: a pooler refusing a startup option)
        // is a configuration error that no retry mends.
        (code.starts_with("08") && code != "08P01")
            || code.starts_with("57P0")
            || matches!(code, "53300" | "40001" | "40P01" | "57014" | "25P03")
    })
}

fn url_options(settings: &DatabaseSettings) -> anyhow::Result<PgConnectOptions> {
    PgConnectOptions::from_str(settings.database_url.expose())
        .map_err(|error| anyhow::anyhow!("invalid configuration: FLASHSALE_DATABASE_URL: {error}"))
}

/// Names the sessions `<binary>@<host>[<pid>]` unless the URL names them,
/// so `pg_stat_activity` says which process holds a session (and its
/// locks); the host tells apart containers that all run as pid 1.
fn named(options: PgConnectOptions) -> PgConnectOptions {
    if options.get_application_name().is_some() {
        return options;
    }
    let process = std::env::current_exe()
        .ok()
        .and_then(|path| Some(path.file_stem()?.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "flashsale".to_owned());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    options.application_name(&format!(
        "{process}@{}[{}]",
        host.trim(),
        std::process::id()
    ))
}

/// Turns a violation of the named constraint into a domain error; any other
/// failure is classified as usual.
fn on_violation(constraint: &str, domain: DomainError) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |error| match &error {
        sqlx::Error::Database(db) if db.constraint() == Some(constraint) => domain.into(),
        _ => error.into(),
    }
}

/// A domain value stored as a plain column: written from the value, read
/// back through its checked constructor (a row that breaks it is an error,
/// never a silent default).
macro_rules! stored_as {
    ($domain:ty, $column:ty, $read:expr) => {
        impl sqlx::Type<sqlx::Postgres> for $domain {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <$column as sqlx::Type<sqlx::Postgres>>::type_info()
            }
        }

        impl sqlx::Encode<'_, sqlx::Postgres> for $domain {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                let column: $column = self.clone().into();
                <$column as sqlx::Encode<sqlx::Postgres>>::encode_by_ref(&column, buf)
            }
        }

        impl sqlx::Decode<'_, sqlx::Postgres> for $domain {
            fn decode(
                value: sqlx::postgres::PgValueRef<'_>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let column = <$column as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                let read: fn($column) -> Result<$domain, String> = $read;
                Ok(read(column)?)
            }
        }
    };
}

stored_as!(Quantity, i32, |units| Quantity::try_from(i64::from(units)));
stored_as!(Money, i64, |minor| Money::from_minor(minor)
    .ok_or_else(|| format!("{minor} is not an amount")));
stored_as!(Currency, String, Currency::try_from);
