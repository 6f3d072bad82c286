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
    /// The run's own folder for artifacts (`<artifacts>/<dag>/<period>/`); it survives retries.
    pub artifact_dir: PathBuf,
    pub cancel: Cancel,
}

/// One stage of a DAG. The stage owns *how*; the engine owns *when*, *how often* and *what if*.
///
/// A task reads what its upstream tasks produced from `inputs` (persisted by the engine, so a
/// retried task never needs its upstream to run again) and returns its own outputs.
/// Implementations must be idempotent for a given run: a second attempt replaces what the first
/// one left behind.
pub trait Task: Send + Sync {
    /// Stable id of the task inside its DAG (`fetch`, `clean`, `load`).
    fn id(&self) -> &'static str;
    fn run<'a>(
        &'a self,
        ctx: &'a TaskContext,
        inputs: &'a Outputs,
    ) -> BoxFuture<'a, Result<serde_json::Value, TaskError>>;
}
