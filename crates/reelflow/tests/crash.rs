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
    let mut c = base(db, artifacts, endpoint);
    c.args(["run", "--period", "2026-11"]);
    c
}

/// The binary with a test environment: short leases, fast polls and retries.
fn base(db: &TestDb, artifacts: &Path, endpoint: &str) -> Command {
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
    aborted_at_every_failpoint(false).await;
}

/// The same with the artifacts in a bucket of the S3 server (the process keeps only scratch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_at_every_failpoint_with_the_artifacts_in_a_bucket_the_next_run_publishes_the_same_snapshot() {
    aborted_at_every_failpoint(true).await;
}

async fn aborted_at_every_failpoint(in_bucket: bool) {
    let s3 = S3Server::start(None).await;
    s3.create_bucket("artifacts");
    let reelflow = |db: &TestDb, dir: &Path, endpoint: &str| {
        let mut c = reelflow(db, dir, endpoint);
        if in_bucket {
            // A prefix per database: run and attempt ids start again in a new one.
            let name = dir.file_name().unwrap().to_string_lossy().to_string();
            c.env("REELFLOW_ARTIFACTS_URL", format!("s3://artifacts/{name}"));
        }
        c
    };
    // An incompressible 20 MiB extra entry makes the body long enough for a checkpoint of the
    // partial download (every 16 MiB), after which fetch.mid_body crashes; the cleaner ignores it.
    let mut entries = fixture::entries();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..20 << 20)
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
        let ranged_before = s3.stats().ranged_gets;
        let out = reelflow(&db, dir.path(), &s3.endpoint).output().unwrap();
        assert!(
            out.status.success(),
            "{point}: the run after the crash failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if *point == "fetch.mid_body" && !in_bucket {
            // The server's own count proves the download was resumed, not started over (with
            // the artifacts in the bucket, the load's ranged reads would count too).
            assert!(
                s3.stats().ranged_gets > ranged_before,
                "{point}: the next fetch did not resume with a Range request"
            );
        }
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
        if in_bucket {
            // Nothing but scratch on this machine.
            let own: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n != ".scratch")
                .collect();
            assert!(own.is_empty(), "{point}: artifacts outside the bucket: {own:?}");
        }
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
    let log = std::thread::spawn(move || {
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
    let log = log.join().unwrap_or_default();
    assert!(status.success(), "{point}: the run did not survive the restart:\n{log}");
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

/// Three daemons that share nothing but the database and an S3 bucket (each has its own
/// artifacts and scratch folder) run twelve periods with the default retry budgets while one of
/// them is killed (SIGKILL) and restarted again and again. Every period ends published exactly
/// once, with the data of an uninterrupted run; no task instance ever had two attempts running
/// at the same time or two successful attempts; kills were taken over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_with_random_kills_run_every_period_once() {
    replicas_with_random_kills(3, ("2025-01", "2025-12"), 10).await;
}

/// The same with two replicas over four periods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_with_separate_scratch_and_one_bucket_survive_random_kills() {
    replicas_with_random_kills(2, ("2025-01", "2025-04"), 5).await;
}

async fn replicas_with_random_kills(n: usize, (from, to): (&str, &str), max_kills: usize) {
    let s3 = S3Server::start(None).await;
    s3.put("bucket", "the-movies-dataset.zip", &fixture::zip());
    s3.create_bucket("artifacts");
    let periods = {
        let (a, b): (reelflow_dag::Period, reelflow_dag::Period) = (from.parse().unwrap(), to.parse().unwrap());
        let mut n = 1;
        let mut p = a;
        while p != b {
            p = p.succ();
            n += 1;
        }
        n
    };
    // What an uninterrupted run publishes (every period loads the same zip).
    let reference = {
        let db = TestDb::new().await;
        let dir = tempfile::tempdir().unwrap();
        let out = reelflow(&db, dir.path(), &s3.endpoint).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        published_checksums(&db.pool).await
    };
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    // Each process has a folder of its own; the artifacts go to the one bucket.
    let own = |name: &str| {
        let mut c = base(&db, &dir.path().join(name), &s3.endpoint);
        c.env("REELFLOW_ARTIFACTS_URL", "s3://artifacts/reelflow")
            // Snapshots of two periods kept: retention drops the older ones' (and their objects).
            // No rollback chain: with the runs publishing in any order (they run side by side),
            // the snapshots `movies` showed before could be the oldest periods' and be kept.
            .env("REELFLOW_LOAD_KEEP_PERIODS", "2")
            .env("REELFLOW_LOAD_KEEP_PREVIOUS", "0");
        c
    };
    let spawn = |i: usize| {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        own(&format!("replica-{i}"))
            .env("REELFLOW_LISTEN", format!("127.0.0.1:{port}"))
            .env("REELFLOW_SCHEDULE_ENABLED", "false")
            .env("REELFLOW_SCHEDULE_MAX_ACTIVE_RUNS", "3")
            .env("REELFLOW_ENGINE_WORKER_ID", format!("replica-{i}"))
            .arg("serve")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let out = own("backfill")
        .args(["backfill", "--from", from, "--to", to])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let mut replicas: Vec<std::process::Child> = (0..n).map(spawn).collect();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    let mut kills = 0;
    loop {
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM reelflow.dag_runs WHERE state IN ('success', 'failed')")
                .fetch_one(&db.pool)
                .await
                .unwrap();
        if done == periods {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {done} of {periods} runs finished after {kills} kills"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300 + next() % 900)).await;
        if kills < max_kills {
            let i = (next() % n as u64) as usize;
            let _ = replicas[i].kill(); // SIGKILL
            let _ = replicas[i].wait();
            replicas[i] = spawn(i);
            kills += 1;
        }
    }
    for mut r in replicas {
        let _ = r.kill();
        let _ = r.wait();
    }
    let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM reelflow.dag_runs WHERE state <> 'success'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let errors: Vec<String> =
        sqlx::query_scalar("SELECT coalesce(last_error, '') FROM reelflow.task_instances WHERE state = 'failed'")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        failed, 0,
        "every run succeeds with the default budgets despite {kills} kills: {errors:?}"
    );
    // Each period was published exactly once, with the data of an uninterrupted run.
    let published: Vec<(String, i64)> = sqlx::query_as(
        "SELECT period, count(*) FROM reelflow.snapshots WHERE published_at IS NOT NULL GROUP BY period ORDER BY period",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(published.len() as i64, periods, "{published:?}");
    assert!(published.iter().all(|(_, n)| *n == 1), "{published:?}");
    assert_eq!(published_checksums(&db.pool).await, reference, "published data differs");
    // No task instance had overlapping attempts or two successes.
    let overlaps: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM reelflow.attempts a JOIN reelflow.attempts b
           ON a.task_instance_id = b.task_instance_id AND a.id < b.id
          AND b.started_at < coalesce(a.ended_at, 'infinity') AND a.outcome NOT IN ('lease_expired', 'superseded')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        overlaps, 0,
        "an attempt started while an earlier one still held the task"
    );
    let doubles: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT task_instance_id FROM reelflow.attempts WHERE outcome = 'success'
                               GROUP BY task_instance_id HAVING count(*) > 1) d",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(doubles, 0, "a task succeeded twice");
    let workers: i64 = sqlx::query_scalar("SELECT count(DISTINCT worker) FROM reelflow.attempts")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(workers >= 2, "the replicas shared the work");
    // A task that a later stage read on another replica: the bytes went through the bucket.
    let crossed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM reelflow.attempts c JOIN reelflow.attempts l
           ON c.run_id = l.run_id AND c.task_id = 'clean' AND l.task_id = 'load'
          AND c.outcome = 'success' AND l.outcome = 'success' AND c.worker <> l.worker",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let expired: i64 = sqlx::query_scalar("SELECT count(*) FROM reelflow.attempts WHERE outcome = 'lease_expired'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    eprintln!(
        "{kills} kills, {expired} attempts taken over after their worker died, {workers} workers, \
         {crossed} runs loaded on another replica than they were cleaned on"
    );
    assert!(expired >= 1, "no kill landed on a running task: {kills} kills");
    // Nothing in the replicas' own folders but scratch: the artifacts are in the bucket.
    for i in 0..n {
        let own = dir.path().join(format!("replica-{i}"));
        let stray: Vec<String> = leftovers(&own)
            .into_iter()
            .chain(
                std::fs::read_dir(&own)
                    .map(|d| {
                        d.flatten()
                            .map(|e| e.file_name().to_string_lossy().to_string())
                            .collect()
                    })
                    .unwrap_or_else(|_| Vec::new())
                    .into_iter()
                    .filter(|n| n != ".scratch"),
            )
            .collect();
        assert!(stray.is_empty(), "replica-{i} kept artifacts of its own: {stray:?}");
    }
    // In the bucket: the clean record of every run whose snapshot is kept; nothing of the runs
    // whose snapshots retention dropped. A publish sweeps only finished runs, and a run whose
    // snapshot a concurrent publish dropped may have finished just after the last sweep: the
    // next publish would take it, here one more sweep does.
    let bucket = reelflow_artifacts::Artifacts::s3(
        "artifacts",
        "reelflow",
        &reelflow_artifacts::S3Settings {
            endpoint: Some(s3.endpoint.clone()),
            region: "us-west-2".into(),
            virtual_hosted: false,
        },
    )
    .unwrap();
    reelflow_load::sweep_artifacts(&db.pool, &bucket, "movies_monthly")
        .await
        .unwrap();
    let runs: Vec<(i64, String, bool)> = sqlx::query_as(
        // A killed load try leaves a `failed` row beside the snapshot a later try built.
        "SELECT r.id, r.period,
                bool_or(s.state = 'dropped')
                AND bool_and(s.state = 'dropped' OR (s.state = 'failed' AND r.state = 'success'))
         FROM reelflow.dag_runs r
           JOIN reelflow.snapshots s ON s.run_id = r.id GROUP BY r.id, r.period ORDER BY r.id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(runs.len() as i64, periods);
    for (id, period, dropped) in &runs {
        let stored = walk(&s3.path_of("artifacts", &format!("reelflow/movies_monthly/{period}/run-{id}")));
        if *dropped {
            assert!(
                stored.is_empty(),
                "run {id} ({period}): its snapshot is dropped, its objects stay: {stored:?}"
            );
        } else {
            assert!(
                stored.iter().any(|p| p.ends_with("/manifest.json")),
                "run {id} ({period}): no clean record in the bucket: {stored:?}"
            );
        }
    }
    let snapshots: Vec<(i64, i64, String, String, Option<String>)> =
        sqlx::query_as("SELECT id, run_id, period, state, error FROM reelflow.snapshots ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(
        runs.iter().any(|r| r.2),
        "retention dropped the oldest periods' snapshots: {runs:?} {snapshots:?}"
    );
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

/// Mounts a tmpfs of `size` at `dir` (needs root); false where mounting is not allowed.
fn mount_tmpfs(dir: &Path, size: &str, remount: bool) -> bool {
    let opts = if remount {
        format!("remount,size={size}")
    } else {
        format!("size={size}")
    };
    Command::new("mount")
        .args(["-t", "tmpfs", "-o", &opts, "tmpfs"])
        .arg(dir)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

struct Unmount<'a>(&'a Path);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

/// A full artifact volume: the task fails with a clear, retryable error and frees what it wrote;
/// once there is space again, the retry succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_artifact_volume_fails_clearly_frees_its_files_and_recovers() {
    let s3 = S3Server::start(None).await;
    let mut entries = fixture::entries();
    let mut x = 0x1234_5678_9abc_def1u64;
    entries.push((
        "padding.bin",
        (0..3 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect(),
    ));
    s3.put("bucket", "the-movies-dataset.zip", &fixture::zip_bytes(&entries));
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    if !mount_tmpfs(dir.path(), "1m", false) {
        let why = "cannot mount a tmpfs here (needs root)".to_string();
        eprintln!("SKIPPED (this test did not run): {why}");
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "{why}: this test must run in CI"
        );
        return;
    }
    let _unmount = Unmount(dir.path());
    let out = reelflow(&db, dir.path(), &s3.endpoint)
        .env("REELFLOW_TASKS_FETCH_MAX_TRIES", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("task fetch failed") && err.contains("No space left on device"),
        "{err}"
    );
    assert!(err.contains("retrying later may help"), "{err}");
    let used = Command::new("du").args(["-sb"]).arg(dir.path()).output().unwrap();
    let used: u64 = String::from_utf8_lossy(&used.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(used < 64 << 10, "the failed download was not freed: {used} bytes left");
    assert!(mount_tmpfs(dir.path(), "64m", true), "remount with more space");
    let out = reelflow(&db, dir.path(), &s3.endpoint).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        published_checksums(&db.pool)
            .await
            .iter()
            .find(|t| t.0 == "movies")
            .unwrap()
            .1,
        8
    );
}

/// `kill -9` of a foreground `reelflow run` on this machine: the next `reelflow run` sees that
/// the process holding the lease is gone (same host and boot, pid no longer alive) and takes
/// the task over at once, with the production lease (60 s) and retry delay (30 s) in force.
/// The crashed try is recorded as `lease_expired`, counted as an interruption, and does not
/// use up the task's tries (clean keeps its default budget).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_on_this_machine_is_taken_over_without_waiting_for_the_lease() {
    let s3 = S3Server::start(None).await;
    s3.put("bucket", "the-movies-dataset.zip", &fixture::zip());
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let production = |c: &mut Command| {
        c.env("REELFLOW_ENGINE_LEASE_SECS", "60")
            .env("REELFLOW_ENGINE_HEARTBEAT_SECS", "10");
        for task in ["FETCH", "CLEAN", "LOAD", "PUBLISH"] {
            c.env(format!("REELFLOW_TASKS_{task}_INITIAL_DELAY_SECS"), "30");
        }
    };
    let mut first = reelflow(&db, dir.path(), &s3.endpoint);
    production(&mut first);
    let crashed = first.env("REELFLOW_FAILPOINTS", "clean.mid_ratings").output().unwrap();
    assert_eq!(
        crashed.status.signal(),
        Some(6),
        "expected an abort: {:?}",
        crashed.status
    );

    let started = std::time::Instant::now();
    let mut second = reelflow(&db, dir.path(), &s3.endpoint);
    production(&mut second);
    let out = second.output().unwrap();
    let took = started.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        took < std::time::Duration::from_secs(40),
        "the takeover waited for the lease or the backoff: {took:?}"
    );
    let clean: (String, i32, i32, i32) = sqlx::query_as(
        "SELECT state, try_number, interruptions, max_tries FROM reelflow.task_instances WHERE task_id = 'clean'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(clean.0, "success");
    assert_eq!((clean.1, clean.2), (2, 1), "two tries, one of them interrupted");
    let outcomes: Vec<String> =
        sqlx::query_scalar("SELECT outcome FROM reelflow.attempts WHERE task_id = 'clean' ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(outcomes, ["lease_expired", "success"]);
}
