//! Cancelling runs (issue 13, point 2): a queued run, a running task (its worker is fenced out
//! and stops), every queued backfill run; finished runs are left alone.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reelflow::engine::{Dag, Engine, EngineConfig};
use reelflow_dag::{BoxFuture, DagSpec, Outputs, RetryPolicy, Task, TaskContext, TaskError, TaskSpec};
use reelflow_e2e::pg::TestDb;
use reelflow_store::runs;
use serde_json::json;
use tokio::sync::watch;

/// Waits for cancellation (or 60 s); records that it saw it.
struct Slow {
    id: &'static str,
    started: AtomicU32,
    saw_cancel: AtomicBool,
}

impl Task for Slow {
    fn id(&self) -> &'static str {
        self.id
    }
    fn run<'a>(
        &'a self,
        ctx: &'a TaskContext,
        _inputs: &'a Outputs,
    ) -> BoxFuture<'a, Result<serde_json::Value, TaskError>> {
        self.started.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(60)) => Ok(json!({})),
                _ = ctx.cancel.cancelled() => {
                    self.saw_cancel.store(true, Ordering::SeqCst);
                    Err(TaskError::cancelled())
                }
            }
        })
    }
}

fn spec() -> DagSpec {
    let retry = RetryPolicy {
        max_tries: 3,
        initial_delay_secs: 0.1,
        multiplier: 1.0,
        max_delay_secs: 0.1,
        jitter: 0.0,
        timeout_secs: 120,
        max_interruptions: 10,
    };
    let t = |id: &str, up: &[&str]| TaskSpec {
        id: id.into(),
        upstream: up.iter().map(|s| s.to_string()).collect(),
        retry: retry.clone(),
    };
    DagSpec::new("test_dag", vec![t("a", &[]), t("b", &["a"])]).unwrap()
}

async fn states(db: &TestDb, run_id: i64) -> Vec<(String, String, Option<String>)> {
    runs::task_instances(&db.pool, run_id)
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.task_id, t.state.to_string(), t.last_error))
        .collect()
}

#[tokio::test]
async fn cancelling_a_running_task_fences_its_worker_out_and_the_run_fails() {
    let db = TestDb::new().await;
    let spec = spec();
    let slow = Arc::new(Slow {
        id: "a",
        started: AtomicU32::new(0),
        saw_cancel: AtomicBool::new(false),
    });
    let never = Arc::new(Slow {
        id: "b",
        started: AtomicU32::new(0),
        saw_cancel: AtomicBool::new(false),
    });
    let dag = Arc::new(Dag::new(spec.clone(), vec![slow.clone(), never.clone()]));
    let lease = Duration::from_secs(2);
    let cfg = EngineConfig {
        worker_id: "w1".into(),
        lease,
        heartbeat: lease / 4,
        poll: Duration::from_millis(50),
        // Long: work arrives by notification (the backstop would make a test time out).
        backstop: Duration::from_secs(30),
        notifications: true,
        slots: 1,
        max_active_runs: 10,
        scratch_dir: std::env::temp_dir().join("reelflow-cancel-tests"),
        artifacts: reelflow_artifacts::Artifacts::local(&std::env::temp_dir().join("reelflow-cancel-tests")).unwrap(),
    };
    let engine = Arc::new(Engine::new(db.pool.clone(), vec![dag], cfg));
    let (run, _) = runs::ensure_run(&db.pool, &spec, "2026-05", "manual", false)
        .await
        .unwrap();
    let (_tx, rx) = watch::channel(false);
    let h = tokio::spawn({
        let e = engine.clone();
        let id = run.id;
        async move { e.run(Some(id), rx, Duration::from_secs(5)).await }
    });
    while slow.started.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let c = reelflow::ops::cancel(&db.pool, &spec, run.id, "test").await.unwrap();
    assert_eq!(c.stopped, ["a"]);
    assert_eq!(c.not_run, ["b"]);
    // The engine sees the run end: its task was told to stop at the next heartbeat.
    tokio::time::timeout(Duration::from_secs(10), h)
        .await
        .expect("the engine stopped working on the cancelled run")
        .unwrap()
        .unwrap();
    assert!(slow.saw_cancel.load(Ordering::SeqCst), "the running task was cancelled");
    assert_eq!(slow.started.load(Ordering::SeqCst), 1, "not retried");
    assert_eq!(never.started.load(Ordering::SeqCst), 0);
    let why = Some("cancelled by an operator".to_string());
    assert_eq!(
        states(&db, run.id).await,
        vec![
            ("a".into(), "failed".into(), why.clone()),
            ("b".into(), "upstream_failed".into(), why)
        ]
    );
    assert_eq!(runs::get_run(&db.pool, run.id).await.unwrap().state, "failed");
    let attempts: Vec<(String, Option<String>)> = runs::attempts(&db.pool, run.id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.outcome.to_string(), a.error))
        .collect();
    assert_eq!(
        attempts,
        [("cancelled".to_string(), Some("cancelled by an operator".to_string()))]
    );
    let actions: Vec<(String, Option<i64>)> =
        sqlx::query_as("SELECT action, run_id FROM reelflow.operator_actions ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(actions, [("cancel".to_string(), Some(run.id))]);
    // A finished run is not cancelled again.
    let err = reelflow::ops::cancel(&db.pool, &spec, run.id, "test")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already finished (failed)"), "{err}");
}

#[tokio::test]
async fn cancel_backfill_cancels_only_queued_backfill_runs() {
    let db = TestDb::new().await;
    let spec = spec();
    let ops = reelflow::ops::OpsConfig::default();
    let from = "2025-01".parse().unwrap();
    let to = "2025-04".parse().unwrap();
    let made = reelflow::ops::backfill(&db.pool, &spec, from, to, false, false, &ops, "test")
        .await
        .unwrap();
    assert_eq!(made.len(), 4);
    let manual = reelflow::ops::trigger(&db.pool, &spec, "2025-06".parse().unwrap(), false, "manual", "test")
        .await
        .unwrap();
    // One backfill run has started: it is left running.
    let started = runs::start_queued_runs(&db.pool, "test_dag", 1).await.unwrap();
    assert_eq!(started, [made[0].run.id]);
    let cancelled = reelflow::ops::cancel_backfill(&db.pool, &spec, "test").await.unwrap();
    let ids: Vec<i64> = cancelled.iter().map(|c| c.run_id).collect();
    assert_eq!(ids, made[1..].iter().map(|t| t.run.id).collect::<Vec<_>>());
    for t in &made[1..] {
        let r = runs::get_run(&db.pool, t.run.id).await.unwrap();
        assert_eq!(r.state, "failed");
    }
    assert_eq!(runs::get_run(&db.pool, made[0].run.id).await.unwrap().state, "running");
    assert_eq!(runs::get_run(&db.pool, manual.run.id).await.unwrap().state, "queued");
    // A cancelled run can be run again with --rerun.
    let again = reelflow::ops::trigger(
        &db.pool,
        &spec,
        made[1].run.period.parse().unwrap(),
        true,
        "manual",
        "test",
    )
    .await
    .unwrap();
    assert!(again.created);
}

#[test]
fn backfill_plan_counts_and_refuses_unended_and_oversized_ranges() {
    use reelflow::ops::{backfill_plan, check_period_ended};
    let now = chrono::DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
        .unwrap()
        .to_utc();
    let p = |s: &str| s.parse().unwrap();
    assert_eq!(backfill_plan(p("2026-01"), p("2026-06"), false, 36, now).unwrap(), 6);
    assert_eq!(backfill_plan(p("2024-12"), p("2026-11"), false, 24, now).unwrap(), 24);
    let err = backfill_plan(p("2000-01"), p("2024-12"), false, 36, now)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("would create 300 runs, more than engine.max_backfill_runs (36)"),
        "{err}"
    );
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(backfill_plan(p("2000-01"), p("2024-12"), true, 36, now).unwrap(), 300);
    let err = backfill_plan(p("2026-06"), p("2026-12"), true, 36, now)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "period 2026-12 has not ended yet: its data interval ends on 2027-01-01 00:00 UTC; the latest complete period is 2026-11"
    );
    let err = check_period_ended(p("2031-01"), now).unwrap_err().to_string();
    assert!(err.contains("2031-01 is in the future"), "{err}");
    assert!(check_period_ended(p("2026-11"), now).is_ok());
    assert!(backfill_plan(p("2026-03"), p("2026-01"), true, 36, now).is_err());
}
