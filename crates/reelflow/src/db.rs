//! Which PostgreSQL to use: `database.url` / `DATABASE_URL`, or the private embedded server.

use std::time::Duration;

use anyhow::Context;
use reelflow_store::EmbeddedPg;
use sqlx::PgPool;

/// The database URL, starting the private server (and creating its `reelflow` database) when
/// no URL is configured.
pub async fn url(cfg: &crate::config::Config) -> anyhow::Result<String> {
    if !cfg.database.url.is_empty() {
        return Ok(cfg.database.url.clone());
    }
    let dir = cfg.database.embedded_dir.clone();
    let pg = tokio::task::spawn_blocking(move || EmbeddedPg::start(&dir, false)).await??;
    let url = pg.url("reelflow");
    eprintln!(
        "reelflow: no DATABASE_URL set; using a private PostgreSQL in {} at {url} (stop it with `reelflow db stop`)",
        pg.data_dir.display()
    );
    let admin = reelflow_store::connect_admin(&pg.url("postgres")).await?;
    reelflow_store::create_database_if_missing(&admin, "reelflow").await?;
    admin.close().await;
    Ok(url)
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
    let url = url(cfg).await?;
    let pool = reelflow_store::connect(&url, cfg.database.max_connections, wait)
        .await
        .context("opening the database")?;
    Ok(pool)
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
