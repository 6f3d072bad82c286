use std::path::PathBuf;

use reelflow_dag::{BoxFuture, Outputs, Task, TaskContext, TaskError};

use crate::{clean_zip_with_cancel, CleanConfig, CleanError};

/// The `clean` task: reads the zip path from the `fetch` task's outputs (`{"path": ...}`),
/// cleans it into `<artifact_dir>/clean` and returns `{"dir": ..., "manifest": ...}`.
///
/// Idempotent: a retry replaces the folder a previous attempt left behind.
#[derive(Clone, Debug, Default)]
pub struct CleanTask {
    /// Settings for [`crate::clean_zip`].
    pub config: CleanConfig,
}

impl Task for CleanTask {
    fn id(&self) -> &'static str {
        "clean"
    }

    fn run<'a>(
        &'a self,
        ctx: &'a TaskContext,
        inputs: &'a Outputs,
    ) -> BoxFuture<'a, Result<serde_json::Value, TaskError>> {
        Box::pin(async move {
            let zip = inputs
                .get("fetch")
                .and_then(|f| f.get("path"))
                .and_then(|p| p.as_str())
                .map(PathBuf::from)
                .ok_or_else(|| {
                    TaskError::fatal(format!(
                        "clean: the fetch task recorded no downloaded file (was it marked success by hand?); \
                         fetch it: `reelflow tasks retry {} fetch --downstream`",
                        ctx.run_id
                    ))
                })?;
            let out = ctx.artifact_dir.join("clean");
            let cfg = self.config.clone();
            let cancel = ctx.cancel.clone();
            let dir = out.clone();
            // The blocking thread does not inherit the task's span: enter it there.
            let span = tracing::Span::current();
            let manifest = tokio::task::spawn_blocking(move || {
                span.in_scope(|| clean_zip_with_cancel(&zip, &dir, &cfg, &|| cancel.is_cancelled()))
            })
            .await
            .map_err(|e| TaskError::fatal(format!("clean: the cleaning thread failed: {e}")))?
            .map_err(|e| task_error(e, ctx.run_id))?;
            let manifest = serde_json::to_value(&manifest)
                .map_err(|e| TaskError::fatal(format!("clean: cannot encode the manifest: {e}")))?;
            Ok(serde_json::json!({ "dir": out.to_string_lossy(), "manifest": manifest }))
        })
    }
}

fn task_error(e: CleanError, run_id: i64) -> TaskError {
    match e {
        CleanError::Cancelled => TaskError::cancelled(),
        e if e.is_retryable() => TaskError::retryable(format!("clean: {e}")),
        e if e.needs_refetch() => TaskError::fatal(format!(
            "clean: {e}; the downloaded archive is damaged, so cleaning it again will not help: \
             fetch it again with `reelflow tasks retry {run_id} fetch --downstream`"
        )),
        e => TaskError::fatal(format!("clean: {e}")),
    }
}
