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
    /// `reason` says what went wrong in a few words (`connection refused`, the server's
    /// message); the underlying error is not repeated after it.
    #[error("cannot connect to PostgreSQL at {target}: {reason}")]
    Connect {
        target: String,
        reason: String,
        /// The server's SQLSTATE, when it refused (`3D000`: no such database).
        code: Option<String>,
    },
    #[error("cannot apply migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("invalid database URL: {0}")]
    BadUrl(sqlx::Error),
}

impl StoreError {
    fn connect(target: String, e: &sqlx::Error) -> StoreError {
        StoreError::Connect {
            target,
            reason: connect_reason(e),
            code: e.as_database_error().and_then(|d| d.code()).map(|c| c.to_string()),
        }
    }

    /// Whether the server said the database does not exist.
    pub fn is_missing_database(&self) -> bool {
        matches!(self, StoreError::Connect { code: Some(c), .. } if c == "3D000")
    }
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

/// A connection error in a few words: `connection refused`, `timed out`, the server's own
/// message (`database "x" does not exist`), without sqlx's wrapping.
pub fn connect_reason(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
            std::io::ErrorKind::TimedOut => "timed out".into(),
            _ => io.to_string(),
        },
        sqlx::Error::Database(d) => d.message().to_string(),
        sqlx::Error::PoolTimedOut => "timed out".into(),
        other => other.to_string(),
    }
}

/// Whether waiting may help: the server is not up (yet), or is starting or shutting down.
fn transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| c.starts_with("57P")),
        _ => false,
    }
}

/// Opens a pool on `url` and applies the migrations. A server that is not reachable is tried
/// again until `timeout` has passed (zero: once, for commands that should fail fast); a
/// refusal by the server (no such database, bad password) fails at once. Each try waits at most
/// 5 s for its connection. Server notices (`... already exists, skipping`) are not shown.
///
/// Start-up cost matters for CLI commands: the pool opens its first connection while a
/// connection of its own proves the server reachable (with the error to report when it is not)
/// and checks the migrations (one query when they are up to date, [`MIGRATOR`] only when not).
pub async fn connect(url: &str, max_connections: u32, timeout: Duration) -> Result<PgPool, StoreError> {
    let opts = connect_options(url)?;
    let target = describe_url(&opts);
    let per_try = Duration::from_secs(5);
    let pool_options = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(timeout.max(per_try));
    // Only a head start: if it fails, the pool is opened again once the server is reachable.
    let early = tokio::spawn(pool_options.clone().connect_with(opts.clone()));
    let probed = async {
        let mut conn = reach(&opts, &target, timeout, per_try).await?;
        let migrated = migrate(&mut conn).await;
        let _ = sqlx::Connection::close(conn).await;
        migrated
    }
    .await;
    if let Err(e) = probed {
        early.abort();
        return Err(e);
    }
    match early.await {
        Ok(Ok(pool)) => Ok(pool),
        _ => pool_options
            .connect_with(opts)
            .await
            .map_err(|e| StoreError::connect(target, &e)),
    }
}

/// A connection to the server, tried until `timeout` while it is not reachable (or starting).
async fn reach(
    opts: &PgConnectOptions,
    target: &str,
    timeout: Duration,
    per_try: Duration,
) -> Result<sqlx::PgConnection, StoreError> {
    let started = std::time::Instant::now();
    loop {
        match tokio::time::timeout(per_try, opts.connect()).await {
            Ok(Ok(conn)) => return Ok(conn),
            Ok(Err(e)) if !transient(&e) || started.elapsed() >= timeout => {
                return Err(StoreError::connect(target.to_string(), &e));
            }
            Err(_) if started.elapsed() >= timeout => {
                return Err(StoreError::Connect {
                    target: target.to_string(),
                    reason: format!("no answer within {} s", per_try.as_secs()),
                    code: None,
                })
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// The options [`connect`] uses for `url`: application name `reelflow`, no server notices, no
/// statement logging.
pub fn connect_options(url: &str) -> Result<PgConnectOptions, StoreError> {
    let opts: PgConnectOptions = url.parse().map_err(StoreError::BadUrl)?;
    Ok(opts
        .application_name("reelflow")
        .options([("client_min_messages", "warning")])
        .disable_statement_logging())
}

/// Applies [`MIGRATOR`] unless the database already has exactly its migrations applied (the
/// same versions with the same checksums, none failed), which one query tells.
pub async fn migrate(conn: &mut sqlx::PgConnection) -> Result<(), StoreError> {
    // The simple query protocol: one round trip, no statement to prepare.
    let applied: Result<Option<String>, sqlx::Error> = sqlx::raw_sql(
        "SELECT string_agg(version || ':' || success || ':' || encode(checksum, 'hex'), ',' ORDER BY version)
         FROM _sqlx_migrations",
    )
    .fetch_one(&mut *conn)
    .await
    .and_then(|row| sqlx::Row::try_get(&row, 0));
    if applied.ok().flatten().as_deref() == Some(expected_migrations().as_str()) {
        return Ok(());
    }
    // Missing, pending, failed or changed migrations: the migrator applies or reports them.
    MIGRATOR.run(&mut *conn).await?;
    Ok(())
}

/// [`MIGRATOR`]'s migrations as [`migrate`]'s query renders applied ones.
fn expected_migrations() -> String {
    MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| format!("{}:true:{}", m.version, hex(&m.checksum)))
        .collect::<Vec<_>>()
        .join(",")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A small pool on an administrative database, without migrations.
pub async fn connect_admin(url: &str) -> Result<PgPool, StoreError> {
    let opts: PgConnectOptions = url.parse().map_err(StoreError::BadUrl)?;
    let target = describe_url(&opts);
    PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(
            opts.options([("client_min_messages", "warning")])
                .disable_statement_logging(),
        )
        .await
        .map_err(|e| StoreError::connect(target, &e))
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
