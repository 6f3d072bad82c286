//! The pure core of reelflow: periods, DAGs as data, retry maths, schedules, the stage
//! [`Task`] trait and its error type.
//!
//! Architecture invariant: this crate does no I/O of its own (progress and failpoints are
//! tracing events and an environment variable, nothing more). Stages (fetch, clean, load) live
//! in their own crates and implement [`Task`]; the engine in the `reelflow` crate decides
//! *when*, *how often* and *what if*.

mod failpoint;
mod model;
mod period;
mod progress;
mod schedule;
mod state;
mod task;

pub use failpoint::{failpoint, FAILPOINTS};
pub use model::{DagError, DagShape, DagSpec, RetryPolicy, TaskNode, TaskSpec};
pub use period::{Period, PeriodError};
pub use progress::{report_progress, ProgressEvent, Unit, PROGRESS_TARGET};
pub use schedule::{Schedule, ScheduleError};
pub use state::{
    after_failure, clear, mark_resets, settle, AttemptOutcome, Budget, RunState, Settlement, StateError, States,
    TaskState, TryEnd, UnknownState,
};
pub use task::{
    decode_input, BoxFuture, Cancel, ErrorKind, Measure, NoInput, Outputs, Stage, Task, TaskContext, TaskError,
};
