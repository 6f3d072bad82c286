//! Which PostgreSQL to use: `database.url` / `DATABASE_URL`, or the private embedded server.

use std::time::Duration;

use anyhow::Context;
use reelflow_store::EmbeddedPg;
use sqlx::PgPool;

/// The database URL, starting the private server (and creating its `reelflow` database) when
/// no URL is configured.
pub async fn url(cfg: &crate::config::Config) -> anyhow::Result<String> {
    match locate(cfg).await? {
        Located::Configured(url) => Ok(url),
        Located::Embedded(pg) => {
            create_embedded_database(&pg).await?;
            Ok(pg.url(EMBEDDED_DATABASE))
        }
    }
}

const EMBEDDED_DATABASE: &str = "reelflow";

enum Located {
    Configured(String),
    Embedded(EmbeddedPg),
}

/// `database.url`, or the private server, started when it is not running.
async fn locate(cfg: &crate::config::Config) -> anyhow::Result<Located> {
    if !cfg.database.url.is_empty() {
        return Ok(Located::Configured(cfg.database.url.clone()));
    }
    let dir = cfg.database.embedded_dir.clone();
    let pg = tokio::task::spawn_blocking(move || EmbeddedPg::start(&dir, false)).await??;
    eprintln!(
        "reelflow: no DATABASE_URL set; using a private PostgreSQL in {} at {} (stop it with `reelflow db stop`)",
        pg.data_dir.display(),
        pg.url(EMBEDDED_DATABASE)
    );
    Ok(Located::Embedded(pg))
}

async fn create_embedded_database(pg: &EmbeddedPg) -> anyhow::Result<()> {
    let admin = reelflow_store::connect_admin(&pg.url("postgres")).await?;
    reelflow_store::create_database_if_missing(&admin, EMBEDDED_DATABASE).await?;
    admin.close().await;
    Ok(())
}

/// For CLI commands: one try, so an unreachable server is reported at once.
pub async fn connect(cfg: &crate::config::Config) -> anyhow::Result<PgPool> {
    connect_waiting(cfg, Duration::ZERO).await
}

/// For the daemon: waits up to `database.connect_timeout_secs` for the server to come up.
pub async fn connect_for_serve(cfg: &crate::config::Config) -> anyhow::Result<PgPool> {
    connect_waiting(cfg, Duration::from_secs(cfg.database.connect_timeout_secs)).await
}

async fn connect_waiting(cfg: &crate::config::Config, wait: Duration) -> anyhow::Result<PgPool> {
    let max = cfg.database.max_connections;
    let pool = match locate(cfg).await? {
        Located::Configured(url) => reelflow_store::connect(&url, max, wait).await,
        Located::Embedded(pg) => {
            // The private server's database is created on first use, not checked every time.
            let url = pg.url(EMBEDDED_DATABASE);
            match reelflow_store::connect(&url, max, wait).await {
                Err(e) if e.is_missing_database() => {
                    create_embedded_database(&pg).await?;
                    reelflow_store::connect(&url, max, wait).await
                }
                other => other,
            }
        }
    };
    pool.context("opening the database")
}

pub fn stop_embedded(cfg: &crate::config::Config) -> anyhow::Result<()> {
    let dir = &cfg.database.embedded_dir;
    if !dir.join("PG_VERSION").exists() {
        println!("no private PostgreSQL in {}", dir.display());
        return Ok(());
    }
    let pg = EmbeddedPg::start(dir, false)?;
    pg.stop()?;
    println!("stopped the private PostgreSQL in {}", pg.data_dir.display());
    Ok(())
}
