//! Real PostgreSQL for tests: `DATABASE_URL` when set (used as the admin connection), else a
//! private cluster from the machine's server binaries, shared by every test process of this
//! user and started on first use. Each test gets a fresh database of its own.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::OnceCell;

static ADMIN_URL: OnceCell<String> = OnceCell::const_new();
static COUNTER: AtomicU32 = AtomicU32::new(0);

async fn admin_url() -> String {
    ADMIN_URL
        .get_or_init(|| async {
            if let Ok(url) = std::env::var("DATABASE_URL") {
                return url;
            }
            let dir = std::env::temp_dir().join("reelflow-test-pg").join("data");
            let pg = tokio::task::spawn_blocking(move || reelflow_store::EmbeddedPg::start(&dir, true))
                .await
                .expect("embedded start task")
                .unwrap_or_else(|e| panic!("cannot start the test PostgreSQL: {e}"));
            pg.url("postgres")
        })
        .await
        .clone()
}

/// A fresh, migrated database.
pub struct TestDb {
    pub url: String,
    pub pool: PgPool,
}

impl TestDb {
    pub async fn new() -> TestDb {
        TestDb::on(&admin_url().await).await
    }

    /// A fresh database on the server of `admin_url`.
    pub async fn on(admin_url: &str) -> TestDb {
        let admin_url = admin_url.to_string();
        let name = format!(
            "reelflow_t_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        let admin = reelflow_store::connect_admin(&admin_url)
            .await
            .expect("admin connection");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("create test database");
        admin.close().await;
        let url = match admin_url.rsplit_once('/') {
            Some((base, last)) if !last.contains('@') && !last.contains(':') => {
                let query = last.split_once('?').map(|(_, q)| format!("?{q}")).unwrap_or_default();
                format!("{base}/{name}{query}")
            }
            _ => format!("{admin_url}/{name}"),
        };
        let pool = reelflow_store::connect(&url, 8, Duration::from_secs(30))
            .await
            .expect("connect test database");
        TestDb { url, pool }
    }
}

/// A content checksum of every table of the published schema `movies`, in a stable order:
/// (table, rows, md5 of the sorted rows).
pub async fn published_checksums(pool: &PgPool) -> Vec<(String, i64, String)> {
    let tables: Vec<String> = sqlx::query_scalar(
        // Not the diff relations: they describe a snapshot against the one it replaced, so two
        // loads of the same data differ there.
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'movies' AND table_name NOT LIKE 'diff\\_%' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut out = Vec::new();
    for t in tables {
        let (n, sum): (i64, Option<String>) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT count(*), md5(string_agg(r::text, E'\\n' ORDER BY r::text)) FROM movies.\"{t}\" r"
        )))
        .fetch_one(pool)
        .await
        .unwrap();
        out.push((t, n, sum.unwrap_or_default()));
    }
    out
}
