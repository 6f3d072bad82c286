//! The snapshot diff (built by the load: `diff_summary` and `diff_movies` in each snapshot)
//! served as JSON at `GET /api/v1/snapshots/{id}/diff?change=&cursor=&limit=`: the summary and
//! the changed movies paged by movie id, with their title in that snapshot (none for a removed
//! movie). `reelflow snapshots diff [ID]` prints the same.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use reelflow_load::DiffSummary;
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Row};

use super::snapshots::{locate, RejectError};
use crate::api::{ApiError, AppState};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiffRow {
    pub movie_id: i64,
    pub change: String,
    pub title: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiffPage {
    pub snapshot_id: i64,
    pub period: String,
    /// None for a snapshot built before diffs existed.
    pub summary: Option<DiffSummary>,
    pub movies: Vec<DiffRow>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct DiffQuery {
    /// `added`, `removed` or `changed`.
    pub change: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

fn encode_cursor(snapshot: i64, movie: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("d1:{snapshot}:{movie}"))
}

fn decode_cursor(s: &str) -> Option<(i64, i64)> {
    if s.len() > 128 {
        return None;
    }
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(s).ok()?).ok()?;
    let mut p = text.splitn(3, ':');
    if p.next()? != "d1" {
        return None;
    }
    Some((p.next()?.parse().ok()?, p.next()?.parse().ok()?))
}

/// One page of a kept snapshot's diff.
pub async fn diff(pool: &PgPool, id: i64, q: &DiffQuery) -> Result<DiffPage, RejectError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(RejectError::BadRequest("limit: expected 1 to 1000".into()));
    }
    let change = q.change.as_deref().filter(|c| !c.is_empty()).map(String::from);
    if let Some(c) = &change {
        if !["added", "removed", "changed"].contains(&c.as_str()) {
            return Err(RejectError::BadRequest(format!(
                "change {c:?}: expected added, removed or changed"
            )));
        }
    }
    let after = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => i64::MIN,
        Some(c) => {
            let (snap, movie) = decode_cursor(c)
                .ok_or_else(|| RejectError::BadRequest("cursor: not a cursor of this endpoint".into()))?;
            if snap != id {
                return Err(RejectError::BadRequest(format!(
                    "cursor: made for snapshot {snap}, not {id}"
                )));
            }
            movie
        }
    };
    // Read between two looks at the bookkeeping row, as the rejects are: a publish renames.
    for _ in 0..5 {
        let before = locate(pool, id).await?;
        let Some(schema) = before.2.clone() else {
            return Err(RejectError::Gone(id, before.0));
        };
        let summary = reelflow_load::diff_summary(pool, &schema).await;
        let s = reelflow_load::quote_ident(&schema);
        let has_diff = matches!(summary, Ok(Some(_)));
        let rows = if has_diff {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT d.movie_id, d.change, m.title FROM {s}.diff_movies d LEFT JOIN {s}.movies m ON m.id = d.movie_id
                 WHERE ($1::text IS NULL OR d.change = $1) AND d.movie_id > $2 ORDER BY d.movie_id LIMIT $3"
            )))
            .bind(&change)
            .bind(after)
            .bind(limit + 1)
            .fetch_all(pool)
            .await
        } else {
            Ok(vec![])
        };
        let after_look = locate(pool, id).await?;
        if after_look != before {
            continue;
        }
        let rows = match rows {
            Ok(r) => r,
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => continue,
            Err(e) => return Err(e.into()),
        };
        let summary = match summary {
            Ok(s) => s,
            Err(_) => continue,
        };
        let mut movies: Vec<DiffRow> = rows
            .iter()
            .map(|r| DiffRow {
                movie_id: r.get(0),
                change: r.get(1),
                title: r.get(2),
            })
            .collect();
        let next_cursor = if movies.len() as i64 > limit {
            movies.truncate(limit as usize);
            movies.last().map(|r| encode_cursor(id, r.movie_id))
        } else {
            None
        };
        return Ok(DiffPage {
            snapshot_id: id,
            period: before.1,
            summary,
            movies,
            next_cursor,
        });
    }
    Err(RejectError::Db(sqlx::Error::Protocol(
        "the snapshot kept changing while it was read".into(),
    )))
}

/// `GET /api/v1/snapshots/{id}/diff`.
pub async fn api_diff(
    State(s): State<Arc<AppState>>,
    Path(id): Path<i64>,
    q: Result<Query<DiffQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DiffPage>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    Ok(Json(diff(&s.pool, id, &q).await?))
}

/// The diff as `reelflow snapshots diff` prints it.
pub fn render(page: &DiffPage) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    match &page.summary {
        Some(sm) => {
            let _ = writeln!(
                out,
                "snapshot {} ({}): {}; {} unchanged",
                page.snapshot_id,
                page.period,
                sm.line(),
                sm.unchanged
            );
        }
        None => {
            let _ = writeln!(out, "snapshot {} ({}): no diff stored", page.snapshot_id, page.period);
        }
    }
    for m in &page.movies {
        let line = format!(
            "  {:<8} {:>10}  {}",
            m.change,
            m.movie_id,
            m.title.as_deref().unwrap_or("")
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if page.next_cursor.is_some() {
        let _ = writeln!(
            out,
            "  ... more: --cursor {}",
            page.next_cursor.as_deref().unwrap_or("")
        );
    }
    out
}

impl std::fmt::Display for RejectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RejectError::NoSnapshot(id) => write!(f, "no snapshot {id}"),
            RejectError::Gone(id, st) => write!(f, "snapshot {id} is {st}: its rows are no longer kept"),
            RejectError::BadRequest(m) => f.write_str(m),
            RejectError::Db(e) => write!(f, "database error: {e}"),
        }
    }
}

/// The quality gate's results stored with a snapshot (none before it was judged).
pub async fn gate_checks(pool: &PgPool, snapshot_id: i64) -> Result<Option<Vec<reelflow_load::Check>>, sqlx::Error> {
    let v: Option<Option<sqlx::types::Json<Vec<reelflow_load::Check>>>> =
        sqlx::query_scalar("SELECT gate_checks FROM reelflow.snapshots WHERE id = $1")
            .bind(snapshot_id)
            .fetch_optional(pool)
            .await?;
    Ok(v.flatten().map(|j| j.0))
}

/// `gate: 37 checks passed` or `gate: 2 of 37 checks failed`.
pub fn gate_brief(checks: &[reelflow_load::Check]) -> maud::Markup {
    let failed = checks.iter().filter(|c| !c.passed).count();
    maud::html! {
        @if failed == 0 {
            div.gate.ok { "gate: " (checks.len()) " checks passed" }
        } @else {
            div.gate.fail { "gate: " (failed) " of " (checks.len()) " checks failed" }
        }
    }
}

/// The run panel's table of the gate's checks, failed ones first.
pub fn gate_table(run_id: i64, checks: &[reelflow_load::Check]) -> maud::Markup {
    let mut sorted: Vec<&reelflow_load::Check> = checks.iter().collect();
    sorted.sort_by_key(|c| c.passed);
    let failed = checks.iter().any(|c| !c.passed);
    maud::html! {
        h3 { "Quality gate" }
        (gate_brief(checks))
        @if failed {
            p.hint { "The snapshot is kept and movies is unchanged. To publish it anyway: "
                code { "reelflow tasks mark " (run_id) " validate success --note WHY" } }
        }
        table.gate {
            thead { tr { th { "check" } th { "value" } th { "threshold" } th { "result" } th { "detail" } } }
            tbody {
                @for c in sorted {
                    tr class=(if c.passed { "pass" } else { "fail" }) {
                        td { (c.name) }
                        td.num { (c.value) }
                        td.num { (c.op) " " (c.threshold) }
                        td { @if c.passed { "passed" } @else { strong { "FAILED" } } }
                        td { (c.detail.clone().unwrap_or_default()) }
                    }
                }
            }
        }
    }
}
