use std::path::PathBuf;

use reelflow_dag::{BoxFuture, Measure, Stage, TaskContext, TaskError};
use reelflow_fetch::FetchOutput;
use serde::{Deserialize, Serialize};

use crate::{clean_zip_with_cancel, CleanConfig, CleanError, Manifest};

/// What the `clean` task reads: the `fetch` task's output.
#[derive(Clone, Debug, Deserialize)]
pub struct CleanInput {
    /// The zip to clean and its checksum.
    pub fetch: FetchOutput,
}

/// What the `clean` task hands to `load`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CleanOutput {
    /// The COPY files, `rejects.tsv` and `manifest.json` in `dir`.
    Cleaned {
        /// The output folder.
        dir: PathBuf,
        /// What is in it.
        manifest: Manifest,
    },
    /// Nothing was cleaned: the period's kept snapshot `unchanged_snapshot` was built from a
    /// source with this SHA-256 by this same build, and load passes it through.
    Unchanged {
        /// The snapshot to pass through.
        unchanged_snapshot: i64,
        /// The source's SHA-256.
        source_sha256: String,
    },
}

impl CleanOutput {
    /// Metrics of a clean: rows accepted per table, rows rejected per file and reason.
    pub fn measures(&self) -> Vec<Measure> {
        let CleanOutput::Cleaned { manifest, .. } = self else {
            return vec![];
        };
        let mut out: Vec<Measure> = manifest
            .tables
            .iter()
            .map(|(table, t)| Measure::Rows {
                table: table.clone(),
                outcome: "accepted",
                n: t.rows,
            })
            .collect();
        for (file, f) in &manifest.files {
            for (reason, n) in &f.rejected {
                out.push(Measure::Rejected {
                    file: file.clone(),
                    reason: reason.clone(),
                    n: *n,
                });
            }
            out.push(Measure::Rows {
                table: file.clone(),
                outcome: "rejected",
                n: f.total_rejected(),
            });
        }
        out
    }

    /// The run summary's lines: accepted and rejected rows per file and reason.
    pub fn summary(&self) -> Vec<String> {
        match self {
            CleanOutput::Unchanged { unchanged_snapshot, .. } => vec![format!(
                "clean: source unchanged since snapshot {unchanged_snapshot} (same SHA-256, same build): nothing cleaned or reloaded"
            )],
            CleanOutput::Cleaned { manifest, .. } => {
                let mut lines = vec!["clean:".to_string()];
                for (file, fm) in &manifest.files {
                    let detail = fm
                        .rejected
                        .iter()
                        .map(|(r, n)| format!("{r}={n}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let detail = if detail.is_empty() { detail } else { format!(" ({detail})") };
                    lines.push(format!(
                        "  {file:<20} {:>10} accepted {:>6} rejected{detail}",
                        fm.accepted,
                        fm.total_rejected()
                    ));
                }
                lines
            }
        }
    }
}

/// The `clean` task: cleans the zip that `fetch` produced into `<artifact_dir>/clean`.
///
/// Idempotent: a retry replaces the folder a previous attempt left behind.
#[derive(Clone, Debug, Default)]
pub struct CleanTask {
    /// Settings for [`crate::clean_zip`].
    pub config: CleanConfig,
}

impl Stage for CleanTask {
    const ID: &'static str = "clean";
    type Input = CleanInput;
    type Output = CleanOutput;

    fn run<'a>(&'a self, ctx: &'a TaskContext, input: CleanInput) -> BoxFuture<'a, Result<CleanOutput, TaskError>> {
        Box::pin(async move {
            let zip = input.fetch.path;
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
            Ok(CleanOutput::Cleaned { dir: out, manifest })
        })
    }

    fn measures(out: &CleanOutput) -> Vec<Measure> {
        out.measures()
    }

    fn summary(out: &CleanOutput) -> Vec<String> {
        out.summary()
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
