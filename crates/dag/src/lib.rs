//! The pure core of reelflow: periods, DAGs as data, retry maths, schedules, the stage
//! [`Task`] trait and its error type.
//!
//! Architecture invariant: this crate does no I/O of its own. Stages (fetch, clean, load) live
//! in their own crates and implement [`Task`]; the engine in the `reelflow` crate decides
//! *when*, *how often* and *what if*.

mod failpoint;
mod model;
mod period;
mod schedule;
mod task;

pub use failpoint::{failpoint, FAILPOINTS};
pub use model::{DagError, DagSpec, RetryPolicy, TaskSpec};
pub use period::{Period, PeriodError};
pub use schedule::{Schedule, ScheduleError};
pub use task::{BoxFuture, Cancel, ErrorKind, Outputs, Task, TaskContext, TaskError};
