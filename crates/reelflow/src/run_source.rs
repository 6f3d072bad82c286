//! A run's own source: `runs trigger --source URL` records it with the run
//! (`reelflow.dag_runs.source`), and the fetch task of that run fetches it instead of the
//! configured `source`. Every other run uses the configured one.

use reelflow_dag::{BoxFuture, Measure, NoInput, Stage, TaskContext, TaskError};
use reelflow_fetch::{FetchOutput, FetchTask, Source};
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

impl Stage for RunSourceFetch {
    const ID: &'static str = FetchTask::ID;
    type Input = NoInput;
    type Output = FetchOutput;

    fn run<'a>(&'a self, ctx: &'a TaskContext, input: NoInput) -> BoxFuture<'a, Result<FetchOutput, TaskError>> {
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
                    Stage::run(&task, ctx, input).await
                }
                _ => Stage::run(&self.fetch, ctx, input).await,
            }
        })
    }

    fn measures(out: &FetchOutput) -> Vec<Measure> {
        FetchTask::measures(out)
    }

    fn summary(out: &FetchOutput) -> Vec<String> {
        FetchTask::summary(out)
    }
}
