//! The probes and the metrics endpoint: `/livez` (the scheduler loop turns; `draining` while
//! shutting down), `/readyz` (database and migrations; 503 from the first moment of a
//! shutdown), `/metrics` (process counters plus the alerting series read from the store).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use reelflow_dag::{AttemptOutcome, DagSpec, RunState};
use serde_json::json;

use crate::http::AppState;
use crate::metrics::METRICS;

pub async fn livez(State(s): State<Arc<AppState>>) -> Response {
    let age = chrono::Utc::now().timestamp() - s.heartbeat.load(Ordering::Relaxed);
    if s.shutting_down.load(Ordering::Relaxed) {
        // Draining: the scheduler loop has stopped on purpose; the process is alive.
        return (
            StatusCode::OK,
            Json(json!({"status": "draining", "scheduler_heartbeat_age_seconds": age})),
        )
            .into_response();
    }
    if age <= s.liveness_secs {
        (
            StatusCode::OK,
            Json(json!({"status": "ok", "scheduler_heartbeat_age_seconds": age})),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "stalled", "scheduler_heartbeat_age_seconds": age})),
        )
            .into_response()
    }
}

pub async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    if s.shutting_down.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "shutting down"})),
        )
            .into_response();
    }
    // Migrations are not undone: once all are seen applied, a ping (no transaction) tells
    // that the database still answers.
    if s.migrations_applied.load(Ordering::Relaxed) {
        let answers = match s.pool.acquire().await {
            Ok(mut c) => sqlx::Connection::ping(&mut *c).await.is_ok(),
            Err(_) => false,
        };
        return if answers {
            (StatusCode::OK, Json(json!({"status": "ready"}))).into_response()
        } else {
            db_unreachable()
        };
    }
    let applied: Result<i64, _> = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&s.pool)
        .await;
    let expected = reelflow_store::MIGRATOR.iter().count() as i64;
    match applied {
        Ok(n) if n >= expected => {
            s.migrations_applied.store(true, Ordering::Relaxed);
            (StatusCode::OK, Json(json!({"status": "ready"}))).into_response()
        }
        Ok(n) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "migrations pending", "applied": n, "expected": expected})),
        )
            .into_response(),
        Err(_) => db_unreachable(),
    }
}

fn db_unreachable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"status": "database unreachable"})),
    )
        .into_response()
}

/// Values that every replica reports from the store, so they survive restarts. Read in one
/// read-only transaction: one consistent snapshot, and one transaction per scrape.
async fn refresh_from_store(s: &AppState) -> Result<(), sqlx::Error> {
    let mut tx = s
        .pool
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await?;
    read_store_series(s, &mut tx).await?;
    tx.commit().await
}

async fn read_store_series(s: &AppState, db: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    let m = &METRICS;
    let last: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM max(ended_at))::float8 FROM reelflow.dag_runs WHERE dag_id = $1 AND state = 'success'",
    )
    .bind(&s.dag.id)
    .fetch_one(&mut *db)
    .await?;
    if let Some(t) = last {
        m.last_success.set(&[("dag", &s.dag.id)], t);
    }
    let rows: Vec<(String, f64)> = sqlx::query_as(
        "SELECT ti.task_id, extract(epoch FROM max(now() - ti.started_at))::float8
         FROM reelflow.task_instances ti JOIN reelflow.dag_runs r ON r.id = ti.run_id
         WHERE r.dag_id = $1 AND ti.state = 'running' GROUP BY ti.task_id",
    )
    .bind(&s.dag.id)
    .fetch_all(&mut *db)
    .await?;
    refresh_states(s, db).await?;
    let gate: Option<sqlx::types::Json<Vec<reelflow_load::Check>>> = sqlx::query_scalar(
        "SELECT gate_checks FROM reelflow.snapshots WHERE dag_id = $1 AND gate_checks IS NOT NULL ORDER BY id DESC LIMIT 1",
    )
    .bind(&s.dag.id)
    .fetch_optional(&mut *db)
    .await?;
    if let Some(checks) = gate {
        crate::metrics::observe_gate(&s.dag.id, &checks.0);
    }
    for t in &s.dag.tasks {
        let age = rows.iter().find(|(id, _)| *id == t.id).map(|(_, a)| *a).unwrap_or(0.0);
        m.oldest_running.set(&[("dag", &s.dag.id), ("task", &t.id)], age);
        m.task_timeout
            .set(&[("dag", &s.dag.id), ("task", &t.id)], t.retry.timeout_secs as f64);
    }
    Ok(())
}

/// Run and task instance states from the store: alerting series that do not depend on which
/// process recorded a change (a replica that shut down, a CLI `tasks mark` or `runs cancel`).
async fn refresh_states(s: &AppState, db: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    let m = &METRICS;
    let d = s.dag.id.as_str();
    let (runs, failed_recently, latest): (Vec<(String, i64)>, i64, Option<String>) = {
        let runs = sqlx::query_as("SELECT state, count(*) FROM reelflow.dag_runs WHERE dag_id = $1 GROUP BY state")
            .bind(d)
            .fetch_all(&mut *db)
            .await?;
        let failed = sqlx::query_scalar(
            "SELECT count(*) FROM reelflow.dag_runs
             WHERE dag_id = $1 AND state = 'failed' AND ended_at > now() - interval '1 hour'",
        )
        .bind(d)
        .fetch_one(&mut *db)
        .await?;
        let latest = sqlx::query_scalar(
            "SELECT state FROM reelflow.dag_runs WHERE dag_id = $1 ORDER BY updated_at DESC, id DESC LIMIT 1",
        )
        .bind(d)
        .fetch_optional(&mut *db)
        .await?;
        (runs, failed, latest)
    };
    for st in RunState::ALL.iter().map(|s| s.as_str()) {
        let n = runs.iter().find(|(s, _)| s == st).map(|(_, n)| *n).unwrap_or(0);
        m.runs_in_state.set(&[("dag", d), ("state", st)], n as f64);
        let is = latest.as_deref() == Some(st);
        m.latest_run_state
            .set(&[("dag", d), ("state", st)], if is { 1.0 } else { 0.0 });
    }
    m.runs_failed_last_hour.set(&[("dag", d)], failed_recently as f64);
    let tis: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT ti.task_id, ti.state, count(*) FROM reelflow.task_instances ti
         JOIN reelflow.dag_runs r ON r.id = ti.run_id WHERE r.dag_id = $1 GROUP BY ti.task_id, ti.state",
    )
    .bind(d)
    .fetch_all(&mut *db)
    .await?;
    for t in &s.dag.tasks {
        for st in reelflow_dag::TaskState::ALL.iter().map(|s| s.as_str()) {
            let n = tis
                .iter()
                .find(|(task, state, _)| *task == t.id && state == st)
                .map(|r| r.2)
                .unwrap_or(0);
            m.task_instances_in_state
                .set(&[("dag", d), ("task", &t.id), ("state", st)], n as f64);
        }
    }
    Ok(())
}

pub async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    if let Err(e) = refresh_from_store(&s).await {
        tracing::warn!(error = %e, "metrics: the store is unreachable; serving the last known values");
    }
    let m = &METRICS;
    m.scheduler_heartbeat
        .set(&[], s.heartbeat.load(Ordering::Relaxed) as f64);
    m.build_info.set(&[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.render(),
    )
        .into_response()
}

/// Declares the series of a DAG at zero so dashboards and alerts see them before any event.
pub fn declare_series(dag: &DagSpec) {
    let m = &METRICS;
    let d = dag.id.as_str();
    for t in &dag.tasks {
        let task = t.id.as_str();
        for outcome in AttemptOutcome::ALL
            .iter()
            .filter(|o| !matches!(o, AttemptOutcome::Running | AttemptOutcome::Superseded))
        {
            m.task_attempts
                .touch(&[("dag", d), ("task", task), ("outcome", outcome.as_str())]);
        }
        m.task_retries.touch(&[("dag", d), ("task", task)]);
        m.task_duration.touch(&[("dag", d), ("task", task)]);
    }
    for state in [RunState::Success, RunState::Failed] {
        m.dag_runs.touch(&[("dag", d), ("state", state.as_str())]);
    }
    m.dag_run_duration.touch(&[("dag", d)]);
    m.running_tasks.touch(&[]);
    m.lease_expirations.touch(&[]);
    m.fenced_results.touch(&[]);
    m.fetch_bytes.touch(&[]);
    for t in reelflow_clean::TABLES {
        m.rows
            .touch(&[("stage", "clean"), ("table", t.name), ("outcome", "accepted")]);
        m.rows
            .touch(&[("stage", "load"), ("table", t.name), ("outcome", "loaded")]);
    }
    for file in reelflow_clean::REQUIRED_ENTRIES {
        m.rows
            .touch(&[("stage", "clean"), ("table", file), ("outcome", "rejected")]);
        for reason in reelflow_clean::RejectReason::ALL {
            m.rejected_rows.touch(&[("file", file), ("reason", reason.as_str())]);
        }
    }
}
