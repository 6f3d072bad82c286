//! The grid: the latest N runs (columns, oldest left) × the DAG's tasks (rows). Two bounded
//! queries: the N runs first (the `(dag_id, period)` key), then only their task instances.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::Extension;
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{dur, layout, page, span_secs, Session, Ui, UiError, UiResult};
use crate::http::AppState;

/// Every task and run state with its glyph and words: colour is never the only signal
/// (WCAG 1.4.1), and `failed` and `upstream_failed` differ in glyph, border and text.
pub const STATES: &[(&str, &str, &str)] = &[
    ("success", "✓", "success"),
    ("failed", "✗", "failed"),
    ("upstream_failed", "⊘", "upstream failed"),
    ("running", "▶", "running"),
    ("queued", "◷", "queued"),
    ("up_for_retry", "↻", "up for retry"),
    ("none", "·", "waiting"),
];

pub fn glyph(state: &str) -> (&'static str, &'static str) {
    STATES
        .iter()
        .find(|(s, _, _)| *s == state)
        .map(|(_, g, t)| (*g, *t))
        .unwrap_or(("?", "unknown"))
}

/// A CSS class for a state (only known states; anything else is `st-unknown`).
pub fn class(state: &str) -> &'static str {
    match state {
        "success" => "st-success",
        "failed" => "st-failed",
        "upstream_failed" => "st-upstream_failed",
        "running" => "st-running",
        "queued" => "st-queued",
        "up_for_retry" => "st-up_for_retry",
        "none" => "st-none",
        _ => "st-unknown",
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct GridQuery {
    pub state: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub n: Option<String>,
}

/// A validated filter.
#[derive(Debug, Clone)]
pub struct Filter {
    pub state: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub n: i64,
}

impl Filter {
    pub fn parse(q: &GridQuery, default_n: i64) -> Result<Filter, UiError> {
        let some = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(String::from);
        let state = some(&q.state);
        if let Some(s) = &state {
            if !["queued", "running", "success", "failed"].contains(&s.as_str()) {
                return Err(UiError::bad_request(
                    "state: expected queued, running, success or failed",
                ));
            }
        }
        let period = |v: Option<String>, name: &str| -> Result<Option<String>, UiError> {
            v.map(|p| {
                p.parse::<reelflow_dag::Period>()
                    .map(|p| p.to_string())
                    .map_err(|e| UiError::bad_request(format!("{name}: {e}")))
            })
            .transpose()
        };
        let n = match some(&q.n) {
            None => default_n,
            Some(n) => n
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=100).contains(n))
                .ok_or_else(|| UiError::bad_request("n: expected 1 to 100"))?,
        };
        Ok(Filter {
            state,
            from: period(some(&q.from), "from")?,
            to: period(some(&q.to), "to")?,
            n,
        })
    }

    /// The filter as a query string (values are validated, so no escaping is needed).
    pub fn query(&self) -> String {
        let mut parts = vec![format!("n={}", self.n)];
        for (k, v) in [("state", &self.state), ("from", &self.from), ("to", &self.to)] {
            if let Some(v) = v {
                parts.push(format!("{k}={v}"));
            }
        }
        parts.join("&")
    }
}

pub struct RunCol {
    pub id: i64,
    pub period: String,
    pub state: String,
    pub trigger: String,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

pub struct Cell {
    pub state: String,
    pub try_number: i32,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

pub struct GridData {
    pub runs: Vec<RunCol>,
    pub cells: HashMap<(i64, String), Cell>,
}

pub async fn load(pool: &sqlx::PgPool, dag_id: &str, f: &Filter) -> Result<GridData, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, period, state, trigger, started_at, ended_at FROM reelflow.dag_runs
         WHERE dag_id = $1 AND ($2::text IS NULL OR state = $2)
           AND ($3::text IS NULL OR period >= $3) AND ($4::text IS NULL OR period <= $4)
         ORDER BY period DESC, id DESC LIMIT $5",
    )
    .bind(dag_id)
    .bind(&f.state)
    .bind(&f.from)
    .bind(&f.to)
    .bind(f.n)
    .fetch_all(pool)
    .await?;
    let mut runs: Vec<RunCol> = rows
        .iter()
        .map(|r| RunCol {
            id: r.get(0),
            period: r.get(1),
            state: r.get(2),
            trigger: r.get(3),
            started_at: r.get(4),
            ended_at: r.get(5),
        })
        .collect();
    runs.reverse();
    let ids: Vec<i64> = runs.iter().map(|r| r.id).collect();
    let tis = sqlx::query(
        "SELECT run_id, task_id, state, try_number, started_at, ended_at FROM reelflow.task_instances
         WHERE run_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let cells = tis
        .iter()
        .map(|r| {
            (
                (r.get::<i64, _>(0), r.get::<String, _>(1)),
                Cell {
                    state: r.get(2),
                    try_number: r.get(3),
                    started_at: r.get(4),
                    ended_at: r.get(5),
                },
            )
        })
        .collect();
    Ok(GridData { runs, cells })
}

/// The grid fragment (what the script swaps in). `data-active` tells the script to keep
/// polling: some run is queued or running.
pub fn render(dag: &reelflow_dag::DagSpec, d: &GridData) -> Markup {
    let active = d.runs.iter().any(|r| r.state == "queued" || r.state == "running");
    let secs: Vec<Option<f64>> = d.runs.iter().map(|r| span_secs(r.started_at, r.ended_at)).collect();
    let longest = secs.iter().flatten().cloned().fold(0.0f64, f64::max);
    html! {
        div #grid-frag data-active=(if active { "1" } else { "0" }) {
            @if d.runs.is_empty() {
                p.empty { "No runs match. Trigger a period to start one." }
            } @else {
                table.grid {
                    thead {
                        tr {
                            th.task scope="col" { "task \\ run" }
                            @for (r, s) in d.runs.iter().zip(&secs) {
                                @let (g, t) = glyph(&r.state);
                                @let h = s.map(|s| if longest > 0.0 { ((s / longest) * 10.0).ceil() as i64 } else { 0 }).unwrap_or(0);
                                th.run scope="col" {
                                    a.runhead data-panel href={ "/ui/runs/" (r.id) }
                                        title={ (r.period) ": " (t) ", " (r.trigger) (s.map(|s| format!(", {}", dur(s))).unwrap_or_default()) } {
                                        span class={ "bar h" (h.clamp(0, 10)) " " (class(&r.state)) } {}
                                        span.period { (r.period) }
                                        span class={ "rstate " (class(&r.state)) } { span.g aria-hidden="true" { (g) } " " (t) }
                                    }
                                }
                            }
                        }
                    }
                    tbody {
                        @for t in &dag.tasks {
                            tr {
                                th.task scope="row" { (t.id) }
                                @for r in &d.runs {
                                    td {
                                        @if let Some(c) = d.cells.get(&(r.id, t.id.clone())) {
                                            @let (g, text) = glyph(&c.state);
                                            @let took = if c.started_at.is_some() && c.state != "none" && c.state != "queued" { span_secs(c.started_at, c.ended_at) } else { None };
                                            a class={ "cell " (class(&c.state)) } data-panel data-task=(t.id) data-run=(r.id) data-state=(c.state)
                                                href={ "/ui/runs/" (r.id) "/tasks/" (t.id) }
                                                title={ (t.id) " · " (r.period) ": " (text) ", try " (c.try_number) (took.map(|s| format!(", {}", dur(s))).unwrap_or_default()) } {
                                                span.g aria-hidden="true" { (g) }
                                                span.s { (text) }
                                                span.m {
                                                    @if c.try_number > 0 { "#" (c.try_number) }
                                                    @if let Some(s) = took { " " (dur(s)) }
                                                }
                                            }
                                        } @else {
                                            span.cell.st-none { span.g aria-hidden="true" { "·" } span.s { "no instance" } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub fn legend() -> Markup {
    html! {
        ul.legend aria-label="Legend" {
            @for (s, g, t) in STATES {
                li { span class={ "cell mini " (class(s)) } { span.g aria-hidden="true" { (g) } } " " (t) }
            }
        }
    }
}

/// A weak ETag of a fragment.
pub fn etag(body: &str) -> String {
    format!("W/\"{}\"", hex::encode(&Sha256::digest(body.as_bytes())[..12]))
}

/// The grid fragment with an ETag; `If-None-Match` with the same tag gets 304.
pub async fn fragment(
    State(s): State<Arc<AppState>>,
    Extension(ui): Extension<Arc<Ui>>,
    headers: HeaderMap,
    Query(q): Query<GridQuery>,
) -> UiResult {
    let f = Filter::parse(&q, ui.settings.grid_runs)?;
    let d = load(&s.pool, &s.dag.id, &f).await?;
    let body = render(&s.dag, &d).into_string();
    let tag = etag(&body);
    let headers_out = [
        (header::ETAG, HeaderValue::from_str(&tag).expect("hex")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        ),
    ];
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    if matches {
        return Ok((StatusCode::NOT_MODIFIED, headers_out).into_response());
    }
    Ok((headers_out, body).into_response())
}

/// The filter form, the action forms of the page and the grid itself.
pub async fn grid_section(s: &AppState, ui: &Ui, sess: &Session, q: &GridQuery) -> Result<Markup, UiError> {
    let f = Filter::parse(q, ui.settings.grid_runs)?;
    let d = load(&s.pool, &s.dag.id, &f).await?;
    let frag = render(&s.dag, &d).into_string();
    let tag = etag(&frag);
    Ok(html! {
        section.controls {
            form.filter method="get" action="/" {
                label { "State " select name="state" {
                    option value="" selected[f.state.is_none()] { "any" }
                    @for st in ["queued", "running", "success", "failed"] {
                        option value=(st) selected[f.state.as_deref() == Some(st)] { (st) }
                    }
                } }
                label { "From " input type="text" name="from" placeholder="YYYY-MM" size="7" value=(f.from.clone().unwrap_or_default()); }
                label { "To " input type="text" name="to" placeholder="YYYY-MM" size="7" value=(f.to.clone().unwrap_or_default()); }
                label { "Runs " input type="number" name="n" min="1" max="100" value=(f.n); }
                button type="submit" { "Show" }
            }
            @if sess.admin {
                form.act method="post" action="/ui/actions/preview" {
                    input type="hidden" name="action" value="trigger";
                    label { "Period " input type="text" name="period" placeholder="YYYY-MM" size="7" required; }
                    label { input type="checkbox" name="rerun" value="1"; " rerun" }
                    button type="submit" { "Trigger…" }
                }
                form.act method="post" action="/ui/actions/preview" {
                    input type="hidden" name="action" value="backfill";
                    label { "From " input type="text" name="from" placeholder="YYYY-MM" size="7" required; }
                    label { "to " input type="text" name="to" placeholder="YYYY-MM" size="7" required; }
                    label { input type="checkbox" name="rerun" value="1"; " rerun" }
                    button type="submit" { "Backfill…" }
                }
            }
        }
        (legend())
        div #grid data-src={ "/ui/grid?" (f.query()) } data-etag=(tag) {
            (maud::PreEscaped(frag))
        }
    })
}

/// `/`: the grid page.
pub async fn page_with_panel(
    s: &AppState,
    ui: &Ui,
    sess: &Session,
    q: &GridQuery,
    panel: Option<(String, Markup)>,
) -> UiResult {
    let grid = grid_section(s, ui, sess, q).await?;
    let (src, panel) = panel.map(|(src, m)| (Some(src), Some(m))).unwrap_or((None, None));
    Ok(page(layout(
        &s.dag.id,
        sess,
        html! {
            h1 { (s.dag.id) }
            div.layout {
                div.gridwrap { (grid) }
                aside #panel data-src=[src] {
                    @if let Some(p) = panel { (p) } @else { p.hint { "Select a run or a cell to see its details." } }
                }
            }
        },
    )))
}

pub async fn index(
    State(s): State<Arc<AppState>>,
    Extension(ui): Extension<Arc<Ui>>,
    Extension(sess): Extension<Session>,
    Query(q): Query<GridQuery>,
) -> UiResult {
    page_with_panel(&s, &ui, &sess, &q, None).await
}
