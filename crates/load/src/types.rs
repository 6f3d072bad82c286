//! The load crate's vocabulary: its settings, errors and outputs, and the snapshot rows and
//! rollback targets operators see. Every other module of the crate imports from here.

use std::collections::BTreeMap;
use std::path::PathBuf;

use reelflow_dag::TaskError;
use serde::{Deserialize, Serialize};

/// The stable schema name consumers read.
pub const PUBLISHED_SCHEMA: &str = "movies";

/// How loads run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoadConfig {
    /// Concurrent COPY streams and index builds.
    pub parallelism: usize,
    /// Snapshots kept for rollback besides the current one: the one `movies` showed before it,
    /// the one before that, and so on (the publish history), plus the one last rolled back away
    /// from (for roll-forward). Other snapshots that were `movies` are dropped.
    pub keep_previous: usize,
    /// Snapshots of other periods (backfills, catch-up runs, older months): the newest one of
    /// each period is kept, for this many periods (newest first); the rest are dropped.
    pub keep_periods: usize,
    /// `maintenance_work_mem` of the load's sessions (index builds sort in it); empty keeps
    /// the server's setting.
    pub maintenance_work_mem: String,
    /// Reuse the period's snapshot when the source's SHA-256 and the build are unchanged.
    pub reuse_unchanged: bool,
    /// A table with a quarter of the clean output or more whose file is at least this big is
    /// COPYed in `partitions` parts at once.
    pub split_copy_min_bytes: u64,
    /// How many parts that table is loaded in (0: `parallelism`): partitions by key range when
    /// the clean stage found its rows in key order (ratings, by user), else byte ranges of one
    /// table.
    pub partitions: usize,
}

impl LoadConfig {
    /// The parts the biggest table is loaded in.
    pub fn parts(&self) -> usize {
        match self.partitions {
            0 => self.parallelism.max(1),
            n => n,
        }
    }
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            parallelism: 2,
            keep_previous: 2,
            keep_periods: 12,
            maintenance_work_mem: "64MB".into(),
            reuse_unchanged: true,
            split_copy_min_bytes: 64 << 20,
            partitions: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error("database error while {doing}: {source}")]
    Db { doing: String, source: sqlx::Error },
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("validation failed for snapshot {schema}: {detail}")]
    Validation { schema: String, detail: String },
    #[error("the clean output is incomplete: {0}")]
    BadInput(String),
    #[error("snapshot {id} cannot be published: {reason}")]
    NotPublishable { id: i64, reason: String },
    #[error("nothing to roll back to: {0}")]
    NoPrevious(String),
    #[error("nothing to roll forward to: {0}")]
    NoForward(String),
    #[error("the load's job plan is invalid (a bug): {0}")]
    Plan(String),
    #[error("{0}")]
    Artifact(#[from] reelflow_artifacts::ArtifactError),
}

impl LoadError {
    /// The request cannot be carried out in the snapshots' present state (nothing to roll back
    /// or forward to, a snapshot that cannot be published): an operator's conflict, not a fault.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            LoadError::NoPrevious(_) | LoadError::NoForward(_) | LoadError::NotPublishable { .. }
        )
    }

    pub(crate) fn db(doing: impl Into<String>) -> impl FnOnce(sqlx::Error) -> LoadError {
        let doing = doing.into();
        move |source| LoadError::Db { doing, source }
    }

    /// Connection losses, server restarts, lack of resources and serialisation failures can
    /// pass; bad data and constraint violations cannot.
    pub fn is_retryable(&self) -> bool {
        match self {
            LoadError::Db { source, .. } => match source {
                sqlx::Error::Database(e) => {
                    let code = e.code().map(|c| c.to_string()).unwrap_or_default();
                    code.starts_with("08")
                        || code.starts_with("53")
                        || code.starts_with("57")
                        || code == "40001"
                        || code == "40P01"
                        || code == "55P03"
                }
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Protocol(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::WorkerCrashed => true,
                _ => false,
            },
            LoadError::Io { source, .. } => source.raw_os_error() == Some(28),
            LoadError::Artifact(e) => e.is_retryable(),
            _ => false,
        }
    }
}

impl From<LoadError> for TaskError {
    fn from(e: LoadError) -> TaskError {
        let mut message = e.to_string();
        // A COPY error names the offending row only in the `where` field.
        if let LoadError::Db {
            source: sqlx::Error::Database(db),
            ..
        } = &e
        {
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                if let Some(w) = pg.r#where() {
                    message.push_str(&format!(" ({w})"));
                }
            }
        }
        if e.is_retryable() {
            TaskError::retryable(message)
        } else {
            TaskError::fatal(message)
        }
    }
}

/// What a successful load produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadOutput {
    pub snapshot_id: i64,
    pub schema: String,
    pub rows: BTreeMap<String, u64>,
    pub rejects: u64,
    pub seconds: f64,
    /// The snapshot was already built from the same source by the same build: nothing loaded.
    #[serde(default)]
    pub reused: bool,
}

/// What publishing did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishOutput {
    pub snapshot_id: i64,
    pub period: String,
    /// The snapshot that `movies` showed before.
    pub replaced: Option<i64>,
    pub dropped: Vec<i64>,
    /// false when the snapshot is of an older period than the one `movies` shows (a backfill):
    /// it is kept as that period's snapshot but `movies` stays on the newer period.
    #[serde(default = "yes")]
    pub current: bool,
}

fn yes() -> bool {
    true
}

/// A row of `reelflow.snapshots`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub id: i64,
    pub dag_id: String,
    pub period: String,
    pub state: String,
    pub schema_name: String,
    pub rows_total: Option<i64>,
    pub rejects_total: Option<i64>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub published_at: Option<chrono::DateTime<chrono::Utc>>,
    pub error: Option<String>,
    /// `snapshots rollback` would publish this one.
    #[serde(default)]
    pub rollback_target: bool,
    /// `snapshots rollforward` would publish this one (the one last rolled back away from).
    #[serde(default)]
    pub rollforward_target: bool,
}

/// What `snapshots rollback` / `rollforward` publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollTarget {
    /// The snapshot `movies` showed before the current one (following the publish history).
    Previous,
    /// The snapshot last rolled back away from, while `movies` still shows what that rollback
    /// published.
    Forward,
    /// A given kept snapshot (`--to ID`).
    Id(i64),
}

/// A PostgreSQL identifier, quoted (`"a""b"` for `a"b`).
pub fn q(schema: &str) -> String {
    format!("\"{}\"", schema.replace('"', "\"\""))
}
