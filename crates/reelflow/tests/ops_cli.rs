//! Operator commands of the real binary (issue 13): snapshots rollback / rollforward / --to and
//! `snapshots list --json`, runs cancel, backfill guards, diagnostics and CLI rough edges.
//! A file source, a real PostgreSQL.

use std::path::PathBuf;
use std::process::{Command, Output};

use reelflow_e2e::fixture;
use reelflow_e2e::pg::TestDb;

const BIN: &str = env!("CARGO_BIN_EXE_reelflow");

struct Env {
    db: TestDb,
    dir: tempfile::TempDir,
    source: PathBuf,
}

async fn env() -> Env {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("the-movies-dataset.zip");
    std::fs::write(&source, fixture::zip()).unwrap();
    Env { db, dir, source }
}

impl Env {
    fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &self.db.url)
            .env("REELFLOW_ARTIFACTS_DIR", self.dir.path().join("artifacts"))
            .env("REELFLOW_SOURCE", &self.source)
            .env("REELFLOW_LOAD_REUSE_UNCHANGED", "false")
            .env("REELFLOW_LOG", "warn");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
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

fn snapshots(e: &Env) -> Vec<serde_json::Value> {
    let out = e.ok(&["snapshots", "list", "--json"]);
    serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap_or_else(|err| panic!("{err}: {out}"))
}

fn marked(snaps: &[serde_json::Value], field: &str) -> Vec<i64> {
    snaps
        .iter()
        .filter(|s| s[field] == true)
        .map(|s| s["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_rollback_rollforward_and_to_follow_the_publish_history() {
    let e = env().await;
    e.ok(&["run", "--period", "2026-11"]);
    e.ok(&["run", "--period", "2026-11", "--rerun"]);
    // An older period's snapshot (a backfill) is not what rollback picks.
    e.ok(&["run", "--period", "2026-09"]);
    let snaps = snapshots(&e);
    assert_eq!(snaps.len(), 3, "{snaps:?}");
    assert_eq!(marked(&snaps, "rollback_target"), [1]);
    assert_eq!(marked(&snaps, "rollforward_target"), Vec::<i64>::new());
    let table = e.ok(&["snapshots", "list"]);
    let line = table.lines().find(|l| l.trim_start().starts_with("1 ")).unwrap();
    assert!(line.ends_with("rollback target"), "{table}");

    let out = e.ok(&["snapshots", "rollback"]);
    assert_eq!(
        out.trim(),
        "published snapshot 1 (period 2026-11) again; snapshot 2 was rolled back",
        "{out}"
    );
    let snaps = snapshots(&e);
    assert_eq!(marked(&snaps, "rollforward_target"), [2]);
    assert!(e.ok(&["snapshots", "list"]).contains("rollforward target"));

    let out = e.ok(&["snapshots", "rollforward"]);
    assert_eq!(
        out.trim(),
        "published snapshot 2 (period 2026-11) again; snapshot 1 was retired",
        "{out}"
    );
    let o = e.run(&["snapshots", "rollforward"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("nothing to roll forward to"),
        "{}",
        text(&o)
    );

    let out = e.ok(&["snapshots", "rollback", "--to", "3"]);
    assert!(out.starts_with("published snapshot 3 (period 2026-09) again"), "{out}");
    let o = e.run(&["snapshots", "rollback", "--to", "99"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no such snapshot"),
        "{}",
        text(&o)
    );
    // Back to what --to replaced.
    let out = e.ok(&["snapshots", "rollback"]);
    assert!(out.starts_with("published snapshot 2 (period 2026-11) again"), "{out}");
    assert!(!out.contains("Some("), "{out}");
}

fn runs(e: &Env) -> Vec<serde_json::Value> {
    let out = e.ok(&["runs", "list", "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|err| panic!("{err}: {out}"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_guards_and_runs_cancel() {
    let e = env().await;
    // Far too many runs without --yes: refused before any run exists.
    let o = e.run(&["backfill", "--from", "2000-01", "--to", "2024-12"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        stderr(&o).contains("would create 300 runs, more than engine.max_backfill_runs (36); confirm with --yes"),
        "{}",
        text(&o)
    );
    assert!(runs(&e).is_empty());
    // A period whose month has not ended, in trigger, backfill and run.
    for args in [
        &["runs", "trigger", "--period", "2031-01"][..],
        &["backfill", "--from", "2026-01", "--to", "2031-01"],
        &["run", "--period", "2031-01"],
    ] {
        let o = e.run(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        assert!(stderr(&o).contains("period 2031-01 is in the future"), "{}", text(&o));
    }
    let now = chrono_month();
    let o = e.run(&["runs", "trigger", "--period", &now]);
    assert!(
        stderr(&o).contains(&format!("period {now} has not ended yet")),
        "{}",
        text(&o)
    );
    assert!(runs(&e).is_empty());

    // Over a lowered maximum: refused, then created with --yes; the count is printed first.
    let mut c = e.cmd();
    let o = c
        .env("REELFLOW_ENGINE_MAX_BACKFILL_RUNS", "2")
        .args(["backfill", "--from", "2025-01", "--to", "2025-03"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let mut c = e.cmd();
    let o = c
        .env("REELFLOW_ENGINE_MAX_BACKFILL_RUNS", "2")
        .args(["backfill", "--from", "2025-01", "--to", "2025-03", "--yes"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("backfill 2025-01..2025-03: 3 period(s)\n"), "{out}");
    assert_eq!(out.matches("(queued)").count(), 3, "{out}");

    // Cancel one, then every other queued backfill run.
    let all = runs(&e);
    let first = all.iter().find(|r| r["period"] == "2025-01").unwrap()["id"]
        .as_i64()
        .unwrap();
    let out = e.ok(&["runs", "cancel", &first.to_string()]);
    assert_eq!(out.trim(), format!("run {first} (2025-01) cancelled: failed"));
    let o = e.run(&["runs", "cancel", &first.to_string()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        stderr(&o).contains("already finished (failed); nothing to cancel"),
        "{}",
        text(&o)
    );
    let out = e.ok(&["runs", "cancel", "--backfill"]);
    assert!(out.starts_with("cancelled 2 queued backfill run(s)\n"), "{out}");
    assert!(runs(&e).iter().all(|r| r["state"] == "failed"), "{:?}", runs(&e));
    let shown = e.ok(&["runs", "show", &first.to_string()]);
    assert!(shown.contains("cancelled by an operator"), "{shown}");
    // Neither a run id nor --backfill: a usage error.
    let o = e.run(&["runs", "cancel"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

/// The current month (UTC), YYYY-MM, from the system clock.
fn chrono_month() -> String {
    let o = Command::new("date").args(["-u", "+%Y-%m"]).output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Starts `reelflow serve` on a free loopback port (no schedule, fast poll) and waits until it
/// listens.
async fn serve(e: &Env) -> (std::process::Child, std::net::SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = e
        .cmd()
        .env("REELFLOW_LISTEN", format!("127.0.0.1:{port}"))
        .env("REELFLOW_ADMIN_TOKEN", "t0ken")
        .env("REELFLOW_SCHEDULE_ENABLED", "false")
        .env("REELFLOW_ENGINE_POLL_MS", "100")
        .arg("serve")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "serve did not start listening");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    (child, addr)
}

fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_report_run_and_task_states_from_the_store() {
    let e = env().await;
    // A failure recorded by another process before serve starts: an operator's mark.
    e.ok(&["runs", "trigger", "--period", "2026-10"]);
    e.ok(&["tasks", "mark", "1", "fetch", "failed"]);
    let (mut child, addr) = serve(&e).await;
    let scrape = || async {
        reelflow_e2e::http::request(addr, "GET", "/metrics", &[], None)
            .await
            .body
    };
    let m = scrape().await;
    let d = "dag=\"movies_monthly\"";
    assert_eq!(
        value(&m, &format!("reelflow_dag_runs_in_state{{{d},state=\"failed\"}}")),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        value(&m, &format!("reelflow_dag_runs_in_state{{{d},state=\"queued\"}}")),
        Some(0.0)
    );
    assert_eq!(
        value(&m, &format!("reelflow_dag_runs_failed_last_hour{{{d}}}")),
        Some(1.0)
    );
    assert_eq!(
        value(&m, &format!("reelflow_dag_latest_run_state{{{d},state=\"failed\"}}")),
        Some(1.0)
    );
    assert_eq!(
        value(&m, &format!("reelflow_dag_latest_run_state{{{d},state=\"success\"}}")),
        Some(0.0)
    );
    let ti =
        |task: &str, state: &str| format!("reelflow_task_instances_in_state{{{d},task=\"{task}\",state=\"{state}\"}}");
    assert_eq!(value(&m, &ti("fetch", "failed")), Some(1.0), "{m}");
    assert_eq!(value(&m, &ti("clean", "upstream_failed")), Some(1.0));
    assert_eq!(value(&m, &ti("publish", "upstream_failed")), Some(1.0));
    assert_eq!(value(&m, &ti("fetch", "up_for_retry")), Some(0.0));
    // This process counted nothing: the failure happened elsewhere.
    assert_eq!(
        value(&m, &format!("reelflow_dag_runs_total{{{d},state=\"failed\"}}")),
        Some(0.0)
    );

    // Retried from the CLI, run by serve: the store's series follow.
    e.ok(&["tasks", "retry", "1", "fetch", "--downstream"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let m = loop {
        let m = scrape().await;
        if value(&m, &format!("reelflow_dag_latest_run_state{{{d},state=\"success\"}}")) == Some(1.0) {
            break m;
        }
        assert!(std::time::Instant::now() < deadline, "the run did not succeed: {m}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(
        value(&m, &format!("reelflow_dag_runs_in_state{{{d},state=\"failed\"}}")),
        Some(0.0)
    );
    assert_eq!(
        value(&m, &format!("reelflow_dag_runs_failed_last_hour{{{d}}}")),
        Some(0.0)
    );
    assert_eq!(value(&m, &ti("publish", "success")), Some(1.0));
    stop(&mut child);
}

fn stop(child: &mut std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_only_retry_says_what_happens_to_its_snapshot() {
    let e = env().await;
    e.ok(&["run", "--period", "2026-11"]);
    let out = e.ok(&["tasks", "retry", "1", "load"]);
    assert!(
        out.contains("note: load builds a new snapshot, but publish is not re-run"),
        "{out}"
    );
    let out = e.ok(&["tasks", "retry", "1", "load", "--downstream"]);
    assert!(!out.contains("note:"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnostics_say_fatal_or_retryable_and_point_to_the_right_retry() {
    let e = env().await;
    // A truncated download: clean cannot read the zip; the fix is to fetch again.
    let zip = fixture::zip();
    std::fs::write(&e.source, &zip[..zip.len() / 2]).unwrap();
    let o = e.run(&["run", "--period", "2026-11"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = stderr(&o);
    assert!(err.contains("task clean failed"), "{err}");
    assert!(
        err.contains("then `reelflow tasks retry 1 fetch --downstream`"),
        "{err}"
    );
    assert!(!err.contains("tasks retry 1 clean`"), "{err}");
    let shown = e.ok(&["runs", "show", "1"]);
    assert!(shown.contains("fatal error: clean: cannot read zip archive"), "{shown}");
    assert!(
        shown.contains("then: reelflow tasks retry 1 fetch --downstream"),
        "{shown}"
    );

    // Marking a task success that has no outputs is refused with the fix.
    e.ok(&["runs", "trigger", "--period", "2026-10"]);
    let o = e.run(&["tasks", "mark", "2", "fetch", "success"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(stderr(&o).contains("has no outputs"), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_or_missing_database_is_reported_at_once_and_once() {
    let e = env().await;
    let started = std::time::Instant::now();
    let o = e
        .cmd()
        .env("DATABASE_URL", "postgres://reelflow:secret@127.0.0.1:1/reelflow")
        .args(["runs", "list"])
        .output()
        .unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = stderr(&o);
    assert_eq!(
        err.trim(),
        "reelflow: opening the database: cannot connect to PostgreSQL at 127.0.0.1:1/reelflow: connection refused",
        "{err}"
    );
    // A database that does not exist: the server's message, once.
    let (base, _) = e.db.url.rsplit_once('/').unwrap();
    let o = e
        .cmd()
        .env("DATABASE_URL", format!("{base}/no_such_db"))
        .args(["runs", "list"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = stderr(&o);
    assert_eq!(err.matches("does not exist").count(), 1, "{err}");
    assert!(err.contains("database \"no_such_db\" does not exist"), "{err}");
    // No server notice (`_sqlx_migrations ... already exists, skipping`) on a working database.
    let o = e
        .cmd()
        .env_remove("REELFLOW_LOG")
        .args(["runs", "list"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = e
        .cmd()
        .env_remove("REELFLOW_LOG")
        .args(["runs", "list"])
        .output()
        .unwrap();
    assert_eq!(stderr(&o), "", "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_of_every_stage_carry_the_run_and_no_debug_text() {
    let e = env().await;
    e.ok(&["run", "--period", "2026-11"]);
    // A second, reloading run of the period: publish replaces and retention has work.
    let o = e
        .cmd()
        .env("REELFLOW_LOG", "info")
        .env("REELFLOW_LOG_FORMAT", "json")
        .args(["run", "--period", "2026-11", "--rerun"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&o.stderr).lines())
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|err| panic!("{err}: {l}")))
        .collect();
    let msg = |l: &serde_json::Value| l["fields"]["message"].as_str().unwrap_or("").to_string();
    for needle in [
        "source unchanged",
        "cleaned entry",
        "clean finished",
        "COPY done",
        "snapshot published",
    ] {
        let found: Vec<&serde_json::Value> = lines.iter().filter(|l| msg(l).starts_with(needle)).collect();
        let all: Vec<String> = lines.iter().map(msg).collect();
        assert!(!found.is_empty(), "no {needle:?} line in {all:#?}");
        for l in found {
            assert_eq!(l["span"]["run_id"], 1, "{needle}: {l}");
        }
    }
    assert!(
        !lines.iter().any(|l| msg(l) == "load job done"),
        "load job lines are DEBUG"
    );
    for l in &lines {
        let t = l.to_string();
        assert!(!t.contains("Some(") && !t.contains("\"None\""), "Rust debug text: {t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_rough_edges_exit_codes_warnings_colour_and_the_audit_trail() {
    let e = env().await;
    // A bad --state is a usage error, like the API's 400.
    let o = e.run(&["runs", "list", "--state", "bogus"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // A mistyped variable is named with the closest setting.
    let o = e
        .cmd()
        .env("REELFLOW_LOAD_PARALELISM", "4")
        .args(["runs", "list"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        stderr(&o).contains("warning: REELFLOW_LOAD_PARALELISM is not a reelflow setting and is ignored; did you mean REELFLOW_LOAD_PARALLELISM?"),
        "{}",
        text(&o)
    );
    // A cron that never fires, an unknown preset: refused as configuration (78), together
    // with a bad time zone.
    let o = e
        .cmd()
        .env("REELFLOW_SCHEDULE_CRON", "@monthy")
        .env("REELFLOW_SCHEDULE_TIMEZONE", "Mars/Base")
        .args(["runs", "list"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(78), "{}", text(&o));
    assert!(
        stderr(&o).contains("unknown preset") && stderr(&o).contains("Mars/Base"),
        "{}",
        text(&o)
    );
    let o = e
        .cmd()
        .env("REELFLOW_SCHEDULE_CRON", "0 3 31 2 *")
        .args(["runs", "list"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(78), "{}", text(&o));
    assert!(stderr(&o).contains("never fires"), "{}", text(&o));
    // --listen: a bad value is a usage error; a host name is accepted.
    let o = e.run(&["serve", "--listen", "localhost"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = e
        .cmd()
        .env("REELFLOW_SCHEDULE_ENABLED", "false")
        .args(["serve", "--listen", &format!("localhost:{port}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while tokio::net::TcpStream::connect(("localhost", port)).await.is_err() {
        assert!(child.try_wait().unwrap().is_none(), "serve exited");
        assert!(
            std::time::Instant::now() < deadline,
            "serve did not listen on localhost:{port}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    stop(&mut child);
    // No colour codes in a pipe.
    let o = e
        .cmd()
        .env("REELFLOW_LOG", "info")
        .args(["run", "--period", "2026-11"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(!stderr(&o).is_empty());
    assert!(!o.stderr.contains(&0x1b), "ANSI escapes: {}", stderr(&o));
    // runs list: aligned columns (every row as wide as the header up to `ended`).
    let table = e.ok(&["runs", "list"]);
    let header = table.lines().next().unwrap();
    let at = header.find("ended").unwrap();
    let created = header.find("created").unwrap();
    for l in table.lines().skip(1) {
        let when = l.get(created..at).unwrap_or_else(|| panic!("{table}")).trim();
        assert!(chrono_like(when), "created {when:?} misaligned: {table}");
        assert!(
            l[at..].is_empty() || chrono_like(l[at..].trim()),
            "ended misaligned: {table}"
        );
    }
    // The audit trail.
    e.ok(&["runs", "trigger", "--period", "2026-10"]);
    e.ok(&["runs", "cancel", "2"]);
    let listed = e.ok(&["actions", "list"]);
    let rows: Vec<&str> = listed.lines().skip(1).collect();
    assert!(rows[0].contains("cancel") && rows[0].contains("2026-10"), "{listed}");
    assert!(rows[1].contains("trigger"), "{listed}");
    let json: Vec<serde_json::Value> =
        serde_json::from_str(&e.ok(&["actions", "list", "--json", "--limit", "1"])).unwrap();
    assert_eq!(json.len(), 1);
    assert_eq!(
        (json[0]["action"].as_str(), json[0]["origin"].as_str()),
        (Some("cancel"), Some("cli"))
    );
}

/// `2026-12-01T14:02:16Z`: a timestamp to the second, as the tables print them.
fn chrono_like(s: &str) -> bool {
    s.len() == 20 && s.as_bytes()[10] == b'T' && s.ends_with('Z')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_trigger_source_is_fetched_for_that_run_only() {
    let e = env().await;
    let elsewhere = e.dir.path().join("not-here.zip");
    let cmd = |args: &[&str]| e.cmd().env("REELFLOW_SOURCE", &elsewhere).args(args).output().unwrap();
    let real = e.source.to_str().unwrap();
    let o = cmd(&["runs", "trigger", "--period", "2026-10", "--source", real]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("is queued (source "),
        "{}",
        text(&o)
    );
    let o = cmd(&["run", "--period", "2026-10"]);
    assert!(o.status.success(), "the run's own source was fetched: {}", text(&o));
    let o = cmd(&["runs", "show", "1"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("source: "), "{}", text(&o));
    let shown: serde_json::Value = serde_json::from_slice(&cmd(&["runs", "show", "1", "--json"]).stdout).unwrap();
    assert!(
        shown["source"].as_str().unwrap().ends_with("the-movies-dataset.zip"),
        "{shown}"
    );
    // Another run uses the configured source (which does not exist here).
    let o = cmd(&["run", "--period", "2026-09"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(stderr(&o).contains("not-here.zip"), "{}", text(&o));
    // A bad source is refused before a run is created.
    let o = cmd(&["runs", "trigger", "--period", "2026-08", "--source", "ftp://x/y.zip"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(stderr(&o).contains("unsupported scheme"), "{}", text(&o));
    let actions = e.ok(&["actions", "list"]);
    assert!(actions.contains("set_source"), "{actions}");
}
