//! The orchestrator's state machine, as pure functions over a DAG's shape and its task states.
//!
//! The store keeps the states in PostgreSQL and applies what these functions decide, in one
//! transaction; nothing here touches a database, so every transition is unit-tested below.
//!
//! - [`settle`]: after any change, waiting tasks whose upstream all succeeded become `queued`,
//!   those with a failed upstream `upstream_failed`, and the run's state follows from its tasks.
//! - [`clear`]: the operator's "retry" (Airflow's clear) of a task, with or without downstream.
//! - [`mark_resets`]: what marking a task success or failed re-opens downstream.
//! - [`after_failure`]: whether a failed try is retried.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::model::DagShape;

macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $s)] $v),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$v),+];

            /// The text the database stores (its CHECK constraint lists the same values).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$v => $s),+
                }
            }
        }

        /// Compares with the stored text, so `state == "success"` reads as it always did.
        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // `pad`, so `{:<9}` in a table lines up.
                f.pad(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownState;
            fn from_str(s: &str) -> Result<Self, UnknownState> {
                match s {
                    $($s => Ok($name::$v),)+
                    _ => Err(UnknownState {
                        kind: stringify!($name),
                        value: s.to_string(),
                        expected: $name::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", "),
                    }),
                }
            }
        }
    };
}

/// A state text that is not one of the enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?} (expected one of: {expected})")]
pub struct UnknownState {
    pub kind: &'static str,
    pub value: String,
    pub expected: String,
}

text_enum! {
    /// A task instance's state (Airflow's vocabulary).
    TaskState {
        /// Waiting for its upstream tasks (Airflow's "no status").
        None = "none",
        Queued = "queued",
        Running = "running",
        Success = "success",
        Failed = "failed",
        /// Failed a try; the next one may start at `next_attempt_at`.
        UpForRetry = "up_for_retry",
        UpstreamFailed = "upstream_failed",
    }
}

text_enum! {
    /// A DAG run's state.
    RunState {
        Queued = "queued",
        Running = "running",
        Success = "success",
        Failed = "failed",
    }
}

text_enum! {
    /// How one attempt (try) of a task ended.
    AttemptOutcome {
        Running = "running",
        Success = "success",
        Failed = "failed",
        Timeout = "timeout",
        /// Its worker stopped renewing the lease (died, stalled, or was cut off).
        LeaseExpired = "lease_expired",
        /// Stopped by a shutdown of its worker.
        Cancelled = "cancelled",
        /// Another attempt or an operator's mark took the task over.
        Superseded = "superseded",
    }
}

impl TaskState {
    /// Nothing more will happen to the task unless an operator acts.
    pub fn is_terminal(self) -> bool {
        matches!(self, TaskState::Success | TaskState::Failed | TaskState::UpstreamFailed)
    }

    /// Downstream tasks may run after it.
    pub fn lets_downstream_run(self) -> bool {
        self == TaskState::Success
    }

    /// Downstream tasks cannot run after it.
    pub fn blocks_downstream(self) -> bool {
        matches!(self, TaskState::Failed | TaskState::UpstreamFailed)
    }

    /// A worker may claim it (an `up_for_retry` one once its delay is over).
    pub fn is_claimable(self) -> bool {
        matches!(self, TaskState::Queued | TaskState::UpForRetry)
    }
}

impl RunState {
    pub fn is_finished(self) -> bool {
        matches!(self, RunState::Success | RunState::Failed)
    }
}

/// A transition the state machine refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The run has no row for a task of its DAG: its rows must be brought in line with the
    /// DAG first. Never treated as "satisfied".
    #[error("the run has no task instance {task}, which its DAG declares")]
    MissingTask { task: String },
    #[error("the DAG has no task {task}")]
    UnknownTask { task: String },
    #[error("task {task} is running; wait for it to finish")]
    Running { task: String },
}

/// What [`settle`] decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Settlement {
    /// Tasks whose state changes, in the DAG's order.
    pub changes: Vec<(String, TaskState)>,
    /// `Some` when every task is done: the run's final state. `None`: work is left.
    pub run: Option<RunState>,
}

/// Task states by task id.
pub type States = BTreeMap<String, TaskState>;

fn state_of(states: &States, task: &str) -> Result<TaskState, StateError> {
    states
        .get(task)
        .copied()
        .ok_or_else(|| StateError::MissingTask { task: task.to_string() })
}

/// Brings waiting tasks and the run's state in line with the task states. Rows of tasks the
/// shape does not declare are ignored (they belonged to an older version of the DAG).
pub fn settle(shape: &DagShape, states: &States) -> Result<Settlement, StateError> {
    let mut now = states.clone();
    let mut changes = Vec::new();
    for t in &shape.tasks {
        if state_of(&now, &t.id)? != TaskState::None {
            continue;
        }
        let ups = t
            .upstream
            .iter()
            .map(|u| state_of(&now, u))
            .collect::<Result<Vec<_>, _>>()?;
        let new = if ups.iter().any(|s| s.blocks_downstream()) {
            TaskState::UpstreamFailed
        } else if ups.iter().all(|s| s.lets_downstream_run()) {
            TaskState::Queued
        } else {
            continue;
        };
        now.insert(t.id.clone(), new);
        changes.push((t.id.clone(), new));
    }
    let mut declared = shape.tasks.iter().map(|t| now[&t.id]);
    let run = if declared.clone().all(TaskState::lets_downstream_run) {
        Some(RunState::Success)
    } else if declared.all(TaskState::is_terminal) {
        Some(RunState::Failed)
    } else {
        None
    };
    Ok(Settlement { changes, run })
}

/// The tasks an operator's retry of `task` resets to `none`: the task itself; with
/// `downstream`, every task after it; without, only the tasks after it that never ran because
/// it failed (`upstream_failed`). Refused while any of them is running.
pub fn clear(shape: &DagShape, states: &States, task: &str, downstream: bool) -> Result<Vec<String>, StateError> {
    if shape.task(task).is_none() {
        return Err(StateError::UnknownTask { task: task.to_string() });
    }
    let mut affected = Vec::new();
    for t in shape.downstream_of(task) {
        let s = state_of(states, t)?;
        if t == task || downstream || s == TaskState::UpstreamFailed {
            if s == TaskState::Running {
                return Err(StateError::Running { task: t.to_string() });
            }
            affected.push(t.to_string());
        }
    }
    Ok(affected)
}

/// The tasks after `task` that go back to waiting (`none`) when an operator marks `task`:
/// those that had not run yet, or had not run because of a failure upstream.
pub fn mark_resets(shape: &DagShape, states: &States, task: &str) -> Result<Vec<String>, StateError> {
    if shape.task(task).is_none() {
        return Err(StateError::UnknownTask { task: task.to_string() });
    }
    let mut out = Vec::new();
    for t in shape.downstream_of(task).into_iter().skip(1) {
        if matches!(
            state_of(states, t)?,
            TaskState::UpstreamFailed | TaskState::Queued | TaskState::None
        ) {
            out.push(t.to_string());
        }
    }
    Ok(out)
}

/// How a try ended, as far as the retry budget is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryEnd {
    /// The task failed and a retry may help.
    Retryable,
    /// Retrying the same input cannot succeed.
    Fatal,
    /// The platform stopped the try (shutdown, a worker that died): not the task's fault.
    Interrupted,
}

/// Counters of a task instance that decide its next state after a failed try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Tries that counted against `max_tries`, this one included.
    pub tries: u32,
    pub max_tries: u32,
    /// Interrupted tries, this one included.
    pub interruptions: u32,
    pub max_interruptions: u32,
}

/// The state after a failed try: `up_for_retry` while the budget allows, else `failed`.
/// An interrupted try does not use up `max_tries`; it has a cap of its own, so a task that
/// kills its worker every time (an out-of-memory loop) cannot run forever.
pub fn after_failure(end: TryEnd, budget: Budget) -> TaskState {
    let retry = match end {
        TryEnd::Fatal => false,
        TryEnd::Retryable => budget.tries < budget.max_tries,
        TryEnd::Interrupted => budget.interruptions < budget.max_interruptions,
    };
    if retry {
        TaskState::UpForRetry
    } else {
        TaskState::Failed
    }
}

#[cfg(test)]
mod tests {
    use super::TaskState::*;
    use super::*;
    use crate::model::{DagShape, TaskNode};

    fn shape(edges: &[(&str, &[&str])]) -> DagShape {
        DagShape::new(
            edges
                .iter()
                .map(|(id, up)| TaskNode {
                    id: id.to_string(),
                    upstream: up.iter().map(|s| s.to_string()).collect(),
                })
                .collect(),
        )
        .unwrap()
    }

    fn chain() -> DagShape {
        shape(&[
            ("fetch", &[]),
            ("clean", &["fetch"]),
            ("load", &["clean"]),
            ("publish", &["load"]),
        ])
    }

    /// fetch -> {a, b} -> join
    fn diamond() -> DagShape {
        shape(&[
            ("fetch", &[]),
            ("a", &["fetch"]),
            ("b", &["fetch"]),
            ("join", &["a", "b"]),
        ])
    }

    fn states(list: &[(&str, TaskState)]) -> States {
        list.iter().map(|(t, s)| (t.to_string(), *s)).collect()
    }

    fn changes(list: &[(&str, TaskState)]) -> Vec<(String, TaskState)> {
        list.iter().map(|(t, s)| (t.to_string(), *s)).collect()
    }

    #[test]
    fn settle_table() {
        struct Case {
            name: &'static str,
            shape: DagShape,
            before: Vec<(&'static str, TaskState)>,
            changes: Vec<(&'static str, TaskState)>,
            run: Option<RunState>,
        }
        let cases = vec![
            Case {
                name: "a new run: the first task is queued by creation, the rest wait",
                shape: chain(),
                before: vec![("fetch", Queued), ("clean", None), ("load", None), ("publish", None)],
                changes: vec![],
                run: Option::None,
            },
            Case {
                name: "success promotes the next task only",
                shape: chain(),
                before: vec![("fetch", Success), ("clean", None), ("load", None), ("publish", None)],
                changes: vec![("clean", Queued)],
                run: Option::None,
            },
            Case {
                name: "a retry pending is not terminal",
                shape: chain(),
                before: vec![
                    ("fetch", UpForRetry),
                    ("clean", None),
                    ("load", None),
                    ("publish", None),
                ],
                changes: vec![],
                run: Option::None,
            },
            Case {
                name: "a failure fails everything downstream, transitively, and the run",
                shape: chain(),
                before: vec![("fetch", Success), ("clean", Failed), ("load", None), ("publish", None)],
                changes: vec![("load", UpstreamFailed), ("publish", UpstreamFailed)],
                run: Some(RunState::Failed),
            },
            Case {
                name: "all succeeded: the run succeeds",
                shape: chain(),
                before: vec![
                    ("fetch", Success),
                    ("clean", Success),
                    ("load", Success),
                    ("publish", Success),
                ],
                changes: vec![],
                run: Some(RunState::Success),
            },
            Case {
                name: "a cancelled run: a failed task and the tasks it blocked end it failed",
                shape: chain(),
                before: vec![
                    ("fetch", Failed),
                    ("clean", UpstreamFailed),
                    ("load", UpstreamFailed),
                    ("publish", UpstreamFailed),
                ],
                changes: vec![],
                run: Some(RunState::Failed),
            },
            Case {
                name: "a join waits for both branches",
                shape: diamond(),
                before: vec![("fetch", Success), ("a", Success), ("b", Running), ("join", None)],
                changes: vec![],
                run: Option::None,
            },
            Case {
                name: "a join runs once both branches succeeded",
                shape: diamond(),
                before: vec![("fetch", Success), ("a", Success), ("b", Success), ("join", None)],
                changes: vec![("join", Queued)],
                run: Option::None,
            },
            Case {
                name: "one failed branch fails the join even while the other runs; the run goes on",
                shape: diamond(),
                before: vec![("fetch", Success), ("a", Failed), ("b", Running), ("join", None)],
                changes: vec![("join", UpstreamFailed)],
                run: Option::None,
            },
            Case {
                name: "branches fan out from one success",
                shape: diamond(),
                before: vec![("fetch", Success), ("a", None), ("b", None), ("join", None)],
                changes: vec![("a", Queued), ("b", Queued)],
                run: Option::None,
            },
            Case {
                name: "rows of tasks the DAG no longer declares are ignored",
                shape: shape(&[("fetch", &[]), ("publish", &["fetch"])]),
                before: vec![("fetch", Success), ("old", None), ("publish", Success)],
                changes: vec![],
                run: Some(RunState::Success),
            },
        ];
        for c in cases {
            let got = settle(&c.shape, &states(&c.before)).unwrap_or_else(|e| panic!("{}: {e}", c.name));
            assert_eq!(got.changes, changes(&c.changes), "{}", c.name);
            assert_eq!(got.run, c.run, "{}", c.name);
        }
    }

    #[test]
    fn a_task_added_after_the_run_was_created_is_an_error_not_satisfied() {
        // The run's rows predate `validate`; settling with the new shape must not promote
        // `publish` past a task that has no row.
        let new = shape(&[
            ("fetch", &[]),
            ("clean", &["fetch"]),
            ("load", &["clean"]),
            ("validate", &["load"]),
            ("publish", &["validate"]),
        ]);
        let old_rows = states(&[
            ("fetch", Success),
            ("clean", Success),
            ("load", Success),
            ("publish", None),
        ]);
        assert_eq!(
            settle(&new, &old_rows),
            Err(StateError::MissingTask {
                task: "validate".into()
            })
        );
        // Once the row exists (as `none`), the new task runs before publish.
        let mut synced = old_rows.clone();
        synced.insert("validate".into(), None);
        let s = settle(&new, &synced).unwrap();
        assert_eq!(s.changes, changes(&[("validate", Queued)]));
        assert_eq!(s.run, Option::None);
    }

    #[test]
    fn clear_table() {
        let failed_clean = states(&[
            ("fetch", Success),
            ("clean", Failed),
            ("load", UpstreamFailed),
            ("publish", UpstreamFailed),
        ]);
        // Without downstream: the task and the tasks that never ran because of it.
        assert_eq!(
            clear(&chain(), &failed_clean, "clean", false).unwrap(),
            ["clean", "load", "publish"]
        );
        let done = states(&[
            ("fetch", Success),
            ("clean", Success),
            ("load", Success),
            ("publish", Success),
        ]);
        assert_eq!(clear(&chain(), &done, "load", false).unwrap(), ["load"]);
        assert_eq!(clear(&chain(), &done, "load", true).unwrap(), ["load", "publish"]);
        assert_eq!(
            clear(&chain(), &done, "fetch", true).unwrap(),
            ["fetch", "clean", "load", "publish"]
        );
        let running = states(&[
            ("fetch", Success),
            ("clean", Success),
            ("load", Success),
            ("publish", Running),
        ]);
        assert_eq!(
            clear(&chain(), &running, "load", true),
            Err(StateError::Running { task: "publish".into() })
        );
        assert_eq!(clear(&chain(), &running, "load", false).unwrap(), ["load"]);
        assert_eq!(
            clear(&chain(), &done, "nope", false),
            Err(StateError::UnknownTask { task: "nope".into() })
        );
        // In a diamond, clearing one branch with downstream reaches the join, not the sibling.
        let d = states(&[("fetch", Success), ("a", Success), ("b", Success), ("join", Success)]);
        assert_eq!(clear(&diamond(), &d, "a", true).unwrap(), ["a", "join"]);
    }

    #[test]
    fn cleared_tasks_settle_back_into_the_queue() {
        // After a clear, the store sets the affected tasks to none and settles.
        let mut s = states(&[
            ("fetch", Success),
            ("clean", Failed),
            ("load", UpstreamFailed),
            ("publish", UpstreamFailed),
        ]);
        for t in clear(&chain(), &s, "clean", false).unwrap() {
            s.insert(t, None);
        }
        let got = settle(&chain(), &s).unwrap();
        assert_eq!(got.changes, changes(&[("clean", Queued)]));
        assert_eq!(got.run, Option::None, "a reopened run has work left");
    }

    #[test]
    fn mark_table() {
        let failed = states(&[
            ("fetch", Success),
            ("clean", Failed),
            ("load", UpstreamFailed),
            ("publish", UpstreamFailed),
        ]);
        // Marking the failed task success re-opens what it blocked; settle then queues load.
        let resets = mark_resets(&chain(), &failed, "clean").unwrap();
        assert_eq!(resets, ["load", "publish"]);
        let mut s = failed.clone();
        s.insert("clean".into(), Success);
        for t in resets {
            s.insert(t, None);
        }
        assert_eq!(settle(&chain(), &s).unwrap().changes, changes(&[("load", Queued)]));
        // Marking a queued task failed: downstream waits, then settles upstream_failed.
        let queued = states(&[("fetch", Success), ("clean", Queued), ("load", None), ("publish", None)]);
        let mut s = queued.clone();
        s.insert("clean".into(), Failed);
        for t in mark_resets(&chain(), &queued, "clean").unwrap() {
            s.insert(t, None);
        }
        let got = settle(&chain(), &s).unwrap();
        assert_eq!(
            got.changes,
            changes(&[("load", UpstreamFailed), ("publish", UpstreamFailed)])
        );
        assert_eq!(got.run, Some(RunState::Failed));
        // Succeeded downstream tasks are left as they are.
        let done = states(&[
            ("fetch", Success),
            ("clean", Success),
            ("load", Success),
            ("publish", Success),
        ]);
        assert!(mark_resets(&chain(), &done, "clean").unwrap().is_empty());
    }

    #[test]
    fn retries_and_interruptions() {
        let b = |tries, interruptions| Budget {
            tries,
            max_tries: 2,
            interruptions,
            max_interruptions: 3,
        };
        assert_eq!(after_failure(TryEnd::Retryable, b(1, 0)), UpForRetry);
        assert_eq!(after_failure(TryEnd::Retryable, b(2, 0)), Failed, "out of tries");
        assert_eq!(after_failure(TryEnd::Fatal, b(1, 0)), Failed, "fatal is never retried");
        // Interruptions do not use up tries: with both tries spent it still goes back.
        assert_eq!(after_failure(TryEnd::Interrupted, b(2, 1)), UpForRetry);
        assert_eq!(after_failure(TryEnd::Interrupted, b(0, 3)), Failed, "interruption cap");
    }

    #[test]
    fn state_texts_round_trip() {
        for s in TaskState::ALL {
            assert_eq!(s.as_str().parse::<TaskState>().unwrap(), *s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in RunState::ALL {
            assert_eq!(s.as_str().parse::<RunState>().unwrap(), *s);
        }
        for s in AttemptOutcome::ALL {
            assert_eq!(s.as_str().parse::<AttemptOutcome>().unwrap(), *s);
        }
        let e = "bogus".parse::<RunState>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown RunState \"bogus\" (expected one of: queued, running, success, failed)"
        );
    }
}
