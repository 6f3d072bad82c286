//! The orchestrator against a real PostgreSQL: retries with backoff, timeouts, fatal errors,
//! racing engines, lease take-over with fencing, catch-up, idempotent triggers, operator
//! retry and mark.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reelflow::engine::{Dag, Engine, EngineConfig};
use reelflow_dag::{BoxFuture, DagSpec, Outputs, RetryPolicy, Schedule, Task, TaskContext, TaskError, TaskSpec};
use reelflow_e2e::pg::TestDb;
use reelflow_store::runs::{self, Outcome, Recorded};
use serde_json::json;
use tokio::sync::watch;

type Behaviour = dyn Fn(&TaskContext, u32) -> BoxFuture<'static, Result<serde_json::Value, TaskError>> + Send + Sync;

/// A task whose behaviour is a closure of (context, how many times it ran before).
struct FakeTask {
    id: &'static str,
    calls: AtomicU32,
    log: Arc<Mutex<Vec<(String, String)>>>,
    behaviour: Box<Behaviour>,
}

impl Task for FakeTask {
    fn id(&self) -> &'static str {
        self.id
    }
    fn run<'a>(
        &'a self,
        ctx: &'a TaskContext,
        inputs: &'a Outputs,
    ) -> BoxFuture<'a, Result<serde_json::Value, TaskError>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        self.log
            .lock()
            .unwrap()
            .push((ctx.period.to_string(), self.id.to_string()));
        let _ = inputs;
        (self.behaviour)(ctx, n)
    }
}

fn ok_task(id: &'static str, log: &Arc<Mutex<Vec<(String, String)>>>) -> Arc<FakeTask> {
    Arc::new(FakeTask {
        id,
        calls: AtomicU32::new(0),
        log: log.clone(),
        behaviour: Box::new(move |ctx, _| {
            let period = ctx.period.to_string();
            Box::pin(async move { Ok(json!({ "period": period })) })
        }),
    })
}

fn policy(max_tries: u32, timeout_secs: u64) -> RetryPolicy {
    RetryPolicy {
        max_tries,
        initial_delay_secs: 0.2,
        multiplier: 2.0,
        max_delay_secs: 1.0,
        jitter: 0.5,
        timeout_secs,
        max_interruptions: 10,
    }
}

fn chain(ids: &[&str], retry: RetryPolicy) -> DagSpec {
    let tasks = ids
        .iter()
        .enumerate()
        .map(|(i, id)| TaskSpec {
            id: id.to_string(),
            upstream: if i == 0 { vec![] } else { vec![ids[i - 1].to_string()] },
            retry: retry.clone(),
        })
        .collect();
    DagSpec::new("test_dag", tasks).unwrap()
}

fn engine(db: &TestDb, dag: Arc<Dag>, worker: &str, lease: Duration) -> Arc<Engine> {
    let cfg = EngineConfig {
        worker_id: worker.into(),
        lease,
        heartbeat: lease / 4,
        poll: Duration::from_millis(50),
        // Long: work arrives by notification (the backstop would make a test time out).
        backstop: Duration::from_secs(30),
        notifications: true,
        slots: 2,
        max_active_runs: 100,
        scratch_dir: std::env::temp_dir().join("reelflow-engine-tests"),
        artifacts: reelflow_artifacts::Artifacts::local(&std::env::temp_dir().join("reelflow-engine-tests")).unwrap(),
    };
    Arc::new(Engine::new(db.pool.clone(), vec![dag], cfg))
}

/// Runs `engine` until `run_id` is finished (or 30 s pass).
async fn run_to_end(engine: &Arc<Engine>, run_id: i64) {
    let (_tx, rx) = watch::channel(false);
    tokio::time::timeout(
        Duration::from_secs(30),
        engine.run(Some(run_id), rx, Duration::from_secs(5)),
    )
    .await
    .expect("run finished in time")
    .expect("engine ran");
}

async fn states(db: &TestDb, run_id: i64) -> Vec<(String, String)> {
    runs::task_instances(&db.pool, run_id)
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.task_id, t.state.to_string()))
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[tokio::test]
async fn fails_twice_then_succeeds_with_backoff_within_bounds() {
    let db = TestDb::new().await;
    let log = Arc::default();
    let flaky = Arc::new(FakeTask {
        id: "a",
        calls: AtomicU32::new(0),
        log: Arc::clone(&log),
        behaviour: Box::new(|_, n| {
            Box::pin(async move {
                if n < 2 {
                    Err(TaskError::retryable(format!("transient failure {n}")))
                } else {
                    Ok(json!({"ok": true}))
                }
            })
        }),
    });
    let spec = chain(&["a", "b"], policy(4, 10));
    let dag = Arc::new(Dag::new(spec.clone(), vec![flaky.clone(), ok_task("b", &log)]));
    let (run, created) = runs::ensure_run(&db.pool, &spec, "2026-01", "manual", false)
        .await
        .unwrap();
    assert!(created);
    let e = engine(&db, dag, "w1", Duration::from_secs(5));
    run_to_end(&e, run.id).await;

    assert_eq!(runs::get_run(&db.pool, run.id).await.unwrap().state, "success");
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 3);
    let attempts = runs::attempts(&db.pool, run.id).await.unwrap();
    let a: Vec<(String, i32, String)> = attempts
        .iter()
        .map(|x| (x.task_id.clone(), x.try_number, x.outcome.to_string()))
        .collect();
    assert_eq!(
        a,
        vec![
            ("a".into(), 1, "failed".into()),
            ("a".into(), 2, "failed".into()),
            ("a".into(), 3, "success".into()),
            ("b".into(), 1, "success".into()),
        ]
    );
    // The gap between a failure and the next try respects the policy's bounds.
    let p = spec.task("a").unwrap().retry.clone();
    for (i, pair) in attempts.windows(2).take(2).enumerate() {
        let gap = (pair[1].started_at - pair[0].ended_at.unwrap()).to_std().unwrap();
        let (lo, hi) = p.delay_bounds(i as u32 + 1);
        assert!(
            gap + Duration::from_millis(5) >= lo,
            "try {} started after {gap:?}, before {lo:?}",
            i + 2
        );
        assert!(
            gap <= hi + Duration::from_millis(500),
            "try {} started after {gap:?}, long after {hi:?}",
            i + 2
        );
    }
    assert_eq!(attempts[0].error.as_deref(), Some("transient failure 0"));
}

#[tokio::test]
async fn timeout_fails_the_try_and_marks_downstream_upstream_failed() {
    let db = TestDb::new().await;
    let log = Arc::default();
    let slow = Arc::new(FakeTask {
        id: "a",
        calls: AtomicU32::new(0),
        log: Arc::clone(&log),
        behaviour: Box::new(|ctx, _| {
            let cancel = ctx.cancel.clone();
            Box::pin(async move {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(60)) => Ok(json!({})),
                    _ = cancel.cancelled() => Err(TaskError::cancelled()),
                }
            })
        }),
    });
    let spec = chain(&["a", "b"], policy(1, 1));
    let dag = Arc::new(Dag::new(spec.clone(), vec![slow, ok_task("b", &log)]));
    let (run, _) = runs::ensure_run(&db.pool, &spec, "2026-02", "manual", false)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    run_to_end(&engine(&db, dag, "w1", Duration::from_secs(5)), run.id).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        states(&db, run.id).await,
        pairs(&[("a", "failed"), ("b", "upstream_failed")])
    );
    assert_eq!(runs::get_run(&db.pool, run.id).await.unwrap().state, "failed");
    let attempts = runs::attempts(&db.pool, run.id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, "timeout");
    assert!(attempts[0].error.as_deref().unwrap().contains("timed out after 1 s"));
}

#[tokio::test]
async fn fatal_error_is_not_retried() {
    let db = TestDb::new().await;
    let log = Arc::default();
    let bad = Arc::new(FakeTask {
        id: "a",
        calls: AtomicU32::new(0),
        log: Arc::clone(&log),
        behaviour: Box::new(|_, _| Box::pin(async { Err(TaskError::fatal("object not found (404)")) })),
    });
    let spec = chain(&["a", "b", "c"], policy(5, 10));
    let dag = Arc::new(Dag::new(
        spec.clone(),
        vec![bad.clone(), ok_task("b", &log), ok_task("c", &log)],
    ));
    let (run, _) = runs::ensure_run(&db.pool, &spec, "2026-03", "manual", false)
        .await
        .unwrap();
    run_to_end(&engine(&db, dag, "w1", Duration::from_secs(5)), run.id).await;
    assert_eq!(bad.calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        states(&db, run.id).await,
        pairs(&[("a", "failed"), ("b", "upstream_failed"), ("c", "upstream_failed")])
    );
    let a = runs::attempts(&db.pool, run.id).await.unwrap();
    assert_eq!((a.len(), a[0].retryable), (1, Some(false)));
}

#[tokio::test]
async fn two_engines_race_over_many_periods_and_run_every_attempt_once() {
    let db = TestDb::new().await;
    let log: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let slowish = |id: &'static str| {
        Arc::new(FakeTask {
            id,
            calls: AtomicU32::new(0),
            log: log.clone(),
            behaviour: Box::new(|_, _| {
                Box::pin(async {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    Ok(json!({}))
                })
            }),
        }) as Arc<dyn Task>
    };
    let spec = chain(&["fetch", "clean", "load"], policy(3, 10));
    let dag = Arc::new(Dag::new(
        spec.clone(),
        vec![slowish("fetch"), slowish("clean"), slowish("load")],
    ));
    let periods: Vec<String> = (1..=12).map(|m| format!("2025-{m:02}")).collect();
    for p in &periods {
        runs::ensure_run(&db.pool, &spec, p, "backfill", false).await.unwrap();
    }
    let e1 = engine(&db, dag.clone(), "w1", Duration::from_secs(5));
    let e2 = engine(&db, dag.clone(), "w2", Duration::from_secs(5));
    let (tx, rx) = watch::channel(false);
    let h1 = tokio::spawn({
        let (e, rx) = (e1.clone(), rx.clone());
        async move { e.run(None, rx, Duration::from_secs(5)).await }
    });
    let h2 = tokio::spawn({
        let (e, rx) = (e2.clone(), rx.clone());
        async move { e.run(None, rx, Duration::from_secs(5)).await }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let done = runs::list_runs(&db.pool, Some("test_dag"), Some("success"), 100)
            .await
            .unwrap()
            .len();
        if done == periods.len() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "only {done} runs finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tx.send(true).unwrap();
    h1.await.unwrap().unwrap();
    h2.await.unwrap().unwrap();

    let executed = log.lock().unwrap().clone();
    let mut counts: HashMap<(String, String), usize> = HashMap::new();
    for e in &executed {
        *counts.entry(e.clone()).or_default() += 1;
    }
    assert_eq!(counts.len(), periods.len() * 3);
    assert!(counts.values().all(|&n| n == 1), "some task ran twice: {counts:?}");
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM reelflow.attempts")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(attempts as usize, executed.len());
    let workers: Vec<String> = sqlx::query_scalar("SELECT DISTINCT worker FROM reelflow.attempts ORDER BY 1")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(workers, ["w1", "w2"], "both engines took part");
}

#[tokio::test]
async fn expired_lease_is_taken_over_and_the_late_result_refused() {
    let db = TestDb::new().await;
    let log = Arc::default();
    let spec = chain(&["a"], policy(3, 10));
    let dag = Arc::new(Dag::new(spec.clone(), vec![ok_task("a", &log)]));
    let (run, _) = runs::ensure_run(&db.pool, &spec, "2026-04", "manual", false)
        .await
        .unwrap();
    runs::start_queued_runs(&db.pool, "test_dag", 10).await.unwrap();
    // A worker claims the task with a short lease, then "dies": no heartbeat, no result.
    let dead = runs::claim(
        &db.pool,
        "dead-worker",
        Duration::from_millis(300),
        &["test_dag".into()],
        None,
    )
    .await
    .unwrap()
    .expect("a task to claim");
    assert!(
        runs::claim(&db.pool, "other", Duration::from_secs(5), &["test_dag".into()], None)
            .await
            .unwrap()
            .is_none()
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    run_to_end(&engine(&db, dag, "w2", Duration::from_secs(5)), run.id).await;
    assert_eq!(states(&db, run.id).await, pairs(&[("a", "success")]));
    // The dead worker comes back with a result: refused, and nothing changes.
    let late = runs::finish(&db.pool, &dead, Outcome::Success(json!({"late": true})))
        .await
        .unwrap();
    assert_eq!(late, Recorded::Fenced);
    assert!(
        !runs::heartbeat(&db.pool, dead.ti_id, dead.attempt_id, Duration::from_secs(5))
            .await
            .unwrap()
    );
    let ti = &runs::task_instances(&db.pool, run.id).await.unwrap()[0];
    assert_eq!(
        (ti.state.as_str(), ti.outputs.clone()),
        ("success", Some(json!({"period": "2026-04"})))
    );
    let a: Vec<(String, String)> = runs::attempts(&db.pool, run.id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.worker, a.outcome.to_string()))
        .collect();
    assert_eq!(a, pairs(&[("dead-worker", "lease_expired"), ("w2", "success")]));
}

#[tokio::test]
async fn catch_up_creates_exactly_the_missed_periods_and_honours_the_caps() {
    let db = TestDb::new().await;
    let spec = chain(&["a"], policy(1, 10));
    let schedule = Schedule::new("0 3 1 * *", "Europe/Berlin").unwrap();
    let now: chrono::DateTime<chrono::Utc> = "2026-11-26T10:00:00Z".parse().unwrap();
    let mut cfg = reelflow::config::Config::load(None, &|_| None).unwrap();
    cfg.schedule.start_period = "2026-03".into();
    cfg.schedule.max_catchup_runs = 5;
    let due: Vec<String> = reelflow::serve::due_periods(&cfg, &schedule, now)
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(
        due,
        ["2026-06", "2026-07", "2026-08", "2026-09", "2026-10"],
        "the 5 most recent missed periods"
    );
    cfg.schedule.catchup = false;
    let due: Vec<String> = reelflow::serve::due_periods(&cfg, &schedule, now)
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(due, ["2026-10"], "without catch-up only the latest period");
    cfg.schedule.start_period = String::new();
    let due: Vec<String> = reelflow::serve::due_periods(&cfg, &schedule, now)
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(due, ["2026-10"], "a new deployment loads the latest complete period");

    // Creating them twice makes no duplicates; the active-run cap holds.
    cfg.schedule.catchup = true;
    cfg.schedule.start_period = "2026-03".into();
    for _ in 0..2 {
        for p in reelflow::serve::due_periods(&cfg, &schedule, now) {
            runs::ensure_run(&db.pool, &spec, &p.to_string(), "scheduled", false)
                .await
                .unwrap();
        }
    }
    let all = runs::list_runs(&db.pool, Some("test_dag"), None, 100).await.unwrap();
    assert_eq!(all.len(), 5);
    let started = runs::start_queued_runs(&db.pool, "test_dag", 2).await.unwrap();
    assert_eq!(started.len(), 2);
    assert!(runs::start_queued_runs(&db.pool, "test_dag", 2)
        .await
        .unwrap()
        .is_empty());
    let running: Vec<String> = runs::list_runs(&db.pool, Some("test_dag"), Some("running"), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.period)
        .collect();
    assert_eq!(running, ["2026-07", "2026-06"], "oldest periods start first");
}

#[tokio::test]
async fn concurrent_triggers_of_one_period_make_one_run() {
    let db = TestDb::new().await;
    let spec = chain(&["a", "b"], policy(1, 10));
    let mut handles = Vec::new();
    for _ in 0..16 {
        let (pool, spec) = (db.pool.clone(), spec.clone());
        handles.push(tokio::spawn(async move {
            runs::ensure_run(&pool, &spec, "2026-05", "manual", false)
                .await
                .unwrap()
        }));
    }
    let mut created = 0;
    let mut ids = std::collections::HashSet::new();
    for h in handles {
        let (run, c) = h.await.unwrap();
        created += c as usize;
        ids.insert(run.id);
    }
    assert_eq!((created, ids.len()), (1, 1));
    let tis: i64 = sqlx::query_scalar("SELECT count(*) FROM reelflow.task_instances")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(tis, 2);
}

#[tokio::test]
async fn mark_success_and_failed_transitions() {
    let db = TestDb::new().await;
    let spec = chain(&["a", "b", "c"], policy(1, 10));
    let (run, _) = runs::ensure_run(&db.pool, &spec, "2026-06", "manual", false)
        .await
        .unwrap();
    runs::mark_task(&db.pool, &spec, run.id, "a", "failed").await.unwrap();
    assert_eq!(
        states(&db, run.id).await,
        pairs(&[("a", "failed"), ("b", "upstream_failed"), ("c", "upstream_failed")])
    );
    assert_eq!(runs::get_run(&db.pool, run.id).await.unwrap().state, "failed");
    runs::mark_task(&db.pool, &spec, run.id, "a", "success").await.unwrap();
    assert_eq!(
        states(&db, run.id).await,
        pairs(&[("a", "success"), ("b", "queued"), ("c", "none")])
    );
    assert_eq!(
        runs::get_run(&db.pool, run.id).await.unwrap().state,
        "queued",
        "reopened: work is left"
    );
    runs::mark_task(&db.pool, &spec, run.id, "b", "success").await.unwrap();
    runs::mark_task(&db.pool, &spec, run.id, "c", "success").await.unwrap();
    assert_eq!(runs::get_run(&db.pool, run.id).await.unwrap().state, "success");
    assert!(runs::mark_task(&db.pool, &spec, run.id, "nope", "success")
        .await
        .unwrap_err()
        .is_not_found());
    assert!(runs::mark_task(&db.pool, &spec, run.id + 99, "a", "success")
        .await
        .unwrap_err()
        .is_not_found());

    // Marking a running task fences out its worker.
    let (run2, _) = runs::ensure_run(&db.pool, &spec, "2026-07", "manual", false)
        .await
        .unwrap();
    runs::start_queued_runs(&db.pool, "test_dag", 10).await.unwrap();
    let claimed = runs::claim(
        &db.pool,
        "w",
        Duration::from_secs(30),
        &["test_dag".into()],
        Some(run2.id),
    )
    .await
    .unwrap()
    .unwrap();
    runs::mark_task(&db.pool, &spec, run2.id, "a", "success").await.unwrap();
    let late = runs::finish(&db.pool, &claimed, Outcome::Success(json!({})))
        .await
        .unwrap();
    assert_eq!(late, Recorded::Fenced);
}

#[tokio::test]
async fn cancelled_by_shutdown_goes_back_to_the_queue_and_completes_on_the_next_start() {
    let db = TestDb::new().await;
    let log = Arc::default();
    let slow = Arc::new(FakeTask {
        id: "a",
        calls: AtomicU32::new(0),
        log: Arc::clone(&log),
        behaviour: Box::new(|ctx, n| {
            let cancel = ctx.cancel.clone();
            Box::pin(async move {
                if n > 0 {
                    return Ok(json!({"second": true}));
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(60)) => Ok(json!({})),
                    _ = cancel.cancelled() => Err(TaskError::cancelled()),
                }
            })
        }),
    });
    let spec = chain(&["a"], policy(2, 100));
    let dag = Arc::new(Dag::new(spec.clone(), vec![slow.clone()]));
    let (run, _) = runs::ensure_run(&db.pool, &spec, "2026-08", "manual", false)
        .await
        .unwrap();
    let e = engine(&db, dag.clone(), "w1", Duration::from_secs(5));
    let (tx, rx) = watch::channel(false);
    let h = tokio::spawn({
        let e = e.clone();
        async move { e.run(None, rx, Duration::from_millis(200)).await }
    });
    while slow.calls.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), h)
        .await
        .expect("stopped within the grace")
        .unwrap()
        .unwrap();
    let ti = &runs::task_instances(&db.pool, run.id).await.unwrap()[0];
    assert_eq!(ti.state, "up_for_retry");
    assert!(ti.lease_owner.is_none(), "the lease was released");
    run_to_end(&engine(&db, dag, "w2", Duration::from_secs(5)), run.id).await;
    let a: Vec<(String, String)> = runs::attempts(&db.pool, run.id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.worker, a.outcome.to_string()))
        .collect();
    assert_eq!(a, pairs(&[("w1", "cancelled"), ("w2", "success")]));
}

/// Runs record the DAG they follow. A run created before a task was added between `load` and
/// `publish` gets that task on rerun and on retry, and `publish` never runs past it (before,
/// the missing row counted as a satisfied upstream and `publish` ran straight after `load`).
#[tokio::test]
async fn a_task_added_to_the_dag_after_the_run_was_created_runs_before_publish() {
    let db = TestDb::new().await;
    let log: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let ids = ["fetch", "clean", "load", "publish"];
    let old = chain(&ids, policy(1, 10));
    let mut new_tasks = old.tasks.clone();
    new_tasks.insert(
        3,
        TaskSpec {
            id: "validate".into(),
            upstream: vec!["load".into()],
            retry: policy(1, 10),
        },
    );
    new_tasks[4].upstream = vec!["validate".into()];
    let new = DagSpec::new("test_dag", new_tasks).unwrap();
    let code = |with_validate: Option<Arc<FakeTask>>| {
        let mut tasks: Vec<Arc<dyn Task>> = ids.iter().map(|id| ok_task(id, &log) as Arc<dyn Task>).collect();
        let spec = match with_validate {
            Some(v) => {
                tasks.push(v);
                new.clone()
            }
            None => old.clone(),
        };
        Arc::new(Dag::new(spec, tasks))
    };
    let order = |period: &str| -> Vec<String> {
        log.lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == period)
            .map(|(_, t)| t.clone())
            .collect()
    };

    // Rerun: the run was created and finished with the old DAG.
    let (run, _) = runs::ensure_run(&db.pool, &old, "2026-02", "manual", false)
        .await
        .unwrap();
    assert_eq!(run.dag_version, old.shape().version());
    run_to_end(&engine(&db, code(None), "w1", Duration::from_secs(5)), run.id).await;
    log.lock().unwrap().clear();
    let (rerun, reset) = runs::ensure_run(&db.pool, &new, "2026-02", "manual", true)
        .await
        .unwrap();
    assert!(reset);
    assert_eq!(rerun.dag_version, new.shape().version());
    assert_ne!(rerun.dag_version, run.dag_version);
    run_to_end(
        &engine(&db, code(Some(ok_task("validate", &log))), "w1", Duration::from_secs(5)),
        run.id,
    )
    .await;
    assert_eq!(order("2026-02"), ["fetch", "clean", "load", "validate", "publish"]);
    assert_eq!(
        states(&db, run.id).await,
        pairs(&[
            ("fetch", "success"),
            ("clean", "success"),
            ("load", "success"),
            ("publish", "success"),
            ("validate", "success"),
        ])
    );

    // Retry: a run of the old DAG whose load failed is retried with the new DAG; the new task
    // fails, and publish must not run.
    let (run, _) = runs::ensure_run(&db.pool, &old, "2026-03", "manual", false)
        .await
        .unwrap();
    let failing_load = Arc::new(FakeTask {
        id: "load",
        calls: AtomicU32::new(0),
        log: log.clone(),
        behaviour: Box::new(|_, _| Box::pin(async { Err(TaskError::fatal("bad data")) })),
    });
    let old_code = Arc::new(Dag::new(
        old.clone(),
        vec![
            ok_task("fetch", &log),
            ok_task("clean", &log),
            failing_load,
            ok_task("publish", &log),
        ],
    ));
    run_to_end(&engine(&db, old_code, "w1", Duration::from_secs(5)), run.id).await;
    assert_eq!(runs::get_run(&db.pool, run.id).await.unwrap().state, "failed");
    let cleared = runs::retry_task(&db.pool, &new, run.id, "load", false).await.unwrap();
    assert_eq!(cleared, ["load", "publish"]);
    let st = states(&db, run.id).await;
    assert!(
        st.contains(&("validate".into(), "none".into())),
        "the new task waits: {st:?}"
    );
    let failing_validate = Arc::new(FakeTask {
        id: "validate",
        calls: AtomicU32::new(0),
        log: log.clone(),
        behaviour: Box::new(|_, _| Box::pin(async { Err(TaskError::fatal("gate failed")) })),
    });
    log.lock().unwrap().clear();
    run_to_end(
        &engine(&db, code(Some(failing_validate)), "w1", Duration::from_secs(5)),
        run.id,
    )
    .await;
    assert_eq!(
        order("2026-03"),
        ["load", "validate"],
        "publish did not run past the failed gate"
    );
    let st = states(&db, run.id).await;
    assert!(st.contains(&("publish".into(), "upstream_failed".into())), "{st:?}");
    assert_eq!(runs::get_run(&db.pool, run.id).await.unwrap().state, "failed");
}

/// A try stopped by the platform (shutdown) does not use up the task's tries: with
/// `max_tries = 1`, a cancelled try goes back to the queue and the next one succeeds; it is
/// recorded as `cancelled` and counted in `interruptions`. An interruption cap stops a task
/// that is interrupted every time.
#[tokio::test]
async fn interrupted_tries_do_not_use_up_max_tries_but_have_a_cap() {
    let db = TestDb::new().await;
    let log = Arc::default();
    let spec = chain(
        &["a"],
        RetryPolicy {
            max_interruptions: 3,
            ..policy(1, 10)
        },
    );
    let interrupted_once = Arc::new(FakeTask {
        id: "a",
        calls: AtomicU32::new(0),
        log: Arc::clone(&log),
        behaviour: Box::new(|_, n| {
            Box::pin(async move {
                if n == 0 {
                    Err(TaskError::cancelled())
                } else {
                    Ok(json!({}))
                }
            })
        }),
    });
    let (run, _) = runs::ensure_run(&db.pool, &spec, "2026-04", "manual", false)
        .await
        .unwrap();
    let dag = Arc::new(Dag::new(spec.clone(), vec![interrupted_once]));
    run_to_end(&engine(&db, dag, "w1", Duration::from_secs(5)), run.id).await;
    assert_eq!(runs::get_run(&db.pool, run.id).await.unwrap().state, "success");
    let outcomes: Vec<String> = runs::attempts(&db.pool, run.id)
        .await
        .unwrap()
        .iter()
        .map(|a| a.outcome.to_string())
        .collect();
    assert_eq!(outcomes, ["cancelled", "success"]);
    let ti = &runs::task_instances(&db.pool, run.id).await.unwrap()[0];
    assert_eq!((ti.try_number, ti.interruptions), (2, 1));

    let always = Arc::new(FakeTask {
        id: "a",
        calls: AtomicU32::new(0),
        log: Arc::clone(&log),
        behaviour: Box::new(|_, _| Box::pin(async { Err(TaskError::cancelled()) })),
    });
    let (run, _) = runs::ensure_run(&db.pool, &spec, "2026-05", "manual", false)
        .await
        .unwrap();
    let dag = Arc::new(Dag::new(spec.clone(), vec![always.clone()]));
    run_to_end(&engine(&db, dag, "w1", Duration::from_secs(5)), run.id).await;
    assert_eq!(runs::get_run(&db.pool, run.id).await.unwrap().state, "failed");
    assert_eq!(
        always.calls.load(Ordering::SeqCst),
        3,
        "stopped at the interruption cap"
    );
    let ti = &runs::task_instances(&db.pool, run.id).await.unwrap()[0];
    let err = ti.last_error.as_deref().unwrap_or_default();
    assert!(err.contains("max_interruptions = 3"), "{err}");
}

#[tokio::test]
async fn a_runs_own_source_is_written_with_the_run_it_creates_or_resets() {
    // Written by the transaction that creates (or resets) the run and sends its notification,
    // so a worker woken by it never starts the fetch with the configured source instead.
    let db = TestDb::new().await;
    let spec = chain(&["a"], policy(1, 10));
    let source = |id: i64| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, Option<String>>("SELECT source FROM reelflow.dag_runs WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let (run, created) =
        runs::ensure_run_with_source(&db.pool, &spec, "2026-05", "manual", false, Some("file:///x.zip"))
            .await
            .unwrap();
    assert!(created);
    assert_eq!(source(run.id).await.as_deref(), Some("file:///x.zip"));
    // Not a rerun: the existing run and its source stay.
    let (_, created) = runs::ensure_run_with_source(&db.pool, &spec, "2026-05", "manual", false, Some("file:///y.zip"))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(source(run.id).await.as_deref(), Some("file:///x.zip"));
    // A rerun of the finished run resets it with the source it is given, none included.
    sqlx::query("UPDATE reelflow.dag_runs SET state = 'success' WHERE id = $1")
        .bind(run.id)
        .execute(&db.pool)
        .await
        .unwrap();
    let (_, created) = runs::ensure_run(&db.pool, &spec, "2026-05", "manual", true)
        .await
        .unwrap();
    assert!(created);
    assert_eq!(source(run.id).await, None, "the configured source again");
}
