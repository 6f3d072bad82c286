//! The admin HTTP API over a real socket against a real PostgreSQL.

use std::net::SocketAddr;
use std::sync::Arc;

use reelflow::api::{router, AppState};
use reelflow_dag::{DagSpec, RetryPolicy, TaskSpec};
use reelflow_e2e::http::request;
use reelflow_e2e::pg::TestDb;

const TOKEN: &str = "s3cret-admin-token";

fn dag() -> DagSpec {
    let t = |id: &str, up: &[&str]| TaskSpec {
        id: id.into(),
        upstream: up.iter().map(|s| s.to_string()).collect(),
        retry: RetryPolicy {
            max_tries: 2,
            ..Default::default()
        },
    };
    DagSpec::new(
        "movies_monthly",
        vec![t("fetch", &[]), t("clean", &["fetch"]), t("load", &["clean"])],
    )
    .unwrap()
}

async fn start(db: &TestDb, token: Option<&str>) -> SocketAddr {
    let state = Arc::new(AppState::new(db.pool.clone(), dag(), token.map(String::from)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

const AUTH: (&str, &str) = ("Authorization", "Bearer s3cret-admin-token");

#[tokio::test]
async fn operators_trigger_list_show_retry_and_mark_over_http() {
    let db = TestDb::new().await;
    let addr = start(&db, Some(TOKEN)).await;

    // Mutations need the token.
    let r = request(addr, "POST", "/api/v1/runs", &[], Some(r#"{"period":"2026-11"}"#)).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "unauthorized");
    let r = request(
        addr,
        "POST",
        "/api/v1/runs",
        &[("Authorization", "Bearer wrong")],
        Some(r#"{"period":"2026-11"}"#),
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(!r.body.contains(TOKEN));

    let r = request(addr, "POST", "/api/v1/runs", &[AUTH], Some(r#"{"period":"2026-11"}"#)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let run_id = r.json()["run"]["id"].as_i64().unwrap();
    // Triggering again is an idempotent no-op.
    let r = request(addr, "POST", "/api/v1/runs", &[AUTH], Some(r#"{"period":"2026-11"}"#)).await;
    assert_eq!((r.status, r.json()["created"].as_bool()), (200, Some(false)));
    assert_eq!(r.json()["run"]["id"].as_i64(), Some(run_id));

    let r = request(addr, "GET", "/api/v1/runs", &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["runs"].as_array().unwrap().len(), 1);
    assert_eq!(r.header("content-type"), Some("application/json"));

    let r = request(addr, "GET", &format!("/api/v1/runs/{run_id}"), &[], None).await;
    let states: Vec<String> = r.json()["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states, ["queued", "none", "none"]);

    let r = request(
        addr,
        "POST",
        &format!("/api/v1/runs/{run_id}/tasks/fetch/mark"),
        &[AUTH],
        Some(r#"{"state":"failed"}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = request(addr, "GET", &format!("/api/v1/runs/{run_id}"), &[], None).await;
    assert_eq!(r.json()["run"]["state"], "failed");
    let r = request(
        addr,
        "POST",
        &format!("/api/v1/runs/{run_id}/tasks/fetch/retry"),
        &[AUTH],
        Some(r#"{"downstream":true}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["cleared"], serde_json::json!(["fetch", "clean", "load"]));
    let r = request(addr, "GET", &format!("/api/v1/runs/{run_id}"), &[], None).await;
    assert_eq!(r.json()["run"]["state"], "queued");

    let r = request(
        addr,
        "POST",
        "/api/v1/backfill",
        &[AUTH],
        Some(r#"{"from":"2026-08","to":"2026-11"}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let created: Vec<bool> = r.json()["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["created"].as_bool().unwrap())
        .collect();
    assert_eq!(created, [true, true, true, false]);

    // Every action is recorded with its origin.
    let actions: Vec<(String, String)> =
        sqlx::query_as("SELECT action, origin FROM reelflow.operator_actions ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let names: Vec<&str> = actions.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(names, ["trigger", "mark", "retry", "trigger", "trigger", "trigger"]);
    assert!(actions.iter().all(|(_, o)| o == "http 127.0.0.1"), "{actions:?}");
}

#[tokio::test]
async fn bad_requests_get_clear_json_errors() {
    let db = TestDb::new().await;
    let addr = start(&db, Some(TOKEN)).await;
    let cases: &[(&str, &str, Option<&str>, u16, &str)] = &[
        ("POST", "/api/v1/runs", Some(r#"{"period":"2026-13"}"#), 400, "period"),
        (
            "POST",
            "/api/v1/runs",
            Some(r#"{"period":"2026-11""#),
            400,
            "invalid JSON",
        ),
        (
            "POST",
            "/api/v1/runs",
            Some(r#"{"period":"2026-11","colour":"red"}"#),
            400,
            "colour",
        ),
        (
            "POST",
            "/api/v1/backfill",
            Some(r#"{"from":"2026-11","to":"2026-01"}"#),
            400,
            "from",
        ),
        ("GET", "/api/v1/runs?limit=0", None, 400, "limit"),
        ("GET", "/api/v1/runs?state=bogus", None, 400, "state"),
        ("GET", "/api/v1/runs/999", None, 404, "no run 999"),
        ("POST", "/api/v1/runs/999/tasks/fetch/retry", None, 404, "no run 999"),
        ("GET", "/api/v1/nope", None, 404, "no such endpoint"),
        ("POST", "/api/v1/snapshots/rollback", None, 409, "nothing to roll back"),
    ];
    for (method, path, body, status, needle) in cases {
        let r = request(addr, method, path, &[AUTH], *body).await;
        assert_eq!(r.status, *status, "{method} {path}: {}", r.body);
        assert!(r.body.contains(needle), "{method} {path}: {}", r.body);
        assert!(r.json()["error"]["message"].is_string());
    }
    let big = format!(r#"{{"period":"2026-11","pad":"{}"}}"#, "x".repeat(200_000));
    let r = request(addr, "POST", "/api/v1/runs", &[AUTH], Some(&big)).await;
    assert_eq!(r.status, 413);
}

#[tokio::test]
async fn without_a_token_mutations_are_disabled_and_probes_answer() {
    let db = TestDb::new().await;
    let addr = start(&db, None).await;
    let r = request(addr, "POST", "/api/v1/runs", &[AUTH], Some(r#"{"period":"2026-11"}"#)).await;
    assert_eq!(r.status, 403);
    assert_eq!(request(addr, "GET", "/livez", &[], None).await.status, 200);
    let r = request(addr, "GET", "/readyz", &[], None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        request(addr, "GET", "/api/v1/snapshots", &[], None).await.json()["snapshots"],
        serde_json::json!([])
    );
}

#[tokio::test]
async fn cancel_and_backfill_guards_over_http() {
    let db = TestDb::new().await;
    let addr = start(&db, Some(TOKEN)).await;
    // A period whose month has not ended: 400, nothing created.
    for (path, body) in [
        ("/api/v1/runs", r#"{"period":"2031-01"}"#),
        ("/api/v1/backfill", r#"{"from":"2030-11","to":"2031-01"}"#),
    ] {
        let r = request(addr, "POST", path, &[AUTH], Some(body)).await;
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        assert!(r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2031-01 is in the future"));
    }
    // More than engine.max_backfill_runs (36 by default) needs "yes".
    let r = request(
        addr,
        "POST",
        "/api/v1/backfill",
        &[AUTH],
        Some(r#"{"from":"2000-01","to":"2024-12"}"#),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("would create 300 runs"), "{}", r.body);
    let r = request(addr, "GET", "/api/v1/runs", &[], None).await;
    assert_eq!(r.json()["runs"], serde_json::json!([]));
    let r = request(
        addr,
        "POST",
        "/api/v1/backfill",
        &[AUTH],
        Some(r#"{"from":"2022-01","to":"2024-12","yes":true}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.json()["count"].as_i64(), r.json()["created"].as_i64()),
        (Some(36), Some(36))
    );
    let first = r.json()["runs"][0]["run"]["id"].as_i64().unwrap();

    let r = request(addr, "POST", &format!("/api/v1/runs/{first}/cancel"), &[], None).await;
    assert_eq!(r.status, 401);
    let r = request(addr, "POST", &format!("/api/v1/runs/{first}/cancel"), &[AUTH], None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["not_run"], serde_json::json!(["fetch", "clean", "load"]));
    let r = request(addr, "POST", &format!("/api/v1/runs/{first}/cancel"), &[AUTH], None).await;
    assert_eq!(r.status, 409, "{}", r.body);
    let r = request(addr, "POST", "/api/v1/runs/999999/cancel", &[AUTH], None).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = request(addr, "POST", "/api/v1/backfill/cancel", &[AUTH], None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["cancelled"].as_array().unwrap().len(), 35);
    let r = request(addr, "GET", "/api/v1/runs?state=failed&limit=100", &[], None).await;
    assert_eq!(r.json()["runs"].as_array().unwrap().len(), 36);
}
