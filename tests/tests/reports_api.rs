//! The consumer report endpoints over a real socket against a real PostgreSQL, with the fixture
//! snapshot loaded through the real pipeline.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use reelflow::api::{router, AppState};
use reelflow::config::Config;
use reelflow_dag::{DagSpec, Period, RetryPolicy, TaskSpec};
use reelflow_e2e::http::{request, Response};
use reelflow_e2e::{fixture, pg::TestDb};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::sync::OnceCell;

fn dag() -> DagSpec {
    let t = |id: &str, up: &[&str]| TaskSpec {
        id: id.into(),
        upstream: up.iter().map(|s| s.to_string()).collect(),
        retry: RetryPolicy::default(),
    };
    DagSpec::new(
        "movies_monthly",
        vec![
            t("fetch", &[]),
            t("clean", &["fetch"]),
            t("load", &["clean"]),
            t("publish", &["load"]),
        ],
    )
    .unwrap()
}

async fn start(pool: PgPool) -> SocketAddr {
    let state = Arc::new(AppState::new(pool, dag(), None));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn config(db_url: &str, source: &Path, artifacts: &Path) -> Config {
    let vars: HashMap<&str, String> = [
        ("DATABASE_URL", db_url.to_string()),
        ("REELFLOW_SOURCE", source.display().to_string()),
        ("REELFLOW_ARTIFACTS_DIR", artifacts.display().to_string()),
        // Every rerun here must publish a new snapshot, even of an unchanged source.
        ("REELFLOW_LOAD_REUSE_UNCHANGED", "false".to_string()),
    ]
    .into_iter()
    .collect();
    Config::load(None, &|k| vars.get(k).cloned()).expect("test config")
}

/// A database, a source file and the config that loads it.
struct Loaded {
    db: TestDb,
    _dir: tempfile::TempDir,
    source: PathBuf,
    cfg: Config,
}

impl Loaded {
    async fn new() -> Loaded {
        let db = TestDb::new().await;
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("the-movies-dataset.zip");
        std::fs::write(&source, fixture::zip()).unwrap();
        let cfg = config(&db.url, &source, &dir.path().join("artifacts"));
        Loaded {
            db,
            _dir: dir,
            source,
            cfg,
        }
    }

    /// Runs the period through the whole pipeline; returns the published snapshot id.
    async fn run(&self, rerun: bool) -> i64 {
        let report = reelflow::pipeline::run_period(&self.cfg, &self.db.pool, period(), rerun)
            .await
            .expect("pipeline");
        assert!(report.succeeded(), "{}", report.failure());
        report.outputs["publish"]["snapshot_id"].as_i64().unwrap()
    }
}

fn period() -> Period {
    "2026-11".parse().unwrap()
}

/// The fixture with company 2 renamed, to tell two snapshots apart by their rows.
fn variant_zip() -> Vec<u8> {
    let entries: Vec<(&str, Vec<u8>)> = fixture::entries()
        .into_iter()
        .map(|(name, data)| {
            if name == "movies_metadata.csv" {
                let text = String::from_utf8(data)
                    .unwrap()
                    .replace("Acme Pictures", "Acme Studios");
                (name, text.into_bytes())
            } else {
                (name, data)
            }
        })
        .collect();
    fixture::zip_bytes(&entries)
}

/// The fixture published once, shared by the tests that only read: (database URL, snapshot id).
async fn shared() -> &'static (String, i64) {
    static SHARED: OnceCell<(String, i64)> = OnceCell::const_new();
    SHARED
        .get_or_init(|| async {
            // Built on a runtime of its own: the tests' runtimes end with their tests.
            std::thread::spawn(|| {
                tokio::runtime::Runtime::new().unwrap().block_on(async {
                    let l = Loaded::new().await;
                    let id = l.run(false).await;
                    (l.db.url.clone(), id)
                })
            })
            .join()
            .unwrap()
        })
        .await
}

/// A server over the shared snapshot.
async fn shared_server() -> (SocketAddr, i64) {
    let (url, id) = shared().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(url)
        .await
        .unwrap();
    (start(pool).await, *id)
}

async fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path, &[], None).await
}

async fn get_ok(addr: SocketAddr, path: &str) -> Value {
    let r = get(addr, path).await;
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    r.json()
}

/// Selected fields of every row, as compact strings.
fn pick(page: &Value, keys: &[&str]) -> Vec<String> {
    page["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| keys.iter().map(|k| r[*k].to_string()).collect::<Vec<_>>().join(" "))
        .collect()
}

/// Every page of a listing, following `next` with the given page size.
async fn all_pages(addr: SocketAddr, first: &str) -> (Vec<Value>, usize) {
    let mut rows = Vec::new();
    let mut pages = 0;
    let mut path = first.to_string();
    let mut snapshot = None;
    loop {
        let page = get_ok(addr, &path).await;
        pages += 1;
        let id = page["snapshot"]["id"].as_i64().unwrap();
        assert_eq!(*snapshot.get_or_insert(id), id, "{path}: one snapshot across pages");
        rows.extend(page["rows"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => {
                assert!(page["next_cursor"].is_string());
                path = next.to_string();
            }
            None => {
                assert!(page["next_cursor"].is_null());
                break;
            }
        }
        assert!(pages < 100, "{first}: runaway pagination");
    }
    (rows, pages)
}

#[tokio::test]
async fn every_endpoint_serves_the_fixture_rows_and_names_its_snapshot() {
    let (addr, snap) = shared_server().await;

    let r = get(addr, "/api/v1/reports/company-yearly").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-reelflow-snapshot"), Some(snap.to_string().as_str()));
    assert_eq!(r.header("x-reelflow-snapshot-period"), Some("2026-11"));
    assert!(r.header("etag").unwrap().starts_with(&format!("\"s{snap}-")));
    assert!(r.header("last-modified").unwrap().ends_with(" GMT"));
    let page = r.json();
    assert_eq!(page["snapshot"]["id"], snap);
    assert_eq!(page["snapshot"]["period"], "2026-11");
    assert_eq!(page["snapshot"]["current"], true);
    assert!(page["snapshot"]["published_at"].is_string());
    assert_eq!(page["sort"], json!(["company_id", "year"]));
    assert_eq!(
        (page["order"].as_str(), page["limit"].as_i64()),
        (Some("asc"), Some(100))
    );
    assert!(page["next"].is_null() && page["next_cursor"].is_null());
    // DESIGN section 3, worked out by hand in tests/tests/pipeline.rs; columns in catalog order.
    assert_eq!(
        page["rows"],
        json!([
            {"company_id":1,"company_name":"Lion's Gate","year":2010,"movies":2,"budget_total":1000,"revenue_total":8000,"profit_total":2000,"movies_with_budget":1,"movies_with_revenue":2,"movies_with_profit":1,"avg_popularity":7.0},
            {"company_id":1,"company_name":"Lion's Gate","year":2011,"movies":1,"budget_total":237000000,"revenue_total":2787965087_i64,"profit_total":2550965087_i64,"movies_with_budget":1,"movies_with_revenue":1,"movies_with_profit":1,"avg_popularity":185.07},
            {"company_id":2,"company_name":"Acme Pictures","year":2010,"movies":2,"budget_total":3000,"revenue_total":3000,"profit_total":2000,"movies_with_budget":2,"movies_with_revenue":1,"movies_with_profit":1,"avg_popularity":8.0},
            {"company_id":2,"company_name":"Acme Pictures","year":2011,"movies":1,"budget_total":null,"revenue_total":null,"profit_total":null,"movies_with_budget":0,"movies_with_revenue":0,"movies_with_profit":0,"avg_popularity":null},
        ])
    );
    assert!(r.body.find("\"company_id\"").unwrap() < r.body.find("\"avg_popularity\"").unwrap());

    let page = get_ok(addr, "/api/v1/reports/company-genre-yearly").await;
    assert_eq!(
        pick(
            &page,
            &[
                "company_id",
                "company_name",
                "year",
                "genre_id",
                "genre_name",
                "releases"
            ]
        ),
        [
            r#"1 "Lion's Gate" 2010 18 "Drama" 1"#,
            r#"1 "Lion's Gate" 2010 28 "Action" 2"#,
            r#"1 "Lion's Gate" 2011 28 "Action" 1"#,
            r#"2 "Acme Pictures" 2010 18 "Drama" 2"#,
            r#"2 "Acme Pictures" 2010 28 "Action" 1"#,
            r#"2 "Acme Pictures" 2010 35 "Comedy" 1"#,
            r#"2 "Acme Pictures" 2011 35 "Comedy" 1"#,
        ]
    );

    let page = get_ok(addr, "/api/v1/reports/genre-yearly?sort=year,popularity_rank").await;
    assert_eq!(page["sort"], json!(["year", "popularity_rank"]));
    assert_eq!(
        page["rows"],
        json!([
            {"genre_id":18,"genre_name":"Drama","year":2010,"movies":2,"avg_popularity":8.0,"popularity_rank":1,"budget_total":3000,"revenue_total":3000,"profit_total":2000,"movies_with_budget":2,"movies_with_revenue":1,"movies_with_profit":1},
            {"genre_id":28,"genre_name":"Action","year":2010,"movies":2,"avg_popularity":7.0,"popularity_rank":2,"budget_total":1000,"revenue_total":8000,"profit_total":2000,"movies_with_budget":1,"movies_with_revenue":2,"movies_with_profit":1},
            {"genre_id":35,"genre_name":"Comedy","year":2010,"movies":1,"avg_popularity":6.0,"popularity_rank":3,"budget_total":2000,"revenue_total":null,"profit_total":null,"movies_with_budget":1,"movies_with_revenue":0,"movies_with_profit":0},
            {"genre_id":28,"genre_name":"Action","year":2011,"movies":1,"avg_popularity":185.07,"popularity_rank":1,"budget_total":237000000,"revenue_total":2787965087_i64,"profit_total":2550965087_i64,"movies_with_budget":1,"movies_with_revenue":1,"movies_with_profit":1},
            {"genre_id":35,"genre_name":"Comedy","year":2011,"movies":1,"avg_popularity":null,"popularity_rank":2,"budget_total":null,"revenue_total":null,"profit_total":null,"movies_with_budget":0,"movies_with_revenue":0,"movies_with_profit":0},
            {"genre_id":35,"genre_name":"Comedy","year":2012,"movies":1,"avg_popularity":5.0,"popularity_rank":1,"budget_total":500,"revenue_total":400,"profit_total":-100,"movies_with_budget":1,"movies_with_revenue":1,"movies_with_profit":1},
            {"genre_id":18,"genre_name":"Drama","year":2012,"movies":1,"avg_popularity":5.0,"popularity_rank":2,"budget_total":500,"revenue_total":400,"profit_total":-100,"movies_with_budget":1,"movies_with_revenue":1,"movies_with_profit":1},
        ])
    );
    // The default sort is by genre, then year.
    let page = get_ok(addr, "/api/v1/reports/genre-yearly").await;
    assert_eq!(
        pick(&page, &["genre_id", "year", "popularity_rank"]),
        [
            "18 2010 1",
            "18 2012 2",
            "28 2010 2",
            "28 2011 1",
            "35 2010 3",
            "35 2011 2",
            "35 2012 1"
        ]
    );

    let page = get_ok(addr, "/api/v1/reports/most-popular-genre-yearly").await;
    assert_eq!(
        page["rows"],
        json!([
            {"year":2010,"genre_id":18,"genre_name":"Drama","avg_popularity":8.0},
            {"year":2011,"genre_id":28,"genre_name":"Action","avg_popularity":185.07},
            {"year":2012,"genre_id":35,"genre_name":"Comedy","avg_popularity":5.0},
        ])
    );

    let page = get_ok(addr, "/api/v1/reports/movie-ratings").await;
    assert_eq!(
        page["rows"],
        json!([{"movie_id":100,"ratings":2,"avg_rating":4.5}, {"movie_id":101,"ratings":1,"avg_rating":3.0}])
    );

    let page = get_ok(addr, "/api/v1/companies").await;
    assert_eq!(
        page["rows"],
        json!([{"id":1,"name":"Lion's Gate"},{"id":2,"name":"Acme Pictures"}])
    );
    let page = get_ok(addr, "/api/v1/genres").await;
    assert_eq!(
        pick(&page, &["id", "name"]),
        [r#"18 "Drama""#, r#"28 "Action""#, r#"35 "Comedy""#]
    );

    let page = get_ok(addr, "/api/v1/companies/2/yearly").await;
    assert_eq!(page["sort"], json!(["year"]));
    assert_eq!(pick(&page, &["company_id", "year", "movies"]), ["2 2010 2", "2 2011 1"]);
    let page = get_ok(addr, "/api/v1/companies/1/genre-yearly").await;
    assert_eq!(
        pick(&page, &["year", "genre_id", "releases"]),
        ["2010 18 1", "2010 28 2", "2011 28 1"]
    );
    let page = get_ok(addr, "/api/v1/genres/35/yearly").await;
    assert_eq!(
        pick(&page, &["year", "popularity_rank", "movies"]),
        ["2010 3 1", "2011 2 1", "2012 1 1"]
    );

    // The snapshot list (served by api.rs) has the counts, and one snapshot has them per table
    // and per file and reason.
    let list = get_ok(addr, "/api/v1/snapshots").await;
    let s = &list["snapshots"][0];
    assert_eq!((s["id"].as_i64(), s["state"].as_str()), (Some(snap), Some("published")));
    assert!(s["rows_total"].as_i64().unwrap() > 0, "{s}");
    let r = get(addr, &format!("/api/v1/snapshots/{snap}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-reelflow-snapshot"), Some(snap.to_string().as_str()));
    let detail = r.json();
    assert_eq!(
        (detail["state"].as_str(), detail["schema"].as_str()),
        (Some("published"), Some("movies"))
    );
    assert_eq!(detail["rows_total"], s["rows_total"]);
    assert_eq!(detail["row_counts"]["companies"], 2);
    let reasons = &detail["reject_counts"]["movies_metadata.csv"];
    assert_eq!(
        (reasons["duplicate_id"].as_i64(), reasons["bad_id"].as_i64()),
        (Some(3), Some(3)),
        "{detail}"
    );
    let sum: i64 = detail["reject_counts"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|f| f.as_object().unwrap().values().map(|n| n.as_i64().unwrap()))
        .sum();
    assert_eq!(Some(sum), detail["rejects_total"].as_i64());
    let etag = r.header("etag").unwrap();
    let r = request(
        addr,
        "GET",
        &format!("/api/v1/snapshots/{snap}"),
        &[("If-None-Match", etag)],
        None,
    )
    .await;
    assert_eq!(r.status, 304);
    assert_eq!(get(addr, "/api/v1/snapshots/999999").await.status, 404);
    assert_eq!(get(addr, "/api/v1/snapshots/x").await.status, 400);
}

#[tokio::test]
async fn filters_select_the_rows_they_name() {
    let (addr, _) = shared_server().await;
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "/api/v1/reports/company-yearly?year_from=2011",
            &["company_id", "year"],
            &["1 2011", "2 2011"],
        ),
        (
            "/api/v1/reports/company-yearly?year_to=2010",
            &["company_id", "year"],
            &["1 2010", "2 2010"],
        ),
        (
            "/api/v1/reports/company-yearly?year_from=2010&year_to=2010&company_id=2",
            &["company_id", "year"],
            &["2 2010"],
        ),
        ("/api/v1/reports/company-yearly?company_id=999", &["company_id"], &[]),
        (
            "/api/v1/reports/company-yearly?sort=year,company_id&order=desc",
            &["company_id", "year"],
            &["2 2011", "1 2011", "2 2010", "1 2010"],
        ),
        (
            "/api/v1/reports/company-genre-yearly?genre_id=28",
            &["company_id", "year", "releases"],
            &["1 2010 2", "1 2011 1", "2 2010 1"],
        ),
        (
            "/api/v1/reports/company-genre-yearly?company_id=2&year_from=2011",
            &["company_id", "year", "genre_id"],
            &["2 2011 35"],
        ),
        (
            "/api/v1/reports/company-genre-yearly?sort=genre_id,year,company_id&year_to=2010",
            &["genre_id", "year", "company_id"],
            &["18 2010 1", "18 2010 2", "28 2010 1", "28 2010 2", "35 2010 2"],
        ),
        (
            "/api/v1/reports/genre-yearly?genre_id=18",
            &["genre_id", "year"],
            &["18 2010", "18 2012"],
        ),
        (
            "/api/v1/reports/genre-yearly?sort=year,popularity_rank&rank_to=2&year_from=2011",
            &["year", "popularity_rank", "genre_name"],
            &[
                r#"2011 1 "Action""#,
                r#"2011 2 "Comedy""#,
                r#"2012 1 "Comedy""#,
                r#"2012 2 "Drama""#,
            ],
        ),
        (
            "/api/v1/reports/most-popular-genre-yearly?year_from=2011&year_to=2011",
            &["year", "genre_name"],
            &[r#"2011 "Action""#],
        ),
        (
            "/api/v1/reports/most-popular-genre-yearly?genre_id=35",
            &["year"],
            &["2012"],
        ),
        (
            "/api/v1/reports/most-popular-genre-yearly?order=desc",
            &["year"],
            &["2012", "2011", "2010"],
        ),
        (
            "/api/v1/reports/movie-ratings?movie_id=101",
            &["movie_id", "ratings"],
            &["101 1"],
        ),
        // Name search: case-insensitive substring; wildcards and quotes are plain characters.
        ("/api/v1/companies?q=gate", &["id"], &["1"]),
        ("/api/v1/companies?q=ACME%20pic", &["id"], &["2"]),
        ("/api/v1/companies?q=%27", &["id"], &["1"]),
        ("/api/v1/companies?q=%25", &["id"], &[]),
        ("/api/v1/companies?q=_", &["id"], &[]),
        (
            "/api/v1/companies?q=%27%3B%20DROP%20TABLE%20companies%3B--",
            &["id"],
            &[],
        ),
        ("/api/v1/companies?q=e&order=desc", &["id"], &["2", "1"]),
        ("/api/v1/genres?q=dra", &["id", "name"], &[r#"18 "Drama""#]),
        ("/api/v1/companies/1/yearly?year_from=2011", &["year"], &["2011"]),
        (
            "/api/v1/companies/2/genre-yearly?genre_id=35",
            &["year", "genre_id"],
            &["2010 35", "2011 35"],
        ),
        (
            "/api/v1/genres/28/yearly?year_to=2010",
            &["year", "genre_name"],
            &[r#"2010 "Action""#],
        ),
        // A known company with no report rows in the range is an empty page, not a 404.
        ("/api/v1/companies/1/yearly?year_from=2030", &["year"], &[]),
    ];
    for (path, keys, want) in cases {
        let page = get_ok(addr, path).await;
        assert_eq!(pick(&page, keys), *want, "{path}");
    }
    // Still there after the injection attempt.
    assert_eq!(
        get_ok(addr, "/api/v1/companies").await["rows"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn cursor_pages_cover_every_row_once_for_every_endpoint_sort_and_order() {
    let (addr, _) = shared_server().await;
    let doc = get_ok(addr, "/api/v1/openapi.json").await;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let params = item["get"]["parameters"].as_array().into_iter().flatten();
        let Some(sort) = params.into_iter().find(|p| p["name"] == "sort") else {
            continue;
        };
        let path = path.replace("{id}", if path.starts_with("/api/v1/genres") { "35" } else { "2" });
        for sort in sort["schema"]["enum"].as_array().unwrap() {
            let sort = sort.as_str().unwrap();
            for order in ["asc", "desc"] {
                let base = format!("{path}?sort={sort}&order={order}");
                let whole = get_ok(addr, &format!("{base}&limit=1000")).await;
                let whole = whole["rows"].as_array().unwrap().clone();
                assert!(!whole.is_empty(), "{base}");
                // The whole list is in the sort order asked for, without duplicate keys.
                let key = |r: &Value| -> Vec<i64> { sort.split(',').map(|k| r[k].as_i64().unwrap()).collect() };
                let keys: Vec<Vec<i64>> = whole.iter().map(key).collect();
                let mut sorted = keys.clone();
                sorted.sort();
                if order == "desc" {
                    sorted.reverse();
                }
                sorted.dedup();
                assert_eq!(keys, sorted, "{base}");
                for limit in [1, 2] {
                    let (rows, pages) = all_pages(addr, &format!("{base}&limit={limit}")).await;
                    assert_eq!(rows, whole, "{base}&limit={limit}");
                    assert_eq!(pages, whole.len().div_ceil(limit), "{base}&limit={limit}");
                }
            }
        }
    }

    // The cursor travels in headers too, for CSV readers.
    let r = get(addr, "/api/v1/reports/company-yearly?limit=3&format=csv").await;
    let cursor = r.header("x-reelflow-next-cursor").unwrap().to_string();
    assert_eq!(
        r.header("link"),
        Some(format!("</api/v1/reports/company-yearly?limit=3&format=csv&cursor={cursor}>; rel=\"next\"").as_str())
    );
    let r = get(
        addr,
        &format!("/api/v1/reports/company-yearly?limit=3&format=csv&cursor={cursor}"),
    )
    .await;
    assert_eq!(r.body.lines().count(), 2, "{}", r.body);
    assert_eq!(r.header("link"), None);
    // The page size may change between pages; the filters may not.
    let first = get_ok(addr, "/api/v1/reports/company-genre-yearly?company_id=2&limit=1").await;
    let c = first["next_cursor"].as_str().unwrap();
    let rest = get_ok(
        addr,
        &format!("/api/v1/reports/company-genre-yearly?company_id=2&limit=10&cursor={c}"),
    )
    .await;
    assert_eq!(rest["rows"].as_array().unwrap().len(), 3);
    let r = get(
        addr,
        &format!("/api/v1/reports/company-genre-yearly?company_id=1&limit=10&cursor={c}"),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.json()["error"]["message"].as_str().unwrap().starts_with("cursor:"));
}

#[tokio::test]
async fn csv_on_accept_header_or_format_parameter() {
    let (addr, snap) = shared_server().await;
    let want =
        "year,genre_id,genre_name,avg_popularity\r\n2010,18,Drama,8\r\n2011,28,Action,185.07\r\n2012,35,Comedy,5\r\n";
    for (path, headers) in [
        ("/api/v1/reports/most-popular-genre-yearly?format=csv", vec![]),
        (
            "/api/v1/reports/most-popular-genre-yearly",
            vec![("Accept", "text/csv")],
        ),
        (
            "/api/v1/reports/most-popular-genre-yearly",
            vec![("Accept", "application/json;q=0.5, text/csv")],
        ),
    ] {
        let r = request(addr, "GET", path, &headers, None).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_eq!(
            r.header("content-type"),
            Some("text/csv; charset=utf-8; header=present")
        );
        assert_eq!(r.header("x-reelflow-snapshot"), Some(snap.to_string().as_str()));
        assert!(r.header("etag").is_some() && r.header("last-modified").is_some());
        assert_eq!(r.body, want, "{path}");
    }
    // JSON wins when asked for, or preferred, or when format=json overrides Accept.
    for (path, accept) in [
        ("/api/v1/reports/most-popular-genre-yearly", "application/json"),
        (
            "/api/v1/reports/most-popular-genre-yearly",
            "text/csv;q=0.1, application/json",
        ),
        ("/api/v1/reports/most-popular-genre-yearly?format=json", "text/csv"),
        ("/api/v1/reports/most-popular-genre-yearly", "*/*"),
    ] {
        let r = request(addr, "GET", path, &[("Accept", accept)], None).await;
        assert_eq!(r.header("content-type"), Some("application/json"), "{path} {accept}");
    }
    // Nulls are empty fields; texts are quoted only when they must be.
    let r = get(addr, "/api/v1/reports/company-yearly?company_id=2&format=csv").await;
    assert_eq!(
        r.body,
        "company_id,company_name,year,movies,budget_total,revenue_total,profit_total,movies_with_budget,movies_with_revenue,movies_with_profit,avg_popularity\r\n\
         2,Acme Pictures,2010,2,3000,3000,2000,2,1,1,8\r\n\
         2,Acme Pictures,2011,1,,,,0,0,0,\r\n"
    );
    // CSV and JSON of the same rows are different representations.
    let json = get(addr, "/api/v1/reports/company-yearly?company_id=2").await;
    assert_ne!(json.header("etag"), r.header("etag"));
    assert_eq!(r.header("vary"), Some("Accept"));
}

#[tokio::test]
async fn a_matching_if_none_match_gets_304() {
    let (addr, snap) = shared_server().await;
    let path = "/api/v1/reports/genre-yearly?genre_id=35";
    let r = get(addr, path).await;
    let etag = r.header("etag").unwrap().to_string();
    let last_modified = r.header("last-modified").unwrap().to_string();
    for inm in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"nope\", {etag}"),
        "*".to_string(),
    ] {
        let r = request(addr, "GET", path, &[("If-None-Match", &inm)], None).await;
        assert_eq!(r.status, 304, "{inm}: {}", r.body);
        assert_eq!(r.body, "");
        assert_eq!(r.header("etag"), Some(etag.as_str()));
        assert_eq!(r.header("x-reelflow-snapshot"), Some(snap.to_string().as_str()));
    }
    let r = request(addr, "GET", path, &[("If-None-Match", "\"s1-0000\"")], None).await;
    assert_eq!(r.status, 200);
    // Another selection, page or representation is another ETag.
    for other in [
        "/api/v1/reports/genre-yearly?genre_id=18",
        "/api/v1/reports/genre-yearly?genre_id=35&limit=2",
        "/api/v1/reports/genre-yearly?genre_id=35&format=csv",
        "/api/v1/reports/genre-yearly?genre_id=35&order=desc",
    ] {
        let r = request(addr, "GET", other, &[("If-None-Match", &etag)], None).await;
        assert_eq!(r.status, 200, "{other}");
        assert_ne!(r.header("etag"), Some(etag.as_str()), "{other}");
    }
    // If-Modified-Since is honoured when there is no If-None-Match.
    let r = request(addr, "GET", path, &[("If-Modified-Since", &last_modified)], None).await;
    assert_eq!(r.status, 304);
    let r = request(
        addr,
        "GET",
        path,
        &[("If-Modified-Since", "Thu, 01 Jan 2015 00:00:00 GMT")],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    // The same request gives the same ETag (it is stable, not per response).
    assert_eq!(get(addr, path).await.header("etag"), Some(etag.as_str()));
}

#[tokio::test]
async fn bad_parameters_get_400_naming_them_and_unknown_ids_404() {
    let (addr, _) = shared_server().await;
    let cases: &[(&str, u16, &str)] = &[
        ("/api/v1/reports/company-yearly?year_from=abc", 400, "year_from:"),
        ("/api/v1/reports/company-yearly?year_to=10000", 400, "year_to:"),
        (
            "/api/v1/reports/company-yearly?year_from=2012&year_to=2010",
            400,
            "year_from:",
        ),
        ("/api/v1/reports/company-yearly?company_id=0", 400, "company_id:"),
        ("/api/v1/reports/company-yearly?company_id=1;DROP", 400, "company_id:"),
        (
            "/api/v1/reports/company-yearly?genre_id=28",
            400,
            "genre_id: unknown parameter",
        ),
        ("/api/v1/reports/company-yearly?limit=0", 400, "limit:"),
        ("/api/v1/reports/company-yearly?limit=1001", 400, "limit:"),
        (
            "/api/v1/reports/company-yearly?limit=1&limit=2",
            400,
            "limit: given more than once",
        ),
        ("/api/v1/reports/company-yearly?sort=profit_total", 400, "sort:"),
        ("/api/v1/reports/company-yearly?order=up", 400, "order:"),
        ("/api/v1/reports/company-yearly?format=xml", 400, "format:"),
        ("/api/v1/reports/company-yearly?cursor=garbage", 400, "cursor:"),
        ("/api/v1/reports/company-yearly?snapshot=x", 400, "snapshot:"),
        ("/api/v1/reports/genre-yearly?rank_to=-1", 400, "rank_to:"),
        ("/api/v1/companies?q=", 400, "q:"),
        ("/api/v1/companies/abc/yearly", 400, "id:"),
        ("/api/v1/companies/-4/yearly", 400, "id:"),
        (
            "/api/v1/companies/1/yearly?company_id=1",
            400,
            "company_id: unknown parameter",
        ),
        ("/api/v1/companies/999/yearly", 404, "no company 999 in snapshot"),
        ("/api/v1/companies/999/genre-yearly", 404, "no company 999"),
        ("/api/v1/genres/999/yearly", 404, "no genre 999"),
        (
            "/api/v1/reports/company-yearly?snapshot=999999",
            404,
            "no readable snapshot 999999",
        ),
        ("/api/v1/reports/no-such-report", 404, "no such endpoint"),
    ];
    for (path, status, needle) in cases {
        let r = get(addr, path).await;
        assert_eq!(r.status, *status, "{path}: {}", r.body);
        let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(msg.contains(needle), "{path}: {msg}");
        assert!(!msg.contains("SELECT") && !msg.contains("sqlx"), "{path}: {msg}");
    }
    let r = get(addr, &format!("/api/v1/companies?q={}", "x".repeat(201))).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.json()["error"]["message"].as_str().unwrap().starts_with("q:"));
    // A cursor of one endpoint does not work on another.
    let page = get_ok(addr, "/api/v1/reports/company-yearly?limit=1").await;
    let c = page["next_cursor"].as_str().unwrap();
    let r = get(addr, &format!("/api/v1/reports/genre-yearly?limit=1&cursor={c}")).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = get(
        addr,
        &format!("/api/v1/reports/company-yearly?limit=1&order=desc&cursor={c}"),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
}

#[tokio::test]
async fn the_openapi_document_describes_what_the_server_does() {
    let (addr, snap) = shared_server().await;
    let (url, _) = shared().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap();
    let doc = get_ok(addr, "/api/v1/openapi.json").await;
    assert_eq!(doc["openapi"], "3.1.0");
    let schemas = &doc["components"]["schemas"];
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 12 + 9, "{:?}", paths.keys());
    for (path, item) in paths {
        let op = &item["get"];
        // The orchestration endpoints are checked by tests/tests/rough_edges.rs.
        if item
            .as_object()
            .unwrap()
            .values()
            .any(|o| o["tags"][0] == "orchestration")
        {
            continue;
        }
        let id = match path.as_str() {
            p if p.starts_with("/api/v1/genres") => "28".to_string(),
            p if p.starts_with("/api/v1/snapshots") => snap.to_string(),
            _ => "1".to_string(),
        };
        let concrete = path.replace("{id}", &id);
        let body = get_ok(addr, &concrete).await;
        if path == "/api/v1/openapi.json" {
            continue;
        }
        // Rows carry exactly the documented columns, with the documented types.
        let json_schema = &op["responses"]["200"]["content"]["application/json"]["schema"];
        let deref = |v: &Value| -> Value {
            let name = v["$ref"].as_str().unwrap().trim_start_matches("#/components/schemas/");
            schemas[name].clone()
        };
        if json_schema.get("$ref").is_some() {
            // A single object (a snapshot's details).
            let props = deref(json_schema)["properties"].as_object().unwrap().clone();
            let mut got: Vec<&String> = body.as_object().unwrap().keys().collect();
            let mut want: Vec<&String> = props.keys().collect();
            got.sort();
            want.sort();
            assert_eq!(got, want, "{path}");
            continue;
        }
        let rows_key = if path == "/api/v1/snapshots" {
            "snapshots"
        } else {
            "rows"
        };
        let row_schema = deref(&json_schema["properties"][rows_key]["items"]);
        let props = row_schema["properties"].as_object().unwrap();
        let rows = body[rows_key].as_array().unwrap();
        assert!(!rows.is_empty(), "{concrete}");
        for row in rows {
            let row = row.as_object().unwrap();
            let mut got: Vec<&String> = row.keys().collect();
            let mut want: Vec<&String> = props.keys().collect();
            got.sort();
            want.sort();
            assert_eq!(got, want, "{path}");
            for (k, v) in row {
                let types: Vec<&str> = match &props[k]["type"] {
                    Value::String(t) => vec![t.as_str()],
                    Value::Array(ts) => ts.iter().map(|t| t.as_str().unwrap()).collect(),
                    t => panic!("{path} {k}: {t}"),
                };
                let fits = match v {
                    Value::Null => types.contains(&"null") || path == "/api/v1/snapshots",
                    Value::Number(n) if n.is_i64() => types.contains(&"integer") || types.contains(&"number"),
                    Value::Number(_) => types.contains(&"number"),
                    Value::String(_) => types.contains(&"string"),
                    Value::Bool(_) => types.contains(&"boolean"),
                    _ => false,
                };
                assert!(fits, "{path} {k}: {v} is not {types:?}");
            }
        }
        // Column formats agree with the relation PostgreSQL built.
        if let Some(relation) = op["description"]
            .as_str()
            .and_then(|d| d.split("relation `").nth(1))
            .and_then(|d| d.split('`').next())
        {
            let db_types: HashMap<String, String> = sqlx::query_as(
                "SELECT column_name::text, data_type::text FROM information_schema.columns
                 WHERE table_schema = 'movies' AND table_name = $1",
            )
            .bind(relation)
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
            for (k, p) in props {
                let expected = match (p["format"].as_str(), &p["type"]) {
                    (Some("int32"), _) => "integer",
                    (Some("int64"), _) => "bigint",
                    (Some("double"), _) => "double precision",
                    _ => "text",
                };
                assert_eq!(db_types.get(k).map(String::as_str), Some(expected), "{relation}.{k}");
            }
        }
        // Every documented parameter is accepted with a valid value and refused, by name, with
        // a bad one; an undocumented one is refused.
        for p in op["parameters"].as_array().into_iter().flatten() {
            let name = p["name"].as_str().unwrap();
            if p["in"] != "query" || name == "cursor" || name == "snapshot" {
                continue;
            }
            let s = &p["schema"];
            let good = match (s["enum"].as_array(), s["type"].as_str()) {
                (Some(e), _) => e.last().unwrap().as_str().unwrap().to_string(),
                (None, Some("integer")) => s["minimum"].as_i64().unwrap().max(1).to_string(),
                _ => "a".to_string(),
            };
            let r = get(addr, &format!("{concrete}?{name}={good}")).await;
            assert_eq!(r.status, 200, "{path}?{name}={good}: {}", r.body);
            let r = get(addr, &format!("{concrete}?{name}=%00bad")).await;
            assert_eq!(r.status, 400, "{path}?{name}: {}", r.body);
            assert!(r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{name}:")));
        }
        if !path.starts_with("/api/v1/snapshots") {
            let r = get(addr, &format!("{concrete}?bogus=1")).await;
            assert_eq!(r.status, 400, "{path}");
        }
    }
}

#[tokio::test]
async fn without_a_published_snapshot_reports_say_so() {
    let db = TestDb::new().await;
    let addr = start(db.pool.clone()).await;
    let r = get(addr, "/api/v1/reports/company-yearly").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "no_snapshot");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no snapshot has been published"));
    // Parameters are still checked first.
    assert_eq!(get(addr, "/api/v1/reports/company-yearly?limit=x").await.status, 400);
    // The document does not need data.
    assert_eq!(get(addr, "/api/v1/openapi.json").await.status, 200);
}

#[tokio::test]
async fn a_publish_between_pages_keeps_the_cursor_on_its_snapshot_until_it_is_dropped() {
    let l = Loaded::new().await;
    let a = l.run(false).await;
    let addr = start(l.db.pool.clone()).await;

    let p1 = get_ok(addr, "/api/v1/reports/company-yearly?limit=2").await;
    assert_eq!(p1["snapshot"]["id"], a);
    assert_eq!(pick(&p1, &["company_id", "year"]), ["1 2010", "1 2011"]);
    let next = p1["next"].as_str().unwrap().to_string();
    let etag_a = get(addr, "/api/v1/reports/company-yearly")
        .await
        .header("etag")
        .unwrap()
        .to_string();

    // A new snapshot with company 2 renamed is published between page 1 and page 2.
    std::fs::write(&l.source, variant_zip()).unwrap();
    let b = l.run(true).await;
    assert_ne!(a, b);
    let fresh = get_ok(addr, "/api/v1/reports/company-yearly?company_id=2").await;
    assert_eq!(fresh["snapshot"]["id"], b);
    assert_eq!(
        pick(&fresh, &["company_name"]),
        [r#""Acme Studios""#, r#""Acme Studios""#]
    );

    // Page 2 still reads snapshot A, now kept as reelflow_snap_<a>.
    let r = get(addr, &next).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-reelflow-snapshot"), Some(a.to_string().as_str()));
    let p2 = r.json();
    assert_eq!(
        (p2["snapshot"]["id"].as_i64(), p2["snapshot"]["current"].as_bool()),
        (Some(a), Some(false))
    );
    assert_eq!(
        pick(&p2, &["company_id", "year", "company_name"]),
        [r#"2 2010 "Acme Pictures""#, r#"2 2011 "Acme Pictures""#]
    );
    assert!(p2["next"].is_null());
    // The old ETag of the unpinned listing no longer matches: it names snapshot A.
    let r = request(
        addr,
        "GET",
        "/api/v1/reports/company-yearly",
        &[("If-None-Match", &etag_a)],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-reelflow-snapshot"), Some(b.to_string().as_str()));
    // A kept snapshot can be read on purpose too.
    let old = get_ok(
        addr,
        &format!("/api/v1/reports/company-yearly?company_id=2&snapshot={a}"),
    )
    .await;
    assert_eq!(
        pick(&old, &["company_name"]),
        [r#""Acme Pictures""#, r#""Acme Pictures""#]
    );

    // Two more publishes: with keep_previous = 2, snapshot A is dropped.
    let c = l.run(true).await;
    let d = l.run(true).await;
    let states: Vec<(i64, String)> = sqlx::query_as("SELECT id, state FROM reelflow.snapshots ORDER BY id")
        .fetch_all(&l.db.pool)
        .await
        .unwrap();
    assert_eq!(
        states,
        [
            (a, "dropped".to_string()),
            (b, "retired".to_string()),
            (c, "retired".to_string()),
            (d, "published".to_string())
        ]
    );
    let r = get(addr, &next).await;
    assert_eq!(r.status, 410, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "cursor_expired");
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains(&format!("snapshot {a}")) && msg.contains("start again without a cursor"),
        "{msg}"
    );
    let r = get(addr, &format!("/api/v1/reports/company-yearly?snapshot={a}")).await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (410, Some("snapshot_dropped"))
    );
    // Starting again works, on the published snapshot.
    let (rows, _) = all_pages(addr, "/api/v1/reports/company-yearly?limit=1").await;
    assert_eq!(rows.len(), 4);
    assert_eq!(
        get_ok(addr, "/api/v1/reports/company-yearly").await["snapshot"]["id"],
        d
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_racing_publishes_never_mix_snapshots() {
    let l = Loaded::new().await;
    let first = l.run(false).await;
    let addr = start(l.db.pool.clone()).await;
    let stop = Arc::new(AtomicBool::new(false));
    // Readers page through company_genre_yearly two rows at a time while snapshots with
    // alternating company names are published.
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut seen: Vec<(i64, Vec<String>)> = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut path = "/api/v1/reports/company-genre-yearly?limit=2".to_string();
                    loop {
                        let r = get(addr, &path).await;
                        if r.status == 410 {
                            break;
                        }
                        assert_eq!(r.status, 200, "{}", r.body);
                        let page = r.json();
                        let id = page["snapshot"]["id"].as_i64().unwrap();
                        assert_eq!(r.header("x-reelflow-snapshot"), Some(id.to_string().as_str()));
                        seen.push((id, pick(&page, &["company_name"])));
                        match page["next"].as_str() {
                            Some(n) => path = n.to_string(),
                            None => break,
                        }
                    }
                }
                seen
            })
        })
        .collect();
    let mut names: HashMap<i64, &str> = HashMap::from([(first, "\"Acme Pictures\"")]);
    for i in 0..4 {
        let (zip, name) = if i % 2 == 0 {
            (variant_zip(), "\"Acme Studios\"")
        } else {
            (fixture::zip(), "\"Acme Pictures\"")
        };
        std::fs::write(&l.source, zip).unwrap();
        names.insert(l.run(true).await, name);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut pages = 0;
    let mut snapshots = std::collections::HashSet::new();
    for r in readers {
        for (id, companies) in r.await.unwrap() {
            pages += 1;
            snapshots.insert(id);
            let want = names[&id];
            for c in companies {
                assert!(
                    c == "\"Lion's Gate\"" || c == want,
                    "snapshot {id} gave {c}, expected {want}"
                );
            }
        }
    }
    assert!(pages > 10 && snapshots.len() >= 2, "{pages} pages over {snapshots:?}");
}

/// The race the read has to survive, made deterministic: the request resolves snapshot A, then
/// waits for a lock on A's table while B is published. PostgreSQL then resolves `movies` to
/// B's table, so the read gets B's rows; the server notices that A's bookkeeping row changed
/// during the read and reads again, so the response names the snapshot its rows come from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_committing_during_a_read_is_noticed_and_the_read_retried() {
    let l = Loaded::new().await;
    let a = l.run(false).await;
    let addr = start(l.db.pool.clone()).await;
    let mut locker = l.db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE movies.company_yearly IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *locker)
        .await
        .unwrap();
    let read = tokio::spawn(async move { get(addr, "/api/v1/reports/company-yearly?company_id=2").await });
    let waiting = async {
        loop {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'movies.company_yearly'::regclass",
            )
            .fetch_one(&l.db.pool)
            .await
            .unwrap();
            if n > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the read waits for the lock");
    std::fs::write(&l.source, variant_zip()).unwrap();
    let b = tokio::time::timeout(Duration::from_secs(120), l.run(true))
        .await
        .expect("publishing does not wait for readers");
    locker.rollback().await.unwrap();
    let r = read.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let page = r.json();
    assert_ne!(a, b);
    assert_eq!(page["snapshot"]["id"], b, "{page}");
    assert_eq!(
        pick(&page, &["company_name"]),
        [r#""Acme Studios""#, r#""Acme Studios""#]
    );
}
