use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use crate::Period;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a finished task hands to the tasks after it, keyed by the producing task's id.
/// Values are JSON so the store can persist them and a retried task can read them back.
pub type Outputs = BTreeMap<String, serde_json::Value>;

/// Whether a retry can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Transient: the network, a server restart, a full disk that may be freed.
    Retryable,
    /// Retrying the same input cannot succeed: bad data, a 404, a 403, a bug.
    Fatal,
    /// The task was cancelled (shutdown or timeout); the engine decides what follows.
    Cancelled,
}

/// A stage's failure: a one-paragraph message for operators plus whether to retry.
#[derive(Debug, Clone)]
pub struct TaskError {
    pub kind: ErrorKind,
    pub message: String,
}

impl TaskError {
    pub fn retryable(message: impl Into<String>) -> Self {
        TaskError {
            kind: ErrorKind::Retryable,
            message: message.into(),
        }
    }
    pub fn fatal(message: impl Into<String>) -> Self {
        TaskError {
            kind: ErrorKind::Fatal,
            message: message.into(),
        }
    }
    pub fn cancelled() -> Self {
        TaskError {
            kind: ErrorKind::Cancelled,
            message: "task cancelled".into(),
        }
    }
    pub fn is_retryable(&self) -> bool {
        self.kind == ErrorKind::Retryable
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TaskError {}

/// Cooperative cancellation: long stages poll [`Cancel::is_cancelled`] between chunks or
/// await [`Cancel::cancelled`] in a `select!`.
#[derive(Clone, Debug)]
pub struct Cancel(tokio::sync::watch::Receiver<bool>);

impl Cancel {
    /// A pair: the handle that cancels, and the token tasks observe.
    pub fn new() -> (tokio::sync::watch::Sender<bool>, Cancel) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (tx, Cancel(rx))
    }
    /// A token that is never cancelled.
    pub fn never() -> Cancel {
        let (tx, rx) = tokio::sync::watch::channel(false);
        std::mem::forget(tx);
        Cancel(rx)
    }
    pub fn is_cancelled(&self) -> bool {
        *self.0.borrow()
    }
    pub async fn cancelled(&self) {
        let mut rx = self.0.clone();
        // An Err means every sender is gone: nobody can cancel any more, so wait forever.
        if rx.wait_for(|c| *c).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// What the engine gives a task for one attempt.
#[derive(Clone, Debug)]
pub struct TaskContext {
    pub dag_id: String,
    pub run_id: i64,
    pub period: Period,
    pub try_number: u32,
    /// This attempt's id (the fencing token): artifact keys carry it, so a stale attempt never
    /// overwrites what the live one wrote.
    pub attempt_id: i64,
    /// This worker's scratch folder for the run (`<scratch>/<dag>/<period>/`): local work only,
    /// never read by another task (it may be on another machine).
    pub scratch_dir: PathBuf,
    /// The artifact store: what a task hands to the next one goes there, under
    /// [`TaskContext::artifact_key`].
    pub artifacts: reelflow_artifacts::Artifacts,
    pub cancel: Cancel,
}

impl TaskContext {
    /// The full key of the object `name` that this attempt of `task` writes:
    /// `<prefix>/<dag>/<period>/run-<run>/<task>/attempt-<attempt>/<name>`.
    pub fn artifact_key(&self, task: &str, name: &str) -> String {
        let scope = reelflow_artifacts::attempt_path(
            &self.dag_id,
            &self.period.to_string(),
            self.run_id,
            task,
            self.attempt_id,
        );
        self.artifacts.key(&format!("{scope}/{name}"))
    }
}

impl From<reelflow_artifacts::ArtifactError> for TaskError {
    fn from(e: reelflow_artifacts::ArtifactError) -> Self {
        match e {
            reelflow_artifacts::ArtifactError::Cancelled => TaskError::cancelled(),
            e if e.is_retryable() => TaskError::retryable(e.to_string()),
            e => TaskError::fatal(e.to_string()),
        }
    }
}

/// A count a stage reports about its output, recorded as a metric by the engine. Labels are
/// bounded: table and file names of the dataset and reason codes, never values or paths.
#[derive(Clone, Debug, PartialEq)]
pub enum Measure {
    /// Bytes downloaded from the source.
    Downloaded(u64),
    /// Rows of a table or file, with what happened to them (`accepted`, `rejected`, `loaded`).
    Rows {
        table: String,
        outcome: &'static str,
        n: u64,
    },
    /// Rows of a file rejected for one reason.
    Rejected { file: String, reason: String, n: u64 },
}

/// The input of a task without upstream tasks.
#[derive(Clone, Copy, Debug, Default, serde::Deserialize)]
pub struct NoInput {}

/// One stage of a DAG with a typed contract. The stage owns *how*; the engine owns *when*, *how
/// often* and *what if*.
///
/// `Input` is a struct with one field per upstream task, named by that task's id and typed as
/// that task's `Output`: the engine stores every output as JSON and hands a task the outputs of
/// the tasks before it, deserialised into `Input`, so a retried task never needs its upstream
/// to run again, and renaming a field is a compile error wherever it is read.
/// Implementations must be idempotent for a given run: a second attempt replaces what the first
/// one left behind.
pub trait Stage: Send + Sync + 'static {
    /// Stable id of the task inside its DAG (`fetch`, `clean`, `load`); the DAG declaration
    /// refers to it, nothing repeats it.
    const ID: &'static str;
    type Input: serde::de::DeserializeOwned + Send;
    type Output: serde::Serialize + serde::de::DeserializeOwned + Send;

    fn run<'a>(&'a self, ctx: &'a TaskContext, input: Self::Input) -> BoxFuture<'a, Result<Self::Output, TaskError>>;

    /// Counts recorded as metrics when an attempt succeeds.
    fn measures(_output: &Self::Output) -> Vec<Measure> {
        Vec::new()
    }

    /// Lines of the run summary that `reelflow run` prints.
    fn summary(_output: &Self::Output) -> Vec<String> {
        Vec::new()
    }
}

/// A stage as the engine sees it: JSON in, JSON out. Every [`Stage`] is one; the engine holds
/// them as `Arc<dyn Task>`.
pub trait Task: Send + Sync {
    fn id(&self) -> &'static str;
    fn run<'a>(
        &'a self,
        ctx: &'a TaskContext,
        inputs: &'a Outputs,
    ) -> BoxFuture<'a, Result<serde_json::Value, TaskError>>;
    /// [`Stage::measures`] of a stored output (nothing when it cannot be read).
    fn measures(&self, _output: &serde_json::Value) -> Vec<Measure> {
        Vec::new()
    }
    /// [`Stage::summary`] of a stored output (nothing when it cannot be read).
    fn summary(&self, _output: &serde_json::Value) -> Vec<String> {
        Vec::new()
    }
}

/// Reads the outputs of `task`'s upstream tasks as its typed input. A missing output (an
/// upstream task marked success by hand never produced one) gets an error saying so.
pub fn decode_input<I: serde::de::DeserializeOwned>(task: &str, inputs: &Outputs) -> Result<I, TaskError> {
    let object: serde_json::Map<String, serde_json::Value> =
        inputs.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    serde_json::from_value(serde_json::Value::Object(object)).map_err(|e| {
        let have = inputs.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
        TaskError::fatal(format!(
            "{task}: the outputs of its upstream tasks cannot be read ({e}; outputs present: {}). \
             An upstream task marked success by hand has no output: retry it with its downstream \
             (`reelflow tasks retry RUN TASK --downstream`) instead",
            if have.is_empty() { "none" } else { have.as_str() }
        ))
    })
}

impl<S: Stage> Task for S {
    fn id(&self) -> &'static str {
        S::ID
    }

    fn run<'a>(
        &'a self,
        ctx: &'a TaskContext,
        inputs: &'a Outputs,
    ) -> BoxFuture<'a, Result<serde_json::Value, TaskError>> {
        Box::pin(async move {
            let input = decode_input::<S::Input>(S::ID, inputs)?;
            let out = Stage::run(self, ctx, input).await?;
            serde_json::to_value(out).map_err(|e| TaskError::fatal(format!("{}: cannot encode its output: {e}", S::ID)))
        })
    }

    fn measures(&self, output: &serde_json::Value) -> Vec<Measure> {
        S::Output::deserialize(output)
            .map(|o| S::measures(&o))
            .unwrap_or_default()
    }

    fn summary(&self, output: &serde_json::Value) -> Vec<String> {
        S::Output::deserialize(output)
            .map(|o| S::summary(&o))
            .unwrap_or_default()
    }
}

use serde::Deserialize as _;
