//! The HTTP API under `/api/v1/`, plus the probes. Reads are open; mutating endpoints need
//! `Authorization: Bearer <engine.admin_token>`, compared in constant time.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use reelflow_dag::{AttemptOutcome, DagSpec, Period, RunState};
use reelflow_store::runs::{self, RunError};
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use crate::metrics::METRICS;
use crate::ops;

/// Shared state of the HTTP server.
pub struct AppState {
    pub pool: PgPool,
    pub dag: DagSpec,
    pub token: Option<String>,
    /// Unix seconds of the scheduler loop's last turn.
    pub heartbeat: AtomicI64,
    pub liveness_secs: i64,
    pub shutting_down: AtomicBool,
    pub engine: Option<Arc<crate::engine::Engine>>,
    /// Retention and backfill limits of the operator actions.
    pub ops: ops::OpsConfig,
}

/// An error as JSON: `{"error": {"code": ..., "message": ...}}`. Internals are logged, not sent.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response()
    }
}

impl From<RunError> for ApiError {
    fn from(e: RunError) -> ApiError {
        match &e {
            _ if e.is_not_found() => ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string()),
            RunError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m.clone()),
            _ => {
                tracing::error!(error = %e, "API request failed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database is unavailable; try again",
                )
            }
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        if let Some(r) = e.downcast_ref::<ops::Refused>() {
            return ApiError::bad_request(r.0.clone());
        }
        let e = match e.downcast::<RunError>() {
            Ok(re) => return re.into(),
            Err(e) => e,
        };
        if let Some(le) = e.downcast_ref::<reelflow_load::LoadError>() {
            if matches!(
                le,
                reelflow_load::LoadError::NoPrevious(_)
                    | reelflow_load::LoadError::NoForward(_)
                    | reelflow_load::LoadError::NotPublishable { .. }
            ) {
                return ApiError::new(StatusCode::CONFLICT, "conflict", le.to_string());
            }
        }
        tracing::error!(error = %e, "API request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(v)| v).map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(e.status(), "too_large", "request body too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(e.status(), "unsupported_media_type", e.body_text()),
        _ => ApiError::bad_request(format!("invalid JSON body: {}", e.body_text())),
    })
}

/// Checks the bearer token; returns the action's origin for the audit record.
fn authorize(state: &AppState, headers: &HeaderMap, peer: SocketAddr) -> Result<String, ApiError> {
    let Some(expected) = &state.token else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "disabled",
            "mutating endpoints are disabled: no admin token is configured",
        ));
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) && !given.is_empty() {
        Ok(format!("http {}", peer.ip()))
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token",
        ))
    }
}

fn period(s: &str, name: &str) -> Result<Period, ApiError> {
    s.parse()
        .map_err(|e: reelflow_dag::PeriodError| ApiError::bad_request(format!("{name}: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListRuns {
    state: Option<String>,
    limit: Option<i64>,
}

async fn list_runs(
    State(s): State<Arc<AppState>>,
    q: Result<Query<ListRuns>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<serde_json::Value> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if let Some(st) = &q.state {
        if st.parse::<reelflow_dag::RunState>().is_err() {
            return Err(ApiError::bad_request(
                "state: expected queued, running, success or failed",
            ));
        }
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit: expected 1 to 1000"));
    }
    let runs = runs::list_runs(&s.pool, Some(&s.dag.id), q.state.as_deref(), limit).await?;
    Ok(Json(json!({ "runs": runs })))
}

async fn show_run(State(s): State<Arc<AppState>>, Path(id): Path<i64>) -> ApiResult<ops::RunDetail> {
    Ok(Json(ops::show_run(&s.pool, id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerBody {
    period: String,
    #[serde(default)]
    rerun: bool,
    /// A source for this run only.
    source: Option<String>,
    #[serde(default)]
    dry_run: bool,
    note: Option<String>,
}

async fn trigger(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    b: Result<Json<TriggerBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let origin = authorize(&s, &headers, peer)?;
    let b = body(b)?;
    let p = period(&b.period, "period")?;
    let action = ops::Action::Trigger {
        period: p,
        rerun: b.rerun,
    };
    if b.dry_run {
        return Ok(Json(ops::preview(&s.pool, &s.dag, &action).await?).into_response());
    }
    let out = ops::with_note(
        b.note,
        ops::trigger_with_source(&s.pool, &s.dag, p, b.rerun, "manual", &origin, b.source.as_deref()),
    )
    .await?;
    if let Some(e) = &s.engine {
        e.wake();
    }
    Ok((
        if out.created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(out),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackfillBody {
    from: String,
    to: String,
    #[serde(default)]
    rerun: bool,
    /// Confirms a backfill of more than `engine.max_backfill_runs` runs.
    #[serde(default)]
    yes: bool,
    #[serde(default)]
    dry_run: bool,
    note: Option<String>,
}

async fn backfill(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    b: Result<Json<BackfillBody>, JsonRejection>,
) -> ApiResult<serde_json::Value> {
    let origin = authorize(&s, &headers, peer)?;
    let b = body(b)?;
    let (from, to) = (period(&b.from, "from")?, period(&b.to, "to")?);
    if from > to {
        return Err(ApiError::bad_request("from must not be after to"));
    }
    if b.dry_run {
        let action = ops::Action::Backfill {
            from,
            to,
            rerun: b.rerun,
        };
        return Ok(Json(
            serde_json::to_value(ops::preview(&s.pool, &s.dag, &action).await?).map_err(anyhow::Error::from)?,
        ));
    }
    let out = ops::with_note(
        b.note,
        ops::backfill(&s.pool, &s.dag, from, to, b.rerun, b.yes, &s.ops, &origin),
    )
    .await?;
    if let Some(e) = &s.engine {
        e.wake();
    }
    let created = out.iter().filter(|t| t.created).count();
    Ok(Json(json!({ "count": out.len(), "created": created, "runs": out })))
}

async fn cancel(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> ApiResult<runs::Cancelled> {
    let origin = authorize(&s, &headers, peer)?;
    Ok(Json(ops::cancel(&s.pool, &s.dag, id, &origin).await?))
}

async fn cancel_backfill(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> ApiResult<serde_json::Value> {
    let origin = authorize(&s, &headers, peer)?;
    let out = ops::cancel_backfill(&s.pool, &s.dag, &origin).await?;
    Ok(Json(json!({ "cancelled": out })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RetryBody {
    #[serde(default)]
    downstream: bool,
    #[serde(default)]
    dry_run: bool,
    note: Option<String>,
}

async fn retry(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((id, task)): Path<(i64, String)>,
    headers: HeaderMap,
    b: Option<Json<RetryBody>>,
) -> ApiResult<serde_json::Value> {
    let origin = authorize(&s, &headers, peer)?;
    let b = b.map(|Json(b)| b).unwrap_or_default();
    let downstream = b.downstream;
    if b.dry_run {
        let action = ops::Action::Retry {
            run_id: id,
            task,
            downstream,
        };
        return Ok(Json(
            serde_json::to_value(ops::preview(&s.pool, &s.dag, &action).await?).map_err(anyhow::Error::from)?,
        ));
    }
    let cleared = ops::with_note(b.note, ops::retry(&s.pool, &s.dag, id, &task, downstream, &origin)).await?;
    if let Some(e) = &s.engine {
        e.wake();
    }
    let note = ops::retry_note(&cleared);
    Ok(Json(json!({ "run_id": id, "cleared": cleared, "note": note })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MarkBody {
    state: String,
    #[serde(default)]
    dry_run: bool,
    note: Option<String>,
}

async fn mark(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((id, task)): Path<(i64, String)>,
    headers: HeaderMap,
    b: Result<Json<MarkBody>, JsonRejection>,
) -> ApiResult<serde_json::Value> {
    let origin = authorize(&s, &headers, peer)?;
    let b = body(b)?;
    if !matches!(
        b.state.parse::<reelflow_dag::TaskState>(),
        Ok(reelflow_dag::TaskState::Success | reelflow_dag::TaskState::Failed)
    ) {
        return Err(ApiError::bad_request("state: expected success or failed"));
    }
    if b.dry_run {
        let action = ops::Action::Mark {
            run_id: id,
            task,
            state: b.state,
        };
        return Ok(Json(
            serde_json::to_value(ops::preview(&s.pool, &s.dag, &action).await?).map_err(anyhow::Error::from)?,
        ));
    }
    ops::with_note(b.note, ops::mark(&s.pool, &s.dag, id, &task, &b.state, &origin)).await?;
    if let Some(e) = &s.engine {
        e.wake();
    }
    Ok(Json(json!({ "run_id": id, "task_id": task, "state": b.state })))
}

async fn snapshots(State(s): State<Arc<AppState>>) -> ApiResult<serde_json::Value> {
    let snaps = reelflow_load::list_snapshots(&s.pool)
        .await
        .map_err(anyhow::Error::from)?;
    Ok(Json(json!({ "snapshots": snaps })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    /// Publish this kept snapshot instead of the previous one.
    to: Option<i64>,
    #[serde(default)]
    dry_run: bool,
    note: Option<String>,
}

async fn rollback(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    b: Option<Json<RollbackBody>>,
) -> Result<Response, ApiError> {
    let origin = authorize(&s, &headers, peer)?;
    let b = b.map(|Json(b)| b).unwrap_or_default();
    let target = match b.to {
        Some(id) => reelflow_load::RollTarget::Id(id),
        None => reelflow_load::RollTarget::Previous,
    };
    if b.dry_run && b.to.is_none() {
        return Ok(Json(ops::preview(&s.pool, &s.dag, &ops::Action::Rollback).await?).into_response());
    }
    if b.dry_run {
        return Err(ApiError::bad_request(
            "dry_run: only a rollback to the previous snapshot (no \"to\") has a preview",
        ));
    }
    Ok(Json(ops::with_note(b.note, ops::rollback(&s.pool, target, &s.ops, &origin)).await?).into_response())
}

async fn rollforward(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> ApiResult<reelflow_load::PublishOutput> {
    let origin = authorize(&s, &headers, peer)?;
    Ok(Json(
        ops::rollback(&s.pool, reelflow_load::RollTarget::Forward, &s.ops, &origin).await?,
    ))
}

async fn livez(State(s): State<Arc<AppState>>) -> Response {
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

async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    if s.shutting_down.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "shutting down"})),
        )
            .into_response();
    }
    let applied: Result<i64, _> = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&s.pool)
        .await;
    let expected = reelflow_store::MIGRATOR.iter().count() as i64;
    match applied {
        Ok(n) if n >= expected => (StatusCode::OK, Json(json!({"status": "ready"}))).into_response(),
        Ok(n) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "migrations pending", "applied": n, "expected": expected})),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "database unreachable"})),
        )
            .into_response(),
    }
}

/// Values that every replica reports from the store, so they survive restarts.
async fn refresh_from_store(s: &AppState) -> Result<(), sqlx::Error> {
    let m = &METRICS;
    let last: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM max(ended_at))::float8 FROM reelflow.dag_runs WHERE dag_id = $1 AND state = 'success'",
    )
    .bind(&s.dag.id)
    .fetch_one(&s.pool)
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
    .fetch_all(&s.pool)
    .await?;
    refresh_states(s).await?;
    let gate: Option<sqlx::types::Json<Vec<reelflow_load::Check>>> = sqlx::query_scalar(
        "SELECT gate_checks FROM reelflow.snapshots WHERE dag_id = $1 AND gate_checks IS NOT NULL ORDER BY id DESC LIMIT 1",
    )
    .bind(&s.dag.id)
    .fetch_optional(&s.pool)
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
async fn refresh_states(s: &AppState) -> Result<(), sqlx::Error> {
    const RUN_STATES: [&str; 4] = ["queued", "running", "success", "failed"];
    const TASK_STATES: [&str; 8] = [
        "none",
        "queued",
        "running",
        "success",
        "failed",
        "up_for_retry",
        "upstream_failed",
        "skipped",
    ];
    let m = &METRICS;
    let d = s.dag.id.as_str();
    let (runs, failed_recently, latest): (Vec<(String, i64)>, i64, Option<String>) = {
        let runs = sqlx::query_as("SELECT state, count(*) FROM reelflow.dag_runs WHERE dag_id = $1 GROUP BY state")
            .bind(d)
            .fetch_all(&s.pool)
            .await?;
        let failed = sqlx::query_scalar(
            "SELECT count(*) FROM reelflow.dag_runs
             WHERE dag_id = $1 AND state = 'failed' AND ended_at > now() - interval '1 hour'",
        )
        .bind(d)
        .fetch_one(&s.pool)
        .await?;
        let latest = sqlx::query_scalar(
            "SELECT state FROM reelflow.dag_runs WHERE dag_id = $1 ORDER BY updated_at DESC, id DESC LIMIT 1",
        )
        .bind(d)
        .fetch_optional(&s.pool)
        .await?;
        (runs, failed, latest)
    };
    for st in RUN_STATES {
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
    .fetch_all(&s.pool)
    .await?;
    for t in &s.dag.tasks {
        for st in TASK_STATES {
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

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
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

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method (reports are read with GET)",
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListActions {
    limit: Option<i64>,
}

async fn actions(
    State(s): State<Arc<AppState>>,
    q: Result<Query<ListActions>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<serde_json::Value> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit: expected 1 to 1000"));
    }
    Ok(Json(json!({ "actions": ops::list_actions(&s.pool, limit).await? })))
}

/// The router; tests drive it over a real socket.
pub fn router(state: Arc<AppState>) -> Router {
    router_with_ui(state, crate::ui::UiSettings::default())
}

/// The router with the operators' page (`crate::ui`) at `/`, set up by `ui`.
pub fn router_with_ui(state: Arc<AppState>, ui: crate::ui::UiSettings) -> Router {
    Router::new()
        .merge(crate::ui::routes(&state, ui))
        .route("/api/v1/snapshots/{id}/rejects", get(crate::ui::snapshots::api_rejects))
        .route("/api/v1/snapshots/{id}/diff", get(crate::ui::diff::api_diff))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/runs", get(list_runs).post(trigger))
        .route("/api/v1/runs/{id}", get(show_run))
        .route("/api/v1/runs/{id}/tasks/{task}/retry", post(retry))
        .route("/api/v1/runs/{id}/tasks/{task}/mark", post(mark))
        .route("/api/v1/runs/{id}/cancel", post(cancel))
        .route("/api/v1/backfill", post(backfill))
        .route("/api/v1/backfill/cancel", post(cancel_backfill))
        .route("/api/v1/snapshots", get(snapshots))
        .route("/api/v1/snapshots/rollback", post(rollback))
        .route("/api/v1/snapshots/rollforward", post(rollforward))
        .route("/api/v1/actions", get(actions))
        .merge(crate::reports_api::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(state)
}
