//! The `movies_monthly` DAG (fetch -> clean -> load -> publish) and `reelflow run`: one period
//! through the same engine the daemon uses, in the foreground, with a human summary.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};
use reelflow_dag::{DagSpec, Period, Task, TaskSpec};
use reelflow_store::runs::{self, AttemptInfo, RunInfo, TaskInstanceInfo};
use sqlx::PgPool;

use crate::config::Config;
use crate::engine::{Dag, Engine, EngineConfig};

/// Task ids of the DAG, in order; each depends on the one before.
pub const TASKS: [&str; 4] = ["fetch", "clean", "load", "publish"];

/// The DAG's shape and retry policies from the configuration.
pub fn dag_spec(cfg: &Config) -> DagSpec {
    let tasks = TASKS
        .iter()
        .enumerate()
        .map(|(i, id)| TaskSpec {
            id: id.to_string(),
            upstream: if i == 0 { vec![] } else { vec![TASKS[i - 1].to_string()] },
            retry: cfg.tasks.get(*id).cloned().unwrap_or_default(),
        })
        .collect();
    DagSpec::new(cfg.dag_id.clone(), tasks).expect("the built-in DAG is valid")
}

/// The DAG's task code.
pub fn tasks(cfg: &Config, pool: &PgPool) -> anyhow::Result<Vec<Arc<dyn Task>>> {
    let source = reelflow_fetch::Source::parse(&cfg.source)?;
    Ok(vec![
        Arc::new(crate::run_source::RunSourceFetch {
            fetch: reelflow_fetch::FetchTask {
                source,
                config: cfg.fetch.to_fetch_config(),
            },
            pool: pool.clone(),
        }),
        Arc::new(CleanUnlessUnchanged {
            clean: reelflow_clean::CleanTask {
                config: reelflow_clean::CleanConfig {
                    max_entry_bytes: cfg.clean.max_entry_bytes,
                },
            },
            pool: pool.clone(),
            reuse: cfg.load.reuse_unchanged,
        }),
        Arc::new(reelflow_load::LoadTask {
            pool: pool.clone(),
            config: cfg.load.clone(),
        }),
        Arc::new(reelflow_load::PublishTask {
            pool: pool.clone(),
            config: cfg.load.clone(),
        }),
    ])
}

/// The `clean` task, which first asks whether cleaning is needed at all: when the period's
/// kept snapshot was built from a source with the SHA-256 that fetch just saw, by this same
/// build ([`reelflow_load::build_id`]), it outputs `{"unchanged_snapshot": id}` and load and
/// publish pass that snapshot through without touching the database. `load.reuse_unchanged =
/// false` always cleans and reloads.
pub struct CleanUnlessUnchanged {
    pub clean: reelflow_clean::CleanTask,
    pub pool: PgPool,
    pub reuse: bool,
}

impl Task for CleanUnlessUnchanged {
    fn id(&self) -> &'static str {
        "clean"
    }
    fn run<'a>(
        &'a self,
        ctx: &'a reelflow_dag::TaskContext,
        inputs: &'a reelflow_dag::Outputs,
    ) -> reelflow_dag::BoxFuture<'a, Result<serde_json::Value, reelflow_dag::TaskError>> {
        Box::pin(async move {
            let sha = inputs.get("fetch").and_then(|f| f["sha256"].as_str());
            if let (true, Some(sha)) = (self.reuse, sha) {
                let found =
                    reelflow_load::unchanged_snapshot(&self.pool, &ctx.dag_id, &ctx.period.to_string(), sha).await?;
                if let Some(id) = found {
                    tracing::info!(
                        snapshot_id = id,
                        sha256 = sha,
                        "source unchanged since snapshot {id}: nothing to clean or load"
                    );
                    return Ok(serde_json::json!({ "unchanged_snapshot": id, "source_sha256": sha }));
                }
            }
            self.clean.run(ctx, inputs).await
        })
    }
}

pub fn dag(cfg: &Config, pool: &PgPool) -> anyhow::Result<Arc<Dag>> {
    Ok(Arc::new(Dag::new(dag_spec(cfg), tasks(cfg, pool)?)))
}

pub fn engine_config(cfg: &Config) -> EngineConfig {
    EngineConfig {
        worker_id: cfg.engine.worker_id(),
        lease: Duration::from_secs(cfg.engine.lease_secs),
        heartbeat: Duration::from_secs(cfg.engine.heartbeat_secs),
        poll: Duration::from_millis(cfg.engine.poll_ms),
        slots: cfg.engine.slots,
        max_active_runs: cfg.schedule.max_active_runs,
        artifacts_dir: cfg.artifacts_dir.clone(),
    }
}

/// What one run did, for the summary.
pub struct RunReport {
    pub run: RunInfo,
    pub already_done: bool,
    pub tasks: Vec<TaskInstanceInfo>,
    pub attempts: Vec<AttemptInfo>,
    /// Outputs of the tasks that succeeded, keyed by task id.
    pub outputs: reelflow_dag::Outputs,
}

/// Runs `period` in this process through the engine: creates the run (or takes over an
/// interrupted one once its lease allows), and returns when it has finished. A period that
/// already succeeded is left alone unless `rerun`; a failed one has its failed tasks retried.
pub async fn run_period(cfg: &Config, pool: &PgPool, period: Period, rerun: bool) -> anyhow::Result<RunReport> {
    run_period_with(cfg, pool, period, rerun, None).await
}

/// [`run_period`], with a live progress display on the terminal when `progress` is given.
pub async fn run_period_with(
    cfg: &Config,
    pool: &PgPool,
    period: Period,
    rerun: bool,
    progress: Option<crate::progress::Latest>,
) -> anyhow::Result<RunReport> {
    let dag = dag(cfg, pool)?;
    let (run, created) = runs::ensure_run(pool, &dag.spec, &period.to_string(), "manual", rerun).await?;
    let origin = "cli";
    if created {
        let action = if rerun { "rerun" } else { "trigger" };
        runs::record_action(
            pool,
            origin,
            action,
            Some(&dag.spec.id),
            Some(&run.period),
            Some(run.id),
            None,
            serde_json::json!({}),
        )
        .await?;
    } else if run.state == "success" {
        return report(pool, run, true).await;
    } else if run.state == "failed" {
        let tis = runs::task_instances(pool, run.id).await?;
        for ti in tis.iter().filter(|t| t.state == "failed") {
            tracing::info!(run_id = run.id, task = %ti.task_id, "retrying the failed task of an earlier attempt at this period");
            runs::retry_task(pool, &dag.spec, run.id, &ti.task_id, false).await?;
            runs::record_action(
                pool,
                origin,
                "retry",
                Some(&dag.spec.id),
                Some(&run.period),
                Some(run.id),
                Some(&ti.task_id),
                serde_json::json!({"downstream": false}),
            )
            .await?;
        }
    } else {
        tracing::info!(run_id = run.id, state = %run.state, "the period's run is in progress or was interrupted; taking part in it");
    }

    let engine = Arc::new(Engine::new(pool.clone(), vec![dag], engine_config(cfg)));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopper = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::warn!("interrupted: stopping after cancelling the running task");
            let _ = stop_tx.send(true);
        }
    });
    let grace = Duration::from_secs(0);
    let renderer = progress.map(|latest| crate::progress::Renderer::start(pool.clone(), run.id, latest));
    let result = engine.run(Some(run.id), stop_rx, grace).await;
    if let Some(r) = renderer {
        r.finish().await;
    }
    result?;
    stopper.abort();
    let run = runs::get_run(pool, run.id).await?;
    if run.state != "success" && run.state != "failed" {
        bail!(
            "run {} of {} for {} was interrupted (state {}); `reelflow run --period {}` takes it over",
            run.id,
            run.dag_id,
            run.period,
            run.state,
            run.period
        );
    }
    report(pool, run, false).await
}

async fn report(pool: &PgPool, run: RunInfo, already_done: bool) -> anyhow::Result<RunReport> {
    let tasks = runs::task_instances(pool, run.id).await?;
    let attempts = runs::attempts(pool, run.id).await?;
    let outputs = tasks
        .iter()
        .filter(|t| t.state == "success")
        .filter_map(|t| Some((t.task_id.clone(), t.outputs.clone()?)))
        .collect();
    Ok(RunReport {
        run,
        already_done,
        tasks,
        attempts,
        outputs,
    })
}

impl RunReport {
    pub fn succeeded(&self) -> bool {
        self.run.state == "success"
    }

    /// One paragraph naming what failed, for a failed run.
    pub fn failure(&self) -> anyhow::Error {
        let failed = self.tasks.iter().find(|t| t.state == "failed");
        match failed {
            Some(t) => {
                let last = self.attempts.iter().rev().find(|a| a.task_id == t.task_id);
                let retryable = last.and_then(|a| a.retryable).unwrap_or(false);
                anyhow!(
                    "run {} of {} for period {} failed: task {} failed after {} of {} tries ({}): {}. Fix the cause, then `{}` or `reelflow run --period {}`.",
                    self.run.id,
                    self.run.dag_id,
                    self.run.period,
                    t.task_id,
                    t.try_number,
                    t.max_tries,
                    if retryable { "out of tries; retrying later may help" } else { "retrying will not help" },
                    t.last_error.as_deref().unwrap_or("no error recorded"),
                    crate::ops::retry_hint(self.run.id, &t.task_id, t.last_error.as_deref()),
                    self.run.period
                )
            }
            None => anyhow!(
                "run {} of {} for period {} ended {}",
                self.run.id,
                self.run.dag_id,
                self.run.period,
                self.run.state
            ),
        }
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let o = &self.outputs;
        if self.already_done {
            let _ = writeln!(
                s,
                "reelflow: period {} already succeeded (run {}, finished {}); use --rerun to run it again",
                self.run.period,
                self.run.id,
                self.run.ended_at.map(|t| t.to_rfc3339()).unwrap_or_default()
            );
            return s;
        }
        let _ = writeln!(
            s,
            "reelflow: run {} of {} for period {}: {}",
            self.run.id, self.run.dag_id, self.run.period, self.run.state
        );
        if let Some(f) = o.get("fetch") {
            let _ = writeln!(
                s,
                "fetch: {} bytes from {}{} (sha256 {})",
                f["size"],
                f["source"].as_str().unwrap_or("?"),
                if f["reused"].as_bool() == Some(true) {
                    ", unchanged: reused the earlier download"
                } else {
                    ""
                },
                f["sha256"].as_str().unwrap_or("?")
            );
        }
        if let Some(id) = o.get("clean").and_then(|c| c["unchanged_snapshot"].as_i64()) {
            let _ = writeln!(
                s,
                "clean: source unchanged since snapshot {id} (same SHA-256, same build): nothing cleaned or reloaded"
            );
        }
        if let Some(files) = o.get("clean").and_then(|c| c["manifest"]["files"].as_object()) {
            let _ = writeln!(s, "clean:");
            for (file, fm) in files {
                let rejected = fm["rejected"].as_object();
                let total: u64 = rejected
                    .map(|m| m.values().filter_map(|v| v.as_u64()).sum())
                    .unwrap_or(0);
                let detail = rejected
                    .map(|m| m.iter().map(|(r, n)| format!("{r}={n}")).collect::<Vec<_>>().join(", "))
                    .filter(|d| !d.is_empty())
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default();
                let _ = writeln!(
                    s,
                    "  {file:<20} {:>10} accepted {total:>6} rejected{detail}",
                    fm["accepted"].as_u64().unwrap_or(0)
                );
            }
        }
        if let Some(l) = o.get("load").filter(|l| l["reused"] != true) {
            let _ = writeln!(
                s,
                "load: snapshot {} ({})",
                l["snapshot_id"],
                l["schema"].as_str().unwrap_or("?")
            );
            if let Some(rows) = l["rows"].as_object() {
                for (t, n) in rows {
                    let _ = writeln!(s, "  {t:<20} {:>10} rows", n.as_u64().unwrap_or(0));
                }
            }
        }
        if let Some(p) = o.get("publish").filter(|p| p["current"] == false) {
            let _ = writeln!(
                s,
                "publish: snapshot {} kept for {}; `movies` stays on a newer period",
                p["snapshot_id"], self.run.period
            );
        } else if let Some(p) = o.get("publish") {
            let _ = writeln!(
                s,
                "publish: snapshot {} is now the schema `movies` (replaced: {}, dropped: {})",
                p["snapshot_id"], p["replaced"], p["dropped"]
            );
        }
        let _ = writeln!(s, "tasks:");
        for t in &self.tasks {
            let secs = match (t.started_at, t.ended_at) {
                (Some(a), Some(b)) => format!("{:.2} s", (b - a).num_milliseconds() as f64 / 1000.0),
                _ => "-".into(),
            };
            let _ = writeln!(
                s,
                "  {:<8} {:<16} try {}/{}  {secs}",
                t.task_id, t.state, t.try_number, t.max_tries
            );
        }
        s
    }
}
