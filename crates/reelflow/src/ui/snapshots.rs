//! The snapshots page (period, state, size, row and reject counts, rollback) and the rejected
//! rows of a snapshot, paged by `(file, line)`, as a page and as JSON at
//! `GET /api/v1/snapshots/{id}/rejects?file=&reason=&cursor=&limit=`.
//!
//! A cursor pins the snapshot it was made for and carries the last `(file, line)` sent. Like
//! the report reads, a page is read between two looks at the snapshot's bookkeeping row: if a
//! publish or rollback renamed its schema meanwhile, the read is done again.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use maud::{html, Markup};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Row};

use super::{enc, layout, page, ts, Session, UiError, UiResult};
use crate::http::{ApiError, AppState};

#[derive(Debug, Clone, Serialize)]
pub struct RejectRow {
    pub file: String,
    pub line: i64,
    pub reason: String,
    pub raw: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RejectPage {
    pub snapshot_id: i64,
    pub period: String,
    pub rejects: Vec<RejectRow>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RejectQuery {
    pub file: Option<String>,
    pub reason: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

/// Why rejects cannot be served.
#[derive(Debug)]
pub enum RejectError {
    NoSnapshot(i64),
    Gone(i64, String),
    BadRequest(String),
    Db(sqlx::Error),
}

impl From<sqlx::Error> for RejectError {
    fn from(e: sqlx::Error) -> RejectError {
        RejectError::Db(e)
    }
}

impl From<RejectError> for ApiError {
    fn from(e: RejectError) -> ApiError {
        match e {
            RejectError::NoSnapshot(id) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no snapshot {id}"))
            }
            RejectError::Gone(id, st) => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("snapshot {id} is {st}: its rows are no longer kept"),
            ),
            RejectError::BadRequest(m) => ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m),
            RejectError::Db(e) => reelflow_store::runs::RunError::Db(e).into(),
        }
    }
}

impl From<RejectError> for UiError {
    fn from(e: RejectError) -> UiError {
        match e {
            RejectError::NoSnapshot(id) => UiError::not_found(format!("no snapshot {id}")),
            RejectError::Gone(id, st) => UiError(
                StatusCode::CONFLICT,
                format!("snapshot {id} is {st}: its rows are no longer kept"),
            ),
            RejectError::BadRequest(m) => UiError::bad_request(m),
            RejectError::Db(e) => e.into(),
        }
    }
}

fn encode_cursor(snapshot: i64, file: &str, line: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("r1:{snapshot}:{line}:{file}"))
}

fn decode_cursor(s: &str) -> Option<(i64, i64, String)> {
    if s.len() > 512 {
        return None;
    }
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(s).ok()?).ok()?;
    let mut p = text.splitn(4, ':');
    if p.next()? != "r1" {
        return None;
    }
    Some((p.next()?.parse().ok()?, p.next()?.parse().ok()?, p.next()?.to_string()))
}

/// The schema a snapshot's rows live in, with the row's state and period.
pub(crate) async fn locate(pool: &PgPool, id: i64) -> Result<(String, String, Option<String>), RejectError> {
    let row: Option<(String, String, String)> = sqlx::query_as(
        "SELECT state, period, CASE WHEN state = 'published' THEN 'movies' ELSE schema_name END
         FROM reelflow.snapshots WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let (state, period, schema) = row.ok_or(RejectError::NoSnapshot(id))?;
    let kept = matches!(state.as_str(), "published" | "ready" | "retired" | "rolled_back");
    Ok((state, period, kept.then_some(schema)))
}

pub async fn rejects(pool: &PgPool, id: i64, q: &RejectQuery) -> Result<RejectPage, RejectError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(RejectError::BadRequest("limit: expected 1 to 1000".into()));
    }
    let blank = |v: &Option<String>| v.as_deref().filter(|v| !v.is_empty()).map(String::from);
    let (file, reason) = (blank(&q.file), blank(&q.reason));
    let (after_file, after_line) = match blank(&q.cursor) {
        None => (String::new(), i64::MIN),
        Some(c) => {
            let (snap, line, f) = decode_cursor(&c)
                .ok_or_else(|| RejectError::BadRequest("cursor: not a cursor of this endpoint".into()))?;
            if snap != id {
                return Err(RejectError::BadRequest(format!(
                    "cursor: made for snapshot {snap}, not {id}"
                )));
            }
            (f, line)
        }
    };
    for _ in 0..5 {
        let before = locate(pool, id).await?;
        let Some(schema) = before.2.clone() else {
            return Err(RejectError::Gone(id, before.0));
        };
        let sql = format!(
            "SELECT file, line, reason, raw FROM {}.rejects
             WHERE ($1::text IS NULL OR file = $1) AND ($2::text IS NULL OR reason = $2) AND (file, line) > ($3, $4)
             ORDER BY file, line LIMIT $5",
            reelflow_load::quote_ident(&schema)
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&file)
            .bind(&reason)
            .bind(&after_file)
            .bind(after_line)
            .bind(limit + 1)
            .fetch_all(pool)
            .await;
        let after = locate(pool, id).await?;
        if after != before {
            continue;
        }
        let rows = match rows {
            Ok(r) => r,
            // The schema was renamed between the two looks: try again.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => continue,
            Err(e) => return Err(e.into()),
        };
        let mut rejects: Vec<RejectRow> = rows
            .iter()
            .map(|r| RejectRow {
                file: r.get(0),
                line: r.get(1),
                reason: r.get(2),
                raw: r.get(3),
            })
            .collect();
        let next_cursor = if rejects.len() as i64 > limit {
            rejects.truncate(limit as usize);
            rejects.last().map(|r| encode_cursor(id, &r.file, r.line))
        } else {
            None
        };
        return Ok(RejectPage {
            snapshot_id: id,
            period: before.1,
            rejects,
            next_cursor,
        });
    }
    Err(RejectError::Db(sqlx::Error::Protocol(
        "the snapshot kept changing while it was read".into(),
    )))
}

/// `GET /api/v1/snapshots/{id}/rejects`.
pub async fn api_rejects(
    State(s): State<Arc<AppState>>,
    Path(id): Path<i64>,
    q: Result<Query<RejectQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<RejectPage>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    Ok(Json(rejects(&s.pool, id, &q).await?))
}

struct Snap {
    id: i64,
    period: String,
    state: String,
    run_id: Option<i64>,
    rows_total: Option<i64>,
    rejects_total: Option<i64>,
    row_counts: Option<serde_json::Value>,
    reject_counts: Option<serde_json::Value>,
    created_at: chrono::DateTime<chrono::Utc>,
    published_at: Option<chrono::DateTime<chrono::Utc>>,
    error: Option<String>,
    bytes: Option<i64>,
    schema: Option<String>,
    reports: Vec<(String, i64)>,
    diff: Option<reelflow_load::DiffSummary>,
    gate: Option<Vec<reelflow_load::Check>>,
}

/// Row counts of the report tables of a kept snapshot (those that exist in its schema).
async fn report_counts(pool: &PgPool, schema: &str) -> Vec<(String, i64)> {
    let names: Vec<&str> = reelflow_load::REPORTS.iter().map(|r| r.name).collect();
    let present: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relkind = 'r' AND c.relname = ANY($2)",
    )
    .bind(schema)
    .bind(&names)
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    let mut out = Vec::new();
    for name in names.iter().filter(|n| present.iter().any(|p| p == *n)) {
        // Names come from the report catalog only; the schema from the bookkeeping table.
        let sql = format!(
            "SELECT count(*) FROM {}.{}",
            reelflow_load::quote_ident(schema),
            reelflow_load::quote_ident(name)
        );
        // A publish may rename the schema meanwhile: that count is just left out.
        if let Ok(n) = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
            .fetch_one(pool)
            .await
        {
            out.push((name.to_string(), n));
        }
    }
    out
}

async fn list(pool: &PgPool, dag_id: &str) -> Result<Vec<Snap>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT s.id, s.period, s.state, s.run_id, s.rows_total, s.rejects_total, s.row_counts, s.reject_counts,
                s.created_at, s.published_at, s.error,
                CASE WHEN s.state IN ('published', 'ready', 'retired', 'rolled_back') THEN
                    (SELECT sum(pg_total_relation_size(c.oid))::bigint FROM pg_class c
                     JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE c.relkind = 'r'
                       AND n.nspname = CASE WHEN s.state = 'published' THEN 'movies' ELSE s.schema_name END)
                END,
                CASE WHEN s.state IN ('published', 'ready', 'retired', 'rolled_back') THEN
                    CASE WHEN s.state = 'published' THEN 'movies' ELSE s.schema_name END
                END
         FROM reelflow.snapshots s WHERE s.dag_id = $1 ORDER BY s.id DESC LIMIT 200",
    )
    .bind(dag_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| Snap {
            id: r.get(0),
            period: r.get(1),
            state: r.get(2),
            run_id: r.get(3),
            rows_total: r.get(4),
            rejects_total: r.get(5),
            row_counts: r.get(6),
            reject_counts: r.get(7),
            created_at: r.get(8),
            published_at: r.get(9),
            error: r.get(10),
            bytes: r.get(11),
            schema: r.get(12),
            reports: vec![],
            diff: None,
            gate: None,
        })
        .collect())
}

fn size(b: i64) -> String {
    let b = b as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} GiB", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else {
        format!("{:.0} KiB", b / 1024.0)
    }
}

fn counts(v: &Option<serde_json::Value>) -> Vec<(String, i64)> {
    v.as_ref()
        .and_then(|v| v.as_object())
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_i64().unwrap_or(0))).collect())
        .unwrap_or_default()
}

fn reject_counts(v: &Option<serde_json::Value>) -> Vec<(String, String, i64)> {
    let mut out = Vec::new();
    if let Some(o) = v.as_ref().and_then(|v| v.as_object()) {
        for (file, reasons) in o {
            if let Some(r) = reasons.as_object() {
                for (reason, n) in r {
                    out.push((file.clone(), reason.clone(), n.as_i64().unwrap_or(0)));
                }
            }
        }
    }
    out
}

pub async fn page_html(s: &AppState, sess: &Session) -> Result<Markup, UiError> {
    let mut snaps = list(&s.pool, &s.dag.id).await?;
    for sn in snaps.iter_mut() {
        if let Some(schema) = &sn.schema {
            sn.reports = report_counts(&s.pool, schema).await;
            sn.diff = reelflow_load::diff_summary(&s.pool, schema).await.ok().flatten();
        }
        sn.gate = super::diff::gate_checks(&s.pool, sn.id).await?;
    }
    Ok(layout(
        "Snapshots",
        sess,
        html! {
            h1 { "Snapshots" }
            @if sess.admin {
                form.act method="post" action="/ui/actions/preview" {
                    input type="hidden" name="action" value="rollback";
                    button #rollback type="submit" { "Roll back to the previous snapshot…" }
                }
            }
            table.snaps {
                thead { tr { th { "id" } th { "period" } th { "state" } th { "run" } th { "size" } th { "rows" } th { "rejects" } th { "report rows" } th { "diff · gate" } th { "created" } th { "published" } } }
                tbody {
                    @for sn in &snaps {
                        tr id={ "snap-" (sn.id) } class={ "snap s-" (sn.state.chars().filter(|c| c.is_ascii_lowercase() || *c == '_').collect::<String>()) } {
                            td { (sn.id) }
                            td { (sn.period) }
                            td { strong { (sn.state.replace('_', " ")) } @if let Some(e) = &sn.error { div.err { (e) } } }
                            td { @if let Some(r) = sn.run_id { a href={ "/ui/runs/" (r) } { (r) } } }
                            td.num { (sn.bytes.map(size).unwrap_or_else(|| "—".into())) }
                            td.num {
                                (sn.rows_total.map(|n| n.to_string()).unwrap_or_default())
                                @let rc = counts(&sn.row_counts);
                                @if !rc.is_empty() {
                                    details { summary { "per table" }
                                        ul.plain { @for (t, n) in &rc { li { (t) ": " (n) } } }
                                    }
                                }
                            }
                            td.num {
                                @if let Some(n) = sn.rejects_total {
                                    a href={ "/ui/snapshots/" (sn.id) "/rejects" } { (n) }
                                }
                                @let rj = reject_counts(&sn.reject_counts);
                                @if !rj.is_empty() {
                                    details { summary { "per file and reason" }
                                        ul.plain { @for (f, r, n) in &rj {
                                            li { a href={ "/ui/snapshots/" (sn.id) "/rejects?file=" (enc(f)) "&reason=" (enc(r)) } { (f) " · " (r) ": " (n) } }
                                        } }
                                    }
                                }
                            }
                            td {
                                @if !sn.reports.is_empty() {
                                    details { summary { (sn.reports.iter().map(|r| r.1).sum::<i64>()) }
                                        ul.plain { @for (name, n) in &sn.reports { li { (name) ": " (n) } } }
                                    }
                                }
                            }
                            td.diff {
                                @if let Some(d) = &sn.diff { div { (d.line()) } }
                                @if let Some(g) = &sn.gate { (super::diff::gate_brief(g)) }
                            }
                            td { (ts(Some(sn.created_at))) }
                            td { (ts(sn.published_at)) }
                        }
                    }
                }
            }
        },
    ))
}

pub async fn index(State(s): State<Arc<AppState>>, Extension(sess): Extension<Session>) -> UiResult {
    Ok(super::page(page_html(&s, &sess).await?))
}

pub async fn rejects_page(
    State(s): State<Arc<AppState>>,
    Extension(sess): Extension<Session>,
    Path(id): Path<i64>,
    Query(q): Query<RejectQuery>,
) -> UiResult {
    let p = rejects(&s.pool, id, &q).await?;
    let file = q.file.clone().unwrap_or_default();
    let reason = q.reason.clone().unwrap_or_default();
    Ok(page(layout(
        "Rejected rows",
        &sess,
        html! {
            h1 { "Rejected rows of snapshot " (id) " (" (p.period) ")" }
            form.filter method="get" action={ "/ui/snapshots/" (id) "/rejects" } {
                label { "File " input type="text" name="file" value=(file); }
                label { "Reason " input type="text" name="reason" value=(reason); }
                button type="submit" { "Filter" }
            }
            @if p.rejects.is_empty() { p.empty { "No rejected rows match." } } @else {
                table.rejects {
                    thead { tr { th { "file" } th { "line" } th { "reason" } th { "raw text" } } }
                    tbody {
                        @for r in &p.rejects {
                            tr {
                                td { (r.file) }
                                td.num { (r.line) }
                                td { (r.reason) }
                                td { pre.raw { (r.raw.clone().unwrap_or_default()) } }
                            }
                        }
                    }
                }
            }
            @if let Some(c) = &p.next_cursor {
                p { a #next-page href={ "/ui/snapshots/" (id) "/rejects?file=" (enc(&file)) "&reason=" (enc(&reason)) "&cursor=" (c) } { "Next page →" } }
            }
        },
    )))
}
