//! Work reaches engines by LISTEN/NOTIFY (issue 16): a task is handed between engines within
//! milliseconds although they poll only every 30 s, an operator's retry wakes an idle daemon at
//! once, and an engine whose LISTEN connection is gone polls until it is back. A real
//! PostgreSQL; the daemon test runs the real binary.

use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reelflow::engine::{Dag, Engine, EngineConfig};
use reelflow_dag::{BoxFuture, DagSpec, Outputs, RetryPolicy, Task, TaskContext, TaskError, TaskSpec};
use reelflow_e2e::fixture;
use reelflow_e2e::pg::TestDb;
use reelflow_store::runs;
use serde_json::json;
use tokio::sync::watch;

const BIN: &str = env!("CARGO_BIN_EXE_reelflow");
const DAG: &str = "notify_dag";
/// Far longer than any wait below: what happens quickly happens because of a notification.
const BACKSTOP: Duration = Duration::from_secs(30);
/// A hand-off takes milliseconds; this is generous for a loaded 2-core machine, and far below
/// the backstop.
const HANDOFF: chrono::TimeDelta = chrono::TimeDelta::milliseconds(500);

/// A task that takes `ms` milliseconds and succeeds.
struct Quick {
    id: &'static str,
    ms: u64,
}

impl Task for Quick {
    fn id(&self) -> &'static str {
        self.id
    }
    fn run<'a>(&'a self, _: &'a TaskContext, _: &'a Outputs) -> BoxFuture<'a, Result<serde_json::Value, TaskError>> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(self.ms)).await;
            Ok(json!({}))
        })
    }
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        max_tries: 1,
        initial_delay_secs: 1.0,
        multiplier: 2.0,
        max_delay_secs: 1.0,
        jitter: 0.0,
        timeout_secs: 30,
        max_interruptions: 10,
    }
}

fn chain(ids: &[&str]) -> DagSpec {
    let tasks = ids
        .iter()
        .enumerate()
        .map(|(i, id)| TaskSpec {
            id: id.to_string(),
            upstream: if i == 0 { vec![] } else { vec![ids[i - 1].to_string()] },
            retry: policy(),
        })
        .collect();
    DagSpec::new(DAG, tasks).unwrap()
}

/// An engine with code for `ids` only (so it claims no other task of the run), a 30 s
/// backstop and a poll of `poll`.
fn engine(db: &TestDb, worker: &str, ids: &[&'static str], poll: Duration) -> Arc<Engine> {
    // The engine's own spec only gives retry policies; the run is settled by the shape it
    // recorded (the whole chain).
    let spec = DagSpec::new(
        DAG,
        ids.iter()
            .map(|id| TaskSpec {
                id: id.to_string(),
                upstream: vec![],
                retry: policy(),
            })
            .collect(),
    )
    .unwrap();
    let tasks = ids
        .iter()
        .map(|&id| Arc::new(Quick { id, ms: 20 }) as Arc<dyn Task>)
        .collect();
    let scratch = std::env::temp_dir().join("reelflow-notify-tests");
    let cfg = EngineConfig {
        worker_id: worker.into(),
        lease: Duration::from_secs(20),
        heartbeat: Duration::from_secs(5),
        poll,
        backstop: BACKSTOP,
        notifications: true,
        slots: 1,
        max_active_runs: 10,
        scratch_dir: scratch.clone(),
        artifacts: reelflow_artifacts::Artifacts::local(&scratch).unwrap(),
    };
    Arc::new(Engine::new(db.pool.clone(), vec![Arc::new(Dag::new(spec, tasks))], cfg))
}

/// Listener sessions on the test's database.
async fn listeners(db: &TestDb) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1",
    )
    .bind(reelflow::listener::APPLICATION_NAME)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

async fn wait_for_listeners(db: &TestDb, n: i64, within: Duration) {
    let deadline = Instant::now() + within;
    while listeners(db).await != n {
        assert!(Instant::now() < deadline, "expected {n} listener sessions");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_for_run(db: &TestDb, run_id: i64, state: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let run = runs::get_run(&db.pool, run_id).await.unwrap();
        if run.state.as_str() == state {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "run {run_id} is {} after {within:?}, not {state}: {:?}",
            run.state,
            runs::attempts(&db.pool, run_id).await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn spawn_engine(e: &Arc<Engine>, stop: &watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    let (e, stop) = (e.clone(), stop.clone());
    tokio::spawn(async move { e.run(None, stop, Duration::from_secs(5)).await.unwrap() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_hand_a_runs_tasks_to_each_other_by_notification() {
    let db = TestDb::new().await;
    // A has code for a and c, B for b and d: every hand-off goes to the other engine, which
    // sits idle until it is told (its backstop is 30 s).
    let a = engine(&db, "engine-a", &["a", "c"], BACKSTOP);
    let b = engine(&db, "engine-b", &["b", "d"], BACKSTOP);
    let (stop_tx, stop) = watch::channel(false);
    let handles = [spawn_engine(&a, &stop), spawn_engine(&b, &stop)];
    wait_for_listeners(&db, 2, Duration::from_secs(10)).await;
    // Both have done their first look for work and are idle now.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let spec = chain(&["a", "b", "c", "d"]);
    let started = Instant::now();
    let (run, _) = runs::ensure_run(&db.pool, &spec, "2026-05", "manual", false)
        .await
        .unwrap();
    wait_for_run(&db, run.id, "success", Duration::from_secs(10)).await;
    let took = started.elapsed();

    let attempts = runs::attempts(&db.pool, run.id).await.unwrap();
    let who: Vec<(&str, &str)> = attempts
        .iter()
        .map(|a| (a.task_id.as_str(), a.worker.as_str()))
        .collect();
    assert_eq!(
        who,
        [
            ("a", "engine-a"),
            ("b", "engine-b"),
            ("c", "engine-a"),
            ("d", "engine-b")
        ]
    );
    let gaps: Vec<f64> = attempts
        .windows(2)
        .map(|p| {
            (p[1].started_at - p[0].ended_at.expect("ended"))
                .num_microseconds()
                .unwrap() as f64
                / 1000.0
        })
        .collect();
    eprintln!("hand-offs between engines (ms, the next attempt's start minus the last one's end): {gaps:?}");
    for pair in attempts.windows(2) {
        let (done, next) = (&pair[0], &pair[1]);
        let gap = next.started_at - done.ended_at.expect("ended");
        assert!(
            gap < HANDOFF,
            "{} ({}) started {} ms after {} ({}) ended",
            next.task_id,
            next.worker,
            gap.num_milliseconds(),
            done.task_id,
            done.worker
        );
    }
    // Four 20 ms tasks and three hand-offs between engines, not three backstops.
    assert!(took < Duration::from_secs(5), "the run took {took:?}");

    stop_tx.send(true).unwrap();
    for h in handles {
        h.await.unwrap();
    }
    wait_for_listeners(&db, 0, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_polls_while_its_listener_is_down_and_listens_again_when_it_can() {
    let db = TestDb::new().await;
    let e = engine(&db, "engine-p", &["a", "b"], Duration::from_millis(200));
    let (stop_tx, stop) = watch::channel(false);
    let handle = spawn_engine(&e, &stop);
    wait_for_listeners(&db, 1, Duration::from_secs(10)).await;
    // Open a few pool connections now: while the database refuses new connections below, the
    // engine and this test work on these.
    let warm: Vec<_> = (0..6)
        .map(|_| {
            let pool = db.pool.clone();
            tokio::spawn(async move { sqlx::query("SELECT pg_sleep(0.1)").execute(&pool).await.unwrap() })
        })
        .collect();
    for w in warm {
        w.await.unwrap();
    }

    // Kill the listener and keep it from coming back: the database takes no new connections.
    let db_name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    // (From another database: a session cannot disallow connections to its own.)
    let mut admin_url = url::Url::parse(&db.url).unwrap();
    admin_url.set_path("/postgres");
    let admin = reelflow_store::connect_admin(admin_url.as_str()).await.unwrap();
    let allow = |yes: bool| format!("ALTER DATABASE \"{db_name}\" ALLOW_CONNECTIONS {yes}");
    sqlx::query(sqlx::AssertSqlSafe(allow(false)))
        .execute(&admin)
        .await
        .unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND application_name = $1",
    )
    .bind(reelflow::listener::APPLICATION_NAME)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(killed, [true]);
    wait_for_listeners(&db, 0, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Work created now is announced to nobody: the engine finds it by polling (200 ms), not by
    // its 30 s backstop.
    let spec = chain(&["a", "b"]);
    let (run, _) = runs::ensure_run(&db.pool, &spec, "2026-06", "manual", false)
        .await
        .unwrap();
    wait_for_run(&db, run.id, "success", Duration::from_secs(5)).await;
    assert_eq!(listeners(&db).await, 0, "the listener stayed down meanwhile");

    // The database takes connections again: the listener comes back (its backoff is short
    // after a short outage), and work arrives by notification again.
    sqlx::query(sqlx::AssertSqlSafe(allow(true)))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    wait_for_listeners(&db, 1, Duration::from_secs(20)).await;
    // Its look for what it missed while down is done; the next one is 30 s away.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (run, _) = runs::ensure_run(&db.pool, &spec, "2026-07", "manual", false)
        .await
        .unwrap();
    let queued_at = runs::get_run(&db.pool, run.id).await.unwrap().created_at;
    wait_for_run(&db, run.id, "success", Duration::from_secs(5)).await;
    let first = &runs::attempts(&db.pool, run.id).await.unwrap()[0];
    assert!(
        first.started_at - queued_at < HANDOFF,
        "the run waited {} ms for its first task",
        (first.started_at - queued_at).num_milliseconds()
    );

    stop_tx.send(true).unwrap();
    handle.await.unwrap();
}

/// The daemon, stopped when the test ends, also when it fails.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `reelflow serve` polls every 30 s and looks for work anyway only every 30 s; an operator's
/// `tasks retry` from the CLI reaches it by notification and its task starts at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_retry_wakes_an_idle_daemon_at_once() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    // Not there yet: the first fetch fails.
    let source = dir.path().join("the-movies-dataset.zip");
    let cmd = || {
        let mut c = Command::new(BIN);
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &db.url)
            .env("REELFLOW_ARTIFACTS_DIR", dir.path().join("artifacts"))
            .env("REELFLOW_SOURCE", &source)
            .env("REELFLOW_TASKS_FETCH_MAX_TRIES", "1")
            .env("REELFLOW_SCHEDULE_ENABLED", "false")
            .env("REELFLOW_ENGINE_POLL_MS", "30000")
            .env("REELFLOW_ENGINE_BACKSTOP_POLL_SECS", "30")
            .env("REELFLOW_LOG", "warn");
        c
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut serve = Daemon(
        cmd()
            .env("REELFLOW_LISTEN", format!("127.0.0.1:{port}"))
            .arg("serve")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_listeners(&db, 1, Duration::from_secs(60)).await;

    let out = cmd().args(["runs", "trigger", "--period", "2026-10"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let run_id: i64 = sqlx::query_scalar("SELECT id FROM reelflow.dag_runs WHERE period = '2026-10'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    wait_for_run(&db, run_id, "failed", Duration::from_secs(20)).await;

    // The daemon is idle now. The source appears; the operator retries fetch.
    std::fs::write(&source, fixture::zip()).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = cmd()
        .args(["tasks", "retry", &run_id.to_string(), "fetch"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let retried_at: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT at FROM reelflow.operator_actions WHERE action = 'retry' AND run_id = $1")
            .bind(run_id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    wait_for_run(&db, run_id, "success", Duration::from_secs(60)).await;
    let attempts = runs::attempts(&db.pool, run_id).await.unwrap();
    let gaps: Vec<f64> = attempts[1..]
        .windows(2)
        .map(|p| {
            (p[1].started_at - p[0].ended_at.expect("ended"))
                .num_microseconds()
                .unwrap() as f64
                / 1000.0
        })
        .collect();
    eprintln!("hand-offs within the daemon (ms): {gaps:?}");
    let second_fetch = attempts
        .iter()
        .filter(|a| a.task_id == "fetch")
        .nth(1)
        .expect("a second fetch");
    assert!(
        second_fetch.started_at - retried_at < HANDOFF,
        "fetch started {} ms after the retry",
        (second_fetch.started_at - retried_at).num_milliseconds()
    );

    let _ = Command::new("kill").args(["-TERM", &serve.0.id().to_string()]).status();
    let status = serve.0.wait().unwrap();
    assert!(status.success(), "serve exited with {status}");
}
