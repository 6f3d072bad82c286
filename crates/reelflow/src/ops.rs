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
            json!({"trigger": kind}),
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
        json!({"downstream": downstream, "cleared": cleared}),
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
        json!({"state": state}),
    )
    .await?;
    Ok(())
}

/// Settings of the operator actions, from the configuration.
#[derive(Debug, Clone)]
pub struct OpsConfig {
    pub keep_previous: usize,
    pub keep_periods: usize,
}

impl Default for OpsConfig {
    fn default() -> Self {
        let load = reelflow_load::LoadConfig::default();
        OpsConfig {
            keep_previous: load.keep_previous,
            keep_periods: load.keep_periods,
        }
    }
}

impl OpsConfig {
    pub fn from_config(cfg: &crate::config::Config) -> OpsConfig {
        OpsConfig {
            keep_previous: cfg.load.keep_previous,
            keep_periods: cfg.load.keep_periods,
        }
    }
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
        json!({"snapshot_id": out.snapshot_id, "replaced": out.replaced, "dropped": out.dropped}),
    )
    .await?;
    Ok(out)
}
