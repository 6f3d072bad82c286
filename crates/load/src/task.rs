//! The `load` and `publish` stages of the DAG.

use reelflow_clean::CleanOutput;
use reelflow_dag::{BoxFuture, Measure, Stage, TaskContext, TaskError};
use serde::Deserialize;
use sqlx::PgPool;

use crate::publish::publish_with;
use crate::reuse::reuse_snapshot;
use crate::snapshot::load_snapshot;
use crate::types::{LoadConfig, LoadOutput, PublishOutput};

/// What the `load` task reads: the `clean` task's output.
#[derive(Clone, Debug, Deserialize)]
pub struct LoadInput {
    pub clean: CleanOutput,
}

/// The `load` task: COPYs the clean output into a new snapshot (or passes an unchanged
/// source's snapshot through) and outputs [`LoadOutput`].
pub struct LoadTask {
    pub pool: PgPool,
    pub config: LoadConfig,
}

impl Stage for LoadTask {
    const ID: &'static str = "load";
    type Input = LoadInput;
    type Output = LoadOutput;

    fn run<'a>(&'a self, ctx: &'a TaskContext, input: LoadInput) -> BoxFuture<'a, Result<LoadOutput, TaskError>> {
        Box::pin(async move {
            let record = match input.clean {
                CleanOutput::Unchanged {
                    unchanged_snapshot: id, ..
                } => {
                    let out = reuse_snapshot(&self.pool, id).await?;
                    tracing::info!(
                        snapshot_id = id,
                        "source unchanged: the snapshot is reused, nothing loaded"
                    );
                    return Ok(out);
                }
                CleanOutput::Cleaned { record, .. } => record,
            };
            let period = ctx.period.to_string();
            let work = load_snapshot(
                &self.pool,
                &ctx.artifacts,
                &record,
                &ctx.dag_id,
                &period,
                Some(ctx.run_id),
                &self.config,
            );
            tokio::select! {
                r = work => Ok(r?),
                _ = ctx.cancel.cancelled() => {
                    // The half-built schema is left `building`; once the aborted session has
                    // released the period's lock, a sweep (this one, or a later) drops it.
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    if let Err(e) = crate::orphans::sweep_orphans(&self.pool).await {
                        tracing::warn!(error = %e, "could not drop the cancelled load's snapshot now; a later sweep will");
                    }
                    Err(TaskError::cancelled())
                }
            }
        })
    }

    fn measures(out: &LoadOutput) -> Vec<Measure> {
        if out.reused {
            return vec![];
        }
        out.rows
            .iter()
            .map(|(table, n)| Measure::Rows {
                table: table.clone(),
                outcome: "loaded",
                n: *n,
            })
            .collect()
    }

    fn summary(l: &LoadOutput) -> Vec<String> {
        if l.reused {
            return vec![];
        }
        let mut lines = vec![format!("load: snapshot {} ({})", l.snapshot_id, l.schema)];
        lines.extend(l.rows.iter().map(|(t, n)| format!("  {t:<20} {n:>10} rows")));
        lines
    }
}

/// What the `publish` task reads: the `load` task's output.
#[derive(Clone, Debug, Deserialize)]
pub struct PublishInput {
    pub load: LoadOutput,
}

/// The `publish` task: makes the loaded snapshot the schema `movies`; outputs [`PublishOutput`].
pub struct PublishTask {
    pub pool: PgPool,
    pub config: LoadConfig,
}

impl Stage for PublishTask {
    const ID: &'static str = "publish";
    type Input = PublishInput;
    type Output = PublishOutput;

    fn run<'a>(&'a self, ctx: &'a TaskContext, input: PublishInput) -> BoxFuture<'a, Result<PublishOutput, TaskError>> {
        Box::pin(async move {
            // A reused snapshot was published before: publish() leaves it as it is.
            let out = publish_with(
                &self.pool,
                input.load.snapshot_id,
                self.config.keep_previous,
                self.config.keep_periods,
            )
            .await?;
            // Retention of the artifact store follows the snapshots' (best effort: the next
            // publish sweeps again).
            if let Err(e) = crate::sweep_artifacts(&self.pool, &ctx.artifacts, &ctx.dag_id).await {
                tracing::warn!(error = %e, "could not delete the artifacts of runs whose snapshots are gone; the next publish tries again");
            }
            Ok(out)
        })
    }

    fn summary(p: &PublishOutput) -> Vec<String> {
        let id = p.snapshot_id;
        if !p.current {
            return vec![format!(
                "publish: snapshot {id} kept for {}; `movies` stays on a newer period",
                p.period
            )];
        }
        let replaced = p
            .replaced
            .map_or_else(|| "none".to_string(), |r| format!("snapshot {r}"));
        let dropped = if p.dropped.is_empty() {
            "none".to_string()
        } else {
            p.dropped.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        };
        vec![format!(
            "publish: snapshot {id} is now the schema `movies` (replaced: {replaced}, dropped: {dropped})"
        )]
    }
}
