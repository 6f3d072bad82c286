//! The operators' page at the router level, over a real socket against a real PostgreSQL:
//! the grid and its 304s, the panels, escaping of hostile text, sessions, CSRF refusal, the
//! dry-run previews, the rejected rows over HTML and JSON, and the per-attempt logs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reelflow::api::{router_with_ui, AppState};
use reelflow::engine::{Dag, Engine, EngineConfig};
use reelflow::ui::UiSettings;
use reelflow_dag::{BoxFuture, DagSpec, Outputs, RetryPolicy, Task, TaskContext, TaskError, TaskSpec};
use reelflow_e2e::http::{request, Response};
use reelflow_e2e::pg::TestDb;

const TOKEN: &str = "ui-admin-token";
const HOSTILE: &str = "<script>alert('x')</script><img src=x onerror=alert(1)>";

fn dag() -> DagSpec {
    let t = |id: &str, up: &[&str]| TaskSpec {
        id: id.into(),
        upstream: up.iter().map(|s| s.to_string()).collect(),
        retry: RetryPolicy {
            max_tries: 1,
            initial_delay_secs: 0.1,
            ..Default::default()
        },
    };
    DagSpec::new(
        "movies_monthly",
        vec![t("fetch", &[]), t("clean", &["fetch"]), t("load", &["clean"])],
    )
    .unwrap()
}

struct Page {
    addr: SocketAddr,
}

async fn start(db: &TestDb, token: Option<&str>, settings: UiSettings) -> Page {
    let state = Arc::new(AppState::new(db.pool.clone(), dag(), token.map(String::from)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router_with_ui(state, settings).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Page { addr }
}

impl Page {
    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        request(self.addr, "GET", path, headers, None).await
    }
    async fn post(&self, path: &str, headers: &[(&str, &str)], form: &str) -> Response {
        request(self.addr, "POST", path, headers, Some(form)).await
    }
    /// Logs in like the browser does and returns the `Cookie` header value.
    async fn login(&self) -> String {
        let origin = self.origin();
        let r = self
            .post(
                "/ui/login",
                &[("Origin", &origin), ("Sec-Fetch-Site", "same-origin")],
                &format!("token={TOKEN}&next=%2F"),
            )
            .await;
        assert_eq!(r.status, 303, "{}", r.body);
        let set = r.header("set-cookie").expect("a session cookie").to_string();
        set.split(';').next().unwrap().to_string()
    }
}

async fn trigger(db: &TestDb, period: &str) -> i64 {
    reelflow::ops::trigger(&db.pool, &dag(), period.parse().unwrap(), false, "manual", "test")
        .await
        .unwrap()
        .run
        .id
}

async fn ti_states(db: &TestDb, run: i64) -> Vec<(String, String)> {
    sqlx::query_as("SELECT task_id, state FROM reelflow.task_instances WHERE run_id = $1 ORDER BY id")
        .bind(run)
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_grid_shows_state_by_glyph_and_text_and_answers_304_until_something_changes() {
    let db = TestDb::new().await;
    let page = start(&db, Some(TOKEN), UiSettings::default()).await;
    let a = trigger(&db, "2026-09").await;
    let b = trigger(&db, "2026-10").await;
    reelflow::ops::mark(&db.pool, &dag(), a, "fetch", "failed", "test")
        .await
        .unwrap();

    let r = page.get("/", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let csp = r.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert!(!r.body.contains("<script>"), "no inline script");
    assert!(r.body.contains(r#"<script src="/ui/static/ui.js" defer></script>"#));
    // failed and upstream_failed differ by glyph and words, not just colour.
    assert!(r.body.contains(r#"class="cell st-failed""#), "{}", r.body);
    assert!(r.body.contains("✗</span><span class=\"s\">failed"));
    assert!(r.body.contains("⊘</span><span class=\"s\">upstream failed"));
    assert!(r.body.contains("Legend"));
    // Oldest run left, the newest right.
    assert!(r.body.find("2026-09").unwrap() < r.body.find("2026-10").unwrap());
    assert!(
        r.body.contains(r#"data-active="1""#),
        "a queued run keeps the page polling"
    );

    let g = page.get("/ui/grid?n=25", &[]).await;
    assert_eq!(g.status, 200);
    let tag = g.header("etag").unwrap().to_string();
    let again = page.get("/ui/grid?n=25", &[("If-None-Match", &tag)]).await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    reelflow::ops::mark(&db.pool, &dag(), b, "fetch", "failed", "test")
        .await
        .unwrap();
    let changed = page.get("/ui/grid?n=25", &[("If-None-Match", &tag)]).await;
    assert_eq!(changed.status, 200);
    assert_ne!(changed.header("etag").unwrap(), tag);

    // Nothing inline for the CSP to block; the script and the stylesheet are served.
    assert!(
        !r.body.contains("style=") && !r.body.contains("onclick") && !r.body.contains("onload"),
        "no inline style or handler"
    );
    let js = page.get("/ui/static/ui.js", &[]).await;
    assert_eq!(js.header("content-type"), Some("text/javascript; charset=utf-8"));
    assert!(js.body.contains("visibilityState") && js.body.contains("If-None-Match"));
    let css = page.get("/ui/static/ui.css", &[]).await;
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    let again = page
        .get("/ui/static/ui.css", &[("If-None-Match", css.header("etag").unwrap())])
        .await;
    assert_eq!(again.status, 304);
    assert_eq!(page.get("/ui/static/other.js", &[]).await.status, 404);

    // Once no run is queued or running, the fragment tells the script to stop polling.
    for p in ["2026-09", "2026-10"] {
        let id = reelflow_store::runs::find_run(&db.pool, "movies_monthly", p)
            .await
            .unwrap()
            .unwrap()
            .id;
        // The store's mark: ops refuses to mark success a task whose missing outputs later
        // tasks would read, and this test only needs the runs finished.
        for t in ["fetch", "clean", "load"] {
            reelflow_store::runs::mark_task(&db.pool, &dag(), id, t, "success")
                .await
                .unwrap();
        }
    }
    let idle = page.get("/ui/grid", &[]).await;
    assert!(idle.body.contains(r#"data-active="0""#), "{}", idle.body);

    // Filters.
    let f = page.get("/ui/grid?state=failed", &[]).await;
    assert!(!f.body.contains("2026-09") && !f.body.contains("2026-10"), "{}", f.body);
    assert_eq!(page.get("/ui/grid?state=bogus", &[]).await.status, 400);
    assert_eq!(page.get("/ui/grid?n=0", &[]).await.status, 400);
    let only = page.get("/ui/grid?from=2026-10&to=2026-10", &[]).await;
    assert!(only.body.contains("2026-10") && !only.body.contains("2026-09"));
}

#[tokio::test]
async fn the_grid_stays_bounded_with_a_thousand_runs() {
    let db = TestDb::new().await;
    let page = start(&db, None, UiSettings::default()).await;
    sqlx::query(
        "WITH r AS (
             INSERT INTO reelflow.dag_runs (dag_id, period, state, trigger, started_at, ended_at, dag_shape)
             SELECT 'movies_monthly', to_char(date '1900-01-01' + make_interval(months => g), 'YYYY-MM'), 'success',
                    'backfill', now() - interval '1 hour', now(),
                    '[{\"id\": \"fetch\", \"upstream\": []}, {\"id\": \"clean\", \"upstream\": [\"fetch\"]},
                      {\"id\": \"load\", \"upstream\": [\"clean\"]}]'::jsonb
             FROM generate_series(0, 999) g RETURNING id)
         INSERT INTO reelflow.task_instances (run_id, task_id, state, max_tries, try_number)
         SELECT r.id, t, 'success', 1, 1 FROM r, unnest(ARRAY['fetch', 'clean', 'load']) t",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let t = std::time::Instant::now();
    let r = page.get("/?n=30", &[]).await;
    let took = t.elapsed();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.matches("class=\"runhead\"").count(), 30);
    assert_eq!(r.body.matches("class=\"cell st-success\"").count(), 90);
    assert!(r.body.contains("1983-04"), "the newest period is shown");
    assert!(!r.body.contains(">1980-10<"), "older runs are not");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[tokio::test]
async fn panels_show_attempts_errors_logs_and_notes_with_hostile_text_escaped() {
    let db = TestDb::new().await;
    let page = start(&db, Some(TOKEN), UiSettings::default()).await;
    let run = trigger(&db, "2026-11").await;
    let ti: i64 = sqlx::query_scalar("SELECT id FROM reelflow.task_instances WHERE run_id = $1 AND task_id = 'fetch'")
        .bind(run)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let attempt: i64 = sqlx::query_scalar(
        "INSERT INTO reelflow.attempts (task_instance_id, run_id, generation, task_id, try_number, worker, ended_at, outcome, retryable, error)
         VALUES ($1, $2, 1, 'fetch', 1, $3, now(), 'failed', false, $3) RETURNING id",
    )
    .bind(ti)
    .bind(run)
    .bind(HOSTILE)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE reelflow.task_instances SET state = 'failed', try_number = 1, last_error = $2 WHERE id = $1")
        .bind(ti)
        .bind(HOSTILE)
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO reelflow.attempt_logs (attempt_id, lines_total, lines_cut, finished) VALUES ($1, 7, 5, true)",
    )
    .bind(attempt)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO reelflow.attempt_log_lines (attempt_id, seq, line) VALUES ($1, 6, 'fetching'), ($1, 7, $2)",
    )
    .bind(attempt)
    .bind(format!("raw line {HOSTILE}"))
    .execute(&db.pool)
    .await
    .unwrap();

    for path in [
        format!("/ui/runs/{run}/tasks/fetch"),
        format!("/ui/runs/{run}/tasks/fetch?fragment=1"),
    ] {
        let r = page.get(&path, &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            !r.body.contains("<script>alert") && !r.body.contains("<img src=x"),
            "{}",
            r.body
        );
        assert!(r.body.contains("&lt;script&gt;alert('x')&lt;/script&gt;"), "{}", r.body);
        assert!(r.body.contains(r#"id="task-error""#));
        assert!(
            r.body.contains("fetching\nraw line &lt;script&gt;"),
            "the log as preformatted text"
        );
        assert!(r.body.contains("the first 5 of 7 lines were cut"));
        assert!(r.body.contains(&format!("/ui/attempts/{attempt}/log.txt")));
        assert!(r.body.contains("Log in"), "no actions without a session");
        assert!(!r.body.contains("retry-form"));
    }
    let frag = page.get(&format!("/ui/runs/{run}/tasks/fetch?fragment=1"), &[]).await;
    assert!(!frag.body.contains("<html"), "a fragment is only the panel");

    let txt = page.get(&format!("/ui/attempts/{attempt}/log.txt"), &[]).await;
    assert_eq!(txt.header("content-type"), Some("text/plain; charset=utf-8"));
    assert!(txt.header("content-disposition").unwrap().starts_with("attachment"));
    assert!(txt.body.starts_with("[reelflow: the first 5 of 7 lines were cut"));
    assert!(txt.body.ends_with(&format!("fetching\nraw line {HOSTILE}\n")));
    assert_eq!(page.get("/ui/attempts/999999/log.txt", &[]).await.status, 404);

    // Logged in: the actions are there; a note with hostile text is shown escaped.
    let cookie = page.login().await;
    let origin = page.origin();
    let h = [("Cookie", cookie.as_str()), ("Origin", origin.as_str())];
    let r = page.get(&format!("/ui/runs/{run}/tasks/fetch"), &h).await;
    assert!(r.body.contains("retry-form"), "{}", r.body);
    let note = reelflow::ui::enc(HOSTILE);
    let r = page
        .post(
            "/ui/actions/perform",
            &h,
            &format!("action=retry&run_id={run}&task=fetch&scope=downstream&note={note}"),
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    // An action ops refuses (a month that has not ended) says why, as the JSON API does.
    let now = chrono::Utc::now().format("%Y-%m").to_string();
    let r = page
        .post("/ui/actions/perform", &h, &format!("action=trigger&period={now}"))
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("has not ended"), "{}", r.body);
    let r = page.get(&format!("/ui/runs/{run}"), &h).await;
    assert!(r.body.contains("Operator actions"), "{}", r.body);
    assert!(r.body.contains("&lt;img src=x onerror=alert(1)&gt;") && !r.body.contains("<img src=x"));
    let (origin_rec, detail): (String, serde_json::Value) =
        sqlx::query_as("SELECT origin, detail FROM reelflow.operator_actions WHERE action = 'retry'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(origin_rec, "ui 127.0.0.1");
    assert_eq!(detail["note"], HOSTILE);
    assert_eq!(detail["cleared"], serde_json::json!(["fetch", "clean", "load"]));

    // The run panel as a fragment, and a missing run.
    let r = page.get(&format!("/ui/runs/{run}?fragment=1"), &[]).await;
    assert!(r.body.contains(r#"id="run-panel""#) && r.body.contains("2026-11"));
    let r = page.get("/ui/runs/424242", &[]).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn actions_need_a_session_from_the_token_and_a_same_origin_request() {
    let db = TestDb::new().await;
    let page = start(&db, Some(TOKEN), UiSettings::default()).await;
    let run = trigger(&db, "2026-11").await;
    let origin = page.origin();
    let form = format!("action=mark&run_id={run}&task=fetch&state=failed");

    // No session.
    let r = page.post("/ui/actions/perform", &[("Origin", &origin)], &form).await;
    assert_eq!(r.status, 401);
    // Wrong token; and a cross-site login attempt is refused before the token is looked at.
    let r = page.post("/ui/login", &[("Origin", &origin)], "token=nope").await;
    assert_eq!(r.status, 401);
    assert!(r.header("set-cookie").is_none());
    let r = page
        .post(
            "/ui/login",
            &[("Origin", "http://evil.example")],
            &format!("token={TOKEN}"),
        )
        .await;
    assert_eq!(r.status, 403);
    assert!(r.header("set-cookie").is_none());

    // The cookie: HttpOnly, SameSite=Strict, limited, Secure behind TLS; never the token.
    let r = page
        .post(
            "/ui/login",
            &[
                ("Origin", "https://".to_string().as_str()),
                ("Sec-Fetch-Site", "same-origin"),
            ],
            "token=x",
        )
        .await;
    assert_eq!(r.status, 403, "an Origin that is not this host");
    let r = page
        .post(
            "/ui/login",
            &[("Origin", &origin), ("X-Forwarded-Proto", "https")],
            &format!("token={TOKEN}&next=//evil.example/"),
        )
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/"), "no open redirect");
    let set = r.header("set-cookie").unwrap();
    for part in ["HttpOnly", "SameSite=Strict", "Secure", "Max-Age=28800", "Path=/"] {
        assert!(set.contains(part), "{set}");
    }
    assert!(!set.contains(TOKEN));
    for next in [
        "%2F%09%2Fevil.example",
        "%2F%5Cevil.example",
        "https%3A%2F%2Fevil.example",
        "%2Fui%2Fruns%2F1%0Ax",
    ] {
        let r = page
            .post(
                "/ui/login",
                &[("Origin", &origin)],
                &format!("token={TOKEN}&next={next}"),
            )
            .await;
        assert_eq!((r.status, r.header("location")), (303, Some("/")), "{next}");
    }
    let r = page
        .post(
            "/ui/login",
            &[("Origin", &origin)],
            &format!("token={TOKEN}&next=%2Fui%2Fsnapshots"),
        )
        .await;
    assert_eq!(r.header("location"), Some("/ui/snapshots"));
    // Behind a proxy that rewrites Host, the forwarded host is this site too.
    let r = page
        .post(
            "/ui/login",
            &[
                ("Origin", "https://reelflow.example"),
                ("X-Forwarded-Host", "reelflow.example"),
            ],
            &format!("token={TOKEN}"),
        )
        .await;
    assert_eq!(r.status, 303);
    let cookie = page.login().await;
    assert!(!page.login().await.is_empty());

    // A session, but the request comes from another site.
    for bad in [
        vec![("Cookie", cookie.as_str()), ("Origin", "http://evil.example")],
        vec![("Cookie", cookie.as_str()), ("Sec-Fetch-Site", "cross-site")],
        vec![("Cookie", cookie.as_str())],
    ] {
        let r = page.post("/ui/actions/perform", &bad, &form).await;
        assert_eq!(r.status, 403, "{bad:?}: {}", r.body);
    }
    // A forged or expired cookie.
    let forged = cookie.replacen("v1.", "v1.9", 1);
    let r = page
        .post(
            "/ui/actions/perform",
            &[("Cookie", &forged), ("Origin", &origin)],
            &form,
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(ti_states(&db, run).await[0].1, "queued", "nothing changed");

    // The preview changes nothing and lists what would change.
    let ok = [("Cookie", cookie.as_str()), ("Origin", origin.as_str())];
    let r = page.post("/ui/actions/preview", &ok, &form).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Confirm: mark fetch of 2026-11 failed"), "{}", r.body);
    assert!(r.body.contains(r#"<td class="task">fetch</td>"#));
    assert_eq!(ti_states(&db, run).await[0].1, "queued");
    let r = page.post("/ui/actions/perform", &ok, &form).await;
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some(format!("/ui/runs/{run}").as_str()));
    assert_eq!(ti_states(&db, run).await[0].1, "failed");
    // Logout clears the cookie.
    let r = page.post("/ui/logout", &ok, "").await;
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));

    // Without an admin token there is no login at all.
    let db2 = TestDb::new().await;
    let closed = start(&db2, None, UiSettings::default()).await;
    let o2 = closed.origin();
    let r = closed.post("/ui/login", &[("Origin", &o2)], "token=").await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn reading_can_require_the_token_too() {
    let db = TestDb::new().await;
    let settings = UiSettings {
        require_token_to_read: true,
        ..Default::default()
    };
    let page = start(&db, Some(TOKEN), settings).await;
    let run = trigger(&db, "2026-11").await;
    for path in [
        "/".to_string(),
        "/ui/grid".into(),
        format!("/ui/runs/{run}"),
        "/ui/snapshots".into(),
    ] {
        let r = page.get(&path, &[]).await;
        assert_eq!(r.status, 401, "{path}");
        assert!(r.body.contains("Admin token"), "the login form");
        assert!(!r.body.contains("2026-11"), "{path}");
    }
    assert_eq!(page.get("/ui/static/ui.css", &[]).await.status, 200);
    let cookie = page.login().await;
    let r = page.get("/", &[("Cookie", &cookie)]).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("2026-11"));
    // The JSON API keeps its own rules (reads open, bearer token for changes).
    assert_eq!(page.get("/api/v1/runs", &[]).await.status, 200);
}

#[tokio::test]
async fn the_json_api_dry_run_previews_without_changing_anything_and_records_notes() {
    let db = TestDb::new().await;
    let page = start(&db, Some(TOKEN), UiSettings::default()).await;
    let run = trigger(&db, "2026-11").await;
    reelflow::ops::mark(&db.pool, &dag(), run, "fetch", "failed", "test")
        .await
        .unwrap();
    let before = ti_states(&db, run).await;
    let auth = ("Authorization", "Bearer ui-admin-token");
    let r = request(
        page.addr,
        "POST",
        &format!("/api/v1/runs/{run}/tasks/fetch/retry"),
        &[auth],
        Some(r#"{"downstream": false, "dry_run": true}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert_eq!(j["dry_run"], true);
    let tasks: Vec<&str> = j["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["task_id"].as_str().unwrap())
        .collect();
    assert_eq!(tasks, ["fetch", "clean", "load"], "upstream_failed tasks are reset too");
    assert_eq!(j["changes"][0]["from"], "failed");
    assert_eq!(ti_states(&db, run).await, before);

    let r = request(
        page.addr,
        "POST",
        "/api/v1/runs",
        &[auth],
        Some(r#"{"period":"2026-12","dry_run":true}"#),
    )
    .await;
    assert_eq!(r.json()["changes"][0]["to"], "queued");
    assert!(reelflow_store::runs::find_run(&db.pool, "movies_monthly", "2026-12")
        .await
        .unwrap()
        .is_none());
    let r = request(
        page.addr,
        "POST",
        "/api/v1/backfill",
        &[auth],
        Some(r#"{"from":"2026-10","to":"2026-12","dry_run":true}"#),
    )
    .await;
    let j = r.json();
    let periods: Vec<&str> = j["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["period"].as_str().unwrap())
        .collect();
    assert_eq!(
        periods,
        ["2026-10", "2026-12"],
        "2026-11 exists: nothing changes for it"
    );
    let r = request(
        page.addr,
        "POST",
        "/api/v1/snapshots/rollback",
        &[auth],
        Some(r#"{"dry_run":true}"#),
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.body);
    let r = request(
        page.addr,
        "POST",
        &format!("/api/v1/runs/{run}/tasks/fetch/mark"),
        &[auth],
        Some(r#"{"state":"success","dry_run":true}"#),
    )
    .await;
    assert_eq!(r.json()["changes"][0]["to"], "success");
    assert_eq!(ti_states(&db, run).await, before);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM reelflow.operator_actions WHERE origin <> 'test'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 0, "a dry run records nothing");

    // A real retry with a note.
    let r = request(
        page.addr,
        "POST",
        &format!("/api/v1/runs/{run}/tasks/fetch/retry"),
        &[auth],
        Some(r#"{"note": "source fixed upstream"}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let note: serde_json::Value =
        sqlx::query_scalar("SELECT detail->'note' FROM reelflow.operator_actions WHERE action = 'retry'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(note, "source fixed upstream");

    // Marking a running task says that its try will be superseded; retrying it is refused.
    sqlx::query("UPDATE reelflow.task_instances SET state = 'running' WHERE run_id = $1 AND task_id = 'fetch'")
        .bind(run)
        .execute(&db.pool)
        .await
        .unwrap();
    let r = request(
        page.addr,
        "POST",
        &format!("/api/v1/runs/{run}/tasks/fetch/mark"),
        &[auth],
        Some(r#"{"state":"failed","dry_run":true}"#),
    )
    .await;
    assert_eq!(r.json()["changes"][0]["to"], "failed (the running try is superseded)");
    let r = request(
        page.addr,
        "POST",
        &format!("/api/v1/runs/{run}/tasks/fetch/retry"),
        &[auth],
        Some(r#"{"dry_run":true}"#),
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.body);
}

async fn snapshot_with_rejects(db: &TestDb, state: &str, schema: &str, rows: usize) -> i64 {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO reelflow.snapshots (dag_id, period, schema_name, state, rows_total, rejects_total, reject_counts)
         VALUES ('movies_monthly', '2026-11', $1, $2, 10, $3, '{\"links.csv\": {\"bad_id\": 2}}') RETURNING id",
    )
    .bind(schema)
    .bind(state)
    .bind(rows as i64)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let target = if state == "published" { "movies" } else { schema };
    for ddl in [
        format!("CREATE SCHEMA {target}"),
        format!(
            "CREATE TABLE {target}.rejects (file text NOT NULL, line bigint NOT NULL, reason text NOT NULL, raw text)"
        ),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(ddl)).execute(&db.pool).await.unwrap();
    }
    for i in 0..rows {
        let (file, reason) = if i % 2 == 0 {
            ("links.csv", "bad_id")
        } else {
            ("movies_metadata.csv", "field_count")
        };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {target}.rejects VALUES ($1, $2, $3, $4)"
        )))
        .bind(file)
        .bind(i as i64 + 2)
        .bind(reason)
        .bind(format!("{i},{HOSTILE}"))
        .execute(&db.pool)
        .await
        .unwrap();
    }
    id
}

#[tokio::test]
async fn rejected_rows_are_paged_over_json_and_shown_escaped() {
    let db = TestDb::new().await;
    let page = start(&db, Some(TOKEN), UiSettings::default()).await;
    let id = snapshot_with_rejects(&db, "published", "reelflow_snap_a", 7).await;

    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = page
            .get(&format!("/api/v1/snapshots/{id}/rejects?limit=2&cursor={cursor}"), &[])
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let j = r.json();
        for row in j["rejects"].as_array().unwrap() {
            seen.push((row["file"].as_str().unwrap().to_string(), row["line"].as_i64().unwrap()));
            assert!(row["raw"].as_str().unwrap().ends_with(HOSTILE));
        }
        match j["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7, "{seen:?}");
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen, "in order, no row twice");

    let r = page
        .get(
            &format!("/api/v1/snapshots/{id}/rejects?file=links.csv&reason=bad_id"),
            &[],
        )
        .await;
    let rows = r.json()["rejects"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r["reason"] == "bad_id"));
    // Cursors are checked, never trusted.
    let other = snapshot_with_rejects(&db, "retired", "reelflow_snap_b", 3).await;
    let first = page
        .get(&format!("/api/v1/snapshots/{other}/rejects?limit=1"), &[])
        .await;
    let c = first.json()["next_cursor"].as_str().unwrap().to_string();
    let r = page
        .get(&format!("/api/v1/snapshots/{id}/rejects?cursor={c}"), &[])
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        page.get(&format!("/api/v1/snapshots/{id}/rejects?cursor=garbage!"), &[])
            .await
            .status,
        400
    );
    assert_eq!(page.get("/api/v1/snapshots/999/rejects", &[]).await.status, 404);
    sqlx::query("UPDATE reelflow.snapshots SET state = 'dropped' WHERE id = $1")
        .bind(other)
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        page.get(&format!("/api/v1/snapshots/{other}/rejects"), &[])
            .await
            .status,
        409
    );

    // The page: escaped raw text, a next-page link, the snapshots list with its counts.
    let r = page
        .get(&format!("/ui/snapshots/{id}/rejects?file=links.csv&reason=bad_id"), &[])
        .await;
    assert_eq!(r.status, 200);
    assert!(!r.body.contains("<script>alert") && !r.body.contains("<img src=x"));
    assert!(
        r.body.contains("0,&lt;script&gt;alert('x')&lt;/script&gt;"),
        "{}",
        r.body
    );
    sqlx::query("CREATE TABLE movies.company_yearly AS SELECT g AS year FROM generate_series(1, 3) g")
        .execute(&db.pool)
        .await
        .unwrap();
    let r = page.get("/ui/snapshots", &[]).await;
    assert!(r.body.contains("links.csv · bad_id: 2"), "{}", r.body);
    assert!(
        r.body.contains("<li>company_yearly: 3</li>"),
        "report row counts: {}",
        r.body
    );
    assert!(r
        .body
        .contains(&format!("/ui/snapshots/{id}/rejects?file=links.csv&amp;reason=bad_id")));
}

/// A task that logs `lines` lines inside its attempt (and one from a nested span).
struct Chatty {
    lines: usize,
}

impl Task for Chatty {
    fn id(&self) -> &'static str {
        "fetch"
    }
    fn run<'a>(&'a self, ctx: &'a TaskContext, _: &'a Outputs) -> BoxFuture<'a, Result<serde_json::Value, TaskError>> {
        Box::pin(async move {
            for i in 0..self.lines {
                tracing::info!(line = i, hostile = HOSTILE, "chatty line");
            }
            let inner = tracing::info_span!("inner");
            inner.in_scope(|| tracing::warn!("from a nested span"));
            if ctx.try_number == 1 {
                Err(TaskError::retryable("first try fails"))
            } else {
                Ok(serde_json::json!({}))
            }
        })
    }
}

struct Quiet(&'static str);

impl Task for Quiet {
    fn id(&self) -> &'static str {
        self.0
    }
    fn run<'a>(&'a self, _: &'a TaskContext, _: &'a Outputs) -> BoxFuture<'a, Result<serde_json::Value, TaskError>> {
        Box::pin(async { Ok(serde_json::json!({})) })
    }
}

#[tokio::test]
async fn each_attempt_keeps_its_own_bounded_log_in_the_store() {
    reelflow::attempt_log::init_capture_only();
    let db = TestDb::new().await;
    let mut spec = dag();
    spec.tasks[0].retry.max_tries = 2;
    let lines = reelflow::attempt_log::MAX_LINES + 100;
    let d = Arc::new(Dag::new(
        spec.clone(),
        vec![
            Arc::new(Chatty { lines }),
            Arc::new(Quiet("clean")),
            Arc::new(Quiet("load")),
        ],
    ));
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::new(
        db.pool.clone(),
        vec![d],
        EngineConfig {
            worker_id: "w-ui".into(),
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(5),
            poll: Duration::from_millis(100),
            // Long: work arrives by notification (the backstop would make a test time out).
            backstop: Duration::from_secs(30),
            notifications: true,
            slots: 1,
            max_active_runs: 1,
            scratch_dir: dir.path().join(".scratch"),
            artifacts: reelflow_artifacts::Artifacts::local(dir.path()).unwrap(),
        },
    ));
    let (run, _) = reelflow_store::runs::ensure_run(&db.pool, &spec, "2026-11", "manual", false)
        .await
        .unwrap();
    let (_tx, stop) = tokio::sync::watch::channel(false);
    tokio::time::timeout(
        Duration::from_secs(60),
        engine.run(Some(run.id), stop, Duration::from_secs(5)),
    )
    .await
    .expect("the run finishes")
    .unwrap();
    let attempts: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, task_id FROM reelflow.attempts WHERE run_id = $1 ORDER BY id")
            .bind(run.id)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(attempts.len(), 4, "{attempts:?}");
    // The final flush happens when the attempt's span closes: wait for it.
    let mut logs = Vec::new();
    for (id, _) in &attempts {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let l = reelflow::attempt_log::read(&db.pool, *id).await.unwrap();
            if l.finished || std::time::Instant::now() > deadline {
                logs.push(l);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for (i, (l, (id, task))) in logs.iter().zip(&attempts).enumerate() {
        assert!(l.finished, "attempt {id} ({task})");
        // Both fetch attempts logged more than the window: their first lines were cut.
        assert_eq!(
            l.lines.iter().any(|x| x.contains("task started")),
            i >= 2,
            "{task}: {:?}",
            l.lines.first()
        );
    }
    let (first, second) = (&logs[0], &logs[1]);
    assert_eq!(first.lines.len(), reelflow::attempt_log::MAX_LINES);
    assert!(first.lines_cut > 100, "{}", first.lines_cut);
    assert_eq!(first.lines_total, first.lines_cut + first.lines.len() as i64);
    assert!(first.cut_note().unwrap().contains("were cut"));
    assert!(
        first.lines.iter().any(|l| l.contains("first try fails")),
        "the failure is the last thing"
    );
    assert!(first
        .lines
        .iter()
        .any(|l| l.contains("WARN") && l.contains("from a nested span")));
    assert!(first
        .lines
        .iter()
        .any(|l| l.contains(&format!("chatty line line={} hostile=", lines - 1))));
    assert!(
        !second.lines.iter().any(|l| l.contains("first try fails")),
        "each attempt has its own log"
    );
    assert!(second.lines.iter().any(|l| l.contains("task finished")));
    let quiet = &logs[2];
    assert!(
        !quiet.lines.iter().any(|l| l.contains("chatty")),
        "another task's lines stay out"
    );
    assert_eq!(quiet.lines_cut, 0);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM reelflow.attempt_log_lines WHERE attempt_id = $1")
        .bind(attempts[0].0)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        stored,
        reelflow::attempt_log::MAX_LINES as i64,
        "the store keeps only the window"
    );
}

#[tokio::test]
async fn retrying_the_failed_tasks_and_rolling_back_from_the_page_go_through_ops() {
    let db = TestDb::new().await;
    let page = start(&db, Some(TOKEN), UiSettings::default()).await;
    let run = trigger(&db, "2026-11").await;
    reelflow::ops::mark(&db.pool, &dag(), run, "fetch", "failed", "test")
        .await
        .unwrap();
    let cookie = page.login().await;
    let origin = page.origin();
    let h = [("Cookie", cookie.as_str()), ("Origin", origin.as_str())];

    let form = format!("action=retry_failed&run_id={run}");
    let r = page.post("/ui/actions/preview", &h, &form).await;
    assert_eq!(r.status, 200, "{}", r.body);
    for t in ["fetch", "clean", "load"] {
        assert!(
            r.body.contains(&format!(r#"<td class="task">{t}</td>"#)),
            "{t}: {}",
            r.body
        );
    }
    assert_eq!(ti_states(&db, run).await[0].1, "failed", "a preview changes nothing");
    let r = page
        .post("/ui/actions/perform", &h, &format!("{form}&note=after+the+fix"))
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let states: Vec<String> = ti_states(&db, run).await.into_iter().map(|s| s.1).collect();
    assert_eq!(states, ["queued", "none", "none"]);
    let detail: serde_json::Value =
        sqlx::query_scalar("SELECT detail FROM reelflow.operator_actions WHERE action = 'retry_failed'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(detail["cleared"], serde_json::json!(["fetch", "clean", "load"]));
    assert_eq!(detail["note"], "after the fix");

    // Rollback: the preview names the snapshot that comes back and the one that leaves.
    let old = snapshot_with_rejects(&db, "retired", "reelflow_snap_old", 1).await;
    let cur = snapshot_with_rejects(&db, "published", "reelflow_snap_cur", 1).await;
    // What `movies` showed, in order (rollback follows the publish history).
    sqlx::query(
        "UPDATE reelflow.snapshots SET published_at = now() - interval '1 day', retired_at = now() WHERE id = $1",
    )
    .bind(old)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE reelflow.snapshots SET published_at = now() WHERE id = $1")
        .bind(cur)
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO reelflow.publish_history (snapshot_id, replaced_id, action) VALUES ($1, NULL, 'publish'), ($2, $1, 'publish')",
    )
    .bind(old)
    .bind(cur)
    .execute(&db.pool)
    .await
    .unwrap();
    let r = page.post("/ui/actions/preview", &h, "action=rollback").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains(&format!("publish snapshot {old} (2026-11) again")),
        "{}",
        r.body
    );
    let r = page.post("/ui/actions/perform", &h, "action=rollback").await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), Some("/ui/snapshots"));
    let states: Vec<(i64, String)> = sqlx::query_as("SELECT id, state FROM reelflow.snapshots ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        states,
        [(old, "published".to_string()), (cur, "rolled_back".to_string())]
    );
    // Nothing left to roll back to: the preview says so as a conflict.
    let r = page.post("/ui/actions/preview", &h, "action=rollback").await;
    assert_eq!(r.status, 409);
}
