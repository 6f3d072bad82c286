//! The orchestration API under `/api/v1/` and the router of the whole HTTP server (the page,
//! the probes, the reports API). Reads are open; mutating endpoints need
//! `Authorization: Bearer <engine.admin_token>`, compared in constant time.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use reelflow_store::runs;
use serde::Deserialize;
use serde_json::json;

use crate::http::{authorize, body, period, ApiResult};
pub use crate::http::{ApiError, AppState};
use crate::ops;
pub use crate::probes::declare_series;
use crate::probes::{livez, metrics, readyz};

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
