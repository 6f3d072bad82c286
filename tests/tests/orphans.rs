//! Snapshots that no run will publish are dropped (issue 13, point 4): a cancelled load's
//! half-built schema, a load-only retry's ready snapshot; and such a leftover does not defeat
//! the reuse of an unchanged source.

use std::collections::HashMap;
use std::path::Path;

use reelflow::config::Config;
use reelflow_e2e::{fixture, pg::TestDb};
use sqlx::PgPool;

fn config(db: &TestDb, dir: &Path) -> Config {
    let source = dir.join("the-movies-dataset.zip");
    std::fs::write(&source, fixture::zip()).unwrap();
    let vars: HashMap<&str, String> = [
        ("DATABASE_URL", db.url.clone()),
        ("REELFLOW_SOURCE", source.display().to_string()),
        ("REELFLOW_ARTIFACTS_DIR", dir.join("artifacts").display().to_string()),
    ]
    .into_iter()
    .collect();
    Config::load(None, &|k| vars.get(k).cloned()).expect("test config")
}

async fn drive(cfg: &Config, pool: &PgPool, run_id: i64) {
    let dag = reelflow::pipeline::dag(cfg, pool).unwrap();
    let e = reelflow::engine::Engine::new(pool.clone(), vec![dag], reelflow::pipeline::engine_config(cfg).unwrap());
    let (_tx, rx) = tokio::sync::watch::channel(false);
    std::sync::Arc::new(e)
        .run(Some(run_id), rx, std::time::Duration::from_secs(5))
        .await
        .unwrap();
}

async fn snapshots(pool: &PgPool) -> Vec<(i64, String)> {
    sqlx::query_as("SELECT id, state FROM reelflow.snapshots ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn schema_exists(pool: &PgPool, id: i64) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(format!("reelflow_snap_{id}"))
        .fetch_one(pool)
        .await
        .unwrap()
}

fn st(v: &[(i64, &str)]) -> Vec<(i64, String)> {
    v.iter().map(|(i, s)| (*i, s.to_string())).collect()
}

#[tokio::test]
async fn a_load_only_retry_says_its_snapshot_is_orphaned_and_the_leftover_neither_stays_nor_defeats_reuse() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&db, dir.path());
    let pool = &db.pool;
    let period = "2026-07".parse().unwrap();
    let first = reelflow::pipeline::run_period(&cfg, pool, period, false).await.unwrap();
    assert!(first.succeeded(), "{}", first.failure());
    let run_id = first.run.id;
    let dag = reelflow::pipeline::dag_spec(&cfg);

    let cleared = reelflow::ops::retry(pool, &dag, run_id, "load", false, "test")
        .await
        .unwrap();
    let note = reelflow::ops::retry_note(&cleared).expect("a load-only retry says what happens");
    assert!(
        note.contains("will not be published and is dropped as an orphan"),
        "{note}"
    );
    assert!(reelflow::ops::retry_note(&["load".into(), "publish".into()]).is_none());
    drive(&cfg, pool, run_id).await;
    assert_eq!(snapshots(pool).await, st(&[(1, "published"), (2, "ready")]));

    // The leftover does not defeat the reuse of an unchanged source.
    let again = reelflow::pipeline::run_period(&cfg, pool, period, true).await.unwrap();
    assert!(again.succeeded(), "{}", again.failure());
    assert_eq!(
        again.outputs["clean"]["unchanged_snapshot"], 1,
        "{:?}",
        again.outputs["clean"]
    );
    assert_eq!(again.outputs["load"]["reused"], true);
    assert_eq!(again.outputs["publish"]["snapshot_id"], 1);

    // A ready snapshot that its run will still publish is kept by the sweep...
    sqlx::query("UPDATE reelflow.dag_runs SET state = 'running' WHERE id = $1")
        .bind(run_id)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE reelflow.task_instances SET
             state = CASE task_id WHEN 'publish' THEN 'queued' ELSE state END,
             outputs = CASE task_id WHEN 'load' THEN jsonb_build_object('snapshot_id', 2) ELSE outputs END
         WHERE run_id = $1",
    )
    .bind(run_id)
    .execute(pool)
    .await
    .unwrap();
    assert_eq!(reelflow_load::sweep_orphans(pool).await.unwrap(), Vec::<i64>::new());
    assert!(schema_exists(pool, 2).await);
    // ...and dropped once no run will: the run finished without publishing it.
    sqlx::query("UPDATE reelflow.task_instances SET state = 'success' WHERE run_id = $1 AND task_id = 'publish'")
        .bind(run_id)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("UPDATE reelflow.dag_runs SET state = 'success' WHERE id = $1")
        .bind(run_id)
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(reelflow_load::sweep_orphans(pool).await.unwrap(), [2]);
    assert_eq!(snapshots(pool).await, st(&[(1, "published"), (2, "dropped")]));
    assert!(!schema_exists(pool, 2).await);
}

#[tokio::test]
async fn a_cancelled_loads_half_built_schema_is_dropped_once_no_loader_holds_it() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&db, dir.path());
    let pool = &db.pool;
    let first = reelflow::pipeline::run_period(&cfg, pool, "2026-07".parse().unwrap(), false)
        .await
        .unwrap();
    assert!(first.succeeded());
    // The clean record the first run stored.
    let record: reelflow_artifacts::ObjectRef =
        serde_json::from_value(first.outputs["clean"]["record"].clone()).unwrap();
    let store = cfg.artifacts().unwrap();
    // A load dropped mid-way (what cancelling the load task does): its schema stays `building`.
    let load = tokio::spawn({
        let pool = pool.clone();
        async move {
            reelflow_load::load_snapshot(
                &pool,
                &store,
                &record,
                "movies_monthly",
                "2026-08",
                Some(99),
                &Default::default(),
            )
            .await
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !schema_exists(pool, 2).await {
        assert!(std::time::Instant::now() < deadline, "the load did not start");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    load.abort();
    let _ = load.await;
    assert_eq!(snapshots(pool).await, st(&[(1, "published"), (2, "building")]));

    // While a loader of that period holds its lock, the sweep leaves it alone.
    let mut holder = pool.acquire().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        // The aborted session may take a moment to go away and release the lock.
        let got: bool = sqlx::query_scalar(
            "SELECT pg_try_advisory_lock(hashtextextended('reelflow.load:' || 'movies_monthly' || ':' || '2026-08', 0))",
        )
        .fetch_one(&mut *holder)
        .await
        .unwrap();
        if got {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the aborted load kept its lock");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(reelflow_load::sweep_orphans(pool).await.unwrap(), Vec::<i64>::new());
    assert!(schema_exists(pool, 2).await);
    sqlx::query(
        "SELECT pg_advisory_unlock(hashtextextended('reelflow.load:' || 'movies_monthly' || ':' || '2026-08', 0))",
    )
    .execute(&mut *holder)
    .await
    .unwrap();
    drop(holder);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let dropped = loop {
        let d = reelflow_load::sweep_orphans(pool).await.unwrap();
        if !d.is_empty() || std::time::Instant::now() > deadline {
            break d;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(dropped, [2]);
    assert!(!schema_exists(pool, 2).await);
    assert_eq!(snapshots(pool).await, st(&[(1, "published"), (2, "dropped")]));
}
