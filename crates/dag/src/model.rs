//! DAGs as data: tasks, their dependencies, retry policies and timeouts.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a task is retried: `max_tries` attempts in all; the delay before try `n + 1` is
/// `initial_delay * multiplier^(n - 1)`, capped at `max_delay`, then spread by ±`jitter`
/// (a fraction: 0.2 = ±20%).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    pub max_tries: u32,
    pub initial_delay_secs: f64,
    pub multiplier: f64,
    pub max_delay_secs: f64,
    pub jitter: f64,
    /// A try running longer than this is cancelled and counts as a failed (retryable) try.
    pub timeout_secs: u64,
    /// Tries stopped by the platform (a shutdown, a worker that died) do not use up
    /// `max_tries`; after this many the task fails, so one that kills its worker every time
    /// cannot run forever.
    pub max_interruptions: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_tries: 3,
            initial_delay_secs: 30.0,
            multiplier: 2.0,
            max_delay_secs: 1800.0,
            jitter: 0.2,
            timeout_secs: 4 * 3600,
            max_interruptions: 10,
        }
    }
}

impl RetryPolicy {
    /// Delay before the next try after `failed_try` (1-based) failed; `unit` is a random
    /// number in [0, 1) supplied by the caller (so this stays pure and testable).
    pub fn delay_after(&self, failed_try: u32, unit: f64) -> Duration {
        let exp = self
            .multiplier
            .max(1.0)
            .powi(failed_try.saturating_sub(1).min(64) as i32);
        let base = (self.initial_delay_secs.max(0.0) * exp).min(self.max_delay_secs.max(0.0));
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 - jitter + 2.0 * jitter * unit.clamp(0.0, 1.0);
        Duration::from_secs_f64((base * factor).max(0.0))
    }

    /// The bounds [`delay_after`](Self::delay_after) can return for `failed_try`.
    pub fn delay_bounds(&self, failed_try: u32) -> (Duration, Duration) {
        (self.delay_after(failed_try, 0.0), self.delay_after(failed_try, 1.0))
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// Problems with this policy, if any.
    pub fn validate(&self, task: &str) -> Vec<String> {
        let mut errs = Vec::new();
        if self.max_tries == 0 {
            errs.push(format!("tasks.{task}.max_tries must be at least 1"));
        }
        if !(self.initial_delay_secs >= 0.0 && self.max_delay_secs >= 0.0 && self.multiplier >= 1.0) {
            errs.push(format!("tasks.{task}: delays must be >= 0 and multiplier >= 1"));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            errs.push(format!("tasks.{task}.jitter must be between 0 and 1"));
        }
        if self.timeout_secs == 0 {
            errs.push(format!("tasks.{task}.timeout_secs must be at least 1"));
        }
        errs
    }
}

/// One task of a DAG: its id, upstream tasks and retry policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub id: String,
    pub upstream: Vec<String>,
    pub retry: RetryPolicy,
}

/// A DAG: tasks in a valid topological order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DagSpec {
    pub id: String,
    pub tasks: Vec<TaskSpec>,
}

/// A task's place in a DAG: what a run records of its DAG, so that a run keeps the shape it
/// was created with (or last brought up to date with) whatever version of the code settles it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskNode {
    pub id: String,
    pub upstream: Vec<String>,
}

/// The tasks and edges of a DAG, in topological order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DagShape {
    pub tasks: Vec<TaskNode>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DagError {
    #[error("DAG {dag}: task {task} is defined twice")]
    DuplicateTask { dag: String, task: String },
    #[error("DAG {dag}: task {task} depends on {upstream}, which is not defined before it")]
    UnknownUpstream {
        dag: String,
        task: String,
        upstream: String,
    },
}

/// Checks that ids are unique and every upstream is defined earlier (so the list order is a
/// topological order and there are no cycles).
fn check_order<'a>(dag: &str, tasks: impl Iterator<Item = (&'a str, &'a [String])>) -> Result<(), DagError> {
    let mut seen: Vec<&str> = Vec::new();
    for (id, upstream) in tasks {
        if seen.contains(&id) {
            return Err(DagError::DuplicateTask {
                dag: dag.to_string(),
                task: id.to_string(),
            });
        }
        if let Some(u) = upstream.iter().find(|u| !seen.contains(&u.as_str())) {
            return Err(DagError::UnknownUpstream {
                dag: dag.to_string(),
                task: id.to_string(),
                upstream: u.clone(),
            });
        }
        seen.push(id);
    }
    Ok(())
}

impl DagSpec {
    /// Checks that ids are unique and every upstream is defined earlier.
    pub fn new(id: impl Into<String>, tasks: Vec<TaskSpec>) -> Result<DagSpec, DagError> {
        let id = id.into();
        check_order(&id, tasks.iter().map(|t| (t.id.as_str(), t.upstream.as_slice())))?;
        Ok(DagSpec { id, tasks })
    }

    pub fn task(&self, id: &str) -> Option<&TaskSpec> {
        self.tasks.iter().find(|t| t.id == id)
    }

    /// The tasks and edges, without the retry policies.
    pub fn shape(&self) -> DagShape {
        DagShape {
            tasks: self
                .tasks
                .iter()
                .map(|t| TaskNode {
                    id: t.id.clone(),
                    upstream: t.upstream.clone(),
                })
                .collect(),
        }
    }

    /// `task` and every task that depends on it, directly or not, in topological order.
    pub fn downstream_of(&self, task: &str) -> Vec<&str> {
        downstream_of(self.tasks.iter().map(|t| (t.id.as_str(), t.upstream.as_slice())), task)
    }
}

fn downstream_of<'a>(tasks: impl Iterator<Item = (&'a str, &'a [String])>, task: &str) -> Vec<&'a str> {
    let mut out: Vec<&str> = vec![];
    for (id, upstream) in tasks {
        if id == task || upstream.iter().any(|u| out.contains(&u.as_str())) {
            out.push(id);
        }
    }
    out
}

impl DagShape {
    pub fn new(tasks: Vec<TaskNode>) -> Result<DagShape, DagError> {
        check_order("", tasks.iter().map(|t| (t.id.as_str(), t.upstream.as_slice())))?;
        Ok(DagShape { tasks })
    }

    pub fn task(&self, id: &str) -> Option<&TaskNode> {
        self.tasks.iter().find(|t| t.id == id)
    }

    /// `task` and every task that depends on it, directly or not, in topological order.
    pub fn downstream_of(&self, task: &str) -> Vec<&str> {
        downstream_of(self.tasks.iter().map(|t| (t.id.as_str(), t.upstream.as_slice())), task)
    }

    /// A short, stable fingerprint of the tasks and edges (FNV-1a, 64 bits, hex), shown with
    /// runs so an operator can tell which DAG version a run follows.
    pub fn version(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |b: &[u8]| {
            for &x in b {
                h ^= x as u64;
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        for t in &self.tasks {
            eat(t.id.as_bytes());
            eat(b"<");
            for u in &t.upstream {
                eat(u.as_bytes());
                eat(b",");
            }
            eat(b";");
        }
        format!("{h:016x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, up: &[&str]) -> TaskSpec {
        TaskSpec {
            id: id.into(),
            upstream: up.iter().map(|s| s.to_string()).collect(),
            retry: RetryPolicy::default(),
        }
    }

    #[test]
    fn backoff_grows_caps_and_jitters_within_bounds() {
        let p = RetryPolicy {
            initial_delay_secs: 10.0,
            multiplier: 2.0,
            max_delay_secs: 60.0,
            jitter: 0.5,
            ..Default::default()
        };
        let secs = |t, u| p.delay_after(t, u).as_secs_f64();
        assert_eq!(secs(1, 0.5), 10.0);
        assert_eq!(secs(2, 0.5), 20.0);
        assert_eq!(secs(3, 0.5), 40.0);
        assert_eq!(secs(4, 0.5), 60.0, "capped");
        assert_eq!(secs(40, 0.5), 60.0, "no overflow on many tries");
        assert_eq!(p.delay_bounds(1), (Duration::from_secs(5), Duration::from_secs(15)));
        for i in 0..100 {
            let d = secs(2, i as f64 / 100.0);
            assert!((10.0..=30.0).contains(&d), "{d}");
        }
    }

    #[test]
    fn dag_order_and_downstream() {
        let d = DagSpec::new(
            "d",
            vec![
                spec("fetch", &[]),
                spec("clean", &["fetch"]),
                spec("load", &["clean"]),
                spec("publish", &["load"]),
            ],
        )
        .unwrap();
        assert_eq!(d.downstream_of("clean"), ["clean", "load", "publish"]);
        assert_eq!(d.shape().downstream_of("clean"), ["clean", "load", "publish"]);
        let v = d.shape().version();
        assert_eq!(v.len(), 16);
        let mut other = d.shape();
        other.tasks[3].upstream = vec!["clean".into()];
        assert_ne!(other.version(), v, "an edge changes the version");
        assert_eq!(d.downstream_of("publish"), ["publish"]);
        assert!(matches!(
            DagSpec::new("d", vec![spec("a", &["b"]), spec("b", &[])]),
            Err(DagError::UnknownUpstream { .. })
        ));
        assert!(matches!(
            DagSpec::new("d", vec![spec("a", &[]), spec("a", &[])]),
            Err(DagError::DuplicateTask { .. })
        ));
    }
}
