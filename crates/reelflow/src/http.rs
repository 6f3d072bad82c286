//! What every HTTP module shares: the server's state, the JSON error type and the request
//! helpers (body, bearer token, period). The admin API (`api`), the probes (`probes`), the
//! reports API (`reports_api`) and the page (`ui`) import from here; nothing here imports them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64};
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use reelflow_dag::{DagSpec, Period};
use reelflow_store::runs::RunError;
use serde_json::json;
use sqlx::PgPool;
use subtle::ConstantTimeEq;

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
    /// Set once `/readyz` has seen every migration applied; later probes only check that the
    /// database answers (a ping, no transaction).
    pub migrations_applied: AtomicBool,
    pub engine: Option<Arc<crate::engine::Engine>>,
    /// Retention and backfill limits of the operator actions.
    pub ops: ops::OpsConfig,
}

impl AppState {
    /// A state without an engine, with default limits and a minute of liveness slack (what an
    /// API-only server and the tests need; `serve` fills in the rest).
    pub fn new(pool: PgPool, dag: DagSpec, token: Option<String>) -> AppState {
        AppState {
            pool,
            dag,
            token,
            heartbeat: AtomicI64::new(chrono::Utc::now().timestamp()),
            liveness_secs: 60,
            shutting_down: AtomicBool::new(false),
            migrations_applied: AtomicBool::new(false),
            engine: None,
            ops: ops::OpsConfig::default(),
        }
    }
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
    pub fn bad_request(message: impl Into<String>) -> ApiError {
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
        if let Some(le) = e
            .downcast_ref::<reelflow_load::LoadError>()
            .filter(|le| le.is_conflict())
        {
            return ApiError::new(StatusCode::CONFLICT, "conflict", le.to_string());
        }
        tracing::error!(error = %e, "API request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }
}

pub type ApiResult<T> = Result<Json<T>, ApiError>;

pub fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(v)| v).map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(e.status(), "too_large", "request body too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(e.status(), "unsupported_media_type", e.body_text()),
        _ => ApiError::bad_request(format!("invalid JSON body: {}", e.body_text())),
    })
}

/// Checks the bearer token; returns the action's origin for the audit record.
pub fn authorize(state: &AppState, headers: &HeaderMap, peer: SocketAddr) -> Result<String, ApiError> {
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

pub fn period(s: &str, name: &str) -> Result<Period, ApiError> {
    s.parse()
        .map_err(|e: reelflow_dag::PeriodError| ApiError::bad_request(format!("{name}: {e}")))
}
