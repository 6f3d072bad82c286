//! CLI/API rough edges (issue 13, point 7), at the library and HTTP level: run ids do not jump
//! with each scheduler turn, POST to a report is a JSON 405, the audit trail over HTTP, config
//! checks that report every problem.

use std::sync::Arc;

use reelflow::api::{router, AppState};
use reelflow::config::Config;
use reelflow_e2e::http::request;
use reelflow_e2e::pg::TestDb;

fn config(db: &TestDb, extra: &[(&str, &str)]) -> Result<Config, reelflow::config::ConfigError> {
    let mut vars: std::collections::HashMap<String, String> = [("DATABASE_URL".to_string(), db.url.clone())].into();
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    Config::load(None, &|k| vars.get(k).cloned())
}

#[tokio::test]
async fn scheduler_turns_do_not_burn_run_ids() {
    let db = TestDb::new().await;
    let cfg = config(&db, &[("REELFLOW_SCHEDULE_START_PERIOD", "2026-09")]).unwrap();
    let dag = reelflow::pipeline::dag_spec(&cfg);
    let schedule = reelflow_dag::Schedule::new(&cfg.schedule.cron, &cfg.schedule.timezone).unwrap();
    let created = reelflow::serve::schedule_tick(&cfg, &db.pool, &dag, &schedule)
        .await
        .unwrap();
    assert!(!created.is_empty());
    for _ in 0..5 {
        assert!(reelflow::serve::schedule_tick(&cfg, &db.pool, &dag, &schedule)
            .await
            .unwrap()
            .is_empty());
    }
    let max: i64 = sqlx::query_scalar("SELECT max(id) FROM reelflow.dag_runs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(max, created.len() as i64);
    // The next run created gets the next id.
    let t = reelflow::ops::trigger(&db.pool, &dag, "2025-01".parse().unwrap(), false, "manual", "test")
        .await
        .unwrap();
    assert_eq!(t.run.id, max + 1, "no ids were taken by the idle turns");
}

#[tokio::test]
async fn config_errors_are_reported_together_and_name_presets_and_dead_crons() {
    let db = TestDb::new().await;
    let err = config(
        &db,
        &[
            ("REELFLOW_SCHEDULE_CRON", "0 3 * *"),
            ("REELFLOW_SCHEDULE_TIMEZONE", "Mars/Base"),
        ],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("Pattern must have 5 fields"), "{err}");
    assert!(err.contains("unknown time zone \"Mars/Base\""), "{err}");
    let err = config(&db, &[("REELFLOW_SCHEDULE_CRON", "@monthy")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"@monthy\": unknown preset"), "{err}");
    let err = config(&db, &[("REELFLOW_SCHEDULE_CRON", "0 3 31 2 *")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("never fires"), "{err}");
    assert!(config(&db, &[("REELFLOW_LISTEN", "localhost:8080")]).is_ok());
    let w = reelflow::config::unknown_env_vars(["REELFLOW_LOAD_PARALELISM".to_string(), "REELFLOW_LOG".to_string()]);
    assert_eq!(
        w,
        ["REELFLOW_LOAD_PARALELISM is not a reelflow setting and is ignored; did you mean REELFLOW_LOAD_PARALLELISM?"]
    );
}

#[tokio::test]
async fn a_post_to_a_report_is_a_json_405_and_actions_are_readable() {
    let db = TestDb::new().await;
    let cfg = config(&db, &[]).unwrap();
    let dag = reelflow::pipeline::dag_spec(&cfg);
    let state = Arc::new(AppState::new(db.pool.clone(), dag.clone(), None));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let r = request(addr, "POST", "/api/v1/snapshots", &[], Some("{}")).await;
    assert_eq!(r.status, 405, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "method_not_allowed");
    let r = request(addr, "POST", "/api/v1/genres", &[], Some("{}")).await;
    assert_eq!(r.status, 405, "{}", r.body);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("GET"));

    reelflow::ops::trigger(&db.pool, &dag, "2026-10".parse().unwrap(), false, "manual", "cli")
        .await
        .unwrap();
    reelflow::ops::cancel(&db.pool, &dag, 1, "http 10.0.0.7").await.unwrap();
    let r = request(addr, "GET", "/api/v1/actions?limit=10", &[], None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let got: Vec<(String, String, i64)> = r.json()["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap().to_string(),
                a["origin"].as_str().unwrap().to_string(),
                a["run_id"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("cancel".to_string(), "http 10.0.0.7".to_string(), 1),
            ("trigger".to_string(), "cli".to_string(), 1)
        ]
    );
    let r = request(addr, "GET", "/api/v1/actions?limit=0", &[], None).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn the_openapi_document_lists_the_orchestration_api_and_each_entry_is_served() {
    let db = TestDb::new().await;
    let cfg = config(&db, &[]).unwrap();
    let state = Arc::new(AppState::new(
        db.pool.clone(),
        reelflow::pipeline::dag_spec(&cfg),
        Some("t0ken".into()),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let doc = request(addr, "GET", "/api/v1/openapi.json", &[], None).await.json();
    let mut documented = 0;
    for (path, method, ..) in reelflow::reports_api::openapi::ORCHESTRATION {
        assert_eq!(
            doc["paths"][path][method]["tags"][0], "orchestration",
            "{method} {path}"
        );
        documented += 1;
        // Served: without a token a mutation is 401 (not 404 or 405); a read is not 404/405.
        let concrete = path.replace("{id}", "999").replace("{task}", "fetch");
        let r = request(
            addr,
            &method.to_uppercase(),
            &concrete,
            &[],
            (*method == "post").then_some("{}"),
        )
        .await;
        if *method == "post" {
            assert_eq!(r.status, 401, "{method} {path}: {}", r.body);
        } else {
            assert!(
                r.status != 405 && !r.body.contains("no such endpoint"),
                "{method} {path}: {} {}",
                r.status,
                r.body
            );
        }
    }
    assert_eq!(documented, 11);
}
