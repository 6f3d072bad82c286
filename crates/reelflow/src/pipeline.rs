//! The `movies_monthly` DAG (fetch -> clean -> load -> validate -> publish) and `reelflow run`: one period
//! through the same engine the daemon uses, in the foreground, with a human summary.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};
use reelflow_clean::{CleanInput, CleanOutput, CleanTask};
use reelflow_dag::{BoxFuture, DagSpec, Measure, Period, Stage, Task, TaskContext, TaskError, TaskSpec, TaskState};
use reelflow_fetch::FetchTask;
use reelflow_load::{LoadTask, PublishTask, ValidateTask};
use reelflow_store::runs::{self, AttemptInfo, RunInfo, TaskInstanceInfo};
use sqlx::PgPool;

use crate::config::Config;
use crate::engine::{Dag, Engine, EngineConfig};
use crate::run_source::RunSourceFetch;

/// The DAG `movies_monthly`, declared once: each task (its id is its stage's `ID`) with the
/// tasks it depends on. The engine and the store assume nothing else about its shape.
///
/// To add a task: implement [`Stage`] for it (its `Input` names the upstream outputs it reads),
/// implement [`Node`] (how it is built from the configuration), and add one line here.
fn declare(d: &mut impl Declare) {
    d.task::<RunSourceFetch>(&[]);
    d.task::<CleanUnlessUnchanged>(&[RunSourceFetch::ID]);
    d.task::<LoadTask>(&[CleanUnlessUnchanged::ID]);
    d.task::<ValidateTask>(&[LoadTask::ID]);
    d.task::<PublishTask>(&[ValidateTask::ID]);
}

/// A task of the DAG: a [`Stage`] that can be built from the configuration.
pub trait Node: Stage + Sized {
    fn build(cfg: &Config, pool: &PgPool) -> anyhow::Result<Self>;
}

/// What [`declare`] is read by: once for the DAG's shape, once for its code.
trait Declare {
    fn task<N: Node>(&mut self, upstream: &[&'static str]);
}

struct Specs<'a> {
    cfg: &'a Config,
    tasks: Vec<TaskSpec>,
}

impl Declare for Specs<'_> {
    fn task<N: Node>(&mut self, upstream: &[&'static str]) {
        self.tasks.push(TaskSpec {
            id: N::ID.to_string(),
            upstream: upstream.iter().map(|u| u.to_string()).collect(),
            retry: self.cfg.tasks.get(N::ID).cloned().unwrap_or_default(),
        });
    }
}

struct Code<'a> {
    cfg: &'a Config,
    pool: &'a PgPool,
    tasks: anyhow::Result<Vec<Arc<dyn Task>>>,
}

impl Declare for Code<'_> {
    fn task<N: Node>(&mut self, _upstream: &[&'static str]) {
        if let Ok(tasks) = &mut self.tasks {
            match N::build(self.cfg, self.pool) {
                Ok(t) => tasks.push(Arc::new(t)),
                Err(e) => self.tasks = Err(e),
            }
        }
    }
}

/// Which upstream outputs each task of [`declare`] reads: the field names of its `Input`
/// (task id -> the task ids it reads). An operator may mark a task success by hand (it then has
/// no output) only if no task after it reads its output.
pub fn reads() -> std::collections::BTreeMap<&'static str, Vec<&'static str>> {
    struct Reads(std::collections::BTreeMap<&'static str, Vec<&'static str>>);
    impl Declare for Reads {
        fn task<N: Node>(&mut self, _upstream: &[&'static str]) {
            self.0.insert(N::ID, crate::input_fields::of::<N::Input>());
        }
    }
    let mut r = Reads(Default::default());
    declare(&mut r);
    r.0
}

/// The DAG's shape and retry policies from the configuration.
pub fn dag_spec(cfg: &Config) -> DagSpec {
    let mut specs = Specs { cfg, tasks: vec![] };
    declare(&mut specs);
    DagSpec::new(cfg.dag_id.clone(), specs.tasks).expect("the declared DAG is valid")
}

/// The DAG's task code.
pub fn tasks(cfg: &Config, pool: &PgPool) -> anyhow::Result<Vec<Arc<dyn Task>>> {
    let mut code = Code {
        cfg,
        pool,
        tasks: Ok(vec![]),
    };
    declare(&mut code);
    code.tasks
}

impl Node for RunSourceFetch {
    fn build(cfg: &Config, pool: &PgPool) -> anyhow::Result<Self> {
        Ok(RunSourceFetch {
            fetch: FetchTask {
                source: reelflow_fetch::Source::parse(&cfg.source)?,
                config: cfg.fetch.to_fetch_config(),
            },
            pool: pool.clone(),
        })
    }
}

impl Node for CleanUnlessUnchanged {
    fn build(cfg: &Config, pool: &PgPool) -> anyhow::Result<Self> {
        Ok(CleanUnlessUnchanged {
            clean: CleanTask {
                config: reelflow_clean::CleanConfig {
                    max_entry_bytes: cfg.clean.max_entry_bytes,
                    cut_spacing_bytes: cfg.clean.cut_spacing_bytes,
                },
            },
            pool: pool.clone(),
            reuse: cfg.load.reuse_unchanged,
        })
    }
}

impl Node for LoadTask {
    fn build(cfg: &Config, pool: &PgPool) -> anyhow::Result<Self> {
        Ok(LoadTask {
            pool: pool.clone(),
            config: cfg.load.clone(),
        })
    }
}

impl Node for ValidateTask {
    fn build(cfg: &Config, pool: &PgPool) -> anyhow::Result<Self> {
        Ok(ValidateTask {
            pool: pool.clone(),
            config: cfg.gate.clone(),
        })
    }
}

impl Node for PublishTask {
    fn build(cfg: &Config, pool: &PgPool) -> anyhow::Result<Self> {
        Ok(PublishTask {
            pool: pool.clone(),
            config: cfg.load.clone(),
        })
    }
}

/// The `clean` task, which first asks whether cleaning is needed at all: when the period's
/// kept snapshot was built from a source with the SHA-256 that fetch just saw, by this same
/// build ([`reelflow_load::build_id`]), it outputs [`CleanOutput::Unchanged`] and load and
/// publish pass that snapshot through without touching the database. `load.reuse_unchanged =
/// false` always cleans and reloads.
pub struct CleanUnlessUnchanged {
    pub clean: CleanTask,
    pub pool: PgPool,
    pub reuse: bool,
}

impl Stage for CleanUnlessUnchanged {
    const ID: &'static str = CleanTask::ID;
    type Input = CleanInput;
    type Output = CleanOutput;

    fn run<'a>(&'a self, ctx: &'a TaskContext, input: CleanInput) -> BoxFuture<'a, Result<CleanOutput, TaskError>> {
        Box::pin(async move {
            if self.reuse {
                let sha = &input.fetch.sha256;
                let period = ctx.period.to_string();
                if let Some(id) = reelflow_load::unchanged_snapshot(&self.pool, &ctx.dag_id, &period, sha).await? {
                    tracing::info!(
                        snapshot_id = id,
                        sha256 = %sha,
                        "source unchanged since snapshot {id}: nothing to clean or load"
                    );
                    return Ok(CleanOutput::Unchanged {
                        unchanged_snapshot: id,
                        source_sha256: sha.clone(),
                    });
                }
            }
            Stage::run(&self.clean, ctx, input).await
        })
    }

    fn measures(out: &CleanOutput) -> Vec<Measure> {
        out.measures()
    }

    fn summary(out: &CleanOutput) -> Vec<String> {
        out.summary()
    }
}

pub fn dag(cfg: &Config, pool: &PgPool) -> anyhow::Result<Arc<Dag>> {
    Ok(Arc::new(Dag::new(dag_spec(cfg), tasks(cfg, pool)?)))
}

pub fn engine_config(cfg: &Config) -> anyhow::Result<EngineConfig> {
    Ok(EngineConfig {
        worker_id: cfg.engine.worker_id(),
        lease: Duration::from_secs(cfg.engine.lease_secs),
        heartbeat: Duration::from_secs(cfg.engine.heartbeat_secs),
        poll: Duration::from_millis(cfg.engine.poll_ms),
        backstop: Duration::from_secs(cfg.engine.backstop_poll_secs),
        notifications: cfg.engine.notifications,
        slots: cfg.engine.slots,
        max_active_runs: cfg.schedule.max_active_runs,
        scratch_dir: cfg.scratch_dir(),
        artifacts: cfg.artifacts()?,
    })
}

/// What one run did, for the summary.
pub struct RunReport {
    pub run: RunInfo,
    pub already_done: bool,
    pub tasks: Vec<TaskInstanceInfo>,
    pub attempts: Vec<AttemptInfo>,
    /// Outputs of the tasks that succeeded, keyed by task id.
    pub outputs: reelflow_dag::Outputs,
    /// What the stages' outputs say ([`Stage::summary`]), in the DAG's order.
    pub summary: Vec<String>,
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
    let origin = "cli";
    let triggered = crate::ops::trigger(pool, &dag.spec, period, rerun, "manual", origin).await?;
    let run = triggered.run;
    if !triggered.created && run.state == reelflow_dag::RunState::Success {
        return report(pool, &dag, run, true).await;
    } else if !triggered.created && run.state == reelflow_dag::RunState::Failed {
        let tis = runs::task_instances(pool, run.id).await?;
        for ti in tis.iter().filter(|t| t.state == TaskState::Failed) {
            tracing::info!(run_id = run.id, task = %ti.task_id, "retrying the failed task of an earlier attempt at this period");
            crate::ops::retry(pool, &dag.spec, run.id, &ti.task_id, false, origin).await?;
        }
    } else if !triggered.created {
        tracing::info!(run_id = run.id, state = %run.state, "the period's run is in progress or was interrupted; taking part in it");
    }

    let engine = Arc::new(Engine::new(pool.clone(), vec![dag.clone()], engine_config(cfg)?));
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
    if !run.state.is_finished() {
        bail!(
            "run {} of {} for {} was interrupted (state {}); `reelflow run --period {}` takes it over",
            run.id,
            run.dag_id,
            run.period,
            run.state,
            run.period
        );
    }
    report(pool, &dag, run, false).await
}

async fn report(pool: &PgPool, dag: &Dag, run: RunInfo, already_done: bool) -> anyhow::Result<RunReport> {
    let tasks = runs::task_instances(pool, run.id).await?;
    let attempts = runs::attempts(pool, run.id).await?;
    let outputs: reelflow_dag::Outputs = tasks
        .iter()
        .filter(|t| t.state == TaskState::Success)
        .filter_map(|t| Some((t.task_id.clone(), t.outputs.clone()?)))
        .collect();
    // Each stage says what its output means; the summary follows the DAG's order.
    let summary = dag
        .spec
        .tasks
        .iter()
        .filter_map(|t| Some((dag.tasks.get(&t.id)?, outputs.get(&t.id)?)))
        .flat_map(|(task, out)| task.summary(out))
        .collect();
    Ok(RunReport {
        run,
        already_done,
        tasks,
        attempts,
        outputs,
        summary,
    })
}

impl RunReport {
    pub fn succeeded(&self) -> bool {
        self.run.state == reelflow_dag::RunState::Success
    }

    /// One paragraph naming what failed, for a failed run.
    pub fn failure(&self) -> anyhow::Error {
        let failed = self.tasks.iter().find(|t| t.state == TaskState::Failed);
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
                    t.try_number - t.interruptions,
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
        for line in &self.summary {
            let _ = writeln!(s, "{line}");
        }
        let _ = writeln!(s, "tasks:");
        for t in &self.tasks {
            let secs = match (t.started_at, t.ended_at) {
                (Some(a), Some(b)) => format!("{:.2} s", (b - a).num_milliseconds() as f64 / 1000.0),
                _ => "-".into(),
            };
            let _ = writeln!(
                s,
                "  {:<8} {:<16} try {}/{}{}  {secs}",
                t.task_id,
                t.state,
                t.try_number - t.interruptions,
                t.max_tries,
                if t.interruptions > 0 {
                    format!(" (+{} interrupted)", t.interruptions)
                } else {
                    String::new()
                }
            );
        }
        s
    }
}
