use std::collections::BTreeMap;

use reelflow_artifacts::ObjectRef;
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
    /// The COPY files and `rejects.tsv` in the artifact store, and the record of them.
    Cleaned {
        /// What the files hold.
        manifest: Manifest,
        /// Every file (the COPY file of each table, `rejects.tsv`) by file name.
        files: BTreeMap<String, ObjectRef>,
        /// `manifest.json` in the store, a [`CleanRecord`] of `manifest` and `files`: written
        /// last and create-only, so it exists only once every file is complete.
        record: ObjectRef,
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

/// The record the clean task writes last (as `manifest.json` in its attempt's folder of the
/// artifact store): what the files hold and where they are. The load reads exactly this.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CleanRecord {
    /// What the files hold.
    pub manifest: Manifest,
    /// Every file by name.
    pub files: BTreeMap<String, ObjectRef>,
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

/// The `clean` task: downloads the zip `fetch` stored (once, into its scratch folder: reading a
/// zip needs random access), cleans it there, uploads every file to the artifact store under
/// this attempt's keys and writes the [`CleanRecord`] last, create-only. The scratch folder is
/// removed afterwards.
///
/// Idempotent: a retry is a new attempt with keys of its own; it never touches what an earlier
/// attempt wrote.
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
            let runs = ctx.scratch_dir.join(format!("run-{}", ctx.run_id)).join(Self::ID);
            // What earlier attempts on this machine left behind (their objects are in the store).
            let _ = tokio::fs::remove_dir_all(&runs).await;
            let work = runs.join(format!("attempt-{}", ctx.attempt_id));
            let result = self.clean_and_store(ctx, input, &work).await;
            if let Err(e) = tokio::fs::remove_dir_all(&work).await {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %work.display(), error = %e, "could not remove the scratch folder");
                }
            }
            result
        })
    }

    fn measures(out: &CleanOutput) -> Vec<Measure> {
        out.measures()
    }

    fn summary(out: &CleanOutput) -> Vec<String> {
        out.summary()
    }
}

impl CleanTask {
    async fn clean_and_store(
        &self,
        ctx: &TaskContext,
        input: CleanInput,
        work: &std::path::Path,
    ) -> Result<CleanOutput, TaskError> {
        let cancel = ctx.cancel.clone();
        let cancelled = move || cancel.is_cancelled();
        // A download is checked against the object's recorded SHA-256, so the cleaner need
        // not hash the zip again.
        let (zip, known_sha256) = match &input.fetch.object {
            Some(object) => {
                let zip = work.join("source.zip");
                ctx.artifacts.download(object, &zip, &cancelled).await?;
                (zip, Some(object.sha256.clone()))
            }
            // An output recorded before the artifact store: the zip is the local file.
            None => (input.fetch.path.clone(), None),
        };
        let out = work.join("out");
        let cfg = self.config.clone();
        let cancel = ctx.cancel.clone();
        let dir = out.clone();
        // The blocking thread does not inherit the task's span: enter it there.
        let span = tracing::Span::current();
        let manifest = tokio::task::spawn_blocking(move || {
            span.in_scope(|| {
                clean_zip_with_cancel(&zip, &dir, &cfg, &|| cancel.is_cancelled(), known_sha256.as_deref())
            })
        })
        .await
        .map_err(|e| TaskError::fatal(format!("clean: the cleaning thread failed: {e}")))?
        .map_err(|e| task_error(e, ctx.run_id))?;
        let names = manifest
            .tables
            .values()
            .map(|t| t.file.clone())
            .chain([manifest.rejects.file.clone()]);
        let mut files = BTreeMap::new();
        for name in names {
            let key = ctx.artifact_key(Self::ID, &name);
            let object = ctx.artifacts.put_file(&key, &out.join(&name), &cancelled).await?;
            files.insert(name, object);
            // Some files stored, the record not yet written.
            reelflow_dag::failpoint("clean.mid_upload");
        }
        let record = CleanRecord { manifest, files };
        let bytes = serde_json::to_vec_pretty(&record)
            .map_err(|e| TaskError::fatal(format!("clean: cannot encode the manifest: {e}")))?;
        let record_ref = ctx
            .artifacts
            .put_create(&ctx.artifact_key(Self::ID, crate::clean::MANIFEST_FILE), bytes)
            .await?;
        tracing::info!(key = %record_ref.key, store = %ctx.artifacts.url(), files = record.files.len(), "clean output stored");
        Ok(CleanOutput::Cleaned {
            manifest: record.manifest,
            files: record.files,
            record: record_ref,
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
