//! Operator actions shared by the CLI and the HTTP API, so both do exactly the same thing and
//! every mutating action is recorded with its time and origin.

use reelflow_dag::{DagSpec, Period, TaskState};
use reelflow_store::runs::{self, AttemptInfo, RunError, RunInfo, TaskInstanceInfo};
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;

/// A row of `reelflow.operator_actions`: who did what, when.
#[derive(Debug, Serialize)]
pub struct ActionInfo {
    pub id: i64,
    pub at: chrono::DateTime<chrono::Utc>,
    pub origin: String,
    pub action: String,
    pub dag_id: Option<String>,
    pub period: Option<String>,
    pub run_id: Option<i64>,
    pub task_id: Option<String>,
    pub detail: Option<serde_json::Value>,
}

/// The audit trail, newest first.
pub async fn list_actions(pool: &PgPool, limit: i64) -> Result<Vec<ActionInfo>, RunError> {
    let rows = sqlx::query(
        "SELECT id, at, origin, action, dag_id, period, run_id, task_id, detail
         FROM reelflow.operator_actions ORDER BY id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    use sqlx::Row;
    Ok(rows
        .iter()
        .map(|r| ActionInfo {
            id: r.get(0),
            at: r.get(1),
            origin: r.get(2),
            action: r.get(3),
            dag_id: r.get(4),
            period: r.get(5),
            run_id: r.get(6),
            task_id: r.get(7),
            detail: r.get(8),
        })
        .collect())
}

/// A run with its task instances and attempts.
#[derive(Debug, Serialize)]
pub struct RunDetail {
    pub run: RunInfo,
    /// The source recorded with the run (`runs trigger --source`); null: the configured one.
    pub source: Option<String>,
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
        source: crate::run_source::run_source(pool, run_id)
            .await?
            .map(|s| reelflow_fetch::Source::parse(&s).map(|p| p.to_string()).unwrap_or(s)),
        tasks: runs::task_instances(pool, run_id).await?,
        attempts: runs::attempts(pool, run_id).await?,
    })
}

/// Creates the period's run (idempotent), or resets a finished one with `rerun`. A period
/// whose data interval has not ended is refused ([`check_period_ended`]).
pub async fn trigger(
    pool: &PgPool,
    dag: &DagSpec,
    period: Period,
    rerun: bool,
    kind: &str,
    origin: &str,
) -> anyhow::Result<Triggered> {
    trigger_with_source(pool, dag, period, rerun, kind, origin, None).await
}

/// [`trigger`] with a source for this run only (`runs trigger --source`): recorded with the run
/// (and in the audit trail), and what its fetch task fetches. None: the configured source.
pub async fn trigger_with_source(
    pool: &PgPool,
    dag: &DagSpec,
    period: Period,
    rerun: bool,
    kind: &str,
    origin: &str,
    source: Option<&str>,
) -> anyhow::Result<Triggered> {
    check_period_ended(period, chrono::Utc::now())?;
    if let Some(s) = source {
        reelflow_fetch::Source::parse(s).map_err(|e| Refused(format!("source: {e}")))?;
    }
    let t = create(pool, dag, period, rerun, kind, origin, source).await?;
    if t.created {
        if let Some(s) = source {
            runs::record_action(
                pool,
                origin,
                "set_source",
                Some(&dag.id),
                Some(&t.run.period),
                Some(t.run.id),
                Some("fetch"),
                json!({"source": reelflow_fetch::Source::parse(s).map(|p| p.to_string()).unwrap_or_default()}),
            )
            .await?;
        }
    }
    Ok(t)
}

async fn create(
    pool: &PgPool,
    dag: &DagSpec,
    period: Period,
    rerun: bool,
    kind: &str,
    origin: &str,
    source: Option<&str>,
) -> Result<Triggered, RunError> {
    let (run, created) = runs::ensure_run_with_source(pool, dag, &period.to_string(), kind, rerun, source).await?;
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

/// Triggers every period from `from` to `to` (inclusive) as backfill runs, after
/// [`backfill_plan`] accepted the range.
#[allow(clippy::too_many_arguments)]
pub async fn backfill(
    pool: &PgPool,
    dag: &DagSpec,
    from: Period,
    to: Period,
    rerun: bool,
    yes: bool,
    cfg: &OpsConfig,
    origin: &str,
) -> anyhow::Result<Vec<Triggered>> {
    backfill_plan(from, to, yes, cfg.max_backfill_runs, chrono::Utc::now())?;
    let mut out = Vec::new();
    let mut p = from;
    while p <= to {
        out.push(create(pool, dag, p, rerun, "backfill", origin, None).await?);
        p = p.succ();
    }
    Ok(out)
}

/// Cancels a run that has not finished ([`runs::cancel_run`]): it ends `failed`, a running
/// task's worker is fenced out and stops.
pub async fn cancel(pool: &PgPool, dag: &DagSpec, run_id: i64, origin: &str) -> Result<runs::Cancelled, RunError> {
    let c = runs::cancel_run(pool, dag, run_id).await?;
    runs::record_action(
        pool,
        origin,
        "cancel",
        Some(&dag.id),
        Some(&c.period),
        Some(run_id),
        None,
        noted(json!({"stopped": c.stopped, "not_run": c.not_run})),
    )
    .await?;
    if let Some(end) = &c.run_end {
        crate::metrics::record_run_end(end);
    }
    sweep(pool).await;
    Ok(c)
}

/// Cancels every backfill run that is still queued (running ones are left: cancel them one by
/// one). Returns what was cancelled.
pub async fn cancel_backfill(pool: &PgPool, dag: &DagSpec, origin: &str) -> Result<Vec<runs::Cancelled>, RunError> {
    let mut out = Vec::new();
    for id in runs::queued_backfill_runs(pool, &dag.id).await? {
        match cancel(pool, dag, id, origin).await {
            Ok(c) => out.push(c),
            // Started or finished meanwhile.
            Err(RunError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The command that re-runs what failed: `tasks retry RUN TASK`, or for a clean that found the
/// downloaded archive damaged, `tasks retry RUN fetch --downstream` (cleaning the same bytes
/// again cannot help).
pub fn retry_hint(run_id: i64, task: &str, error: Option<&str>) -> String {
    if task == "clean" && error.is_some_and(|e| e.contains("fetch --downstream")) {
        format!("reelflow tasks retry {run_id} fetch --downstream")
    } else {
        format!("reelflow tasks retry {run_id} {task}")
    }
}

/// What happens to the snapshot of a retry that re-runs `load` but not `publish`: said by the
/// CLI and the API with the cleared tasks.
pub fn retry_note(cleared: &[String]) -> Option<String> {
    let has = |t: &str| cleared.iter().any(|c| c == t);
    (has("load") && !has("publish")).then(|| {
        "load builds a new snapshot, but publish is not re-run (it already finished), so that \
         snapshot will not be published and is dropped as an orphan; movies keeps what it shows. \
         Use --downstream to publish it"
            .to_string()
    })
}

/// Drops snapshots that no run will publish any more (after a mark or a cancel); best effort.
async fn sweep(pool: &PgPool) {
    if let Err(e) = reelflow_load::sweep_orphans(pool).await {
        tracing::warn!(error = %e, "could not drop orphaned snapshots now; a later sweep will");
    }
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

/// Whether a task after `task` reads its output: for the declared DAG, what each task's
/// `Input` names (`publish` reads `load`'s output, not `validate`'s); for another DAG, any
/// task after it.
fn read_downstream(dag: &DagSpec, task: &str) -> bool {
    let reads = crate::pipeline::reads();
    dag.downstream_of(task)
        .into_iter()
        .skip(1)
        .any(|t| reads.get(t).is_none_or(|r| r.contains(&task)))
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
    if state == "success" && read_downstream(dag, task) {
        // The tasks after it read its outputs: without them they could only fail.
        let ti = runs::task_instances(pool, run_id)
            .await?
            .into_iter()
            .find(|t| t.task_id == task);
        if let Some(ti) = ti.filter(|t| t.outputs.is_none()) {
            return Err(RunError::Conflict(format!(
                "task {task} of run {run_id} has no outputs ({}: it never succeeded), and the tasks after it \
                 read them; run it instead: `reelflow tasks retry {run_id} {task} --downstream`",
                ti.state
            )));
        }
    }
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
    sweep(pool).await;
    Ok(())
}

/// Settings of the operator actions, from the configuration.
#[derive(Debug, Clone)]
pub struct OpsConfig {
    pub keep_previous: usize,
    pub keep_periods: usize,
    /// A backfill creating more runs than this needs a confirmation.
    pub max_backfill_runs: u32,
}

impl Default for OpsConfig {
    fn default() -> Self {
        let load = reelflow_load::LoadConfig::default();
        OpsConfig {
            keep_previous: load.keep_previous,
            keep_periods: load.keep_periods,
            max_backfill_runs: 36,
        }
    }
}

impl OpsConfig {
    pub fn from_config(cfg: &crate::config::Config) -> OpsConfig {
        OpsConfig {
            keep_previous: cfg.load.keep_previous,
            keep_periods: cfg.load.keep_periods,
            max_backfill_runs: cfg.engine.max_backfill_runs,
        }
    }
}

/// A request that is refused as asked (HTTP 400): a period that has not ended, a backfill
/// over the limit without confirmation.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// The month (UTC) `now` is in: the first period whose data interval has not ended.
pub fn current_period(now: chrono::DateTime<chrono::Utc>) -> Period {
    use chrono::Datelike;
    Period::new(now.year(), now.month()).expect("a valid month")
}

/// Refuses a period whose data interval (the month, in UTC) has not ended yet: its data is not
/// complete, so a run would load a partial month or fail.
pub fn check_period_ended(period: Period, now: chrono::DateTime<chrono::Utc>) -> Result<(), Refused> {
    let current = current_period(now);
    if period >= current {
        let when = if period == current {
            "has not ended yet"
        } else {
            "is in the future"
        };
        return Err(Refused(format!(
            "period {period} {when}: its data interval ends on {}-01 00:00 UTC; the latest complete period is {}",
            period.succ(),
            current.pred()
        )));
    }
    Ok(())
}

/// How many periods `from..=to` holds; refuses an empty range, periods that have not ended and,
/// without `yes`, more than `max` runs.
pub fn backfill_plan(
    from: Period,
    to: Period,
    yes: bool,
    max: u32,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<u32, Refused> {
    if from > to {
        return Err(Refused(format!("backfill range is empty: {from} is after {to}")));
    }
    check_period_ended(to, now)?;
    let n = ((to.year() - from.year()) * 12 + to.month() as i32 - from.month() as i32 + 1) as u32;
    if n > max && !yes {
        return Err(Refused(format!(
            "backfill {from}..{to} would create {n} runs, more than engine.max_backfill_runs ({max}); \
             confirm with --yes (API: \"yes\": true)"
        )));
    }
    Ok(n)
}

/// Publishes a kept snapshot again: the previous one (rollback), the one last rolled back away
/// from (roll-forward) or a given one.
pub async fn rollback(
    pool: &PgPool,
    target: reelflow_load::RollTarget,
    cfg: &OpsConfig,
    origin: &str,
) -> anyhow::Result<reelflow_load::PublishOutput> {
    let out = reelflow_load::roll(pool, target, cfg.keep_previous, cfg.keep_periods).await?;
    let action = match target {
        reelflow_load::RollTarget::Forward => "rollforward",
        _ => "rollback",
    };
    runs::record_action(
        pool,
        origin,
        action,
        None,
        Some(&out.period),
        None,
        None,
        noted(json!({"snapshot_id": out.snapshot_id, "replaced": out.replaced, "dropped": out.dropped})),
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
    // The previews use the state machine's own decisions (`reelflow_dag::clear`,
    // `mark_resets`), so a preview and the action can never disagree.
    let state_of = |tis: &[TaskInstanceInfo], t: &str| {
        tis.iter()
            .find(|ti| ti.task_id == t)
            .map(|ti| ti.state)
            .unwrap_or(TaskState::None)
    };
    let states_of = |tis: &[TaskInstanceInfo]| -> reelflow_dag::States {
        dag.tasks.iter().map(|t| (t.id.clone(), state_of(tis, &t.id))).collect()
    };
    let conflict = |run_id: i64, e: reelflow_dag::StateError| match e {
        reelflow_dag::StateError::Running { task } => {
            RunError::Conflict(format!("task {task} of run {run_id} is running; wait for it to finish"))
        }
        reelflow_dag::StateError::UnknownTask { task } => RunError::NoTask { run_id, task_id: task },
        e => RunError::Conflict(e.to_string()),
    };
    let (name, summary, changes) = match action {
        Action::Retry {
            run_id,
            task,
            downstream,
        } => {
            let run = runs::get_run(pool, *run_id).await?;
            let tis = runs::task_instances(pool, *run_id).await?;
            let cleared = reelflow_dag::clear(&dag.shape(), &states_of(&tis), task, *downstream)
                .map_err(|e| conflict(*run_id, e))?;
            let changes = cleared
                .iter()
                .map(|t| ti_change(&run, t, state_of(&tis, t).as_str(), "cleared (runs again)"))
                .collect();
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
            let states = states_of(&tis);
            let mut cleared: Vec<String> = Vec::new();
            for f in failed_tasks(pool, dag, *run_id).await? {
                for t in reelflow_dag::clear(&dag.shape(), &states, &f, false).map_err(|e| conflict(*run_id, e))? {
                    if !cleared.contains(&t) {
                        cleared.push(t);
                    }
                }
            }
            let changes = dag
                .tasks
                .iter()
                .filter(|t| cleared.contains(&t.id))
                .map(|t| ti_change(&run, &t.id, state_of(&tis, &t.id).as_str(), "cleared (runs again)"))
                .collect();
            (
                "retry_failed",
                format!("retry the failed tasks of {}", run.period),
                changes,
            )
        }
        Action::Mark { run_id, task, state } => {
            let run = runs::get_run(pool, *run_id).await?;
            if state != "success" && state != "failed" {
                return Err(RunError::Conflict(format!(
                    "a task can be marked success or failed, not {state}"
                )));
            }
            let tis = runs::task_instances(pool, *run_id).await?;
            let resets =
                reelflow_dag::mark_resets(&dag.shape(), &states_of(&tis), task).map_err(|e| conflict(*run_id, e))?;
            let now = state_of(&tis, task);
            let to = if now == TaskState::Running {
                format!("{state} (the running try is superseded)")
            } else {
                state.clone()
            };
            let mut changes = vec![ti_change(&run, task, now.as_str(), &to)];
            for t in &resets {
                changes.push(ti_change(
                    &run,
                    t,
                    state_of(&tis, t).as_str(),
                    "re-evaluated from its upstream",
                ));
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
            // The same choice `snapshots list` marks: what `movies` showed before (publish history).
            let snaps = reelflow_load::list_snapshots(pool)
                .await
                .map_err(|e| RunError::Conflict(e.to_string()))?;
            let cur = snaps
                .iter()
                .find(|s| s.state == "published")
                .map(|s| (s.id, s.period.clone()));
            let Some((id, period, from)) = snaps
                .iter()
                .find(|s| s.rollback_target)
                .map(|s| (s.id, s.period.clone(), s.state.clone()))
            else {
                return Err(RunError::Conflict(
                    "there is no earlier snapshot to roll back to".into(),
                ));
            };
            let mut changes = vec![Change {
                run_id: None,
                period: Some(period.clone()),
                task_id: None,
                snapshot_id: Some(id),
                from,
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
            vec![change(Some(r.id), r.state.as_str(), "queued (every task reset)")],
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

/// Carries out `action` through the same functions as the CLI and the API. A backfill from
/// here is confirmed: its preview was shown and confirmed first.
pub async fn perform(
    pool: &PgPool,
    dag: &DagSpec,
    action: &Action,
    cfg: &OpsConfig,
    origin: &str,
) -> anyhow::Result<serde_json::Value> {
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
            json!({"runs": backfill(pool, dag, *from, *to, *rerun, true, cfg, origin).await?})
        }
        Action::Rollback => {
            serde_json::to_value(rollback(pool, reelflow_load::RollTarget::Previous, cfg, origin).await?)?
        }
    })
}
