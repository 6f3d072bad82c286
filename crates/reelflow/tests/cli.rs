//! The `reelflow` binary end to end: a real S3-protocol server, a real PostgreSQL, real
//! processes and signals.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use reelflow_e2e::pg::TestDb;
use reelflow_e2e::s3::{Fault, FaultProxy, S3Server};
use reelflow_e2e::{fixture, http};

const BIN: &str = env!("CARGO_BIN_EXE_reelflow");

fn reelflow(db: &TestDb, artifacts: &std::path::Path, endpoint: &str) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &db.url)
        .env("REELFLOW_ARTIFACTS_DIR", artifacts)
        .env("REELFLOW_FETCH_S3_ENDPOINT", endpoint)
        .env("REELFLOW_FETCH_READ_TIMEOUT_SECS", "30")
        .env("REELFLOW_TASKS_FETCH_MAX_TRIES", "2")
        .env("REELFLOW_TASKS_FETCH_INITIAL_DELAY_SECS", "0.1")
        .env("REELFLOW_LOG", "info");
    c
}

/// Starts `reelflow serve` on a free loopback port with a token, no schedule and a fast poll,
/// and waits until it listens.
async fn spawn_serve(cmd: &mut Command) -> (std::process::Child, std::net::SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = cmd
        .env("REELFLOW_LISTEN", format!("127.0.0.1:{port}"))
        .env("REELFLOW_ADMIN_TOKEN", "t0ken")
        .env("REELFLOW_SCHEDULE_ENABLED", "false")
        .env("REELFLOW_ENGINE_POLL_MS", "100")
        .arg("serve")
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "serve did not start listening");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (child, addr)
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

// Multi-threaded: the blocking `output()` calls must not starve the in-process S3 server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_from_s3_then_again_then_errors_with_exit_codes() {
    let db = TestDb::new().await;
    let s3 = S3Server::start(None).await;
    s3.put("public-data", "movies/the-movies-dataset.zip", &fixture::zip());
    let dir = tempfile::tempdir().unwrap();
    let source = "s3://public-data/movies/the-movies-dataset.zip";

    let out = reelflow(&db, dir.path(), &s3.endpoint)
        .args(["run", "--period", "2026-11", "--source", source])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "for period 2026-11: success",
        "movies_metadata.csv",
        "duplicate_id=3",
        "snapshot",
        "publish",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in\n{stdout}");
    }
    let movies: i64 = sqlx::query_scalar("SELECT count(*) FROM movies.movies")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(movies, 8);

    // The same period again: already done, exit 0, nothing runs.
    let out = reelflow(&db, dir.path(), &s3.endpoint)
        .args(["run", "--period", "2026-11", "--source", source])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("already succeeded"),
        "{}",
        text(&out)
    );

    // A missing object: exit 1, one paragraph naming the task and the object.
    let out = reelflow(&db, dir.path(), &s3.endpoint)
        .args(["run", "--period", "2026-10", "--source", "s3://public-data/missing.zip"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("task fetch failed")
            && stderr.contains("s3://public-data/missing.zip")
            && stderr.contains("404"),
        "{stderr}"
    );
    assert!(stderr.contains("retrying will not help"), "{stderr}");

    // Usage errors exit 2, configuration errors 78.
    let out = reelflow(&db, dir.path(), &s3.endpoint)
        .args(["run", "--period", "2026-13"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = reelflow(&db, dir.path(), &s3.endpoint)
        .env("REELFLOW_LOAD_PARALLELISM", "lots")
        .args(["runs", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("REELFLOW_LOAD_PARALLELISM"));

    // Operators see the runs and attempts with their errors.
    let out = reelflow(&db, dir.path(), &s3.endpoint)
        .args(["runs", "list"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("2026-11") && listing.contains("success") && listing.contains("failed"),
        "{listing}"
    );
    let run_id: i64 = sqlx::query_scalar("SELECT id FROM reelflow.dag_runs WHERE period = '2026-10'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let out = reelflow(&db, dir.path(), &s3.endpoint)
        .args(["runs", "show", &run_id.to_string()])
        .output()
        .unwrap();
    let show = String::from_utf8_lossy(&out.stdout);
    assert!(show.contains("upstream_failed") && show.contains("404"), "{show}");
}

#[tokio::test]
async fn serve_stops_cleanly_on_sigterm_during_a_task() {
    let db = TestDb::new().await;
    let s3 = S3Server::start(None).await;
    let zip = fixture::zip();
    s3.put("public-data", "slow.zip", &zip);
    // The body stalls after 100 bytes for longer than the test lasts.
    let proxy = FaultProxy::start(
        s3.addr,
        Fault::Stall {
            after: 100,
            pause: Duration::from_secs(120),
        },
        100,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn_serve(
        reelflow(&db, dir.path(), &proxy.endpoint)
            .env("REELFLOW_SOURCE", "s3://public-data/slow.zip")
            .env("REELFLOW_ENGINE_SHUTDOWN_GRACE_SECS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let r = http::request(
        addr,
        "POST",
        "/api/v1/runs",
        &[("Authorization", "Bearer t0ken")],
        Some(r#"{"period":"2026-11"}"#),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    // Wait until fetch is running (and stalled).
    loop {
        let running: i64 = sqlx::query_scalar("SELECT count(*) FROM reelflow.task_instances WHERE state = 'running'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        if running == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "fetch never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(15),
            "serve did not stop after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let out = child.wait_with_output().unwrap();
    assert!(
        status.success(),
        "exit {status:?}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(sent.elapsed() < Duration::from_secs(10), "took {:?}", sent.elapsed());
    // The attempt was cancelled and the task handed back for the next start, lease released.
    let (state, owner): (String, Option<String>) =
        sqlx::query_as("SELECT state, lease_owner FROM reelflow.task_instances WHERE task_id = 'fetch'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((state.as_str(), owner), ("up_for_retry", None));
    let outcome: String = sqlx::query_scalar("SELECT outcome FROM reelflow.attempts")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(outcome, "cancelled");
    // Logs are JSON lines with the task's run id, dag, task and try in the lines inside it.
    let logs = String::from_utf8_lossy(&out.stdout);
    let inside: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "task started")
        .collect();
    assert_eq!(inside.len(), 1, "{logs}");
    let span = &inside[0]["span"];
    assert_eq!(
        (span["dag"].as_str(), span["task"].as_str(), span["try_number"].as_i64()),
        (Some("movies_monthly"), Some("fetch"), Some(1))
    );
    assert!(!logs.contains("t0ken"), "the admin token leaked into the logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_a_triggered_period_and_exports_metrics() {
    let db = TestDb::new().await;
    let s3 = S3Server::start(None).await;
    s3.put("public-data", "m.zip", &fixture::zip());
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn_serve(
        reelflow(&db, dir.path(), &s3.endpoint)
            .env("REELFLOW_SOURCE", "s3://public-data/m.zip")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let before = http::request(addr, "GET", "/metrics", &[], None).await;
    assert!(
        before
            .body
            .contains("reelflow_dag_runs_total{dag=\"movies_monthly\",state=\"success\"} 0"),
        "{}",
        before.body
    );
    let r = http::request(
        addr,
        "POST",
        "/api/v1/runs",
        &[("Authorization", "Bearer t0ken")],
        Some(r#"{"period":"2026-11"}"#),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let run_id = r.json()["run"]["id"].as_i64().unwrap();
    loop {
        let r = http::request(addr, "GET", &format!("/api/v1/runs/{run_id}"), &[], None).await;
        let state = r.json()["run"]["state"].as_str().unwrap().to_string();
        if state == "success" {
            break;
        }
        assert_ne!(state, "failed", "{}", r.body);
        assert!(Instant::now() < deadline, "run did not finish: {}", r.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The daemon stores each attempt's log lines (the operators' page shows them) and serves
    // the page itself on the same port.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (finished, lines): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE l.finished), coalesce(sum((SELECT count(*) FROM reelflow.attempt_log_lines x
                 WHERE x.attempt_id = l.attempt_id)), 0)::bigint
             FROM reelflow.attempts a JOIN reelflow.attempt_logs l ON l.attempt_id = a.id WHERE a.run_id = $1",
        )
        .bind(run_id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if finished == 5 {
            assert!(lines >= 10, "{lines}");
            break;
        }
        assert!(Instant::now() < deadline, "attempt logs: {finished} of 5 finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let page = http::request(addr, "GET", &format!("/ui/runs/{run_id}/tasks/fetch"), &[], None).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("task started") && page.body.contains("task finished"),
        "{}",
        page.body
    );
    let m = http::request(addr, "GET", "/metrics", &[], None).await;
    assert_eq!(m.status, 200);
    assert_eq!(
        m.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    for needle in [
        "reelflow_dag_runs_total{dag=\"movies_monthly\",state=\"success\"} 1\n",
        "reelflow_task_attempts_total{dag=\"movies_monthly\",task=\"publish\",outcome=\"success\"} 1\n",
        "reelflow_rows_total{stage=\"load\",table=\"movies\",outcome=\"loaded\"} 8\n",
        "reelflow_rejected_rows_total{file=\"movies_metadata.csv\",reason=\"duplicate_id\"} 3\n",
        "reelflow_task_duration_seconds_count{dag=\"movies_monthly\",task=\"load\"} 1\n",
        "reelflow_build_info{version=",
        "reelflow_running_tasks 0\n",
        "reelflow_task_timeout_seconds{dag=\"movies_monthly\",task=\"load\"} 7200\n",
        "process_resident_memory_bytes ",
    ] {
        assert!(m.body.contains(needle), "missing {needle:?} in\n{}", m.body);
    }
    let fetched = format!("reelflow_fetch_bytes_total {}\n", fixture::zip().len());
    assert!(m.body.contains(&fetched), "missing {fetched:?}");
    let last: f64 = m
        .body
        .lines()
        .find(|l| l.starts_with("reelflow_last_success_timestamp_seconds{"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .expect("last success series");
    assert!((last - chrono_now()).abs() < 120.0, "{last}");
    assert!(
        !m.body.contains("2026-11") && !m.body.contains("t0ken"),
        "unbounded labels or secrets in metrics"
    );
    // promtool lints the live scrape when it is installed (CI installs it).
    if let Ok(mut p) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        use std::io::Write;
        p.stdin.take().unwrap().write_all(m.body.as_bytes()).unwrap();
        let out = p.wait_with_output().unwrap();
        assert!(out.status.success(), "promtool check metrics: {}", text(&out));
    } else {
        let why = "promtool is not installed: `promtool check metrics` did not run".to_string();
        eprintln!("SKIPPED (this test did not run): {why}");
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "{why}: this test must run in CI"
        );
    }
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    assert!(child.wait().unwrap().success());
}

fn chrono_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_errors_or_logs() {
    let db = TestDb::new().await;
    let s3 = S3Server::start(Some(("AKIDREELFLOW", "s3cr3t-S3-key"))).await;
    let dir = tempfile::tempdir().unwrap();
    // A database password in an unreachable URL.
    let out = reelflow(&db, dir.path(), &s3.endpoint)
        .env("DATABASE_URL", "postgres://reader:Pa55w0rd-db@127.0.0.1:1/movies")
        .env("REELFLOW_DATABASE_CONNECT_TIMEOUT_SECS", "2")
        .args(["runs", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!text(&out).contains("Pa55w0rd-db"), "{}", text(&out));
    assert!(
        text(&out).contains("127.0.0.1:1"),
        "the error names the server: {}",
        text(&out)
    );
    // Wrong S3 credentials: the fetch fails (403) without echoing the secret key.
    let out = reelflow(&db, dir.path(), &s3.endpoint)
        .env("AWS_ACCESS_KEY_ID", "AKIDREELFLOW")
        .env("AWS_SECRET_ACCESS_KEY", "wrong-s3cr3t-value")
        .env("REELFLOW_LOG", "debug")
        .args(["run", "--period", "2026-11", "--source", "s3://bucket/missing.zip"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("access denied") || text(&out).contains("403"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("wrong-s3cr3t-value"), "{}", text(&out));
}

/// A rolling restart as Kubernetes does it, with `max_tries = 1` on every task: replica A is
/// SIGTERMed while its fetch is stalled. While it drains, `/readyz` answers 503 at once and
/// `/livez` and `/metrics` keep answering; its try is cancelled, recorded as `cancelled`, and
/// goes back to the queue without using up the single try. Replica B, started afterwards,
/// takes the task and the run succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_drains_like_a_pod_and_does_not_fail_the_month() {
    let db = TestDb::new().await;
    let s3 = S3Server::start(None).await;
    s3.put("public-data", "movies.zip", &fixture::zip());
    let proxy = FaultProxy::start(
        s3.addr,
        Fault::Stall {
            after: 100,
            pause: Duration::from_secs(120),
        },
        100,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let one_try = |c: &mut Command| {
        for task in ["FETCH", "CLEAN", "LOAD", "PUBLISH"] {
            c.env(format!("REELFLOW_TASKS_{task}_MAX_TRIES"), "1");
        }
        c.env("REELFLOW_SOURCE", "s3://public-data/movies.zip")
            .env("REELFLOW_ENGINE_SHUTDOWN_GRACE_SECS", "3")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    };
    let mut a = reelflow(&db, dir.path(), &proxy.endpoint);
    one_try(&mut a);
    let (mut child, addr) = spawn_serve(&mut a).await;
    let r = http::request(
        addr,
        "POST",
        "/api/v1/runs",
        &[("Authorization", "Bearer t0ken"), ("Content-Type", "application/json")],
        Some(r#"{"period":"2026-11"}"#),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let running: i64 = sqlx::query_scalar("SELECT count(*) FROM reelflow.task_instances WHERE state = 'running'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        if running == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "fetch never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    // While draining (the grace is 3 s and fetch is stalled, so the drain lasts that long).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "replica A should still be draining"
    );
    let ready = http::request(addr, "GET", "/readyz", &[], None).await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    let live = http::request(addr, "GET", "/livez", &[], None).await;
    assert_eq!(live.status, 200, "{}", live.body);
    let metrics = http::request(addr, "GET", "/metrics", &[], None).await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("reelflow_running_tasks"), "{}", metrics.body);
    let status = child.wait().unwrap();
    assert!(status.success(), "replica A exit {status:?}");

    // Replica B (straight to the store, no stall) finishes the month.
    let mut b = reelflow(&db, dir.path(), &s3.endpoint);
    one_try(&mut b);
    let (mut child_b, _) = spawn_serve(&mut b).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state: String = sqlx::query_scalar("SELECT state FROM reelflow.dag_runs")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        if state == "success" {
            break;
        }
        assert_ne!(state, "failed", "the rolling restart failed the month");
        assert!(Instant::now() < deadline, "replica B did not finish the run");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let outcomes: Vec<(String, String)> = sqlx::query_as("SELECT task_id, outcome FROM reelflow.attempts ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(outcomes[0], ("fetch".to_string(), "cancelled".to_string()));
    assert!(outcomes[1..].iter().all(|(_, o)| o == "success"), "{outcomes:?}");
    let _ = Command::new("kill").args(["-TERM", &child_b.id().to_string()]).status();
    let _ = child_b.wait();
}

/// A worker cut off from PostgreSQL (a TCP proxy between it and the server stops forwarding)
/// stops its task before its lease expires: it logs the self-fencing before the lease's
/// recorded end, and the replica that takes the task over after the lease publishes the period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_from_postgres_stops_its_task_before_its_lease_expires() {
    use reelflow_e2e::tcp::Blackhole;
    let db = TestDb::new().await;
    let s3 = S3Server::start(None).await;
    s3.put("public-data", "movies.zip", &fixture::zip());
    let stall = FaultProxy::start(
        s3.addr,
        Fault::Stall {
            after: 100,
            pause: Duration::from_secs(120),
        },
        100,
    )
    .await;
    // The database URL of replica A goes through the proxy.
    let url: url::Url = db.url.parse().unwrap();
    let pg_addr: std::net::SocketAddr = format!("127.0.0.1:{}", url.port().unwrap()).parse().unwrap();
    let hole = Blackhole::start(pg_addr).await;
    let mut via = url.clone();
    via.set_port(Some(hole.addr.port())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let short_lease = |c: &mut Command| {
        c.env("REELFLOW_SOURCE", "s3://public-data/movies.zip")
            .env("REELFLOW_ENGINE_LEASE_SECS", "6")
            .env("REELFLOW_ENGINE_HEARTBEAT_SECS", "1");
    };
    let mut a = reelflow(&db, dir.path(), &stall.endpoint);
    short_lease(&mut a);
    a.env("DATABASE_URL", via.as_str())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let (mut child_a, addr) = spawn_serve(&mut a).await;
    let r = http::request(
        addr,
        "POST",
        "/api/v1/runs",
        &[("Authorization", "Bearer t0ken"), ("Content-Type", "application/json")],
        Some(r#"{"period":"2026-11"}"#),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let running: i64 = sqlx::query_scalar("SELECT count(*) FROM reelflow.task_instances WHERE state = 'running'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        if running == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "fetch never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    hole.cut();
    // No renewal gets through from now on: the lease's end is fixed.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let lease_end: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT lease_expires_at FROM reelflow.task_instances WHERE task_id = 'fetch'")
            .fetch_one(&db.pool)
            .await
            .unwrap();

    // Replica B, on the database directly, takes over once the lease has expired.
    let mut b = reelflow(&db, dir.path(), &s3.endpoint);
    short_lease(&mut b);
    b.stdout(Stdio::null()).stderr(Stdio::null());
    let (mut child_b, _) = spawn_serve(&mut b).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state: String = sqlx::query_scalar("SELECT state FROM reelflow.dag_runs")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        if state == "success" {
            break;
        }
        assert_ne!(state, "failed");
        assert!(Instant::now() < deadline, "replica B did not finish the run");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = child_a.kill();
    let out_a = child_a.wait_with_output().unwrap();
    let _ = Command::new("kill").args(["-TERM", &child_b.id().to_string()]).status();
    let _ = child_b.wait();

    let logs = String::from_utf8_lossy(&out_a.stdout);
    let fenced: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("lease not renewed for too long"))
        })
        .collect();
    assert_eq!(fenced.len(), 1, "replica A did not fence itself:\n{logs}");
    let at: chrono::DateTime<chrono::Utc> = fenced[0]["timestamp"].as_str().unwrap().parse().unwrap();
    assert!(at < lease_end, "fenced at {at}, after the lease ended at {lease_end}");
    let outcomes: Vec<(String, String)> = sqlx::query_as("SELECT task_id, outcome FROM reelflow.attempts ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        outcomes[0],
        ("fetch".to_string(), "lease_expired".to_string()),
        "{outcomes:?}"
    );
    assert!(outcomes[1..].iter().all(|(_, o)| o == "success"), "{outcomes:?}");
    let published: i64 = sqlx::query_scalar("SELECT count(*) FROM reelflow.snapshots WHERE state = 'published'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(published, 1);
}
