//! The quality gate (`validate`, between load and publish) and the served diff, with the real
//! binary, a file source and a real PostgreSQL. Months are the fixture plus 1,000 generated
//! movies, so the default thresholds (ratios judged from `gate.min_rows` = 1,000 rows) apply.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicI64};
use std::sync::Arc;

use reelflow_e2e::fixture;
use reelflow_e2e::http::request;
use reelflow_e2e::pg::TestDb;
use sqlx::PgPool;

const BIN: &str = env!("CARGO_BIN_EXE_reelflow");

/// A generated movies_metadata record (a movie of the Drama genre and Acme Pictures).
fn extra_movie(id: i64, revenue: &str) -> String {
    format!(
        "False,,5000,\"[{{'id': 18, 'name': 'Drama'}}]\",,{id},tt{id:0>7},en,Extra {id},\"An extra movie.\",3.5,/p{id}.jpg,\"[{{'name': 'Acme Pictures', 'id': 2}}]\",\"[{{'iso_3166_1': 'US', 'name': 'United States of America'}}]\",2001-02-03,{revenue},90.0,\"[{{'iso_639_1': 'en', 'name': 'English'}}]\",Released,,Extra {id},False,6.5,10\n"
    )
}

/// The fixture zip with the movies `ids` added to its movies file, each with `revenue`.
fn month(ids: std::ops::Range<i64>, revenue: &str) -> Vec<u8> {
    let mut movies = fixture::movies_metadata();
    if !movies.ends_with('\n') {
        movies.push('\n');
    }
    for id in ids {
        movies += &extra_movie(id, revenue);
    }
    let entries: Vec<(&str, Vec<u8>)> = fixture::entries()
        .into_iter()
        .map(|(name, data)| match name {
            "movies_metadata.csv" => (name, movies.clone().into_bytes()),
            _ => (name, data),
        })
        .collect();
    fixture::zip_bytes(&entries)
}

struct Env {
    db: TestDb,
    dir: tempfile::TempDir,
    source: PathBuf,
    config: Option<PathBuf>,
}

async fn env() -> Env {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("the-movies-dataset.zip");
    Env {
        db,
        dir,
        source,
        config: None,
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

impl Env {
    fn source(&self, zip: Vec<u8>) {
        std::fs::write(&self.source, zip).unwrap();
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut c = Command::new(BIN);
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &self.db.url)
            .env("REELFLOW_ARTIFACTS_DIR", self.dir.path().join("artifacts"))
            .env("REELFLOW_SOURCE", &self.source)
            .env("REELFLOW_LOG", "warn");
        if let Some(cfg) = &self.config {
            c.env("REELFLOW_CONFIG", cfg);
        }
        c.args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// A run that must fail: its stdout and stderr together.
    fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(!o.status.success(), "{args:?} should fail: {}", text(&o));
        text(&o)
    }
}

async fn published(pool: &PgPool) -> Option<i64> {
    sqlx::query_scalar("SELECT id FROM reelflow.snapshots WHERE state = 'published'")
        .fetch_optional(pool)
        .await
        .unwrap()
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The newest snapshot and its state.
async fn newest(pool: &PgPool) -> (i64, String, String) {
    sqlx::query_as("SELECT id, state, schema_name FROM reelflow.snapshots ORDER BY id DESC LIMIT 1")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The stored gate result of one check: (value, threshold, passed).
async fn stored_check(pool: &PgPool, snapshot: i64, name: &str) -> (Option<f64>, f64, bool) {
    let checks: serde_json::Value = sqlx::query_scalar("SELECT gate_checks FROM reelflow.snapshots WHERE id = $1")
        .bind(snapshot)
        .fetch_one(pool)
        .await
        .unwrap();
    let c = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {checks}"));
    (
        c["value"].as_f64(),
        c["threshold"].as_f64().unwrap(),
        c["passed"].as_bool().unwrap(),
    )
}

/// The validate task's run id and its attempts of the newest run.
async fn validate_attempts(pool: &PgPool) -> (i64, i64) {
    sqlx::query_as(
        "SELECT r.id, (SELECT count(*) FROM reelflow.attempts a WHERE a.run_id = r.id AND a.task_id = 'validate')
         FROM reelflow.dag_runs r ORDER BY r.id DESC LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_that_lost_a_tenth_of_its_movies_fails_the_gate_keeps_movies_and_a_mark_publishes_it() {
    let e = env().await;
    let pool = &e.db.pool;
    e.source(month(10_000..11_000, "7000"));
    let out = e.ok(&["run", "--period", "2026-01"]);
    let a = published(pool).await.expect("the first month is published");
    let movies_a = count(pool, "SELECT count(*) FROM movies.movies").await;
    assert!(movies_a > 1000, "{movies_a}");
    // The run summary has the gate and the diff (the first snapshot adds every movie).
    assert!(out.contains("validate: ") && out.contains("checks passed"), "{out}");
    assert!(
        out.contains(&format!(
            "diff: +{} movies, -0, 0 changed (first snapshot)",
            reelflow_load::thousands(movies_a)
        )),
        "{out}"
    );

    // The next month lost 101 of its movies: about 10%.
    e.source(month(10_000..10_899, "7000"));
    let failed = e.fails(&["run", "--period", "2026-02"]);
    let movies_b = movies_a - 101;
    let ratio = 101.0 / movies_a as f64;
    assert!((0.09..0.11).contains(&ratio), "{ratio}");
    assert!(failed.contains("quality gate failed"), "{failed}");
    assert!(
        failed.contains(&format!(
            "shrink:movies = {} (threshold <= 0.05; {movies_b} rows vs {movies_a} in snapshot {a})",
            format!("{ratio:.4}").trim_end_matches('0')
        )),
        "{failed}"
    );
    // Not retried: a failed gate is fatal.
    let (run_b, tries) = validate_attempts(pool).await;
    assert_eq!(tries, 1);
    assert!(
        failed.contains(&format!("`reelflow tasks mark {run_b} validate success --note WHY`")),
        "{failed}"
    );
    // `movies` is unchanged; the built snapshot is kept, with the results of its checks.
    assert_eq!(published(pool).await, Some(a));
    assert_eq!(count(pool, "SELECT count(*) FROM movies.movies").await, movies_a);
    let (b, state, schema) = newest(pool).await;
    assert_eq!(state, "ready");
    let (value, threshold, passed) = stored_check(pool, b, "shrink:movies").await;
    assert_eq!((value, threshold, passed), (Some(ratio), 0.05, false));
    assert!(stored_check(pool, b, "future_years").await.2);
    // A sweep (also run after every mark and by `serve`) keeps it.
    reelflow_load::sweep_orphans(pool).await.unwrap();
    let (_, state, _) = newest(pool).await;
    assert_eq!(state, "ready");
    assert_eq!(
        count(pool, &format!("SELECT count(*) FROM \"{schema}\".movies")).await,
        movies_b
    );

    // The operators' page shows the gate on the run panel and the snapshots page; the metrics
    // export every check by name.
    let cfg = reelflow::config::Config::load(None, &|_| None).unwrap();
    let addr = serve_api(&e.db, reelflow::pipeline::dag_spec(&cfg)).await;
    let panel = request(addr, "GET", &format!("/ui/runs/{run_b}?fragment=1"), &[], None).await;
    assert_eq!(panel.status, 200, "{}", panel.body);
    assert!(panel.body.contains("Quality gate"), "{}", panel.body);
    assert!(
        panel.body.contains(r#"<tr class="fail"><td>shrink:movies</td>"#),
        "{}",
        panel.body
    );
    assert!(
        panel
            .body
            .contains(&format!("reelflow tasks mark {run_b} validate success --note WHY")),
        "{}",
        panel.body
    );
    let page = request(addr, "GET", "/ui/snapshots", &[], None).await;
    assert!(page.body.contains(" checks failed"), "{}", page.body);
    let metrics = request(addr, "GET", "/metrics", &[], None).await.body;
    assert!(
        metrics.contains(r#"reelflow_gate_check_passed{dag="movies_monthly",check="shrink:movies"} 0"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"reelflow_gate_check_passed{dag="movies_monthly",check="future_years"} 1"#),
        "{metrics}"
    );

    // An operator looks at it and publishes it anyway.
    let out = e.ok(&[
        "tasks",
        "mark",
        &run_b.to_string(),
        "validate",
        "success",
        "--note",
        "the source withdrew 101 titles",
    ]);
    assert!(out.contains("validate marked success"), "{out}");
    let note: String = sqlx::query_scalar(
        "SELECT detail->>'note' FROM reelflow.operator_actions WHERE action = 'mark' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(note, "the source withdrew 101 titles");
    e.ok(&["run", "--period", "2026-02"]);
    assert_eq!(published(pool).await, Some(b));
    assert_eq!(count(pool, "SELECT count(*) FROM movies.movies").await, movies_b);

    let page = request(addr, "GET", "/ui/snapshots", &[], None).await;
    assert!(
        page.body
            .contains(&format!("+0 movies, -101, 0 changed since snapshot {a}")),
        "{}",
        page.body
    );

    // The diff of the published snapshot, by the CLI: 101 removed, nothing else.
    let out = e.ok(&["snapshots", "diff"]);
    assert!(
        out.starts_with(&format!(
            "snapshot {b} (2026-02): +0 movies, -101, 0 changed since snapshot {a}; {movies_b} unchanged"
        )),
        "{out}"
    );
    let listed: Vec<Vec<&str>> = out.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(listed.len(), 51, "{out}");
    assert_eq!(listed[50][..2], ["...", "more:"], "{out}");
    assert_eq!(listed[0], ["removed", "10899"], "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&e.ok(&["snapshots", "diff", &b.to_string(), "--json", "--limit", "100"])).unwrap();
    assert_eq!(json["summary"]["removed"], 101);
    assert_eq!(json["movies"].as_array().unwrap().len(), 100);
    assert!(json["next_cursor"].is_string());
    let cursor = json["next_cursor"].as_str().unwrap();
    let rest: serde_json::Value = serde_json::from_str(&e.ok(&[
        "snapshots",
        "diff",
        &b.to_string(),
        "--json",
        "--limit",
        "100",
        "--cursor",
        cursor,
    ]))
    .unwrap();
    let ids: Vec<i64> = json["movies"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["movies"].as_array().unwrap())
        .map(|m| m["movie_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, (10_899..11_000).collect::<Vec<_>>());
    assert!(rest["next_cursor"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_of_garbage_revenues_fails_the_gate_on_the_unparsable_ratio() {
    let e = env().await;
    let pool = &e.db.pool;
    e.source(month(10_000..11_000, "7000"));
    e.ok(&["run", "--period", "2026-01"]);
    let a = published(pool).await.unwrap();

    e.source(month(10_000..11_000, "lots"));
    let failed = e.fails(&["run", "--period", "2026-02"]);
    let (b, state, schema) = newest(pool).await;
    assert_eq!(state, "ready");
    // Worked out from the snapshot: the 1,000 garbage values and the revenues that loaded.
    let loaded = count(pool, &format!("SELECT count(revenue) FROM \"{schema}\".movies")).await;
    let den = 1000 + loaded;
    let ratio = 1000.0 / den as f64;
    assert!(
        failed.contains(&format!(
            "unparsable:movies_metadata.csv:revenue = {} (threshold <= 0.01; 1000 of {den} non-empty values unparsable)",
            format!("{ratio:.4}").trim_end_matches('0')
        )),
        "{failed}"
    );
    // Only that check failed.
    assert!(failed.contains(": 1 of "), "{failed}");
    assert!(!stored_check(pool, b, "unparsable:movies_metadata.csv:revenue").await.2);
    assert_eq!(published(pool).await, Some(a));
    assert_eq!(
        count(pool, "SELECT count(revenue) FROM movies.movies WHERE revenue = 7000").await,
        1000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_sql_checks_from_the_config_must_return_no_rows() {
    let mut e = env().await;
    let pool = &e.db.pool.clone();
    let cfg = e.dir.path().join("reelflow.toml");
    std::fs::write(
        &cfg,
        r#"
[[gate.sql]]
name = "no_extras"
query = "SELECT id FROM {schema}.movies WHERE title LIKE 'Extra %'"

[[gate.sql]]
name = "positive_ids"
query = "SELECT id FROM movies WHERE id <= 0"
"#,
    )
    .unwrap();
    e.config = Some(cfg);
    e.source(month(10_000..10_005, "7000"));
    let failed = e.fails(&["run", "--period", "2026-01"]);
    assert!(
        failed.contains(": 1 of ") && failed.contains("sql:no_extras = 5 (threshold <= 0; rows returned)"),
        "{failed}"
    );
    assert!(!failed.contains("sql:positive_ids ="), "{failed}");
    let (b, state, _) = newest(pool).await;
    assert_eq!(state, "ready");
    assert_eq!(stored_check(pool, b, "sql:positive_ids").await, (Some(0.0), 0.0, true));
    assert_eq!(published(pool).await, None);

    // Without the failing check the same month passes.
    std::fs::write(
        e.config.as_ref().unwrap(),
        "[[gate.sql]]\nname = \"positive_ids\"\nquery = \"SELECT id FROM movies WHERE id <= 0\"\n",
    )
    .unwrap();
    e.ok(&[
        "tasks",
        "retry",
        &validate_attempts(pool).await.0.to_string(),
        "validate",
        "--downstream",
    ]);
    e.ok(&["run", "--period", "2026-01"]);
    assert_eq!(published(pool).await, Some(b));
}

async fn serve_api(db: &TestDb, dag: reelflow_dag::DagSpec) -> SocketAddr {
    let state = Arc::new(reelflow::api::AppState {
        pool: db.pool.clone(),
        dag,
        token: None,
        heartbeat: AtomicI64::new(chrono::Utc::now().timestamp()),
        liveness_secs: 60,
        shutting_down: AtomicBool::new(false),
        migrations_applied: AtomicBool::new(false),
        engine: None,
        ops: Default::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app =
        reelflow::api::router_with_ui(state, Default::default()).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_diff_endpoint_serves_the_summary_and_pages_the_movies() {
    let e = env().await;
    let pool = &e.db.pool;
    e.source(month(10_000..10_010, "7000"));
    e.ok(&["run", "--period", "2026-01"]);
    let a = published(pool).await.unwrap();
    // Three removed, two added.
    e.source(month(10_003..10_012, "7000"));
    let out = e.ok(&["run", "--period", "2026-02"]);
    assert!(
        out.contains(&format!("diff: +2 movies, -3, 0 changed since snapshot {a}")),
        "{out}"
    );
    let b = published(pool).await.unwrap();

    let cfg = reelflow::config::Config::load(None, &|_| None).unwrap();
    let addr = serve_api(&e.db, reelflow::pipeline::dag_spec(&cfg)).await;
    let r = request(addr, "GET", &format!("/api/v1/snapshots/{b}/diff?limit=2"), &[], None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert_eq!(j["summary"]["base_snapshot_id"], a);
    assert_eq!(
        (j["summary"]["added"].as_i64(), j["summary"]["removed"].as_i64()),
        (Some(2), Some(3))
    );
    assert_eq!(
        j["movies"][0],
        serde_json::json!({"movie_id": 10000, "change": "removed", "title": null})
    );
    let cursor = j["next_cursor"].as_str().unwrap().to_string();
    let r = request(
        addr,
        "GET",
        &format!("/api/v1/snapshots/{b}/diff?limit=10&cursor={cursor}"),
        &[],
        None,
    )
    .await;
    let j = r.json();
    let rest: Vec<(i64, String)> = j["movies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["movie_id"].as_i64().unwrap(),
                m["change"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        rest,
        [
            (10002, "removed".to_string()),
            (10010, "added".to_string()),
            (10011, "added".to_string())
        ]
    );
    let r = request(
        addr,
        "GET",
        &format!("/api/v1/snapshots/{b}/diff?change=added"),
        &[],
        None,
    )
    .await;
    assert_eq!(r.json()["movies"][1]["title"], "Extra 10011");
    let r = request(
        addr,
        "GET",
        &format!("/api/v1/snapshots/{b}/diff?change=other"),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = request(addr, "GET", "/api/v1/snapshots/999/diff", &[], None).await;
    assert_eq!(r.status, 404, "{}", r.body);

    // An unchanged source: the load reuses the published snapshot and the gate passes it through.
    let out = e.ok(&["run", "--period", "2026-02", "--rerun"]);
    assert!(!out.contains("validate:"), "{out}");
    assert_eq!(published(pool).await, Some(b));
    let reused: Option<bool> = sqlx::query_scalar(
        "SELECT (outputs->>'reused')::boolean FROM reelflow.task_instances WHERE task_id = 'validate' ORDER BY run_id DESC, id DESC LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(reused, Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_sample_passes_the_gate_with_the_default_thresholds() {
    let Some(zip) = fixture::real_sample_zip() else {
        let why = "the real sample files are not in ../shared/data";
        eprintln!("SKIPPED (this test did not run): {why}");
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "{why}: this test must run in CI"
        );
        return;
    };
    let e = env().await;
    let pool = &e.db.pool;
    e.source(zip);
    let out = e.ok(&["run", "--period", "2026-01"]);
    assert!(out.contains("checks passed"), "{out}");
    let b = published(pool).await.unwrap();
    // The ratios were judged (the sample has thousands of rows), not skipped.
    let (value, threshold, passed) = stored_check(pool, b, "rejects:movies_metadata.csv").await;
    assert!(passed && threshold == 0.01, "{value:?}");
    let checks: serde_json::Value = sqlx::query_scalar("SELECT gate_checks FROM reelflow.snapshots WHERE id = $1")
        .bind(b)
        .fetch_one(pool)
        .await
        .unwrap();
    let judged = checks
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"].as_str().unwrap().starts_with("rejects:"))
        .filter(|c| !c["detail"].as_str().unwrap_or("").contains("not judged"))
        .count();
    assert!(judged >= 3, "{checks}");
    assert!(
        !checks.as_array().unwrap().iter().any(|c| c["name"] == "shrink:rejects"),
        "fewer rejects is no loss: {checks}"
    );
}
