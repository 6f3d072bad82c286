//! Stage `fetch`: copy the dataset object (S3, HTTP(S) or a local file) into the run's artifact
//! folder as `source.zip`, with its size, sha256 and ETag in `source.json`.
//!
//! - The body is streamed to `source.zip.part` and hashed on the way; it is never held in
//!   memory. A body error (reset, cut short, no data for `read_timeout`) resumes with a Range
//!   request pinned to the same object version (If-Match on the ETag), up to `max_resumes`
//!   times; an attempt that crashed or was cancelled leaves `.part` + `.part.json` behind and the
//!   next attempt resumes from there.
//! - An unchanged object is not downloaded twice: with a previous `source.json`, the request is
//!   conditional (If-None-Match) and a 304 returns the stored output with `reused: true`.
//! - The result must be a zip archive, else [`FetchError::NotAZip`] (fatal).
//!
//! Architecture invariant: this crate knows nothing about the database or the dataset's
//! contents; it moves bytes and says whether a failure is worth retrying.

mod artifact;
mod error;
mod local;
mod remote;
mod source;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reelflow_dag::{BoxFuture, Cancel, Measure, NoInput, Stage, TaskContext, TaskError};
use serde::{Deserialize, Serialize};

pub use error::FetchError;
pub use source::{Source, DEFAULT_SOURCE};

/// How to reach the source.
#[derive(Clone, Debug)]
pub struct FetchConfig {
    /// Time allowed to establish a connection.
    pub connect_timeout: Duration,
    /// Longest wait for the response headers (after connecting) and for each next body chunk.
    pub read_timeout: Duration,
    /// Range-resumes after a body error inside one fetch.
    pub max_resumes: u32,
    /// S3-compatible endpoint (`http://127.0.0.1:9000`); `None` = `AWS_ENDPOINT_URL` if set,
    /// else AWS itself.
    pub s3_endpoint: Option<String>,
    pub s3_region: String,
    /// Virtual-hosted-style requests; path-style by default (the real bucket name has dots).
    pub s3_virtual_hosted: bool,
    /// Credentials for S3 requests; by default taken from the AWS environment variables.
    pub s3_credentials: S3Credentials,
}

impl FetchConfig {
    /// The S3 endpoint, region and addressing of this configuration.
    pub fn s3_settings(&self) -> reelflow_artifacts::S3Settings {
        reelflow_artifacts::S3Settings {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            virtual_hosted: self.s3_virtual_hosted,
        }
    }
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            max_resumes: 5,
            s3_endpoint: None,
            s3_region: "us-west-2".into(),
            s3_virtual_hosted: false,
            s3_credentials: S3Credentials::FromEnv,
        }
    }
}

/// Where S3 credentials come from. `Debug` never shows the secret or the session token.
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum S3Credentials {
    /// `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`) when both are set
    /// (signed requests), anonymous otherwise. Read at each fetch.
    #[default]
    FromEnv,
    /// Unsigned requests (public objects).
    Anonymous,
    /// These keys (signed requests).
    Static {
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
    },
}

impl S3Credentials {
    pub fn new(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        S3Credentials::Static {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token: None,
        }
    }

    /// The keys to sign with, or `None` for anonymous requests.
    pub(crate) fn resolve(&self) -> Option<(String, String, Option<String>)> {
        match self {
            S3Credentials::Anonymous => None,
            S3Credentials::Static {
                access_key_id,
                secret_access_key,
                session_token,
            } => Some((access_key_id.clone(), secret_access_key.clone(), session_token.clone())),
            S3Credentials::FromEnv => {
                let var = |k| std::env::var(k).ok().filter(|v: &String| !v.is_empty());
                let id = var("AWS_ACCESS_KEY_ID")?;
                let secret = var("AWS_SECRET_ACCESS_KEY")?;
                Some((id, secret, var("AWS_SESSION_TOKEN")))
            }
        }
    }
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            S3Credentials::FromEnv => f.write_str("FromEnv"),
            S3Credentials::Anonymous => f.write_str("Anonymous"),
            S3Credentials::Static { access_key_id, .. } => f
                .debug_struct("Static")
                .field("access_key_id", access_key_id)
                .field("secret_access_key", &"REDACTED")
                .finish_non_exhaustive(),
        }
    }
}

/// What a fetch produced; also stored as `source.json` next to the zip.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchOutput {
    /// The zip: `<dest_dir>/source.zip`.
    pub path: PathBuf,
    pub size: u64,
    /// Hex sha256 of the file.
    pub sha256: String,
    /// The object's ETag as the server sent it (quotes included); `None` for files.
    pub etag: Option<String>,
    /// RFC 3339: the object's Last-Modified, or the file's mtime.
    pub last_modified: Option<String>,
    /// The source, credential-free.
    pub source: String,
    /// True when the file from an earlier fetch was kept because the source is unchanged.
    pub reused: bool,
    /// Range-resumes this fetch needed.
    pub resumes: u32,
    /// The zip in the artifact store (set by [`FetchTask`]; `None` for [`fetch`] alone and in
    /// outputs recorded before the artifact store existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<reelflow_artifacts::ObjectRef>,
}

/// Fetches `source` into `dest_dir/source.zip` (see the crate docs).
pub async fn fetch(
    source: &Source,
    dest_dir: &Path,
    cfg: &FetchConfig,
    cancel: &Cancel,
) -> Result<FetchOutput, FetchError> {
    let location = source.to_string();
    // No span of its own: its lines keep the caller's (the task's run id, task and try), so
    // `jq 'select(.span.run_id == N)'` finds them; the final lines name the source.
    async {
        fs_create_dir(dest_dir, &location).await?;
        if cancel.is_cancelled() {
            return Err(FetchError::Cancelled {
                location: location.clone(),
            });
        }
        let ctx = Ctx {
            source,
            location: location.clone(),
            paths: artifact::Paths::new(dest_dir),
            cfg,
            cancel,
        };
        let started = Instant::now();
        let result = match &source.kind {
            source::SourceKind::File { path } => local::fetch_file(&ctx, path).await,
            _ => remote::fetch_remote(&ctx).await,
        };
        match &result {
            Ok(out) if out.reused => {
                tracing::info!(source = %location, size = out.size, sha256 = %out.sha256, "source unchanged; reusing the earlier download")
            }
            Ok(out) => tracing::info!(
                source = %location,
                size = out.size,
                sha256 = %out.sha256,
                resumes = out.resumes,
                seconds = started.elapsed().as_secs_f64(),
                "fetched"
            ),
            Err(e) => tracing::warn!(source = %location, error = %e, retryable = e.is_retryable(), "fetch failed"),
        }
        result
    }
    .await
}

async fn fs_create_dir(dir: &Path, location: &str) -> Result<(), FetchError> {
    tokio::fs::create_dir_all(dir).await.map_err(|e| FetchError::Io {
        location: location.to_string(),
        path: dir.to_path_buf(),
        source: e,
    })
}

/// Everything one fetch needs.
pub(crate) struct Ctx<'a> {
    pub source: &'a Source,
    pub location: String,
    pub paths: artifact::Paths,
    pub cfg: &'a FetchConfig,
    pub cancel: &'a Cancel,
}

impl Ctx<'_> {
    pub fn io(&self, path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
        let path = path.to_path_buf();
        move |source| FetchError::Io {
            location: self.location.clone(),
            path,
            source,
        }
    }

    pub fn cancelled(&self) -> FetchError {
        FetchError::Cancelled {
            location: self.location.clone(),
        }
    }

    pub fn not_a_zip(&self, w: &artifact::PartWriter) -> FetchError {
        FetchError::NotAZip {
            location: self.location.clone(),
            head: w.head_hex(),
        }
    }
}

/// Logs progress at most every few seconds.
pub(crate) struct Progress {
    started: Instant,
    last: Instant,
    start_bytes: u64,
    total: Option<u64>,
}

const PROGRESS_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    pub fn new(start_bytes: u64, total: Option<u64>) -> Progress {
        let now = Instant::now();
        Progress {
            started: now,
            last: now,
            start_bytes,
            total,
        }
    }

    pub fn tick(&mut self, bytes: u64) {
        if self.last.elapsed() < PROGRESS_EVERY {
            return;
        }
        self.last = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let per_sec = bytes.saturating_sub(self.start_bytes) as f64 / secs;
        let event = reelflow_dag::ProgressEvent {
            item: "source.zip".into(),
            done: bytes,
            total: self.total.filter(|t| *t > 0),
            unit: reelflow_dag::Unit::Bytes,
            per_sec,
        };
        reelflow_dag::report_progress("downloading", &event);
    }
}

/// Keeps the scratch folder bounded: the finished downloads of the DAG's other periods go (the
/// stored objects are what later tasks read). This period's stays, so a rerun of an unchanged
/// source is a conditional request; a folder with a download in progress stays too.
async fn forget_other_downloads(scratch_dir: &Path) {
    let (Some(dag_dir), Some(this)) = (scratch_dir.parent(), scratch_dir.file_name()) else {
        return;
    };
    let Ok(mut entries) = tokio::fs::read_dir(dag_dir).await else {
        return;
    };
    while let Ok(Some(e)) = entries.next_entry().await {
        let dir = e.path().join("fetch");
        if e.file_name() == this || !dir.is_dir() || dir.join("source.zip.part").exists() {
            continue;
        }
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => tracing::debug!(dir = %dir.display(), "removed an older period's download from scratch"),
            Err(err) => {
                tracing::warn!(dir = %dir.display(), error = %err, "could not remove an older download from scratch")
            }
        }
    }
}

/// The `fetch` task of the DAG: downloads the zip into `<scratch_dir>/fetch/` (where a later
/// attempt on this machine resumes it), uploads it to the artifact store as this attempt's
/// `source.zip`, and outputs its [`FetchOutput`] with the object's reference.
#[derive(Clone, Debug)]
pub struct FetchTask {
    pub source: Source,
    pub config: FetchConfig,
}

impl Stage for FetchTask {
    const ID: &'static str = "fetch";
    type Input = NoInput;
    type Output = FetchOutput;

    fn run<'a>(&'a self, ctx: &'a TaskContext, _input: NoInput) -> BoxFuture<'a, Result<FetchOutput, TaskError>> {
        Box::pin(async move {
            let dest = ctx.scratch_dir.join("fetch");
            let mut out = fetch(&self.source, &dest, &self.config, &ctx.cancel).await?;
            let key = ctx.artifact_key(Self::ID, "source.zip");
            let cancel = ctx.cancel.clone();
            let object = ctx
                .artifacts
                .put_file(&key, &out.path, &move || cancel.is_cancelled())
                .await?;
            if object.sha256 != out.sha256 || object.size != out.size {
                return Err(TaskError::retryable(format!(
                    "fetch: {} changed while it was uploaded to {} (SHA-256 {}, expected {})",
                    out.path.display(),
                    object.key,
                    object.sha256,
                    out.sha256
                )));
            }
            tracing::info!(key = %object.key, store = %ctx.artifacts.url(), "source.zip stored");
            out.object = Some(object);
            forget_other_downloads(&ctx.scratch_dir).await;
            Ok(out)
        })
    }

    fn measures(out: &FetchOutput) -> Vec<Measure> {
        if out.reused {
            vec![]
        } else {
            vec![Measure::Downloaded(out.size)]
        }
    }

    fn summary(f: &FetchOutput) -> Vec<String> {
        vec![format!(
            "fetch: {} bytes from {}{} (sha256 {})",
            f.size,
            f.source,
            if f.reused {
                ", unchanged: reused the earlier download"
            } else {
                ""
            },
            f.sha256
        )]
    }
}
