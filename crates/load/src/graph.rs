//! A small dependency scheduler for the load: COPY streams, index builds, foreign keys and
//! reports are jobs with dependencies, run over a fixed set of connections. A job starts as
//! soon as what it needs is done (the ratings indexes start when the ratings COPY ends, while
//! other tables still load), and among ready jobs the heaviest goes first, so the longest chain
//! (the ratings table) is never left waiting behind small work.

use std::time::Instant;

use futures::stream::{FuturesUnordered, StreamExt};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use crate::copy::{copy_file, open};
use crate::plan::{Plan, Step};
use crate::types::LoadError;

/// What a job does.
#[derive(Debug, Clone)]
pub(crate) enum Work {
    /// `create` (if any) then COPY the bytes `range` of `object` (all of it when `None`) in
    /// one transaction; yields the rows copied.
    Copy {
        create: Option<String>,
        copy: String,
        artifacts: reelflow_artifacts::Artifacts,
        object: reelflow_artifacts::ObjectRef,
        range: Option<(u64, u64)>,
    },
    /// Statements run in order, each in its own implicit transaction.
    Sql(Vec<String>),
}

#[derive(Debug, Clone)]
pub(crate) struct Job {
    /// For logs and errors.
    pub name: String,
    pub work: Work,
    /// Indexes of jobs that must finish first.
    pub after: Vec<usize>,
    /// Relative cost; the heaviest ready job starts first.
    pub weight: u64,
    /// Runs alone among exclusive jobs: PostgreSQL already spreads it over parallel workers
    /// (an index build or aggregate over a big table), and two of them at once only fight over
    /// the same cores and memory.
    pub exclusive: bool,
}

impl Job {
    pub fn sql(name: impl Into<String>, statements: Vec<String>, after: Vec<usize>, weight: u64) -> Job {
        Job {
            name: name.into(),
            work: Work::Sql(statements),
            after,
            weight,
            exclusive: false,
        }
    }

    pub fn exclusive(mut self, yes: bool) -> Job {
        self.exclusive = yes;
        self
    }
}

/// Called when a job finishes, with its index and result (rows for a COPY, 0 otherwise).
/// An error here stops the graph like a failed job.
pub(crate) type OnDone<'a> = dyn FnMut(usize, u64) -> Result<(), LoadError> + Send + 'a;

async fn run_job(conn: &mut PgConnection, job: &Job) -> Result<u64, LoadError> {
    match &job.work {
        Work::Copy {
            create,
            copy,
            artifacts,
            object,
            range,
        } => copy_file(conn, create.as_deref(), copy, artifacts, object, *range).await,
        Work::Sql(statements) => {
            for sql in statements {
                sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                    .execute(&mut *conn)
                    .await
                    .map_err(LoadError::db(format!("running {sql}")))?;
            }
            Ok(0)
        }
    }
}

/// Runs every job over `connections` sessions (each first runs `session_sql`). On the first
/// failure nothing new starts, the statements still running are cancelled on the server (an
/// index build does not notice a closed client), and the first error is returned.
pub(crate) async fn run(
    opts: &PgConnectOptions,
    connections: usize,
    session_sql: &[String],
    jobs: &[Job],
    on_done: &mut OnDone<'_>,
) -> Result<Vec<u64>, LoadError> {
    let n = jobs.len();
    let mut plan = Plan::new(
        jobs.iter()
            .map(|j| Step {
                after: j.after.clone(),
                weight: j.weight,
                exclusive: j.exclusive,
            })
            .collect(),
    )
    .map_err(|e| LoadError::Plan(e.to_string()))?;
    let workers = connections.max(1).min(n.max(1));
    let mut idle = Vec::with_capacity(workers);
    for _ in 0..workers {
        let mut conn = open(opts).await?;
        for sql in session_sql {
            sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .execute(&mut conn)
                .await
                .map_err(LoadError::db(format!("running {sql}")))?;
        }
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .map_err(LoadError::db("reading the backend pid"))?;
        idle.push((conn, pid));
    }

    let mut results = vec![0u64; n];
    let mut running = FuturesUnordered::new();
    let mut busy_pids: Vec<(usize, i32)> = Vec::new();
    let mut failure: Option<LoadError> = None;
    let mut cancelled = false;
    let graph_started = Instant::now();

    loop {
        if failure.is_none() {
            while !idle.is_empty() {
                let Some(i) = plan.start_next() else {
                    break;
                };
                let (mut conn, pid) = idle.pop().expect("non-empty");
                busy_pids.push((i, pid));
                let job = &jobs[i];
                running.push(async move {
                    let started = Instant::now();
                    let r = run_job(&mut conn, job).await;
                    tracing::debug!(
                        job = %job.name,
                        seconds = started.elapsed().as_secs_f64(),
                        ended_at = graph_started.elapsed().as_secs_f64(),
                        ok = r.is_ok(),
                        "load job done"
                    );
                    (i, conn, pid, r)
                });
            }
        }
        let Some((i, conn, pid, r)) = running.next().await else {
            break;
        };
        busy_pids.retain(|&(j, _)| j != i);
        match r {
            Ok(rows) if failure.is_none() => {
                results[i] = rows;
                idle.push((conn, pid));
                match on_done(i, rows) {
                    Ok(()) => plan.finish(i),
                    Err(e) => {
                        plan.abandon(i);
                        failure = Some(e);
                    }
                }
            }
            Ok(_) => {
                plan.abandon(i);
                let _ = conn.close().await;
            }
            Err(e) => {
                plan.abandon(i);
                // A failed COPY can leave its connection out of step: never reuse it.
                drop(conn);
                if failure.is_none() {
                    failure = Some(e);
                }
            }
        }
        if failure.is_some() && !cancelled && !busy_pids.is_empty() {
            cancelled = true;
            cancel_backends(opts, &busy_pids).await;
        }
    }
    for (conn, _) in idle {
        let _ = conn.close().await;
    }
    if let Some(e) = failure {
        return Err(e);
    }
    assert!(plan.is_complete(), "every job ran: the plan has no cycle");
    Ok(results)
}

async fn cancel_backends(opts: &PgConnectOptions, busy: &[(usize, i32)]) {
    let pids: Vec<i32> = busy.iter().map(|&(_, p)| p).collect();
    match open(opts).await {
        Ok(mut c) => {
            let r = sqlx::query("SELECT pg_cancel_backend(p) FROM unnest($1::int[]) AS p")
                .bind(&pids)
                .execute(&mut c)
                .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "could not cancel the other load statements");
            }
            let _ = c.close().await;
        }
        Err(e) => tracing::warn!(error = %e, "could not cancel the other load statements"),
    }
}
