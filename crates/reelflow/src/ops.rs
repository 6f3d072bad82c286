//! Operator actions shared by the CLI and the HTTP API, so both do exactly the same thing and
//! every mutating action is recorded with its time and origin.

use reelflow_dag::{DagSpec, Period};
use reelflow_store::runs::{self, AttemptInfo, RunError, RunInfo, TaskInstanceInfo};
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;

/// A run with its task instances and attempts.
#[derive(Debug, Serialize)]
pub struct RunDetail {
    pub run: RunInfo,
    pub tasks: Vec<TaskInstanceInfo>,
    pub attempts: Vec<AttemptInfo>,
}

#[derive(Debug, Serialize)]
pub struct Triggered {
    pub run: RunInfo,
    /// false: the period already had a run and nothing changed.
    pub created: bool,
}

pub async fn show_run(pool: &PgPool, run_id: i64) -> Result<RunDetail, RunError> {
    Ok(RunDetail {
        run: runs::get_run(pool, run_id).await?,
        tasks: runs::task_instances(pool, run_id).await?,
        attempts: runs::attempts(pool, run_id).await?,
    })
}

/// Creates the period's run (idempotent), or resets a finished one with `rerun`.
pub async fn trigger(
    pool: &PgPool,
    dag: &DagSpec,
    period: Period,
    rerun: bool,
    kind: &str,
    origin: &str,
) -> Result<Triggered, RunError> {
    let (run, created) = runs::ensure_run(pool, dag, &period.to_string(), kind, rerun).await?;
    if created {
        let action = if rerun { "rerun" } else { "trigger" };
        runs::record_action(
            pool,
            origin,
            action,
            Some(&dag.id),
            Some(&run.period),
            Some(run.id),
            None,
            noted(json!({"trigger": kind})),
        )
        .await?;
    }
    Ok(Triggered { run, created })
}

/// Triggers every period from `from` to `to` (inclusive) as backfill runs.
pub async fn backfill(
    pool: &PgPool,
    dag: &DagSpec,
    from: Period,
    to: Period,
    rerun: bool,
    origin: &str,
) -> Result<Vec<Triggered>, RunError> {
    if from > to {
        return Err(RunError::Conflict(format!(
            "backfill range is empty: {from} is after {to}"
        )));
    }
    let mut out = Vec::new();
    let mut p = from;
    while p <= to {
        out.push(trigger(pool, dag, p, rerun, "backfill", origin).await?);
        p = p.succ();
    }
    Ok(out)
}

pub async fn retry(
    pool: &PgPool,
    dag: &DagSpec,
    run_id: i64,
    task: &str,
    downstream: bool,
    origin: &str,
) -> Result<Vec<String>, RunError> {
    let run = runs::get_run(pool, run_id).await?;
    let cleared = runs::retry_task(pool, dag, run_id, task, downstream).await?;
    runs::record_action(
        pool,
        origin,
        "retry",
        Some(&run.dag_id),
        Some(&run.period),
        Some(run_id),
        Some(task),
        noted(json!({"downstream": downstream, "cleared": cleared})),
    )
    .await?;
    Ok(cleared)
}

pub async fn mark(
    pool: &PgPool,
    dag: &DagSpec,
    run_id: i64,
    task: &str,
    state: &str,
    origin: &str,
) -> Result<(), RunError> {
    let run = runs::get_run(pool, run_id).await?;
    runs::mark_task(pool, dag, run_id, task, state).await?;
    runs::record_action(
        pool,
        origin,
        "mark",
        Some(&run.dag_id),
        Some(&run.period),
        Some(run_id),
        Some(task),
        noted(json!({"state": state})),
    )
    .await?;
    Ok(())
}

pub async fn rollback(pool: &PgPool, origin: &str) -> anyhow::Result<reelflow_load::PublishOutput> {
    let out = reelflow_load::rollback(pool).await?;
    runs::record_action(
        pool,
        origin,
        "rollback",
        None,
        Some(&out.period),
        None,
        None,
        noted(json!({"snapshot_id": out.snapshot_id, "replaced": out.replaced})),
    )
    .await?;
    Ok(out)
}

// --- Operator notes and dry-run previews (used by the JSON API and the operators' page) ---

tokio::task_local! {
    static NOTE: Option<String>;
}

/// Runs `f` with an operator's note: every action it records carries `"note"` in its detail.
pub async fn with_note<F: std::future::Future>(note: Option<String>, f: F) -> F::Output {
    let note = note
        .map(|n| n.trim().chars().take(2000).collect::<String>())
        .filter(|n| !n.is_empty());
    NOTE.scope(note, f).await
}

fn noted(mut detail: serde_json::Value) -> serde_json::Value {
    if let Some(note) = NOTE.try_with(|n| n.clone()).ok().flatten() {
        if let Some(o) = detail.as_object_mut() {
            o.insert("note".into(), serde_json::Value::String(note));
        }
    }
    detail
}

/// An operator action, as the page and the API's `dry_run` describe it.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Retry {
        run_id: i64,
        task: String,
        downstream: bool,
    },
    RetryFailed {
        run_id: i64,
    },
    Mark {
        run_id: i64,
        task: String,
        state: String,
    },
    Trigger {
        period: Period,
        rerun: bool,
    },
    Backfill {
        from: Period,
        to: Period,
        rerun: bool,
    },
    Rollback,
}

/// One thing an action would change.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Change {
    pub run_id: Option<i64>,
    pub period: Option<String>,
    pub task_id: Option<String>,
    pub snapshot_id: Option<i64>,
    pub from: String,
    pub to: String,
}

/// What an action would do, computed without changing anything.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    pub dry_run: bool,
    pub action: &'static str,
    pub summary: String,
    pub changes: Vec<Change>,
}

fn ti_change(run: &RunInfo, task: &str, from: &str, to: &str) -> Change {
    Change {
        run_id: Some(run.id),
        period: Some(run.period.clone()),
        task_id: Some(task.to_string()),
        snapshot_id: None,
        from: from.to_string(),
        to: to.to_string(),
    }
}

/// The failed task instances of a run, in DAG order.
async fn failed_tasks(pool: &PgPool, dag: &DagSpec, run_id: i64) -> Result<Vec<String>, RunError> {
    let tis = runs::task_instances(pool, run_id).await?;
    Ok(dag
        .tasks
        .iter()
        .filter(|t| tis.iter().any(|ti| ti.task_id == t.id && ti.state == "failed"))
        .map(|t| t.id.clone())
        .collect())
}

/// The dry run of `action`: the task instances, runs or snapshots it would change.
pub async fn preview(pool: &PgPool, dag: &DagSpec, action: &Action) -> Result<Preview, RunError> {
    let state_of = |tis: &[TaskInstanceInfo], t: &str| {
        tis.iter()
            .find(|ti| ti.task_id == t)
            .map(|ti| ti.state.clone())
            .unwrap_or_else(|| "none".into())
    };
    let (name, summary, changes) = match action {
        Action::Retry {
            run_id,
            task,
            downstream,
        } => {
            let run = runs::get_run(pool, *run_id).await?;
            dag.task(task).ok_or_else(|| RunError::NoTask {
                run_id: *run_id,
                task_id: task.clone(),
            })?;
            let tis = runs::task_instances(pool, *run_id).await?;
            let mut changes = Vec::new();
            for t in dag.downstream_of(task) {
                let st = state_of(&tis, t);
                if t == task || *downstream || st == "upstream_failed" {
                    if st == "running" {
                        return Err(RunError::Conflict(format!(
                            "task {t} of run {run_id} is running; wait for it to finish"
                        )));
                    }
                    changes.push(ti_change(&run, t, &st, "cleared (runs again)"));
                }
            }
            let scope = if *downstream {
                "with downstream"
            } else {
                "only this task"
            };
            ("retry", format!("retry {task} of {} ({scope})", run.period), changes)
        }
        Action::RetryFailed { run_id } => {
            let run = runs::get_run(pool, *run_id).await?;
            let tis = runs::task_instances(pool, *run_id).await?;
            let failed = failed_tasks(pool, dag, *run_id).await?;
            let mut changes = Vec::new();
            for t in &dag.tasks {
                let st = state_of(&tis, &t.id);
                let after_failed = failed.iter().any(|f| dag.downstream_of(f).contains(&t.id.as_str()));
                if failed.contains(&t.id) || (st == "upstream_failed" && after_failed) {
                    changes.push(ti_change(&run, &t.id, &st, "cleared (runs again)"));
                }
            }
            (
                "retry_failed",
                format!("retry the failed tasks of {}", run.period),
                changes,
            )
        }
        Action::Mark { run_id, task, state } => {
            let run = runs::get_run(pool, *run_id).await?;
            dag.task(task).ok_or_else(|| RunError::NoTask {
                run_id: *run_id,
                task_id: task.clone(),
            })?;
            if state != "success" && state != "failed" {
                return Err(RunError::Conflict(format!(
                    "a task can be marked success or failed, not {state}"
                )));
            }
            let tis = runs::task_instances(pool, *run_id).await?;
            let now = state_of(&tis, task);
            let to = if now == "running" {
                format!("{state} (the running try is superseded)")
            } else {
                state.clone()
            };
            let mut changes = vec![ti_change(&run, task, &now, &to)];
            for t in dag.downstream_of(task).into_iter().skip(1) {
                let st = state_of(&tis, t);
                if st == "upstream_failed" || (st == "queued" && state == "failed") {
                    changes.push(ti_change(&run, t, &st, "re-evaluated from its upstream"));
                }
            }
            ("mark", format!("mark {task} of {} {state}", run.period), changes)
        }
        Action::Trigger { period, rerun } => {
            let (summary, changes) = trigger_change(pool, dag, period, *rerun).await?;
            (if *rerun { "rerun" } else { "trigger" }, summary, changes)
        }
        Action::Backfill { from, to, rerun } => {
            if from > to {
                return Err(RunError::Conflict(format!(
                    "backfill range is empty: {from} is after {to}"
                )));
            }
            let mut changes = Vec::new();
            let mut p = *from;
            while p <= *to {
                changes.extend(trigger_change(pool, dag, &p, *rerun).await?.1);
                p = p.succ();
            }
            ("backfill", format!("backfill {from} to {to}"), changes)
        }
        Action::Rollback => {
            let cur: Option<(i64, String)> =
                sqlx::query_as("SELECT id, period FROM reelflow.snapshots WHERE state = 'published'")
                    .fetch_optional(pool)
                    .await?;
            let prev: Option<(i64, String)> = sqlx::query_as(
                "SELECT id, period FROM reelflow.snapshots WHERE state = 'retired'
                 ORDER BY retired_at DESC NULLS LAST, id DESC LIMIT 1",
            )
            .fetch_optional(pool)
            .await?;
            let Some((id, period)) = prev else {
                return Err(RunError::Conflict(
                    "there is no earlier snapshot to roll back to".into(),
                ));
            };
            let mut changes = vec![Change {
                run_id: None,
                period: Some(period.clone()),
                task_id: None,
                snapshot_id: Some(id),
                from: "retired".into(),
                to: "published".into(),
            }];
            if let Some((cid, cperiod)) = cur {
                changes.push(Change {
                    run_id: None,
                    period: Some(cperiod),
                    task_id: None,
                    snapshot_id: Some(cid),
                    from: "published".into(),
                    to: "rolled_back".into(),
                });
            }
            ("rollback", format!("publish snapshot {id} ({period}) again"), changes)
        }
    };
    Ok(Preview {
        dry_run: true,
        action: name,
        summary,
        changes,
    })
}

async fn trigger_change(
    pool: &PgPool,
    dag: &DagSpec,
    period: &Period,
    rerun: bool,
) -> Result<(String, Vec<Change>), RunError> {
    let p = period.to_string();
    let change = |run_id, from: &str, to: &str| Change {
        run_id,
        period: Some(p.clone()),
        task_id: None,
        snapshot_id: None,
        from: from.into(),
        to: to.into(),
    };
    Ok(match runs::find_run(pool, &dag.id, &p).await? {
        None => (format!("create the run of {p}"), vec![change(None, "no run", "queued")]),
        Some(r) if !rerun => (
            format!("{p} already has run {} ({}); nothing changes", r.id, r.state),
            vec![],
        ),
        Some(r) if r.state == "queued" || r.state == "running" => {
            return Err(RunError::Conflict(format!(
                "run {} of {} for {p} is still {}; wait for it or retry a task instead",
                r.id, dag.id, r.state
            )))
        }
        Some(r) => (
            format!("run {p} again from the start (run {})", r.id),
            vec![change(Some(r.id), &r.state, "queued (every task reset)")],
        ),
    })
}

/// Operator "clear" of every failed task of a run (each without downstream: the tasks that
/// never ran because of it are reset anyway).
pub async fn retry_failed(pool: &PgPool, dag: &DagSpec, run_id: i64, origin: &str) -> Result<Vec<String>, RunError> {
    let run = runs::get_run(pool, run_id).await?;
    let mut cleared = Vec::new();
    for t in failed_tasks(pool, dag, run_id).await? {
        for c in runs::retry_task(pool, dag, run_id, &t, false).await? {
            if !cleared.contains(&c) {
                cleared.push(c);
            }
        }
    }
    runs::record_action(
        pool,
        origin,
        "retry_failed",
        Some(&run.dag_id),
        Some(&run.period),
        Some(run_id),
        None,
        noted(json!({"cleared": cleared})),
    )
    .await?;
    Ok(cleared)
}

/// Carries out `action` through the same functions as the CLI and the API.
pub async fn perform(pool: &PgPool, dag: &DagSpec, action: &Action, origin: &str) -> anyhow::Result<serde_json::Value> {
    Ok(match action {
        Action::Retry {
            run_id,
            task,
            downstream,
        } => json!({"cleared": retry(pool, dag, *run_id, task, *downstream, origin).await?}),
        Action::RetryFailed { run_id } => json!({"cleared": retry_failed(pool, dag, *run_id, origin).await?}),
        Action::Mark { run_id, task, state } => {
            mark(pool, dag, *run_id, task, state, origin).await?;
            json!({"marked": state})
        }
        Action::Trigger { period, rerun } => {
            serde_json::to_value(trigger(pool, dag, *period, *rerun, "manual", origin).await?)?
        }
        Action::Backfill { from, to, rerun } => {
            json!({"runs": backfill(pool, dag, *from, *to, *rerun, origin).await?})
        }
        Action::Rollback => serde_json::to_value(rollback(pool, origin).await?)?,
    })
}
