//! Crash anywhere: the `reelflow` binary is aborted (as `kill -9` would: no cleanup) at every
//! failpoint spread over fetch, clean, load, publish and the engine; run again, the period
//! completes and publishes a snapshot identical, table by table, to an uninterrupted run, with
//! no orphaned snapshot schema or half-written artifact left.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

use reelflow_e2e::pg::{published_checksums, TestDb};
use reelflow_e2e::{fixture, s3::S3Server};

const BIN: &str = env!("CARGO_BIN_EXE_reelflow");

fn reelflow(db: &TestDb, artifacts: &Path, endpoint: &str) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &db.url)
        .env("REELFLOW_ARTIFACTS_DIR", artifacts)
        .env("REELFLOW_FETCH_S3_ENDPOINT", endpoint)
        .env("REELFLOW_SOURCE", "s3://bucket/the-movies-dataset.zip")
        .env("REELFLOW_ENGINE_LEASE_SECS", "2")
        .env("REELFLOW_ENGINE_HEARTBEAT_SECS", "1")
        .env("REELFLOW_ENGINE_POLL_MS", "100")
        .env("REELFLOW_LOG", "warn");
    for task in ["FETCH", "CLEAN", "LOAD", "PUBLISH"] {
        c.env(format!("REELFLOW_TASKS_{task}_INITIAL_DELAY_SECS"), "0.1");
    }
    c.args(["run", "--period", "2026-11"]);
    c
}

/// Files an interrupted step could leave behind.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if e.path().is_dir() {
                if name.ends_with(".tmp") || name.ends_with(".old") {
                    out.push(e.path().display().to_string());
                }
                stack.push(e.path());
            } else if name.ends_with(".part") || name.ends_with(".tmp") || name.ends_with(".part.json") {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_at_every_failpoint_the_next_run_publishes_the_same_snapshot() {
    let s3 = S3Server::start(None).await;
    // An incompressible 2 MB extra entry makes the body arrive in several chunks (for fetch.mid_body);
    // the cleaner ignores it.
    let mut entries = fixture::entries();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..2 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    entries.push(("padding.bin", noise));
    s3.put("bucket", "the-movies-dataset.zip", &fixture::zip_bytes(&entries));

    let reference = {
        let db = TestDb::new().await;
        let dir = tempfile::tempdir().unwrap();
        let out = reelflow(&db, dir.path(), &s3.endpoint).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        published_checksums(&db.pool).await
    };
    assert!(reference.len() > 20);

    for point in reelflow_dag::FAILPOINTS {
        let db = TestDb::new().await;
        let dir = tempfile::tempdir().unwrap();
        let crashed = reelflow(&db, dir.path(), &s3.endpoint)
            .env("REELFLOW_FAILPOINTS", point)
            .output()
            .unwrap();
        assert_eq!(
            crashed.status.signal(),
            Some(6),
            "{point}: expected an abort, got {:?}",
            crashed.status
        );
        let out = reelflow(&db, dir.path(), &s3.endpoint).output().unwrap();
        assert!(
            out.status.success(),
            "{point}: the run after the crash failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            published_checksums(&db.pool).await,
            reference,
            "{point}: published data differs"
        );
        let schemas: Vec<String> =
            sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'reelflow_snap_%'")
                .fetch_all(&db.pool)
                .await
                .unwrap();
        assert!(schemas.is_empty(), "{point}: orphaned snapshot schemas {schemas:?}");
        let states: Vec<String> =
            sqlx::query_scalar("SELECT state FROM reelflow.snapshots WHERE state NOT IN ('dropped', 'failed')")
                .fetch_all(&db.pool)
                .await
                .unwrap();
        assert_eq!(states, ["published"], "{point}");
        assert_eq!(
            leftovers(dir.path()),
            Vec::<String>::new(),
            "{point}: leftover artifacts"
        );
        let attempts: i64 =
            sqlx::query_scalar("SELECT count(*) FROM reelflow.attempts WHERE outcome = 'lease_expired'")
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_eq!(attempts, 1, "{point}: the crashed attempt is recorded as lease_expired");
    }
}
