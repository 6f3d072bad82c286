//! Durable orchestration state: DAG runs, task instances with leases, attempt history and
//! operator actions, all in PostgreSQL.
//!
//! Invariants:
//! - One run per (dag, period): creation is `INSERT ... ON CONFLICT DO NOTHING`.
//! - A run records the shape of its DAG (`dag_runs.dag_shape`) and is settled by that shape.
//!   A rerun, retry or mark brings the run up to the caller's DAG first, adding rows for new
//!   tasks ([`sync_shape`]); a task of the shape without a row is an error, never "satisfied".
//! - A task instance is claimed with `FOR UPDATE SKIP LOCKED`, so one attempt runs on exactly one
//!   worker; the claim creates an attempt row whose id is the fencing token stored in
//!   `task_instances.attempt_id`. Heartbeats and results are accepted only while that token is
//!   current: a worker whose lease expired or was taken over cannot record over a newer attempt.
//! - Every change of task states ends with [`settle`] in the same transaction; the decisions
//!   are the pure functions of `reelflow_dag::state`, this module only applies them.
//! - Every transaction that makes work claimable (or moves a lease's end) announces it with
//!   `pg_notify` on [`WORK_CHANNEL`] inside the same transaction, so the notification is
//!   delivered on commit only ([`Notice`]). Engines listen on it and fall back to polling when
//!   they cannot.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reelflow_dag::{
    AttemptOutcome, Budget, DagShape, DagSpec, Outputs, RunState, StateError, States, TaskState, TryEnd, UnknownState,
};
use serde::Serialize;
use sqlx::{PgPool, Postgres, Row, Transaction};

type Tx<'a> = Transaction<'a, Postgres>;

/// The channel on which the store announces work to engines (`LISTEN reelflow_work`).
pub const WORK_CHANNEL: &str = "reelflow_work";

/// What a notification on [`WORK_CHANNEL`] announces. Sent inside the transaction that made
/// the change, so it is delivered only when that transaction commits, and after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    /// A run was created or reset (or a finished run reopened): it waits as `queued` to be
    /// started within `max_active_runs` ([`start_queued_runs`]).
    Queued,
    /// Task states of the run changed: a task may be claimable now, or at a later time (a
    /// retry's backoff; [`next_due`] says when).
    Ready,
    /// A task of the run was claimed: a lease now ends at a time other engines do not know
    /// yet (for detecting its expiry on time).
    Claimed,
    /// The run reached its final state: a queued run may start in its place.
    Ended,
}

/// A notification on [`WORK_CHANNEL`]: payload `<kind> <run id>`, e.g. `ready 42`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notice {
    pub kind: NoticeKind,
    pub run_id: i64,
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Queued => "queued",
            NoticeKind::Ready => "ready",
            NoticeKind::Claimed => "claimed",
            NoticeKind::Ended => "ended",
        }
    }
}

impl Notice {
    pub fn payload(&self) -> String {
        format!("{} {}", self.kind.as_str(), self.run_id)
    }

    /// Reads a payload; `None` for one this version does not know (a newer replica's).
    pub fn parse(payload: &str) -> Option<Notice> {
        let (kind, run) = payload.split_once(' ')?;
        let kind = match kind {
            "queued" => NoticeKind::Queued,
            "ready" => NoticeKind::Ready,
            "claimed" => NoticeKind::Claimed,
            "ended" => NoticeKind::Ended,
            _ => return None,
        };
        Some(Notice {
            kind,
            run_id: run.trim().parse().ok()?,
        })
    }
}

/// Announces `kind` for `run_id` on [`WORK_CHANNEL`] when `tx` commits.
async fn notify(tx: &mut Tx<'_>, kind: NoticeKind, run_id: i64) -> Result<(), RunError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(WORK_CHANNEL)
        .bind(Notice { kind, run_id }.payload())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("no run {0}")]
    NoRun(i64),
    #[error("run {run_id} has no task {task_id}")]
    NoTask { run_id: i64, task_id: String },
    #[error("{0}")]
    Conflict(String),
    #[error("run {run_id}: {source}")]
    State { run_id: i64, source: StateError },
    #[error("the store holds a state this version does not know: {0}")]
    UnknownState(#[from] UnknownState),
    #[error("run {run_id} records a DAG shape that cannot be read: {message}")]
    BadShape { run_id: i64, message: String },
}

impl RunError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, RunError::NoRun(_) | RunError::NoTask { .. })
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn parse<T: std::str::FromStr<Err = UnknownState>>(text: String) -> Result<T, RunError> {
    Ok(text.parse::<T>()?)
}

/// A row of `dag_runs`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunInfo {
    pub id: i64,
    pub dag_id: String,
    pub period: String,
    pub state: RunState,
    pub trigger: String,
    pub generation: i32,
    /// Fingerprint of the DAG shape the run follows ([`DagShape::version`]).
    pub dag_version: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// A row of `task_instances`.
#[derive(Debug, Clone, Serialize)]
pub struct TaskInstanceInfo {
    pub id: i64,
    pub run_id: i64,
    pub task_id: String,
    pub state: TaskState,
    pub try_number: i32,
    pub max_tries: i32,
    /// Tries stopped by the platform (not counted against `max_tries`).
    pub interruptions: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub outputs: Option<serde_json::Value>,
    pub last_error: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// A row of `attempts`.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptInfo {
    pub id: i64,
    pub run_id: i64,
    pub generation: i32,
    pub task_id: String,
    pub try_number: i32,
    pub worker: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub outcome: AttemptOutcome,
    pub retryable: Option<bool>,
    pub error: Option<String>,
}

/// A task attempt this worker now holds the lease for.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub ti_id: i64,
    pub attempt_id: i64,
    pub run_id: i64,
    pub dag_id: String,
    pub period: String,
    pub task_id: String,
    pub try_number: i32,
    /// Outputs of the run's tasks that have succeeded, keyed by task id.
    pub inputs: Outputs,
}

/// How a finished attempt ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Success(serde_json::Value),
    Failed {
        error: String,
        /// What the attempt row records: `failed`, `timeout` or `cancelled`.
        outcome: AttemptOutcome,
        /// Whether it counts against the retry budget and whether a retry can help.
        end: TryEnd,
        /// Delay before the next try, if the budget allows one.
        retry_in: Duration,
    },
}

/// A run that reached its final state.
#[derive(Debug, Clone, PartialEq)]
pub struct RunEnd {
    pub dag_id: String,
    pub state: RunState,
    pub seconds: f64,
}

/// An attempt whose lease expired.
#[derive(Debug, Clone, PartialEq)]
pub struct Expired {
    pub ti_id: i64,
    pub run_id: i64,
    pub period: String,
    /// The worker that held the lease.
    pub worker: String,
    pub dag_id: String,
    pub task_id: String,
    pub retried: bool,
    pub run_end: Option<RunEnd>,
}

/// What happened to a result.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// The result was recorded; the task is now in this state, and the run may have ended.
    Accepted(TaskState, Option<RunEnd>),
    /// The attempt no longer holds the lease: its result was refused.
    Fenced,
}

fn run_info(r: &sqlx::postgres::PgRow) -> Result<RunInfo, RunError> {
    let id: i64 = r.get("id");
    Ok(RunInfo {
        id,
        dag_id: r.get("dag_id"),
        period: r.get("period"),
        state: parse(r.get("state"))?,
        trigger: r.get("trigger"),
        generation: r.get("generation"),
        dag_version: shape_of(id, r.get("dag_shape"))?.version(),
        created_at: r.get("created_at"),
        started_at: r.get("started_at"),
        ended_at: r.get("ended_at"),
    })
}

fn shape_of(run_id: i64, v: serde_json::Value) -> Result<DagShape, RunError> {
    serde_json::from_value(v).map_err(|e| RunError::BadShape {
        run_id,
        message: e.to_string(),
    })
}

fn shape_json(dag: &DagSpec) -> serde_json::Value {
    serde_json::to_value(dag.shape()).expect("a DAG shape serialises")
}

const RUN_COLS: &str = "id, dag_id, period, state, trigger, generation, dag_shape, created_at, started_at, ended_at";
const TI_COLS: &str =
    "id, run_id, task_id, state, try_number, max_tries, interruptions, next_attempt_at, lease_owner, \
                       lease_expires_at, outputs, last_error, started_at, ended_at";

fn ti_info(r: &sqlx::postgres::PgRow) -> Result<TaskInstanceInfo, RunError> {
    Ok(TaskInstanceInfo {
        id: r.get("id"),
        run_id: r.get("run_id"),
        task_id: r.get("task_id"),
        state: parse(r.get("state"))?,
        try_number: r.get("try_number"),
        max_tries: r.get("max_tries"),
        interruptions: r.get("interruptions"),
        next_attempt_at: r.get("next_attempt_at"),
        lease_owner: r.get("lease_owner"),
        lease_expires_at: r.get("lease_expires_at"),
        outputs: r.get("outputs"),
        last_error: r.get("last_error"),
        started_at: r.get("started_at"),
        ended_at: r.get("ended_at"),
    })
}

/// The state a task starts a fresh run in.
fn initial_state(t: &reelflow_dag::TaskSpec) -> TaskState {
    if t.upstream.is_empty() {
        TaskState::Queued
    } else {
        TaskState::None
    }
}

/// Creates the run of `period` unless it exists. With `rerun`, a finished run is reset to run
/// again, following `dag` (a run still in progress is left alone and reported as a conflict).
/// Returns the run and whether this call created or reset it.
pub async fn ensure_run(
    pool: &PgPool,
    dag: &DagSpec,
    period: &str,
    trigger: &str,
    rerun: bool,
) -> Result<(RunInfo, bool), RunError> {
    ensure_run_with_source(pool, dag, period, trigger, rerun, None).await
}

/// [`ensure_run`] recording `source` as the run's own source (`reelflow.dag_runs.source`; None:
/// the configured one) when it creates or resets the run, in the same transaction: no worker
/// can start the run's fetch before its source is there.
pub async fn ensure_run_with_source(
    pool: &PgPool,
    dag: &DagSpec,
    period: &str,
    trigger: &str,
    rerun: bool,
    source: Option<&str>,
) -> Result<(RunInfo, bool), RunError> {
    let mut tx = pool.begin().await?;
    let created = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO reelflow.dag_runs (dag_id, period, state, trigger, dag_shape, source)
         VALUES ($1, $2, 'queued', $3, $4, $5)
         ON CONFLICT (dag_id, period) DO NOTHING RETURNING {RUN_COLS}"
    )))
    .bind(&dag.id)
    .bind(period)
    .bind(trigger)
    .bind(shape_json(dag))
    .bind(source)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(row) = created {
        let run = run_info(&row)?;
        for t in &dag.tasks {
            sqlx::query(
                "INSERT INTO reelflow.task_instances (run_id, task_id, state, max_tries, max_interruptions)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(run.id)
            .bind(&t.id)
            .bind(initial_state(t).as_str())
            .bind(t.retry.max_tries as i32)
            .bind(t.retry.max_interruptions as i32)
            .execute(&mut *tx)
            .await?;
        }
        notify(&mut tx, NoticeKind::Queued, run.id).await?;
        tx.commit().await?;
        return Ok((run, true));
    }
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLS} FROM reelflow.dag_runs WHERE dag_id = $1 AND period = $2 FOR UPDATE"
    )))
    .bind(&dag.id)
    .bind(period)
    .fetch_one(&mut *tx)
    .await?;
    let run = run_info(&row)?;
    if !rerun {
        tx.commit().await?;
        return Ok((run, false));
    }
    if !run.state.is_finished() {
        return Err(RunError::Conflict(format!(
            "run {} of {} for {period} is still {}; wait for it or retry a task instead",
            run.id, dag.id, run.state
        )));
    }
    sync_shape(&mut tx, dag, run.id).await?;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE reelflow.dag_runs SET state = 'queued', trigger = $2, generation = generation + 1,
             started_at = NULL, ended_at = NULL, source = $3, updated_at = now()
         WHERE id = $1 RETURNING {RUN_COLS}"
    )))
    .bind(run.id)
    .bind(trigger)
    .bind(source)
    .fetch_one(&mut *tx)
    .await?;
    for t in &dag.tasks {
        sqlx::query(
            "UPDATE reelflow.task_instances SET state = $3, try_number = 0, max_tries = $4, interruptions = 0,
                 max_interruptions = $5, next_attempt_at = NULL, attempt_id = NULL, lease_owner = NULL,
                 lease_expires_at = NULL, outputs = NULL, last_error = NULL, started_at = NULL, ended_at = NULL,
                 updated_at = now()
             WHERE run_id = $1 AND task_id = $2",
        )
        .bind(run.id)
        .bind(&t.id)
        .bind(initial_state(t).as_str())
        .bind(t.retry.max_tries as i32)
        .bind(t.retry.max_interruptions as i32)
        .execute(&mut *tx)
        .await?;
    }
    notify(&mut tx, NoticeKind::Queued, run.id).await?;
    tx.commit().await?;
    Ok((run_info(&row)?, true))
}

/// Brings a run's recorded DAG shape up to `dag`: records the new shape and adds a waiting
/// (`none`) task instance for every task the run has no row for. Rows of tasks `dag` no longer
/// declares stay (with their history) and are ignored by [`settle`]. Returns the tasks added.
pub async fn sync_shape(tx: &mut Tx<'_>, dag: &DagSpec, run_id: i64) -> Result<Vec<String>, RunError> {
    let current: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT dag_shape FROM reelflow.dag_runs WHERE id = $1 FOR UPDATE")
            .bind(run_id)
            .fetch_optional(&mut **tx)
            .await?;
    let current = current.ok_or(RunError::NoRun(run_id))?;
    if shape_of(run_id, current)? == dag.shape() {
        return Ok(vec![]);
    }
    sqlx::query("UPDATE reelflow.dag_runs SET dag_shape = $2, updated_at = now() WHERE id = $1")
        .bind(run_id)
        .bind(shape_json(dag))
        .execute(&mut **tx)
        .await?;
    let mut added = Vec::new();
    for t in &dag.tasks {
        let n = sqlx::query(
            "INSERT INTO reelflow.task_instances (run_id, task_id, state, max_tries, max_interruptions)
             VALUES ($1, $2, 'none', $3, $4) ON CONFLICT (run_id, task_id) DO NOTHING",
        )
        .bind(run_id)
        .bind(&t.id)
        .bind(t.retry.max_tries as i32)
        .bind(t.retry.max_interruptions as i32)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if n == 1 {
            added.push(t.id.clone());
        }
    }
    if !added.is_empty() {
        tracing::info!(run_id, added = ?added, "the run's DAG changed: task instances added");
    }
    Ok(added)
}

/// Moves queued runs of `dag_id` to running, oldest period first, while fewer than
/// `max_active` are running. Returns the runs started.
pub async fn start_queued_runs(pool: &PgPool, dag_id: &str, max_active: u32) -> Result<Vec<i64>, RunError> {
    let mut tx = pool.begin().await?;
    // Serialise schedulers of this DAG so two replicas cannot both pass the cap.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('reelflow.runs:' || $1, 0))")
        .bind(dag_id)
        .execute(&mut *tx)
        .await?;
    let running: i64 =
        sqlx::query_scalar("SELECT count(*) FROM reelflow.dag_runs WHERE dag_id = $1 AND state = 'running'")
            .bind(dag_id)
            .fetch_one(&mut *tx)
            .await?;
    let room = (max_active as i64 - running).max(0);
    let ids: Vec<i64> = sqlx::query_scalar(
        "UPDATE reelflow.dag_runs SET state = 'running', started_at = coalesce(started_at, now()), updated_at = now()
         WHERE id IN (SELECT id FROM reelflow.dag_runs WHERE dag_id = $1 AND state = 'queued'
                      ORDER BY period, id LIMIT $2)
         RETURNING id",
    )
    .bind(dag_id)
    .bind(room)
    .fetch_all(&mut *tx)
    .await?;
    for id in &ids {
        notify(&mut tx, NoticeKind::Ready, *id).await?;
    }
    tx.commit().await?;
    Ok(ids)
}

/// Claims one ready task instance (of a running run; of `only_run` when given) for `worker`
/// with a lease of `lease`.
pub async fn claim(
    pool: &PgPool,
    worker: &str,
    lease: Duration,
    dag_ids: &[String],
    only_run: Option<i64>,
) -> Result<Option<Claimed>, RunError> {
    claim_in(pool, worker, lease, dag_ids, None, only_run).await
}

/// [`claim`], limited to the task ids in `tasks` when given: a worker claims only tasks it has
/// code for, so during a rolling deploy that adds a task, older replicas leave it to newer ones.
pub async fn claim_in(
    pool: &PgPool,
    worker: &str,
    lease: Duration,
    dag_ids: &[String],
    tasks: Option<&[String]>,
    only_run: Option<i64>,
) -> Result<Option<Claimed>, RunError> {
    match claim_or_due(pool, worker, lease, dag_ids, tasks, only_run, false).await? {
        Claim::Claimed(c) => Ok(Some(c)),
        Claim::Idle(_) => Ok(None),
    }
}

/// When work that a claim found none of becomes due, as far as the store knows now: durations
/// from the database's `now()` (so the worker's clock does not matter), zero when already due.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Due {
    /// The earliest end of a retry's backoff among the tasks the worker could claim.
    pub retry_in: Option<Duration>,
    /// The earliest end of a lease of a running task, any worker's: when it may expire
    /// ([`expire_leases`]). Heartbeats only move leases' ends later.
    pub lease_ends_in: Option<Duration>,
}

/// What [`claim_next`] found.
#[derive(Debug)]
pub enum Claim {
    Claimed(Claimed),
    /// Nothing to claim now; when something may be.
    Idle(Due),
}

/// [`claim_in`], which also says, when nothing can be claimed, when to look again
/// ([`Due`]), in the same transaction.
pub async fn claim_next(
    pool: &PgPool,
    worker: &str,
    lease: Duration,
    dag_ids: &[String],
    tasks: Option<&[String]>,
    only_run: Option<i64>,
) -> Result<Claim, RunError> {
    claim_or_due(pool, worker, lease, dag_ids, tasks, only_run, true).await
}

/// When work becomes due ([`Due`]) for a worker of `dag_ids` with code for `tasks` (of
/// `only_run` when given), without claiming anything.
pub async fn next_due(
    pool: &PgPool,
    dag_ids: &[String],
    tasks: Option<&[String]>,
    only_run: Option<i64>,
) -> Result<Due, RunError> {
    due(pool, dag_ids, tasks, only_run).await
}

async fn due<'e>(
    e: impl sqlx::PgExecutor<'e>,
    dag_ids: &[String],
    tasks: Option<&[String]>,
    only_run: Option<i64>,
) -> Result<Due, RunError> {
    // Both subqueries use partial indexes (task_instances_ready, task_instances_running).
    let (retry, lease): (Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT
           (SELECT extract(epoch FROM min(ti.next_attempt_at) - now())::float8
            FROM reelflow.task_instances ti JOIN reelflow.dag_runs r ON r.id = ti.run_id
            WHERE ti.state = 'up_for_retry' AND r.state = 'running' AND r.dag_id = ANY($1)
              AND ($2::bigint IS NULL OR r.id = $2) AND ($3::text[] IS NULL OR ti.task_id = ANY($3))),
           (SELECT extract(epoch FROM min(lease_expires_at) - now())::float8
            FROM reelflow.task_instances WHERE state = 'running')",
    )
    .bind(dag_ids)
    .bind(only_run)
    .bind(tasks)
    .fetch_one(e)
    .await?;
    let dur = |s: Option<f64>| s.map(|s| Duration::from_secs_f64(s.max(0.0)));
    Ok(Due {
        retry_in: dur(retry),
        lease_ends_in: dur(lease),
    })
}

#[allow(clippy::too_many_arguments)]
async fn claim_or_due(
    pool: &PgPool,
    worker: &str,
    lease: Duration,
    dag_ids: &[String],
    tasks: Option<&[String]>,
    only_run: Option<i64>,
    want_due: bool,
) -> Result<Claim, RunError> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query(
        "SELECT ti.id, ti.run_id, ti.task_id, ti.try_number, r.dag_id, r.period, r.generation
         FROM reelflow.task_instances ti JOIN reelflow.dag_runs r ON r.id = ti.run_id
         WHERE r.state = 'running' AND r.dag_id = ANY($1) AND ($2::bigint IS NULL OR r.id = $2)
           AND ($3::text[] IS NULL OR ti.task_id = ANY($3))
           AND (ti.state = 'queued' OR (ti.state = 'up_for_retry' AND ti.next_attempt_at <= now()))
         ORDER BY r.period, ti.id
         LIMIT 1
         FOR UPDATE OF ti SKIP LOCKED",
    )
    .bind(dag_ids)
    .bind(only_run)
    .bind(tasks)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        let due = if want_due {
            due(&mut *tx, dag_ids, tasks, only_run).await?
        } else {
            Due::default()
        };
        tx.commit().await?;
        return Ok(Claim::Idle(due));
    };
    let ti_id: i64 = row.get("id");
    let run_id: i64 = row.get("run_id");
    let task_id: String = row.get("task_id");
    let try_number: i32 = row.get::<i32, _>("try_number") + 1;
    let attempt_id: i64 = sqlx::query_scalar(
        "INSERT INTO reelflow.attempts (task_instance_id, run_id, generation, task_id, try_number, worker)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(ti_id)
    .bind(run_id)
    .bind(row.get::<i32, _>("generation"))
    .bind(&task_id)
    .bind(try_number)
    .bind(worker)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE reelflow.task_instances SET state = 'running', try_number = $2, attempt_id = $3, lease_owner = $4,
             lease_expires_at = now() + make_interval(secs => $5), next_attempt_at = NULL,
             started_at = now(), ended_at = NULL, updated_at = now()
         WHERE id = $1",
    )
    .bind(ti_id)
    .bind(try_number)
    .bind(attempt_id)
    .bind(worker)
    .bind(secs(lease))
    .execute(&mut *tx)
    .await?;
    let outs = sqlx::query(
        "SELECT task_id, outputs FROM reelflow.task_instances WHERE run_id = $1 AND state = 'success' AND outputs IS NOT NULL",
    )
    .bind(run_id)
    .fetch_all(&mut *tx)
    .await?;
    let inputs: Outputs = outs
        .iter()
        .map(|r| (r.get::<String, _>(0), r.get::<serde_json::Value, _>(1)))
        .collect();
    notify(&mut tx, NoticeKind::Claimed, run_id).await?;
    tx.commit().await?;
    Ok(Claim::Claimed(Claimed {
        ti_id,
        attempt_id,
        run_id,
        dag_id: row.get("dag_id"),
        period: row.get("period"),
        task_id,
        try_number,
        inputs,
    }))
}

/// Extends the lease of a held attempt. `false` means the lease is lost: stop working.
pub async fn heartbeat(pool: &PgPool, ti_id: i64, attempt_id: i64, lease: Duration) -> Result<bool, RunError> {
    let n = sqlx::query(
        "UPDATE reelflow.task_instances SET lease_expires_at = now() + make_interval(secs => $3), updated_at = now()
         WHERE id = $1 AND attempt_id = $2 AND state = 'running'",
    )
    .bind(ti_id)
    .bind(attempt_id)
    .bind(secs(lease))
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// The budget of a task instance after one more failed try that ended as `end`.
fn budget_after(end: TryEnd, try_number: i32, max_tries: i32, interruptions: i32, max_interruptions: i32) -> Budget {
    let interrupted = i32::from(end == TryEnd::Interrupted);
    let interruptions = interruptions + interrupted;
    Budget {
        tries: (try_number - interruptions).max(0) as u32,
        max_tries: max_tries.max(0) as u32,
        interruptions: interruptions.max(0) as u32,
        max_interruptions: max_interruptions.max(0) as u32,
    }
}

/// Records the result of an attempt, if it still holds the lease (fencing).
pub async fn finish(pool: &PgPool, claimed: &Claimed, outcome: Outcome) -> Result<Recorded, RunError> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query(
        "SELECT try_number, max_tries, interruptions, max_interruptions FROM reelflow.task_instances
         WHERE id = $1 AND attempt_id = $2 AND state = 'running' FOR UPDATE",
    )
    .bind(claimed.ti_id)
    .bind(claimed.attempt_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        // Someone else owns this task now: note the late result on our attempt only.
        sqlx::query(
            "UPDATE reelflow.attempts SET outcome = CASE WHEN outcome = 'running' THEN 'superseded' ELSE outcome END,
                 ended_at = coalesce(ended_at, now()),
                 error = coalesce(error, 'result refused: the attempt no longer held the lease')
             WHERE id = $1",
        )
        .bind(claimed.attempt_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        return Ok(Recorded::Fenced);
    };
    let state = match &outcome {
        Outcome::Success(out) => {
            sqlx::query(
                "UPDATE reelflow.task_instances SET state = 'success', outputs = $2, last_error = NULL,
                     lease_owner = NULL, lease_expires_at = NULL, ended_at = now(), updated_at = now()
                 WHERE id = $1",
            )
            .bind(claimed.ti_id)
            .bind(out)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE reelflow.attempts SET outcome = 'success', ended_at = now() WHERE id = $1")
                .bind(claimed.attempt_id)
                .execute(&mut *tx)
                .await?;
            TaskState::Success
        }
        Outcome::Failed {
            error,
            outcome,
            end,
            retry_in,
        } => {
            let budget = budget_after(*end, row.get(0), row.get(1), row.get(2), row.get(3));
            let state = reelflow_dag::after_failure(*end, budget);
            let error = match (state, *end) {
                (TaskState::Failed, TryEnd::Interrupted) => format!(
                    "{error} (interrupted {} times: the cap max_interruptions = {} is reached)",
                    budget.interruptions, budget.max_interruptions
                ),
                _ => error.clone(),
            };
            let delay = (state == TaskState::UpForRetry).then(|| secs(*retry_in));
            sqlx::query(
                "UPDATE reelflow.task_instances SET state = $2, last_error = $3, lease_owner = NULL,
                     lease_expires_at = NULL, ended_at = now(), updated_at = now(), interruptions = $5,
                     next_attempt_at = CASE WHEN $4::float8 IS NULL THEN NULL
                                            ELSE now() + make_interval(secs => $4::float8) END
                 WHERE id = $1",
            )
            .bind(claimed.ti_id)
            .bind(state.as_str())
            .bind(&error)
            .bind(delay)
            .bind(budget.interruptions as i32)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE reelflow.attempts SET outcome = $2, ended_at = now(), error = $3, retryable = $4 WHERE id = $1",
            )
            .bind(claimed.attempt_id)
            .bind(outcome.as_str())
            .bind(&error)
            .bind(*end != TryEnd::Fatal)
            .execute(&mut *tx)
            .await?;
            state
        }
    };
    let end = settle(&mut tx, claimed.run_id).await?;
    tx.commit().await?;
    Ok(Recorded::Accepted(state, end))
}

/// Turns attempts whose lease expired into interrupted tries: the worker died, stalled or was
/// cut off, which is not the task's fault, so the try goes back to the queue at once without
/// using up `max_tries` (until `max_interruptions`). Returns the task instances affected.
pub async fn expire_leases(pool: &PgPool) -> Result<Vec<Expired>, RunError> {
    let mut tx = pool.begin().await?;
    let rows = sqlx::query(
        "SELECT ti.id, ti.run_id, ti.task_id, ti.try_number, ti.max_tries, ti.interruptions, ti.max_interruptions,
                ti.attempt_id, ti.lease_owner, r.dag_id, r.period
         FROM reelflow.task_instances ti JOIN reelflow.dag_runs r ON r.id = ti.run_id
         WHERE ti.state = 'running' AND ti.lease_expires_at < now()
         FOR UPDATE OF ti SKIP LOCKED",
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut out = Vec::new();
    for row in rows {
        let (ti, run_id, task_id): (i64, i64, String) = (row.get(0), row.get(1), row.get(2));
        let budget = budget_after(TryEnd::Interrupted, row.get(3), row.get(4), row.get(5), row.get(6));
        let attempt: Option<i64> = row.get(7);
        let owner: Option<String> = row.get(8);
        let (dag_id, period): (String, String) = (row.get(9), row.get(10));
        let state = reelflow_dag::after_failure(TryEnd::Interrupted, budget);
        let worker = owner.unwrap_or_default();
        let mut msg = format!("lease of worker {worker} expired (worker died, stalled or lost the database)");
        if state == TaskState::Failed {
            msg.push_str(&format!(
                " (interrupted {} times: the cap max_interruptions = {} is reached)",
                budget.interruptions, budget.max_interruptions
            ));
        }
        sqlx::query(
            "UPDATE reelflow.task_instances SET state = $2, last_error = $3, attempt_id = NULL, lease_owner = NULL,
                 lease_expires_at = NULL, ended_at = now(), updated_at = now(), interruptions = $4,
                 next_attempt_at = CASE WHEN $2 = 'up_for_retry' THEN now() END
             WHERE id = $1",
        )
        .bind(ti)
        .bind(state.as_str())
        .bind(&msg)
        .bind(budget.interruptions as i32)
        .execute(&mut *tx)
        .await?;
        if let Some(a) = attempt {
            sqlx::query(
                "UPDATE reelflow.attempts SET outcome = 'lease_expired', ended_at = now(), error = $2, retryable = true
                 WHERE id = $1 AND outcome = 'running'",
            )
            .bind(a)
            .bind(&msg)
            .execute(&mut *tx)
            .await?;
        }
        let run_end = settle(&mut tx, run_id).await?;
        out.push(Expired {
            ti_id: ti,
            run_id,
            period,
            worker,
            dag_id,
            task_id,
            retried: state == TaskState::UpForRetry,
            run_end,
        });
    }
    tx.commit().await?;
    Ok(out)
}

async fn load_states(tx: &mut Tx<'_>, run_id: i64) -> Result<BTreeMap<String, (TaskState, i32)>, RunError> {
    let rows =
        sqlx::query("SELECT task_id, state, try_number FROM reelflow.task_instances WHERE run_id = $1 FOR UPDATE")
            .bind(run_id)
            .fetch_all(&mut **tx)
            .await?;
    rows.iter()
        .map(|r| Ok((r.get::<String, _>(0), (parse(r.get(1))?, r.get::<i32, _>(2)))))
        .collect()
}

fn just_states(m: &BTreeMap<String, (TaskState, i32)>) -> States {
    m.iter().map(|(k, v)| (k.clone(), v.0)).collect()
}

async fn run_shape(tx: &mut Tx<'_>, run_id: i64) -> Result<DagShape, RunError> {
    let v: Option<serde_json::Value> = sqlx::query_scalar("SELECT dag_shape FROM reelflow.dag_runs WHERE id = $1")
        .bind(run_id)
        .fetch_optional(&mut **tx)
        .await?;
    shape_of(run_id, v.ok_or(RunError::NoRun(run_id))?)
}

/// Applies [`reelflow_dag::settle`] to the run: waiting tasks are promoted or failed, and the
/// run's state follows from its tasks. Call after every change of task states, in the same
/// transaction. Announces the change on [`WORK_CHANNEL`]: `ended` when the run is finished,
/// `queued` when a finished run was reopened, else `ready` (a task may be claimable now, or
/// its retry due later).
async fn settle(tx: &mut Tx<'_>, run_id: i64) -> Result<Option<RunEnd>, RunError> {
    let shape = run_shape(tx, run_id).await?;
    let states = just_states(&load_states(tx, run_id).await?);
    let settled = reelflow_dag::settle(&shape, &states).map_err(|source| RunError::State { run_id, source })?;
    for (task, new) in &settled.changes {
        sqlx::query(
            "UPDATE reelflow.task_instances SET state = $3, updated_at = now(),
                 ended_at = CASE WHEN $3 = 'upstream_failed' THEN now() END
             WHERE run_id = $1 AND task_id = $2",
        )
        .bind(run_id)
        .bind(task)
        .bind(new.as_str())
        .execute(&mut **tx)
        .await?;
    }
    match settled.run {
        Some(s) => {
            let ended: Option<(String, f64)> = sqlx::query_as(
                "UPDATE reelflow.dag_runs SET state = $2, ended_at = now(), updated_at = now()
                 WHERE id = $1 AND state <> $2
                 RETURNING dag_id, extract(epoch FROM now() - coalesce(started_at, created_at))::float8",
            )
            .bind(run_id)
            .bind(s.as_str())
            .fetch_optional(&mut **tx)
            .await?;
            notify(tx, NoticeKind::Ended, run_id).await?;
            Ok(ended.map(|(dag_id, seconds)| RunEnd {
                dag_id,
                state: s,
                seconds,
            }))
        }
        None => {
            // Work is left: a finished run that an operator reopened goes back to the queue.
            let reopened = sqlx::query(
                "UPDATE reelflow.dag_runs SET state = 'queued', ended_at = NULL, updated_at = now()
                 WHERE id = $1 AND state IN ('success', 'failed')",
            )
            .bind(run_id)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            let kind = if reopened > 0 {
                NoticeKind::Queued
            } else {
                NoticeKind::Ready
            };
            notify(tx, kind, run_id).await?;
            Ok(None)
        }
    }
}

/// Operator "clear": runs `task_id` again (and, with `downstream`, every task after it).
/// Tasks after it that never ran because it failed are reset either way. The run is brought up
/// to `dag` first ([`sync_shape`]). Returns the tasks reset.
pub async fn retry_task(
    pool: &PgPool,
    dag: &DagSpec,
    run_id: i64,
    task_id: &str,
    downstream: bool,
) -> Result<Vec<String>, RunError> {
    if dag.task(task_id).is_none() {
        return Err(RunError::NoTask {
            run_id,
            task_id: task_id.into(),
        });
    }
    let mut tx = pool.begin().await?;
    lock_run(&mut tx, run_id).await?;
    sync_shape(&mut tx, dag, run_id).await?;
    let states = load_states(&mut tx, run_id).await?;
    let affected =
        reelflow_dag::clear(&dag.shape(), &just_states(&states), task_id, downstream).map_err(|e| match e {
            StateError::Running { task } => {
                RunError::Conflict(format!("task {task} of run {run_id} is running; wait for it to finish"))
            }
            source => RunError::State { run_id, source },
        })?;
    for t in &affected {
        let try_number = states.get(t).map(|s| s.1).unwrap_or(0);
        let max = dag.task(t).map(|s| s.retry.max_tries as i32).unwrap_or(1);
        // A cleared task gets a fresh budget on top of the tries it already had.
        sqlx::query(
            "UPDATE reelflow.task_instances SET state = 'none', max_tries = $3 - interruptions, next_attempt_at = NULL,
                 attempt_id = NULL, lease_owner = NULL, lease_expires_at = NULL, last_error = NULL,
                 max_interruptions = interruptions + $4, ended_at = NULL, updated_at = now()
             WHERE run_id = $1 AND task_id = $2",
        )
        .bind(run_id)
        .bind(t)
        .bind(try_number + max)
        .bind(dag.task(t).map(|s| s.retry.max_interruptions as i32).unwrap_or(10))
        .execute(&mut *tx)
        .await?;
    }
    settle(&mut tx, run_id).await?;
    tx.commit().await?;
    Ok(affected)
}

/// Operator "mark": sets a task's state (`success` or `failed`) by hand. Marking a running task
/// fences its worker out. Tasks after it that had not run go back to waiting.
pub async fn mark_task(pool: &PgPool, dag: &DagSpec, run_id: i64, task_id: &str, state: &str) -> Result<(), RunError> {
    let state = match state.parse::<TaskState>() {
        Ok(s @ (TaskState::Success | TaskState::Failed)) => s,
        _ => {
            return Err(RunError::Conflict(format!(
                "a task can be marked success or failed, not {state}"
            )))
        }
    };
    if dag.task(task_id).is_none() {
        return Err(RunError::NoTask {
            run_id,
            task_id: task_id.into(),
        });
    }
    let mut tx = pool.begin().await?;
    lock_run(&mut tx, run_id).await?;
    sync_shape(&mut tx, dag, run_id).await?;
    let states = just_states(&load_states(&mut tx, run_id).await?);
    let resets = reelflow_dag::mark_resets(&dag.shape(), &states, task_id)
        .map_err(|source| RunError::State { run_id, source })?;
    let prev: Option<(Option<i64>,)> = sqlx::query_as(
        "SELECT attempt_id FROM reelflow.task_instances WHERE run_id = $1 AND task_id = $2 AND state = 'running'",
    )
    .bind(run_id)
    .bind(task_id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((Some(a),)) = prev {
        sqlx::query(
            "UPDATE reelflow.attempts SET outcome = 'superseded', ended_at = now(), error = 'marked ' || $2 || ' by an operator'
             WHERE id = $1 AND outcome = 'running'",
        )
        .bind(a)
        .bind(state.as_str())
        .execute(&mut *tx)
        .await?;
    }
    let n = sqlx::query(
        "UPDATE reelflow.task_instances SET state = $3, attempt_id = NULL, lease_owner = NULL, lease_expires_at = NULL,
             next_attempt_at = NULL, ended_at = now(), updated_at = now(),
             last_error = CASE WHEN $3 = 'failed' THEN 'marked failed by an operator' ELSE last_error END
         WHERE run_id = $1 AND task_id = $2",
    )
    .bind(run_id)
    .bind(task_id)
    .bind(state.as_str())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(RunError::NoTask {
            run_id,
            task_id: task_id.into(),
        });
    }
    for t in &resets {
        sqlx::query(
            "UPDATE reelflow.task_instances SET state = 'none', updated_at = now() WHERE run_id = $1 AND task_id = $2",
        )
        .bind(run_id)
        .bind(t)
        .execute(&mut *tx)
        .await?;
    }
    settle(&mut tx, run_id).await?;
    tx.commit().await?;
    Ok(())
}

async fn lock_run(tx: &mut Tx<'_>, run_id: i64) -> Result<(), RunError> {
    let found: Option<i64> = sqlx::query_scalar("SELECT id FROM reelflow.dag_runs WHERE id = $1 FOR UPDATE")
        .bind(run_id)
        .fetch_optional(&mut **tx)
        .await?;
    found.map(|_| ()).ok_or(RunError::NoRun(run_id))
}

pub async fn get_run(pool: &PgPool, run_id: i64) -> Result<RunInfo, RunError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLS} FROM reelflow.dag_runs WHERE id = $1"
    )))
    .bind(run_id)
    .fetch_optional(pool)
    .await?
    .ok_or(RunError::NoRun(run_id))?;
    run_info(&row)
}

pub async fn find_run(pool: &PgPool, dag_id: &str, period: &str) -> Result<Option<RunInfo>, RunError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLS} FROM reelflow.dag_runs WHERE dag_id = $1 AND period = $2"
    )))
    .bind(dag_id)
    .bind(period)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(run_info).transpose()
}

/// Runs, newest period first; optionally only those in `state`.
pub async fn list_runs(
    pool: &PgPool,
    dag_id: Option<&str>,
    state: Option<&str>,
    limit: i64,
) -> Result<Vec<RunInfo>, RunError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLS} FROM reelflow.dag_runs WHERE ($1::text IS NULL OR dag_id = $1) AND ($2::text IS NULL OR state = $2)
         ORDER BY period DESC, id DESC LIMIT $3"
    )))
    .bind(dag_id)
    .bind(state)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(run_info).collect()
}

pub async fn task_instances(pool: &PgPool, run_id: i64) -> Result<Vec<TaskInstanceInfo>, RunError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {TI_COLS} FROM reelflow.task_instances WHERE run_id = $1 ORDER BY id"
    )))
    .bind(run_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(ti_info).collect()
}

pub async fn attempts(pool: &PgPool, run_id: i64) -> Result<Vec<AttemptInfo>, RunError> {
    let rows = sqlx::query(
        "SELECT id, run_id, generation, task_id, try_number, worker, started_at, ended_at, outcome, retryable, error
         FROM reelflow.attempts WHERE run_id = $1 ORDER BY id",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(AttemptInfo {
                id: r.get(0),
                run_id: r.get(1),
                generation: r.get(2),
                task_id: r.get(3),
                try_number: r.get(4),
                worker: r.get(5),
                started_at: r.get(6),
                ended_at: r.get(7),
                outcome: parse(r.get(8))?,
                retryable: r.get(9),
                error: r.get(10),
            })
        })
        .collect()
}

/// Records an operator action with its origin (`cli`, `http 10.0.0.7`, ...).
#[allow(clippy::too_many_arguments)]
pub async fn record_action(
    pool: &PgPool,
    origin: &str,
    action: &str,
    dag_id: Option<&str>,
    period: Option<&str>,
    run_id: Option<i64>,
    task_id: Option<&str>,
    detail: serde_json::Value,
) -> Result<(), RunError> {
    sqlx::query(
        "INSERT INTO reelflow.operator_actions (origin, action, dag_id, period, run_id, task_id, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(origin)
    .bind(action)
    .bind(dag_id)
    .bind(period)
    .bind(run_id)
    .bind(task_id)
    .bind(detail)
    .execute(pool)
    .await?;
    Ok(())
}

/// Registers or refreshes a worker's heartbeat.
pub async fn worker_heartbeat(pool: &PgPool, worker: &str, hostname: &str, version: &str) -> Result<(), RunError> {
    sqlx::query(
        "INSERT INTO reelflow.workers (id, hostname, version) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), stopped_at = NULL",
    )
    .bind(worker)
    .bind(hostname)
    .bind(version)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn worker_stopped(pool: &PgPool, worker: &str) -> Result<(), RunError> {
    sqlx::query("UPDATE reelflow.workers SET stopped_at = now() WHERE id = $1")
        .bind(worker)
        .execute(pool)
        .await?;
    Ok(())
}

/// Where a worker process runs: host, boot, pid and the pid's start time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerProcess {
    pub hostname: String,
    pub boot_id: String,
    pub pid: i32,
    pub start_ticks: i64,
}

/// Records (or refreshes) a worker with the process it runs in.
pub async fn register_worker(pool: &PgPool, worker: &str, version: &str, p: &WorkerProcess) -> Result<(), RunError> {
    sqlx::query(
        "INSERT INTO reelflow.workers (id, hostname, version, boot_id, pid, start_ticks) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (id) DO UPDATE SET hostname = $2, version = $3, boot_id = $4, pid = $5, start_ticks = $6,
             heartbeat_at = now(), stopped_at = NULL",
    )
    .bind(worker)
    .bind(&p.hostname)
    .bind(version)
    .bind(&p.boot_id)
    .bind(p.pid)
    .bind(p.start_ticks)
    .execute(pool)
    .await?;
    Ok(())
}

/// A running task instance whose lease is held by another worker process on `hostname` in
/// boot `boot_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalLease {
    pub ti_id: i64,
    pub worker: String,
    pub process: WorkerProcess,
}

pub async fn local_leases(pool: &PgPool, me: &str, hostname: &str, boot_id: &str) -> Result<Vec<LocalLease>, RunError> {
    let rows = sqlx::query(
        "SELECT ti.id, w.id, w.hostname, w.boot_id, w.pid, w.start_ticks
         FROM reelflow.task_instances ti JOIN reelflow.workers w ON w.id = ti.lease_owner
         WHERE ti.state = 'running' AND w.id <> $1 AND w.hostname = $2 AND w.boot_id = $3
           AND w.pid IS NOT NULL AND w.start_ticks IS NOT NULL",
    )
    .bind(me)
    .bind(hostname)
    .bind(boot_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| LocalLease {
            ti_id: r.get(0),
            worker: r.get(1),
            process: WorkerProcess {
                hostname: r.get(2),
                boot_id: r.get(3),
                pid: r.get(4),
                start_ticks: r.get(5),
            },
        })
        .collect())
}

/// Ends the lease of `ti_id` now, if `worker` still holds it, so the next
/// [`expire_leases`] takes the task over without waiting.
pub async fn end_lease_now(pool: &PgPool, ti_id: i64, worker: &str) -> Result<bool, RunError> {
    let n = sqlx::query(
        "UPDATE reelflow.task_instances SET lease_expires_at = now() - interval '1 millisecond', updated_at = now()
         WHERE id = $1 AND state = 'running' AND lease_owner = $2",
    )
    .bind(ti_id)
    .bind(worker)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// What [`cancel_run`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Cancelled {
    pub run_id: i64,
    pub period: String,
    /// Tasks that were running: their workers are fenced out and stop at their next heartbeat.
    pub stopped: Vec<String>,
    /// Tasks that had not run (queued, waiting for a retry or for their upstream).
    pub not_run: Vec<String>,
    #[serde(skip)]
    pub run_end: Option<RunEnd>,
}

/// Operator "cancel": the run ends `failed`. A running task is marked failed and its attempt
/// `cancelled`, which fences its worker out (its heartbeat and result are refused, so it stops);
/// queued and retrying tasks are marked failed, waiting ones `upstream_failed`. Each keeps the
/// error `cancelled by an operator`. A finished run is a conflict.
pub async fn cancel_run(pool: &PgPool, dag: &DagSpec, run_id: i64) -> Result<Cancelled, RunError> {
    const WHY: &str = "cancelled by an operator";
    let mut tx = pool.begin().await?;
    lock_run(&mut tx, run_id).await?;
    let (state, period): (String, String) = sqlx::query_as("SELECT state, period FROM reelflow.dag_runs WHERE id = $1")
        .bind(run_id)
        .fetch_one(&mut *tx)
        .await?;
    let state: RunState = state.parse()?;
    if state.is_finished() {
        return Err(RunError::Conflict(format!(
            "run {run_id} ({period}) has already finished ({state}); nothing to cancel"
        )));
    }
    sqlx::query(
        "UPDATE reelflow.attempts SET outcome = 'cancelled', ended_at = now(), error = $2, retryable = false
         WHERE id IN (SELECT attempt_id FROM reelflow.task_instances WHERE run_id = $1 AND state = 'running')
           AND outcome = 'running'",
    )
    .bind(run_id)
    .bind(WHY)
    .execute(&mut *tx)
    .await?;
    let changed = sqlx::query(
        "UPDATE reelflow.task_instances t SET
             state = CASE WHEN t.state = 'none' THEN 'upstream_failed' ELSE 'failed' END,
             attempt_id = NULL, lease_owner = NULL, lease_expires_at = NULL, next_attempt_at = NULL,
             ended_at = now(), updated_at = now(), last_error = $2
         FROM reelflow.task_instances old
         WHERE old.id = t.id AND t.run_id = $1 AND t.state IN ('none', 'queued', 'up_for_retry', 'running')
         RETURNING t.task_id, old.state",
    )
    .bind(run_id)
    .bind(WHY)
    .fetch_all(&mut *tx)
    .await?;
    let mut out = Cancelled {
        run_id,
        period,
        stopped: vec![],
        not_run: vec![],
        run_end: None,
    };
    for r in &changed {
        let (task, old): (String, String) = (r.get(0), r.get(1));
        if old == "running" {
            out.stopped.push(task);
        } else {
            out.not_run.push(task);
        }
    }
    let order = |t: &String| dag.tasks.iter().position(|s| &s.id == t);
    out.stopped.sort_by_key(order);
    out.not_run.sort_by_key(order);
    out.run_end = settle(&mut tx, run_id).await?;
    tx.commit().await?;
    Ok(out)
}

/// Ids of the backfill runs of `dag_id` that are still queued (not started), oldest period first.
pub async fn queued_backfill_runs(pool: &PgPool, dag_id: &str) -> Result<Vec<i64>, RunError> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM reelflow.dag_runs WHERE dag_id = $1 AND trigger = 'backfill' AND state = 'queued'
         ORDER BY period, id",
    )
    .bind(dag_id)
    .fetch_all(pool)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip_and_unknown_ones_are_ignored() {
        for kind in [
            NoticeKind::Queued,
            NoticeKind::Ready,
            NoticeKind::Claimed,
            NoticeKind::Ended,
        ] {
            let n = Notice { kind, run_id: 42 };
            assert_eq!(Notice::parse(&n.payload()), Some(n));
        }
        assert_eq!(Notice::parse("ready 7").map(|n| n.run_id), Some(7));
        for bad in ["", "ready", "ready x", "paused 7", "7 ready"] {
            assert_eq!(Notice::parse(bad), None, "{bad:?}");
        }
    }
}
