//! The whole monthly pipeline over the fixture zip, against a real PostgreSQL: report rows
//! computed by hand, rejects, idempotent re-runs, and a failed load that leaves the published
//! snapshot alone. The key tests run twice, once per artifact store: `::local` (a folder) and
//! `::s3` (the in-process S3 server of `reelflow_e2e::s3`, no folder shared by the stages).

use std::collections::HashMap;
use std::path::Path;

use reelflow::config::Config;
use reelflow_artifacts::{Artifacts, ObjectRef};
use reelflow_dag::Period;
use reelflow_e2e::s3::S3Server;
use reelflow_e2e::{fixture, pg::TestDb};
use sqlx::{PgPool, Row};

/// The artifact store a test runs against.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Store {
    /// `artifacts_dir`, the default.
    Local,
    /// `s3://artifacts/reelflow` on an in-process S3 server.
    S3,
}

const BUCKET: &str = "artifacts";

fn config(db: &TestDb, source: &Path, artifacts: &Path, s3: Option<&S3Server>) -> Config {
    let mut vars: HashMap<&str, String> = [
        ("DATABASE_URL", db.url.clone()),
        ("REELFLOW_SOURCE", source.display().to_string()),
        ("REELFLOW_ARTIFACTS_DIR", artifacts.display().to_string()),
    ]
    .into_iter()
    .collect();
    if let Some(s3) = s3 {
        vars.insert("REELFLOW_ARTIFACTS_URL", format!("s3://{BUCKET}/reelflow"));
        vars.insert("REELFLOW_FETCH_S3_ENDPOINT", s3.endpoint.clone());
        vars.insert("REELFLOW_ARTIFACTS_S3_REGION", "us-east-1".into());
    }
    Config::load(None, &|k| vars.get(k).cloned()).expect("test config")
}

struct Setup {
    db: TestDb,
    dir: tempfile::TempDir,
    cfg: Config,
    /// The S3 server of [`Store::S3`].
    s3: Option<S3Server>,
}

impl Setup {
    /// The artifact store of the configuration.
    fn artifacts(&self) -> Artifacts {
        self.cfg.artifacts().expect("artifact store")
    }

    /// Where the store keeps `key` on disk (the local folder, or the S3 server's directory).
    fn object_path(&self, key: &str) -> std::path::PathBuf {
        match &self.s3 {
            Some(s3) => s3.path_of(BUCKET, key),
            None => self.cfg.artifacts_dir.join(key),
        }
    }
}

async fn setup(zip: Vec<u8>) -> Setup {
    setup_in(zip, Store::Local).await
}

async fn setup_in(zip: Vec<u8>, store: Store) -> Setup {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("the-movies-dataset.zip");
    std::fs::write(&source, zip).unwrap();
    let s3 = match store {
        Store::Local => None,
        Store::S3 => {
            let server = S3Server::start(None).await;
            server.create_bucket(BUCKET);
            Some(server)
        }
    };
    let cfg = config(&db, &source, &dir.path().join("artifacts"), s3.as_ref());
    Setup { db, dir, cfg, s3 }
}

/// Runs the test `$name(Store)` once per artifact store, as `$name::local` and `$name::s3`.
macro_rules! both_stores {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn local() {
                super::$name(super::Store::Local).await
            }
            #[tokio::test]
            async fn s3() {
                super::$name(super::Store::S3).await
            }
        }
    };
}

/// The clean output of a report: the record's reference and the files by name.
fn clean_objects(report: &reelflow::pipeline::RunReport) -> (ObjectRef, std::collections::BTreeMap<String, ObjectRef>) {
    let clean = &report.outputs["clean"];
    (
        serde_json::from_value(clean["record"].clone()).expect("the clean record"),
        serde_json::from_value(clean["files"].clone()).expect("the clean files"),
    )
}

/// A clean output like the one of `report` with `file`'s text replaced by `text` (stored as a
/// new object under `test/`, with a new record): bad data that the clean stage could have
/// written, for testing what the load does with it.
async fn clean_output_with(s: &Setup, report: &reelflow::pipeline::RunReport, file: &str, text: &str) -> ObjectRef {
    let store = s.artifacts();
    let (record, _) = clean_objects(report);
    let mut rec: reelflow_clean::CleanRecord =
        serde_json::from_slice(&store.get_bytes(&record).await.unwrap()).unwrap();
    let local = s.dir.path().join(file);
    std::fs::write(&local, text).unwrap();
    let stored = store
        .put_file(&store.key(&format!("test/{file}")), &local, &|| false)
        .await
        .unwrap();
    rec.files.insert(file.to_string(), stored);
    store
        .put_create(&store.key("test/manifest.json"), serde_json::to_vec(&rec).unwrap())
        .await
        .unwrap()
}

/// The text of a stored clean file of `report`.
async fn clean_text(s: &Setup, report: &reelflow::pipeline::RunReport, file: &str) -> String {
    let (_, files) = clean_objects(report);
    String::from_utf8(s.artifacts().get_bytes(&files[file]).await.unwrap().to_vec()).unwrap()
}

async fn rows(pool: &PgPool, sql: &str) -> Vec<String> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT row_to_json(t)::text FROM ({sql}) t"
    )))
    .fetch_all(pool)
    .await
    .unwrap_or_else(|e| panic!("{sql}: {e}"))
    .into_iter()
    .map(|r| r.get::<String, _>(0))
    .collect()
}

both_stores!(fixture_reports_match_hand_computed_rows);
async fn fixture_reports_match_hand_computed_rows(store: Store) {
    let s = setup_in(fixture::zip(), store).await;
    let period: Period = "2026-11".parse().unwrap();
    let report = reelflow::pipeline::run_period(&s.cfg, &s.db.pool, period, false)
        .await
        .expect("pipeline");
    assert!(report.succeeded(), "{}", report.failure());
    let summary = report.render();
    assert!(summary.contains("for period 2026-11: success"), "{summary}");
    let pool = &s.db.pool;

    // company_yearly: Lion's Gate (1) and Acme Pictures (2). Movie 104 has no date, 107 an
    // impossible one: both are out. 101 has budget 0 (unknown), 102 revenue 0, 105 neither and
    // an unparsable popularity. 103's revenue passes 2^31.
    assert_eq!(
        rows(pool, "SELECT company_id, company_name, year, movies, budget_total, revenue_total, profit_total, movies_with_budget, movies_with_revenue, movies_with_profit, avg_popularity FROM movies.company_yearly ORDER BY company_id, year").await,
        vec![
            r#"{"company_id":1,"company_name":"Lion's Gate","year":2010,"movies":2,"budget_total":1000,"revenue_total":8000,"profit_total":2000,"movies_with_budget":1,"movies_with_revenue":2,"movies_with_profit":1,"avg_popularity":7}"#,
            r#"{"company_id":1,"company_name":"Lion's Gate","year":2011,"movies":1,"budget_total":237000000,"revenue_total":2787965087,"profit_total":2550965087,"movies_with_budget":1,"movies_with_revenue":1,"movies_with_profit":1,"avg_popularity":185.07}"#,
            r#"{"company_id":2,"company_name":"Acme Pictures","year":2010,"movies":2,"budget_total":3000,"revenue_total":3000,"profit_total":2000,"movies_with_budget":2,"movies_with_revenue":1,"movies_with_profit":1,"avg_popularity":8}"#,
            r#"{"company_id":2,"company_name":"Acme Pictures","year":2011,"movies":1,"budget_total":null,"revenue_total":null,"profit_total":null,"movies_with_budget":0,"movies_with_revenue":0,"movies_with_profit":0,"avg_popularity":null}"#,
        ]
    );

    assert_eq!(
        rows(pool, "SELECT company_id, year, genre_id, genre_name, releases FROM movies.company_genre_yearly ORDER BY company_id, year, genre_id").await,
        vec![
            r#"{"company_id":1,"year":2010,"genre_id":18,"genre_name":"Drama","releases":1}"#,
            r#"{"company_id":1,"year":2010,"genre_id":28,"genre_name":"Action","releases":2}"#,
            r#"{"company_id":1,"year":2011,"genre_id":28,"genre_name":"Action","releases":1}"#,
            r#"{"company_id":2,"year":2010,"genre_id":18,"genre_name":"Drama","releases":2}"#,
            r#"{"company_id":2,"year":2010,"genre_id":28,"genre_name":"Action","releases":1}"#,
            r#"{"company_id":2,"year":2010,"genre_id":35,"genre_name":"Comedy","releases":1}"#,
            r#"{"company_id":2,"year":2011,"genre_id":35,"genre_name":"Comedy","releases":1}"#,
        ]
    );

    // genre_yearly with ranks; 2012 ties Comedy and Drama at 5.0: the name breaks the tie.
    assert_eq!(
        rows(pool, "SELECT year, popularity_rank, genre_id, genre_name, movies, avg_popularity, budget_total, revenue_total, profit_total, movies_with_budget, movies_with_revenue, movies_with_profit FROM movies.genre_yearly ORDER BY year, popularity_rank").await,
        vec![
            r#"{"year":2010,"popularity_rank":1,"genre_id":18,"genre_name":"Drama","movies":2,"avg_popularity":8,"budget_total":3000,"revenue_total":3000,"profit_total":2000,"movies_with_budget":2,"movies_with_revenue":1,"movies_with_profit":1}"#,
            r#"{"year":2010,"popularity_rank":2,"genre_id":28,"genre_name":"Action","movies":2,"avg_popularity":7,"budget_total":1000,"revenue_total":8000,"profit_total":2000,"movies_with_budget":1,"movies_with_revenue":2,"movies_with_profit":1}"#,
            r#"{"year":2010,"popularity_rank":3,"genre_id":35,"genre_name":"Comedy","movies":1,"avg_popularity":6,"budget_total":2000,"revenue_total":null,"profit_total":null,"movies_with_budget":1,"movies_with_revenue":0,"movies_with_profit":0}"#,
            r#"{"year":2011,"popularity_rank":1,"genre_id":28,"genre_name":"Action","movies":1,"avg_popularity":185.07,"budget_total":237000000,"revenue_total":2787965087,"profit_total":2550965087,"movies_with_budget":1,"movies_with_revenue":1,"movies_with_profit":1}"#,
            r#"{"year":2011,"popularity_rank":2,"genre_id":35,"genre_name":"Comedy","movies":1,"avg_popularity":null,"budget_total":null,"revenue_total":null,"profit_total":null,"movies_with_budget":0,"movies_with_revenue":0,"movies_with_profit":0}"#,
            r#"{"year":2012,"popularity_rank":1,"genre_id":35,"genre_name":"Comedy","movies":1,"avg_popularity":5,"budget_total":500,"revenue_total":400,"profit_total":-100,"movies_with_budget":1,"movies_with_revenue":1,"movies_with_profit":1}"#,
            r#"{"year":2012,"popularity_rank":2,"genre_id":18,"genre_name":"Drama","movies":1,"avg_popularity":5,"budget_total":500,"revenue_total":400,"profit_total":-100,"movies_with_budget":1,"movies_with_revenue":1,"movies_with_profit":1}"#,
        ]
    );

    assert_eq!(
        rows(pool, "SELECT * FROM movies.most_popular_genre_yearly ORDER BY year").await,
        vec![
            r#"{"year":2010,"genre_id":18,"genre_name":"Drama","avg_popularity":8}"#,
            r#"{"year":2011,"genre_id":28,"genre_name":"Action","avg_popularity":185.07}"#,
            r#"{"year":2012,"genre_id":35,"genre_name":"Comedy","avg_popularity":5}"#,
        ]
    );

    // Ratings reach movies through links (MovieLens 1 -> TMDB 100, 2 -> 101); the repeated
    // (user 1, movie 1) rating is rejected, so movie 100 keeps 4.0 and 5.0.
    assert_eq!(
        rows(pool, "SELECT * FROM movies.movie_ratings ORDER BY movie_id").await,
        vec![
            r#"{"movie_id":100,"ratings":2,"avg_rating":4.5}"#,
            r#"{"movie_id":101,"ratings":1,"avg_rating":3}"#
        ]
    );

    // The first row of a repeated id wins.
    assert_eq!(
        rows(pool, "SELECT id, title, revenue, budget, collection_id FROM movies.movies WHERE id IN (100, 101, 102) ORDER BY id").await,
        vec![
            r#"{"id":100,"title":"Alpha","revenue":3000,"budget":1000,"collection_id":5}"#,
            r#"{"id":101,"title":"Beta","revenue":5000,"budget":null,"collection_id":null}"#,
            r#"{"id":102,"title":"Gamma","revenue":null,"budget":2000,"collection_id":null}"#,
        ]
    );
    assert_eq!(
        rows(
            pool,
            "SELECT title, overview, popularity FROM movies.movies WHERE id IN (102, 105) ORDER BY id"
        )
        .await,
        vec![
            r#"{"title":"Gamma","overview":"First line\nsecond line\nthird \"quoted\" line","popularity":6}"#,
            r#"{"title":"Amélie — 東京","overview":"Ünïcödé","popularity":null}"#,
        ]
    );
    assert_eq!(
        rows(pool, "SELECT name FROM movies.companies ORDER BY id").await,
        vec![r#"{"name":"Lion's Gate"}"#, r#"{"name":"Acme Pictures"}"#]
    );
    assert_eq!(
        rows(pool, "SELECT movie_id, name FROM movies.cast_members ORDER BY movie_id").await,
        vec![
            r#"{"movie_id":100,"name":"Tom O'Hara"}"#,
            r#"{"movie_id":101,"name":"Zoë"}"#
        ]
    );

    // Every rejected row is kept with file, line, reason and raw text, and counted per reason.
    assert_eq!(
        rows(
            pool,
            "SELECT file, line, reason FROM movies.rejects WHERE file = 'movies_metadata.csv' ORDER BY line"
        )
        .await,
        vec![
            r#"{"file":"movies_metadata.csv","line":9,"reason":"duplicate_id"}"#,
            r#"{"file":"movies_metadata.csv","line":11,"reason":"field_count"}"#,
            r#"{"file":"movies_metadata.csv","line":12,"reason":"field_count"}"#,
            r#"{"file":"movies_metadata.csv","line":13,"reason":"bad_id"}"#,
            r#"{"file":"movies_metadata.csv","line":14,"reason":"bad_id"}"#,
            r#"{"file":"movies_metadata.csv","line":15,"reason":"bad_id"}"#,
            r#"{"file":"movies_metadata.csv","line":17,"reason":"duplicate_id"}"#,
            r#"{"file":"movies_metadata.csv","line":18,"reason":"duplicate_id"}"#,
        ]
    );
    let raw: String =
        sqlx::query_scalar("SELECT raw FROM movies.rejects WHERE file = 'movies_metadata.csv' AND line = 13")
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(
        raw.contains(",2012-09-29,tt2012-09-29,") || raw.contains("2012-09-29"),
        "{raw}"
    );
    assert_eq!(
        rows(pool, "SELECT file, reason, rows FROM movies.reject_counts WHERE file <> 'movies_metadata.csv' ORDER BY file, reason").await,
        vec![
            r#"{"file":"credits.csv","reason":"duplicate_id","rows":1}"#,
            r#"{"file":"credits.csv","reason":"unknown_movie","rows":1}"#,
            r#"{"file":"keywords.csv","reason":"bad_id","rows":1}"#,
            r#"{"file":"keywords.csv","reason":"duplicate_id","rows":1}"#,
            r#"{"file":"keywords.csv","reason":"unknown_movie","rows":1}"#,
            r#"{"file":"links.csv","reason":"duplicate_key","rows":1}"#,
            r#"{"file":"links_small.csv","reason":"duplicate_key","rows":1}"#,
            r#"{"file":"ratings.csv","reason":"duplicate_rating","rows":1}"#,
            r#"{"file":"ratings_small.csv","reason":"duplicate_rating","rows":1}"#,
        ]
    );
    assert_eq!(
        rows(pool, "SELECT column_name, values_nulled FROM movies.unparsable_counts WHERE file = 'movies_metadata.csv' ORDER BY column_name").await,
        vec![
            r#"{"column_name":"genres","values_nulled":1}"#,
            r#"{"column_name":"popularity","values_nulled":1}"#,
            r#"{"column_name":"release_date","values_nulled":1}"#,
        ]
    );
    let (state, rejects): (String, i64) =
        sqlx::query_as("SELECT state, rejects_total FROM reelflow.snapshots WHERE period = '2026-11'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!((state.as_str(), rejects), ("published", 8 + 9));
}

use reelflow_e2e::pg::published_checksums;

both_stores!(same_period_twice_publishes_identical_data_and_keeps_two_previous);
async fn same_period_twice_publishes_identical_data_and_keeps_two_previous(store: Store) {
    let mut s = setup_in(fixture::zip(), store).await;
    // Reload on every rerun even though the source is unchanged (see the test below).
    s.cfg.load.reuse_unchanged = false;
    let period: Period = "2026-10".parse().unwrap();
    let pool = &s.db.pool;
    let first_report = reelflow::pipeline::run_period(&s.cfg, pool, period, false)
        .await
        .expect("first run");
    assert!(first_report.succeeded());
    let first = published_checksums(pool).await;
    assert!(first.len() >= 20, "{first:?}");
    let checksums = |r: &reelflow::pipeline::RunReport| {
        let (_, files) = clean_objects(r);
        files.into_iter().map(|(f, o)| (f, o.sha256)).collect::<Vec<_>>()
    };
    let clean_files = checksums(&first_report);
    let mut records = vec![clean_objects(&first_report).0.key];
    for _ in 0..3 {
        let report = reelflow::pipeline::run_period(&s.cfg, pool, period, true)
            .await
            .expect("re-run");
        assert!(report.succeeded(), "{}", report.failure());
        assert_eq!(
            report.outputs["fetch"]["reused"], true,
            "unchanged file source is reused"
        );
        assert_eq!(
            checksums(&report),
            clean_files,
            "the same zip gives byte-identical clean outputs"
        );
        records.push(clean_objects(&report).0.key);
    }
    assert_eq!(published_checksums(pool).await, first, "re-runs publish identical data");
    // Each attempt wrote under its own keys, and every record is still there.
    records.sort();
    records.dedup();
    assert_eq!(records.len(), 4, "{records:?}");
    for key in &records {
        assert!(s.object_path(key).is_file(), "{key}");
    }
    // Four publishes: the current one plus two previous are kept, the oldest is dropped.
    let states: Vec<(i64, String)> = sqlx::query_as("SELECT id, state FROM reelflow.snapshots ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap();
    let names: Vec<&str> = states.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(names, ["dropped", "retired", "retired", "published"]);
    let schemas: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname = 'movies' OR nspname LIKE 'reelflow_snap_%' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(
        schemas,
        vec![
            "movies".to_string(),
            format!("reelflow_snap_{}", states[1].0),
            format!("reelflow_snap_{}", states[2].0)
        ]
    );

    // Rollback publishes the previous snapshot, and that one's data is the same here.
    let out = reelflow_load::rollback(pool).await.unwrap();
    assert_eq!(out.snapshot_id, states[2].0);
    assert_eq!(published_checksums(pool).await, first);
}

async fn snapshot_states(pool: &PgPool) -> Vec<(i64, String)> {
    sqlx::query_as("SELECT id, state FROM reelflow.snapshots ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_rerun_of_an_unchanged_source_reuses_the_snapshot_and_a_changed_one_reloads() {
    let s = setup(fixture::zip()).await;
    let period: Period = "2026-10".parse().unwrap();
    let pool = &s.db.pool;
    let first = reelflow::pipeline::run_period(&s.cfg, pool, period, false)
        .await
        .unwrap();
    assert!(first.succeeded(), "{}", first.failure());
    let a = first.outputs["publish"]["snapshot_id"].as_i64().unwrap();
    let data = published_checksums(pool).await;

    // Same bytes, same build: nothing cleaned, nothing loaded, the snapshot stays.
    let again = reelflow::pipeline::run_period(&s.cfg, pool, period, true)
        .await
        .unwrap();
    assert!(again.succeeded(), "{}", again.failure());
    assert!(
        again.run.generation > first.run.generation,
        "a rerun runs every task again"
    );
    assert_eq!(again.outputs["clean"]["unchanged_snapshot"], a);
    assert!(again.outputs["clean"].get("manifest").is_none(), "nothing was cleaned");
    assert_eq!(again.outputs["load"]["reused"], true);
    assert_eq!(again.outputs["load"]["snapshot_id"], a);
    assert_eq!(again.outputs["load"]["rows"], first.outputs["load"]["rows"]);
    assert_eq!(again.outputs["publish"]["snapshot_id"], a);
    assert_eq!(again.outputs["publish"]["current"], true);
    assert_eq!(snapshot_states(pool).await, [(a, "published".to_string())]);
    assert_eq!(published_checksums(pool).await, data);
    let text = again.render();
    assert!(text.contains(&format!("source unchanged since snapshot {a}")), "{text}");

    // Different bytes (an extra, ignored entry), same data: a new snapshot is loaded.
    let mut entries = fixture::entries();
    entries.push(("README.txt", b"hello".to_vec()));
    let source = s.cfg.source.clone();
    std::fs::write(&source, fixture::zip_bytes(&entries)).unwrap();
    let changed = reelflow::pipeline::run_period(&s.cfg, pool, period, true)
        .await
        .unwrap();
    assert!(changed.succeeded(), "{}", changed.failure());
    let b = changed.outputs["publish"]["snapshot_id"].as_i64().unwrap();
    assert_ne!(a, b);
    assert!(changed.outputs["clean"]["manifest"].is_object());
    assert_eq!(published_checksums(pool).await, data);

    // A snapshot rolled back away from is not reused, even for the same bytes.
    reelflow_load::rollback(pool).await.unwrap();
    let after_rollback = reelflow::pipeline::run_period(&s.cfg, pool, period, true)
        .await
        .unwrap();
    assert!(after_rollback.succeeded(), "{}", after_rollback.failure());
    let c = after_rollback.outputs["publish"]["snapshot_id"].as_i64().unwrap();
    assert!(c != a && c != b, "{a} {b} {c}");
    assert_eq!(after_rollback.outputs["load"]["reused"], false);

    // Built by another reelflow build (other table or report definitions): reloaded.
    sqlx::query("UPDATE reelflow.snapshots SET build_id = 'an-older-build' WHERE id = $1")
        .bind(c)
        .execute(pool)
        .await
        .unwrap();
    let rebuilt = reelflow::pipeline::run_period(&s.cfg, pool, period, true)
        .await
        .unwrap();
    assert!(rebuilt.succeeded(), "{}", rebuilt.failure());
    let d = rebuilt.outputs["publish"]["snapshot_id"].as_i64().unwrap();
    assert_ne!(c, d);
    assert_eq!(snapshot_states(pool).await.last(), Some(&(d, "published".to_string())));
    assert_eq!(published_checksums(pool).await, data);
}

both_stores!(rating_totals_that_do_not_add_up_to_the_ratings_fail_the_load);
async fn rating_totals_that_do_not_add_up_to_the_ratings_fail_the_load(store: Store) {
    let s = setup_in(fixture::zip(), store).await;
    let pool = &s.db.pool;
    let run = reelflow::pipeline::run_period(&s.cfg, pool, "2026-09".parse().unwrap(), false)
        .await
        .unwrap();
    assert!(run.succeeded(), "{}", run.failure());
    let text = clean_text(&s, &run, "ratings_per_movie.tsv").await;
    let mut fields: Vec<&str> = text.lines().next().unwrap().split('\t').collect();
    let more = (fields[1].parse::<i64>().unwrap() + 1).to_string();
    fields[1] = &more;
    let first = fields.join("\t");
    let rest: Vec<&str> = text.lines().skip(1).collect();
    let changed = format!("{first}\n{}", rest.iter().map(|l| format!("{l}\n")).collect::<String>());
    let record = clean_output_with(&s, &run, "ratings_per_movie.tsv", &changed).await;
    let store = s.artifacts();
    let err = reelflow_load::load_snapshot(
        pool,
        &store,
        &record,
        "movies_monthly",
        "2026-09",
        None,
        &Default::default(),
    )
    .await
    .expect_err("totals that do not add up must fail the load");
    let task_err: reelflow_dag::TaskError = err.into();
    assert!(!task_err.is_retryable(), "{task_err}");
    assert!(task_err.message.contains("ratings_per_movie adds up to"), "{task_err}");
}

both_stores!(failed_load_leaves_published_snapshot_and_no_half_built_schema);
async fn failed_load_leaves_published_snapshot_and_no_half_built_schema(store: Store) {
    let s = setup_in(fixture::zip(), store).await;
    let pool = &s.db.pool;
    let good = reelflow::pipeline::run_period(&s.cfg, pool, "2026-09".parse().unwrap(), false)
        .await
        .expect("good run");
    assert!(good.succeeded());
    let before = published_checksums(pool).await;

    // A COPY file with a bad row: the load fails midway, after some tables are in.
    let mut text = clean_text(&s, &good, "ratings.tsv").await;
    text.push_str("not-a-number\t1\t1\t1\n");
    let record = clean_output_with(&s, &good, "ratings.tsv", &text).await;
    let store = s.artifacts();
    let err = reelflow_load::load_snapshot(
        pool,
        &store,
        &record,
        "movies_monthly",
        "2026-09",
        None,
        &Default::default(),
    )
    .await
    .expect_err("load of a corrupt file must fail");
    let task_err: reelflow_dag::TaskError = err.into();
    assert!(!task_err.is_retryable(), "{task_err}");
    assert!(task_err.message.contains("ratings"), "{task_err}");

    assert_eq!(
        published_checksums(pool).await,
        before,
        "the published snapshot is untouched"
    );
    let leftovers: Vec<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'reelflow_snap_%'")
            .fetch_all(pool)
            .await
            .unwrap();
    assert!(leftovers.is_empty(), "half-built schemas left: {leftovers:?}");
    let failed: (String, Option<String>) =
        sqlx::query_as("SELECT state, error FROM reelflow.snapshots ORDER BY id DESC LIMIT 1")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(failed.0, "failed");
    assert!(failed.1.unwrap_or_default().contains("ratings"));
    drop(s.dir);
}

#[tokio::test]
async fn real_sample_files_load_and_reports_agree_with_an_independent_sql_computation() {
    let Some(zip) = fixture::real_sample_zip() else {
        let why = "../shared/data is not on this machine".to_string();
        eprintln!("SKIPPED (this test did not run): {why}");
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "{why}: this test must run in CI"
        );
        return;
    };
    let s = setup(zip).await;
    let pool = &s.db.pool;
    let report = reelflow::pipeline::run_period(&s.cfg, pool, "2026-08".parse().unwrap(), false)
        .await
        .expect("pipeline on real samples");
    assert!(report.succeeded(), "{}", report.failure());
    let movies: i64 = sqlx::query_scalar("SELECT count(*) FROM movies.movies")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(
        movies,
        5000 - sqlx::query_scalar::<_, i64>("SELECT count(*) FROM movies.rejects WHERE file = 'movies_metadata.csv'")
            .fetch_one(pool)
            .await
            .unwrap()
    );
    let ratings: i64 = sqlx::query_scalar("SELECT count(*) FROM movies.ratings_small")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(ratings, 100_004);
    assert!(movie_ratings_match_the_ratings_table(pool).await >= 1_000);
}

/// `movie_ratings` (built from the clean stage's totals) against the same report computed
/// from the loaded `ratings` table; returns the number of rows compared.
async fn movie_ratings_match_the_ratings_table(pool: &PgPool) -> usize {
    let direct = rows(
        pool,
        "SELECT m.id AS movie_id, count(*)::bigint AS ratings, avg(r.rating)::double precision AS avg_rating
         FROM movies.ratings r JOIN movies.links l ON l.movie_id = r.movie_id JOIN movies.movies m ON m.id = l.tmdb_id
         GROUP BY m.id ORDER BY m.id",
    )
    .await;
    let report = rows(pool, "SELECT * FROM movies.movie_ratings ORDER BY movie_id").await;
    assert_eq!(
        report, direct,
        "movie_ratings differs from a direct aggregate of ratings"
    );
    let totals: i64 = sqlx::query_scalar("SELECT sum(ratings)::bigint FROM movies.ratings_per_movie")
        .fetch_one(pool)
        .await
        .unwrap();
    let loaded: i64 = sqlx::query_scalar("SELECT count(*) FROM movies.ratings")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(totals, loaded);
    report.len()
}

/// What `movies.ratings` is: its kind (`r` table, `p` partitioned), its partitions, and its
/// valid indexes.
async fn ratings_layout(pool: &PgPool) -> (String, i64, Vec<String>) {
    let kind: String = sqlx::query_scalar("SELECT relkind::text FROM pg_class WHERE oid = 'movies.ratings'::regclass")
        .fetch_one(pool)
        .await
        .unwrap();
    let parts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_inherits WHERE inhparent = 'movies.ratings'::regclass")
            .fetch_one(pool)
            .await
            .unwrap();
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = 'movies.ratings'::regclass AND indisvalid ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    (kind, parts, indexes)
}

/// The ratings of `movie_ratings_from_the_clean_totals_...`: values of every shape the cleaner
/// accepts, unparsable and empty ratings (rows that count but have no value), a movie whose
/// only rating has no value, a rejected duplicate; then two rows for each of `users`.
fn many_ratings(users: impl Iterator<Item = u32>) -> String {
    let mut ratings = "userId,movieId,rating,timestamp\n\
        1,1,3.7,1\n1,2,4,2\n1,4,,3\n1,4,5.0,4\n\
        2,1,0.1,5\n2,2,2.25,6\n2,4,x,7\n\
        3,1,1e0,8\n3,2,4.50,9\n3,4, 2.5,10\n3,9,3.5,11\n\
        4,2,-0.5,12\n4,3,,13\n"
        .to_string();
    for user in users {
        // Not movie 1 or 3, whose totals are checked exactly below.
        for (movie, rating) in [(2, "3.0"), (4, "0.5")] {
            ratings += &format!("{user},{movie},{rating},{user}\n");
        }
    }
    ratings
}

/// Loads `ratings` as the biggest table, in two parts (over both connections), with a cut
/// recorded about every 4 KiB; checks the totals; returns the layout of `movies.ratings`.
async fn load_ratings_in_parts(ratings: String) -> (String, i64, Vec<String>) {
    let entries: Vec<(&str, Vec<u8>)> = fixture::entries()
        .into_iter()
        .map(|(name, data)| {
            if name == "ratings.csv" {
                (name, ratings.as_bytes().to_vec())
            } else {
                (name, data)
            }
        })
        .collect();
    let mut s = setup(fixture::zip_bytes(&entries)).await;
    s.cfg.load.split_copy_min_bytes = 0;
    s.cfg.clean.cut_spacing_bytes = 4096;
    let pool = &s.db.pool;
    let report = reelflow::pipeline::run_period(&s.cfg, pool, "2026-08".parse().unwrap(), false)
        .await
        .unwrap();
    assert!(report.succeeded(), "{}", report.failure());
    assert_eq!(
        report.outputs["load"]["rows"]["ratings"],
        12 + 2990 * 2,
        "one duplicate rejected"
    );
    assert!(movie_ratings_match_the_ratings_table(pool).await >= 2);
    let per_movie = rows(pool, "SELECT * FROM movies.ratings_per_movie ORDER BY movie_id").await;
    assert_eq!(
        per_movie[0], r#"{"movie_id":1,"ratings":3,"rated":3,"rating_sum":4.800000049173832}"#,
        "3.7f32 + 0.1f32 + 1.0 in double precision"
    );
    assert!(
        per_movie
            .iter()
            .any(|r| r.contains(r#""movie_id":3,"ratings":1,"rated":0,"rating_sum":0"#)),
        "{per_movie:?}"
    );
    // Every pair once, whichever way it was loaded.
    let pairs: i64 = sqlx::query_scalar("SELECT count(DISTINCT (user_id, movie_id)) FROM movies.ratings")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(pairs, 12 + 2990 * 2);
    ratings_layout(pool).await
}

#[tokio::test]
async fn movie_ratings_from_the_clean_totals_equal_an_aggregate_of_the_ratings_table() {
    // Sorted by user, as the real file: `ratings` is partitioned by user range, one partition
    // per connection, with the primary key and the movie_id index valid on the parent.
    let (kind, parts, indexes) = load_ratings_in_parts(many_ratings(10..3000)).await;
    assert_eq!((kind.as_str(), parts), ("p", 2), "{indexes:?}");
    assert_eq!(indexes.len(), 2, "{indexes:?}");
    assert!(
        indexes
            .iter()
            .any(|i| i.contains("UNIQUE INDEX ratings_pkey ON ONLY movies.ratings USING btree (user_id, movie_id)")),
        "{indexes:?}"
    );
    assert!(indexes.iter().any(|i| i.contains("(movie_id)")), "{indexes:?}");
}

#[tokio::test]
async fn ratings_out_of_user_order_load_as_one_table_in_byte_ranges() {
    // Users in descending order: no user ranges to cut at, so one plain table, its COPY still
    // split over both connections.
    let (kind, parts, indexes) = load_ratings_in_parts(many_ratings((10..3000).rev())).await;
    assert_eq!((kind.as_str(), parts), ("r", 0), "{indexes:?}");
    assert_eq!(indexes.len(), 2, "{indexes:?}");
}

#[tokio::test]
async fn a_bare_cr_inside_an_unquoted_field_is_data_and_the_row_loads_whole() {
    let raw = fixture::movies_metadata();
    assert!(
        raw.contains(",No\rdate - Written by Someone,"),
        "the fixture row is unquoted"
    );
    // Records end at LF or CRLF only: a CRLF file with the same row loads the same.
    let crlf = raw.replace('\n', "\r\n");
    for (period, movies) in [("2026-03", raw.clone()), ("2026-04", crlf)] {
        let entries: Vec<(&str, Vec<u8>)> = fixture::entries()
            .into_iter()
            .map(|(name, data)| match name {
                "movies_metadata.csv" => (name, movies.clone().into_bytes()),
                _ => (name, data),
            })
            .collect();
        let s = setup(fixture::zip_bytes(&entries)).await;
        let pool = &s.db.pool;
        let report = reelflow::pipeline::run_period(&s.cfg, pool, period.parse().unwrap(), false)
            .await
            .unwrap();
        assert!(report.succeeded(), "{}", report.failure());
        assert_eq!(
            rows(
                pool,
                "SELECT overview, title, budget, revenue, status FROM movies.movies WHERE id = 104"
            )
            .await,
            [
                r#"{"overview":"No\rdate - Written by Someone","title":"Undated","budget":10,"revenue":20,"status":"Released"}"#
            ],
            "{period}: the columns after the CR are in place"
        );
        let field_count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM movies.rejects WHERE file = 'movies_metadata.csv' AND reason = 'field_count'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(
            field_count, 2,
            "{period}: only the two halves of the row broken by a bare LF"
        );
    }
}

#[tokio::test]
async fn far_apart_duplicate_ratings_are_rejected_by_the_clean_and_the_load_succeeds() {
    // The fixture's ratings, then 3,000 rows of other users, then the same (user, movie) pairs
    // as earlier rows: ratings.csv without grouping by user, which the primary key of
    // `ratings` would refuse at load if the clean let them through.
    let mut ratings = String::from_utf8(
        fixture::entries()
            .into_iter()
            .find(|(n, _)| *n == "ratings.csv")
            .unwrap()
            .1,
    )
    .unwrap();
    for user in 10..1510 {
        ratings += &format!("{user},1,3.0,{user}\r\n{user},3,4.0,{user}\r\n");
    }
    let far = ["1,2,0.5,1", "2,9,5.0,2", "11,3,1.0,3", "1,2,1.0,4"];
    for row in far {
        ratings += row;
        ratings += "\r\n";
    }
    // One new pair of a revisited user: kept.
    ratings += "2,2,2.0,5\r\n";
    let entries: Vec<(&str, Vec<u8>)> = fixture::entries()
        .into_iter()
        .map(|(name, data)| match name {
            "ratings.csv" | "ratings_small.csv" => (name, ratings.as_bytes().to_vec()),
            _ => (name, data),
        })
        .collect();
    let s = setup(fixture::zip_bytes(&entries)).await;
    let pool = &s.db.pool;
    let report = reelflow::pipeline::run_period(&s.cfg, pool, "2026-09".parse().unwrap(), false)
        .await
        .unwrap();
    assert!(report.succeeded(), "{}", report.failure());
    // The fixture's 5 rows (one of its 6 is an adjacent repeat), 3,000 others and (2, 2).
    assert_eq!(report.outputs["load"]["rows"]["ratings"], 5 + 3000 + 1);
    assert_eq!(report.outputs["load"]["rows"]["ratings_small"], 5 + 3000 + 1);
    // The rejects name every repeat, on its own line of the file, with its raw text.
    let first_far = 7 + 3000 + 1; // header + 6 fixture rows + 3,000 rows, 1-based
    let want: Vec<String> = ["ratings.csv", "ratings_small.csv"]
        .iter()
        .flat_map(|file| {
            std::iter::once(format!(
                r#"{{"file":"{file}","line":4,"reason":"duplicate_rating","raw":"1,1,1.0,1260759200"}}"#
            ))
            .chain(far.iter().enumerate().map(move |(i, raw)| {
                format!(
                    r#"{{"file":"{file}","line":{},"reason":"duplicate_rating","raw":"{raw}"}}"#,
                    first_far + i
                )
            }))
        })
        .collect();
    assert_eq!(
        rows(
            pool,
            "SELECT file, line, reason, raw FROM movies.rejects WHERE file LIKE 'ratings%' ORDER BY file, line"
        )
        .await,
        want
    );
    assert_eq!(
        rows(
            pool,
            "SELECT file, reason, rows FROM movies.reject_counts WHERE file LIKE 'ratings%' ORDER BY file"
        )
        .await,
        vec![
            r#"{"file":"ratings.csv","reason":"duplicate_rating","rows":5}"#.to_string(),
            r#"{"file":"ratings_small.csv","reason":"duplicate_rating","rows":5}"#.to_string(),
        ]
    );
    // Every kept pair once; the first occurrence's values won.
    let kept: Vec<String> = rows(
        pool,
        "SELECT user_id, movie_id, rating FROM movies.ratings WHERE (user_id, movie_id) IN ((1, 2), (2, 9), (11, 3), (2, 2)) ORDER BY 1, 2",
    )
    .await;
    assert_eq!(
        kept,
        [
            r#"{"user_id":1,"movie_id":2,"rating":3}"#,
            r#"{"user_id":2,"movie_id":2,"rating":2}"#,
            r#"{"user_id":2,"movie_id":9,"rating":0.5}"#,
            r#"{"user_id":11,"movie_id":3,"rating":4}"#,
        ]
    );
    // The clean's totals count no rejected repeat: they equal an aggregate of the table.
    assert!(movie_ratings_match_the_ratings_table(pool).await >= 2);
    let per_movie: i64 = sqlx::query_scalar("SELECT sum(ratings)::bigint FROM movies.ratings_per_movie")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(per_movie, 5 + 3000 + 1);
}

#[tokio::test]
async fn integers_written_as_floats_load_as_the_same_integers() {
    // The fixture re-saved pandas-style: integral values of integer columns as floats.
    let pandas = |name: &str, text: String| -> String {
        let swap = |text: String, from: &str, to: &str| {
            assert!(text.contains(from), "{name}: {from}");
            text.replace(from, to)
        };
        match name {
            "movies_metadata.csv" => {
                let t = swap(text, ",2787965087,", ",2787965087.0,");
                let t = swap(t, ",237000000,", ",2.37E8,");
                let t = swap(t, ",3000,", ",3000.00,");
                let t = swap(t, ",100,tt0000100,", ",100.0,tt0000100,");
                swap(t, ",6.5,10\n", ",6.5,10.0\n")
            }
            "credits.csv" => swap(text, ",103", ",1.03e2"),
            "links.csv" | "links_small.csv" => swap(swap(text, "\r\n4,", "\r\n4.0,"), ",103\r\n", ",103.0\r\n"),
            "ratings.csv" | "ratings_small.csv" => {
                let t = swap(text, "\r\n2,1,5.0,1260759300", "\r\n2.0,1.0,5.0,1.2607593E9");
                swap(t, "\r\n1,2,3.0,1260759179", "\r\n1,2.0,3.0,1260759179.0")
            }
            _ => text,
        }
    };
    let entries: Vec<(&str, Vec<u8>)> = fixture::entries()
        .into_iter()
        .map(|(name, data)| (name, pandas(name, String::from_utf8(data).unwrap()).into_bytes()))
        .collect();
    let s = setup(fixture::zip()).await;
    let pool = &s.db.pool;
    let run = |period: &str| reelflow::pipeline::run_period(&s.cfg, pool, period.parse().unwrap(), false);
    assert!(run("2026-05").await.unwrap().succeeded());
    let without_rejects = |v: Vec<(String, i64, String)>| -> Vec<(String, i64, String)> {
        v.into_iter().filter(|(t, _, _)| t != "rejects").collect()
    };
    let plain = without_rejects(published_checksums(pool).await);
    std::fs::write(
        s.dir.path().join("the-movies-dataset.zip"),
        fixture::zip_bytes(&entries),
    )
    .unwrap();
    let report = run("2026-06").await.unwrap();
    assert!(report.succeeded(), "{}", report.failure());
    assert_eq!(report.outputs["fetch"]["reused"], false);
    assert_eq!(
        without_rejects(published_checksums(pool).await),
        plain,
        "every table and report equal to the plain file's"
    );
    let revenue: Option<i64> = sqlx::query_scalar("SELECT revenue FROM movies.movies WHERE id = 103")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(revenue, Some(2_787_965_087));
}

/// Runs the engine on one run until it is finished.
async fn drive(cfg: &Config, pool: &PgPool, run_id: i64) {
    let dag = reelflow::pipeline::dag(cfg, pool).unwrap();
    let e = reelflow::engine::Engine::new(pool.clone(), vec![dag], reelflow::pipeline::engine_config(cfg).unwrap());
    let (_tx, rx) = tokio::sync::watch::channel(false);
    std::sync::Arc::new(e)
        .run(Some(run_id), rx, std::time::Duration::from_secs(5))
        .await
        .unwrap();
}

async fn attempts_per_task(pool: &PgPool, run_id: i64) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT task_id, count(*) FROM reelflow.attempts WHERE run_id = $1 GROUP BY task_id ORDER BY min(id)",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await
    .unwrap()
}

fn counts(v: &[(&str, i64)]) -> Vec<(String, i64)> {
    v.iter().map(|(t, n)| (t.to_string(), *n)).collect()
}

both_stores!(retrying_load_reuses_the_stored_clean_output_with_and_without_downstream);
async fn retrying_load_reuses_the_stored_clean_output_with_and_without_downstream(store: Store) {
    let s = setup_in(fixture::zip(), store).await;
    let pool = &s.db.pool;
    let period: Period = "2026-07".parse().unwrap();
    let first = reelflow::pipeline::run_period(&s.cfg, pool, period, false)
        .await
        .unwrap();
    assert!(first.succeeded());
    let run_id = first.run.id;
    let published = published_checksums(pool).await;
    let dag = reelflow::pipeline::dag_spec(&s.cfg);
    // The source and this machine's scratch folder disappear: fetching or cleaning again would
    // fail, so a passing retry proves load ran from the stored clean output.
    std::fs::remove_file(s.dir.path().join("the-movies-dataset.zip")).unwrap();
    std::fs::remove_dir_all(s.cfg.scratch_dir()).unwrap();

    // Without downstream: load runs again and builds a new ready snapshot; publish stays done.
    let cleared = reelflow::ops::retry(pool, &dag, run_id, "load", false, "test")
        .await
        .unwrap();
    assert_eq!(cleared, ["load"]);
    let again = reelflow::pipeline::run_period(&s.cfg, pool, period, false)
        .await
        .unwrap();
    assert!(again.already_done || again.succeeded());
    drive(&s.cfg, pool, run_id).await;
    assert_eq!(
        attempts_per_task(pool, run_id).await,
        counts(&[("fetch", 1), ("clean", 1), ("load", 2), ("validate", 1), ("publish", 1)])
    );
    let states: Vec<String> = sqlx::query_scalar("SELECT state FROM reelflow.snapshots ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(states, ["published", "ready"]);

    // With downstream: load and publish run again; the new snapshot is published.
    let cleared = reelflow::ops::retry(pool, &dag, run_id, "load", true, "test")
        .await
        .unwrap();
    assert_eq!(cleared, ["load", "validate", "publish"]);
    drive(&s.cfg, pool, run_id).await;
    assert_eq!(
        attempts_per_task(pool, run_id).await,
        counts(&[("fetch", 1), ("clean", 1), ("load", 3), ("validate", 2), ("publish", 2)])
    );
    let states: Vec<String> = sqlx::query_scalar("SELECT state FROM reelflow.snapshots ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(
        states,
        ["retired", "dropped", "published"],
        "the unpublished ready snapshot was superseded"
    );
    assert_eq!(published_checksums(pool).await, published, "same data");
    let actions: Vec<(String, String)> =
        sqlx::query_as("SELECT origin, action FROM reelflow.operator_actions ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(
        actions,
        vec![
            ("cli".into(), "trigger".into()),
            ("test".into(), "retry".into()),
            ("test".into(), "retry".into())
        ]
    );
}

#[tokio::test]
async fn a_backfilled_older_period_does_not_replace_the_newer_published_one() {
    let s = setup(fixture::zip()).await;
    let pool = &s.db.pool;
    let run = |p: &str| reelflow::pipeline::run_period(&s.cfg, pool, p.parse().unwrap(), false);
    assert!(run("2026-11").await.unwrap().succeeded());
    let report = run("2026-09").await.unwrap();
    assert!(report.succeeded());
    assert_eq!(report.outputs["publish"]["current"], false);
    let shown: Vec<(String, String)> = sqlx::query_as("SELECT period, state FROM reelflow.snapshots ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(
        shown,
        vec![
            ("2026-11".into(), "published".into()),
            ("2026-09".into(), "retired".into())
        ]
    );
    // The older period's snapshot is kept and readable under its own schema.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM reelflow_snap_2.movies")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(n, 8);
    // A publish retried after its result was lost (worker killed after the commit) gives the
    // same outcome and changes nothing.
    let again = reelflow_load::publish(pool, 2, 2).await.expect("publishing again");
    assert!(!again.current);
    assert_eq!(again.snapshot_id, 2);
    let after: Vec<(String, String)> = sqlx::query_as("SELECT period, state FROM reelflow.snapshots ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(after, shown);
    // But once a later snapshot of the period replaced it, it is not published again.
    let mut cfg = s.cfg.clone();
    cfg.load.reuse_unchanged = false;
    let rerun = reelflow::pipeline::run_period(&cfg, pool, "2026-09".parse().unwrap(), true)
        .await
        .unwrap();
    assert!(rerun.succeeded(), "{}", rerun.failure());
    assert_eq!(rerun.outputs["publish"]["snapshot_id"], 3);
    let err = reelflow_load::publish(pool, 2, 2)
        .await
        .expect_err("a replaced snapshot");
    // (Retention keeps only the newest snapshot of an older period, so it is dropped too.)
    assert!(err.to_string().contains("it is dropped"), "{err}");
    // Dropped by retention after its publish: a lost publish result repeats as done.
    sqlx::query("UPDATE reelflow.snapshots SET state = 'dropped', dropped_at = now() WHERE id = 3")
        .execute(pool)
        .await
        .unwrap();
    let again = reelflow_load::publish(pool, 3, 2).await.expect("publishing again");
    assert!(!again.current);
}

both_stores!(retention_deletes_the_artifacts_of_runs_whose_snapshots_are_gone);
async fn retention_deletes_the_artifacts_of_runs_whose_snapshots_are_gone(store: Store) {
    let mut s = setup_in(fixture::zip(), store).await;
    // No previous snapshot kept, of this period or another: publishing a newer period drops
    // the older one's.
    s.cfg.load.keep_previous = 0;
    s.cfg.load.keep_periods = 0;
    let pool = &s.db.pool;
    let keys = |r: &reelflow::pipeline::RunReport| {
        let (record, files) = clean_objects(r);
        let zip: ObjectRef = serde_json::from_value(r.outputs["fetch"]["object"].clone()).unwrap();
        let mut keys = vec![zip.key, record.key];
        keys.extend(files.into_values().map(|o| o.key));
        keys
    };
    let old = reelflow::pipeline::run_period(&s.cfg, pool, "2026-05".parse().unwrap(), false)
        .await
        .unwrap();
    assert!(old.succeeded(), "{}", old.failure());
    let old_keys = keys(&old);
    assert!(old_keys.len() >= 8, "{old_keys:?}");
    for k in &old_keys {
        assert!(s.object_path(k).is_file(), "{k} stored");
        assert!(
            k.starts_with(
                &s.artifacts()
                    .key(&format!("movies_monthly/2026-05/run-{}/", old.run.id))
            ),
            "{k}"
        );
    }
    let new = reelflow::pipeline::run_period(&s.cfg, pool, "2026-06".parse().unwrap(), false)
        .await
        .unwrap();
    assert!(new.succeeded(), "{}", new.failure());
    assert_eq!(
        snapshot_states(pool)
            .await
            .iter()
            .map(|(_, st)| st.as_str())
            .collect::<Vec<_>>(),
        ["dropped", "published"]
    );
    for k in &old_keys {
        assert!(!s.object_path(k).exists(), "{k} deleted with its run's snapshot");
    }
    for k in keys(&new) {
        assert!(s.object_path(&k).is_file(), "{k} of the published snapshot kept");
    }
    // A load of the swept run says what is missing and what to do.
    let (record, _) = clean_objects(&old);
    let err = reelflow_load::load_snapshot(
        pool,
        &s.artifacts(),
        &record,
        "movies_monthly",
        "2026-05",
        None,
        &Default::default(),
    )
    .await
    .expect_err("the swept record is gone");
    assert!(
        err.to_string().contains("is missing") && err.to_string().contains("retry the task"),
        "{err}"
    );
}

both_stores!(an_object_altered_after_its_record_was_written_fails_the_load_and_is_never_loaded);
async fn an_object_altered_after_its_record_was_written_fails_the_load_and_is_never_loaded(store: Store) {
    let s = setup_in(fixture::zip(), store).await;
    let pool = &s.db.pool;
    let good = reelflow::pipeline::run_period(&s.cfg, pool, "2026-04".parse().unwrap(), false)
        .await
        .unwrap();
    assert!(good.succeeded(), "{}", good.failure());
    // Same size, other bytes: only the checksum can tell.
    let (record, files) = clean_objects(&good);
    let path = s.object_path(&files["movies.tsv"].key);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.iter().position(|b| b.is_ascii_digit()).unwrap();
    bytes[at] = if bytes[at] == b'9' { b'8' } else { bytes[at] + 1 };
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let err = reelflow_load::load_snapshot(
        pool,
        &s.artifacts(),
        &record,
        "movies_monthly",
        "2026-04",
        None,
        &Default::default(),
    )
    .await
    .expect_err("an altered object");
    let task_err: reelflow_dag::TaskError = err.into();
    assert!(!task_err.is_retryable(), "{task_err}");
    assert!(task_err.message.contains("does not match its record"), "{task_err}");
    let states = snapshot_states(pool).await;
    assert_eq!(states.last().map(|(_, st)| st.as_str()), Some("failed"), "{states:?}");
}
