//! PostgreSQL access for reelflow: the embedded private server, connection pools and the
//! migrations of the orchestrator's own schema (`reelflow`).
//!
//! Architecture invariant: every table of the orchestrator lives in the `reelflow` schema and is
//! created by a migration in `migrations/`; snapshot schemas are created by the load stage.

pub mod embedded;
pub mod runs;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

pub use embedded::{EmbeddedPg, EmbeddedPgError};

/// The forward-only migrations of the `reelflow` schema, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("cannot connect to PostgreSQL at {target}: {source}")]
    Connect { target: String, source: sqlx::Error },
    #[error("cannot apply migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("invalid database URL: {0}")]
    BadUrl(sqlx::Error),
}

/// Host, port and database of a URL, for messages: never the password.
pub fn describe_url(opts: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        opts.get_host(),
        opts.get_port(),
        opts.get_database().unwrap_or("postgres")
    )
}

/// Opens a pool on `url` (waiting up to `timeout` for the server) and applies the migrations.
pub async fn connect(url: &str, max_connections: u32, timeout: Duration) -> Result<PgPool, StoreError> {
    let opts: PgConnectOptions = url.parse().map_err(StoreError::BadUrl)?;
    let opts = opts.application_name("reelflow").disable_statement_logging();
    let target = describe_url(&opts);
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(timeout)
        .connect_with(opts)
        .await
        .map_err(|source| StoreError::Connect { target, source })?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

/// A small pool on an administrative database, without migrations.
pub async fn connect_admin(url: &str) -> Result<PgPool, StoreError> {
    let opts: PgConnectOptions = url.parse().map_err(StoreError::BadUrl)?;
    let target = describe_url(&opts);
    PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(opts.disable_statement_logging())
        .await
        .map_err(|source| StoreError::Connect { target, source })
}

/// `CREATE DATABASE name` unless it exists (tolerating a concurrent creator).
pub async fn create_database_if_missing(admin: &PgPool, name: &str) -> Result<(), sqlx::Error> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(admin)
        .await?;
    if !exists {
        let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(admin).await {
            // 42P04 duplicate_database, 23505 unique_violation: someone else created it first.
            let code = e.as_database_error().and_then(|d| d.code()).map(|c| c.to_string());
            if !matches!(code.as_deref(), Some("42P04") | Some("23505")) {
                return Err(e);
            }
        }
    }
    Ok(())
}
