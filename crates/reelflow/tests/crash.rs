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

/// Restarts (fast shutdown) a private PostgreSQL while the run sits at `point`; the task's try
/// must fail (or lose its lease), be retried, and the run publish the same data as without faults.
async fn restart_postgres_at(point: &str, reference: &[(String, i64, String)], s3: &S3Server) {
    use std::io::BufRead;
    let cluster = tempfile::tempdir().unwrap();
    let pg = reelflow_store::EmbeddedPg::start(&cluster.path().join("pg"), true).unwrap();
    let db = TestDb::on(&pg.url("postgres")).await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = reelflow(&db, dir.path(), &s3.endpoint)
        .env("REELFLOW_FAILPOINTS", format!("{point}=sleep:3000"))
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("failpoint") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    rx.recv_timeout(std::time::Duration::from_secs(60))
        .expect("the run reached the failpoint");
    pg.stop().unwrap();
    let pg = reelflow_store::EmbeddedPg::start(&cluster.path().join("pg"), true).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{point}: the run did not survive the restart");
    let pool = reelflow_store::connect(&db.url, 2, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        published_checksums(&pool).await,
        reference,
        "{point}: published data differs"
    );
    let outcomes: Vec<(String, String)> =
        sqlx::query_as("SELECT task_id, outcome FROM reelflow.attempts WHERE outcome <> 'success' ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(
        !outcomes.is_empty(),
        "{point}: no try failed, so the restart was not felt"
    );
    // The try fails on the broken connection, or — when heartbeats could not reach the server
    // in time — loses its lease; either way it is retried, never recorded twice.
    assert!(
        outcomes.iter().all(|(_, o)| o == "failed" || o == "lease_expired"),
        "{point}: {outcomes:?}"
    );
    pool.close().await;
    pg.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_during_copy_and_during_publish_the_run_completes() {
    let s3 = S3Server::start(None).await;
    s3.put("bucket", "the-movies-dataset.zip", &fixture::zip());
    let reference = {
        let db = TestDb::new().await;
        let dir = tempfile::tempdir().unwrap();
        let out = reelflow(&db, dir.path(), &s3.endpoint).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        published_checksums(&db.pool).await
    };
    for point in ["load.mid_copy", "publish.before_commit"] {
        restart_postgres_at(point, &reference, &s3).await;
    }
}
