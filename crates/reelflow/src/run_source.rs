//! A run's own source: `runs trigger --source URL` records it with the run
//! (`reelflow.dag_runs.source`), and the fetch task of that run fetches it instead of the
//! configured `source`. Every other run uses the configured one.

use reelflow_dag::{BoxFuture, Outputs, Task, TaskContext, TaskError};
use reelflow_fetch::{FetchTask, Source};
use sqlx::PgPool;

/// The `fetch` task, reading the run's recorded source first.
pub struct RunSourceFetch {
    pub fetch: FetchTask,
    pub pool: PgPool,
}

/// The source recorded with a run, if any.
pub async fn run_source(pool: &PgPool, run_id: i64) -> Result<Option<String>, sqlx::Error> {
    let s: Option<Option<String>> = sqlx::query_scalar("SELECT source FROM reelflow.dag_runs WHERE id = $1")
        .bind(run_id)
        .fetch_optional(pool)
        .await?;
    Ok(s.flatten())
}

/// Records `source` (None: the configured one) as the run's source.
pub async fn set_run_source(pool: &PgPool, run_id: i64, source: Option<&str>) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE reelflow.dag_runs SET source = $2 WHERE id = $1")
        .bind(run_id)
        .bind(source)
        .execute(pool)
        .await?;
    Ok(())
}

impl Task for RunSourceFetch {
    fn id(&self) -> &'static str {
        self.fetch.id()
    }

    fn run<'a>(
        &'a self,
        ctx: &'a TaskContext,
        inputs: &'a Outputs,
    ) -> BoxFuture<'a, Result<serde_json::Value, TaskError>> {
        Box::pin(async move {
            let own = run_source(&self.pool, ctx.run_id)
                .await
                .map_err(|e| TaskError::retryable(format!("fetch: cannot read the run's source: {e}")))?;
            match own {
                Some(s) if s != self.fetch.source.to_string() => {
                    let source = Source::parse(&s)
                        .map_err(|e| TaskError::fatal(format!("fetch: the run's source {s:?}: {e}")))?;
                    tracing::info!(source = %source, "fetching the source recorded with this run");
                    let task = FetchTask {
                        source,
                        config: self.fetch.config.clone(),
                    };
                    task.run(ctx, inputs).await
                }
                _ => self.fetch.run(ctx, inputs).await,
            }
        })
    }
}
