//! The run panel and the task-instance panel (every attempt and its log), as fragments for the
//! script (`?fragment=1`) or as whole pages with the grid.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::IntoResponse;
use axum::Extension;
use maud::{html, Markup};
use reelflow_store::runs;
use serde::Deserialize;
use sqlx::Row;

use super::grid::{class, glyph, page_with_panel, GridQuery};
use super::{dur, enc, page, span_secs, ts, Session, Ui, UiError, UiResult};
use crate::http::AppState;

#[derive(Debug, Default, Deserialize)]
pub struct PanelQuery {
    pub fragment: Option<String>,
    pub attempt: Option<i64>,
    pub state: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub n: Option<String>,
}

impl PanelQuery {
    fn grid(&self) -> GridQuery {
        GridQuery {
            state: self.state.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            n: self.n.clone(),
        }
    }
}

fn badge(state: &str) -> Markup {
    let (g, t) = glyph(state);
    html! { span class={ "badge " (class(state)) } { span.g aria-hidden="true" { (g) } " " (t) } }
}

struct Action {
    at: chrono::DateTime<chrono::Utc>,
    origin: String,
    action: String,
    task_id: Option<String>,
    detail: Option<serde_json::Value>,
}

async fn actions(pool: &sqlx::PgPool, run_id: i64, task: Option<&str>) -> Result<Vec<Action>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT at, origin, action, task_id, detail FROM reelflow.operator_actions
         WHERE run_id = $1 AND ($2::text IS NULL OR task_id = $2 OR task_id IS NULL) ORDER BY id DESC LIMIT 50",
    )
    .bind(run_id)
    .bind(task)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| Action {
            at: r.get(0),
            origin: r.get(1),
            action: r.get(2),
            task_id: r.get(3),
            detail: r.get(4),
        })
        .collect())
}

fn actions_list(list: &[Action]) -> Markup {
    html! {
        @if !list.is_empty() {
            h3 { "Operator actions" }
            ul.actions {
                @for a in list {
                    li {
                        span.when { (ts(Some(a.at))) } " "
                        strong { (a.action) }
                        @if let Some(t) = &a.task_id { " " (t) }
                        " by " (a.origin)
                        @if let Some(n) = a.detail.as_ref().and_then(|d| d.get("note")).and_then(|n| n.as_str()) {
                            blockquote.note { (n) }
                        }
                    }
                }
            }
        }
    }
}

/// A time of day for tables (the full time is the cell's title).
fn hms(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "—".into())
}

async fn respond(s: &AppState, ui: &Ui, sess: &Session, q: &PanelQuery, src: String, panel: Markup) -> UiResult {
    if q.fragment.is_some() {
        Ok(page(panel))
    } else {
        page_with_panel(s, ui, sess, &q.grid(), Some((src, panel))).await
    }
}

/// A file of the archive: name, records, accepted, rejected per reason.
type FileRow = (String, u64, u64, Vec<(String, u64)>);

fn file_rows(clean: Option<&serde_json::Value>) -> Vec<FileRow> {
    let Some(files) = clean
        .and_then(|o| o.get("manifest"))
        .and_then(|m| m.get("files"))
        .and_then(|f| f.as_object())
    else {
        return vec![];
    };
    files
        .iter()
        .map(|(name, st)| {
            let n = |k: &str| st.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
            let reasons = st
                .get("rejected")
                .and_then(|r| r.as_object())
                .map(|r| r.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0))).collect())
                .unwrap_or_default();
            (name.clone(), n("records"), n("accepted"), reasons)
        })
        .collect()
}

pub async fn run_panel(s: &AppState, sess: &Session, run_id: i64) -> Result<Markup, UiError> {
    let detail = crate::ops::show_run(&s.pool, run_id).await?;
    let r = &detail.run;
    let out = |task: &str| {
        detail
            .tasks
            .iter()
            .find(|t| t.task_id == task)
            .and_then(|t| t.outputs.as_ref())
    };
    let files = file_rows(out("clean"));
    let snapshot = out("load").and_then(|o| o.get("snapshot_id")).and_then(|v| v.as_i64());
    let published = out("publish");
    let acts = actions(&s.pool, run_id, None).await?;
    let gate = match snapshot {
        Some(id) => super::diff::gate_checks(&s.pool, id).await?,
        None => None,
    };
    let took = span_secs(r.started_at, r.ended_at);
    Ok(html! {
        section.panel #run-panel data-run=(r.id) {
            h2 { "Run " (r.period) " " (badge(r.state.as_str())) }
            dl.facts {
                dt { "Run id" } dd { (r.id) }
                dt { "Created by" } dd { (r.trigger) }
                dt { "Generation" } dd { (r.generation) }
                dt { "Created" } dd { (ts(Some(r.created_at))) }
                dt { "Started" } dd { (ts(r.started_at)) }
                dt { "Ended" } dd { (ts(r.ended_at)) }
                dt { "Duration" } dd { (took.map(dur).unwrap_or_else(|| "—".into())) }
            }
            h3 { "Tasks" }
            table.tis {
                thead { tr { th { "task" } th { "state" } th { "try" } th { "duration" } th { "last error" } } }
                tbody {
                    @for t in &detail.tasks {
                        tr {
                            td { a data-panel href={ "/ui/runs/" (r.id) "/tasks/" (t.task_id) } { (t.task_id) } }
                            td { (badge(t.state.as_str())) }
                            td { (t.try_number) " of " (t.max_tries) }
                            td { (span_secs(t.started_at, t.ended_at).filter(|_| t.state != "none" && t.state != "queued").map(dur).unwrap_or_default()) }
                            td.err { (t.last_error.clone().unwrap_or_default()) }
                        }
                    }
                }
            }
            @if !files.is_empty() {
                h3 { "Rows per file" }
                table.files {
                    thead { tr { th { "file" } th { "records" } th { "accepted" } th { "rejected (reason: rows)" } } }
                    tbody {
                        @for (name, records, accepted, reasons) in &files {
                            tr {
                                td { (name) }
                                td.num { (records) }
                                td.num { (accepted) }
                                td {
                                    @for (reason, n) in reasons {
                                        @if let Some(id) = snapshot {
                                            a.reason href={ "/ui/snapshots/" (id) "/rejects?file=" (enc(name)) "&reason=" (enc(reason)) } { (reason) ": " (n) } " "
                                        } @else {
                                            span.reason { (reason) ": " (n) } " "
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(id) = snapshot {
                p { "Snapshot " a href={ "/ui/snapshots#snap-" (id) } { (id) }
                    @if let Some(p) = published {
                        @if p.get("current").and_then(|c| c.as_bool()).unwrap_or(true) { " — published as movies" } @else { " — kept for its period (a newer period is published)" }
                    } @else { " — not published yet" }
                }
            }
            @if let Some(checks) = &gate { (super::diff::gate_table(r.id, checks)) }
            @if sess.admin {
                h3 { "Act" }
                div.actrow {
                    form method="post" action="/ui/actions/preview" {
                        input type="hidden" name="action" value="retry_failed";
                        input type="hidden" name="run_id" value=(r.id);
                        button type="submit" { "Retry failed tasks…" }
                    }
                    form method="post" action="/ui/actions/preview" {
                        input type="hidden" name="action" value="trigger";
                        input type="hidden" name="period" value=(r.period);
                        input type="hidden" name="rerun" value="1";
                        button type="submit" { "Re-run the period…" }
                    }
                }
            }
            (actions_list(&acts))
        }
    })
}

pub async fn run(
    State(s): State<Arc<AppState>>,
    Extension(ui): Extension<Arc<Ui>>,
    Extension(sess): Extension<Session>,
    Path(id): Path<i64>,
    Query(q): Query<PanelQuery>,
) -> UiResult {
    let panel = run_panel(&s, &sess, id).await?;
    respond(&s, &ui, &sess, &q, format!("/ui/runs/{id}"), panel).await
}

pub async fn task_panel(
    s: &AppState,
    sess: &Session,
    run_id: i64,
    task: &str,
    pick: Option<i64>,
) -> Result<Markup, UiError> {
    let r = runs::get_run(&s.pool, run_id).await?;
    let ti = runs::task_instances(&s.pool, run_id)
        .await?
        .into_iter()
        .find(|t| t.task_id == task)
        .ok_or_else(|| UiError::not_found(format!("run {run_id} has no task {task}")))?;
    let attempts: Vec<_> = runs::attempts(&s.pool, run_id)
        .await?
        .into_iter()
        .filter(|a| a.task_id == task)
        .collect();
    let shown = pick
        .and_then(|p| attempts.iter().find(|a| a.id == p))
        .or(attempts.last());
    let log = match shown {
        Some(a) => Some((a, crate::attempt_log::read(&s.pool, a.id).await?)),
        None => None,
    };
    let acts = actions(&s.pool, run_id, Some(task)).await?;
    let base = format!("/ui/runs/{run_id}/tasks/{task}");
    Ok(html! {
        section.panel #task-panel data-run=(run_id) data-task=(task) {
            h2 { (task) " · " a data-panel href={ "/ui/runs/" (run_id) } { (r.period) } " " (badge(ti.state.as_str())) }
            dl.facts {
                dt { "Try" } dd { (ti.try_number) " of " (ti.max_tries) }
                dt { "Started" } dd { (ts(ti.started_at)) }
                dt { "Ended" } dd { (ts(ti.ended_at)) }
                @if let Some(n) = ti.next_attempt_at { dt { "Next try" } dd { (ts(Some(n))) } }
                @if let Some(w) = &ti.lease_owner { dt { "Worker" } dd { (w) } }
            }
            @if let Some(e) = &ti.last_error {
                h3 { "Error" }
                pre.error #task-error { (e) }
            }
            h3 { "Attempts" }
            @if attempts.is_empty() { p { "No attempt yet." } } @else {
                table.attempts {
                    thead { tr { th { "try" } th { "worker" } th { "start" } th { "end" } th { "outcome" } th { "error" } th { "log" } } }
                    tbody {
                        @for a in &attempts {
                            tr.current[shown.map(|x| x.id) == Some(a.id)] {
                                td { "#" (a.try_number) @if a.generation > 1 { " (gen " (a.generation) ")" } }
                                td { (a.worker) }
                                td title=(ts(Some(a.started_at))) { (hms(Some(a.started_at))) }
                                td title=(ts(a.ended_at)) { (hms(a.ended_at)) }
                                td { span class={ "outcome o-" (a.outcome.as_str().chars().filter(|c| c.is_ascii_lowercase() || *c == '_').collect::<String>()) } { (a.outcome.as_str().replace('_', " ")) } }
                                td.err { (a.error.clone().unwrap_or_default()) }
                                td { a data-panel href={ (base) "?attempt=" (a.id) } { "show" } " · " a href={ "/ui/attempts/" (a.id) "/log.txt" } download { "download" } }
                            }
                        }
                    }
                }
            }
            @if let Some((a, log)) = &log {
                h3 { "Log of try #" (a.try_number) " (attempt " (a.id) ")" }
                @if !log.found {
                    p.hint { "No log stored for this attempt." }
                } @else {
                    @if let Some(n) = log.cut_note() { p.note { (n) } }
                    pre.log #attempt-log data-attempt=(a.id) { (log.lines.join("\n")) }
                    p { a href={ "/ui/attempts/" (a.id) "/log.txt" } download { "Download the log" }
                        @if !log.finished { " (still being written)" } }
                }
            }
            @if sess.admin {
                h3 { "Act" }
                form.act #retry-form method="post" action="/ui/actions/preview" {
                    input type="hidden" name="action" value="retry";
                    input type="hidden" name="run_id" value=(run_id);
                    input type="hidden" name="task" value=(task);
                    fieldset {
                        legend { "Retry (clear) " (task) }
                        label { input type="radio" name="scope" value="only" checked; " only this task" }
                        label { input #retry-downstream type="radio" name="scope" value="downstream"; " with downstream" }
                    }
                    button #retry-preview type="submit" { "Retry…" }
                }
                form.act method="post" action="/ui/actions/preview" {
                    input type="hidden" name="action" value="mark";
                    input type="hidden" name="run_id" value=(run_id);
                    input type="hidden" name="task" value=(task);
                    button type="submit" name="state" value="success" { "Mark success…" }
                    button type="submit" name="state" value="failed" { "Mark failed…" }
                }
            } @else {
                p.hint { a href={ "/ui/login?next=" (base) } { "Log in" } " to retry or mark this task." }
            }
            (actions_list(&acts))
        }
    })
}

pub async fn task(
    State(s): State<Arc<AppState>>,
    Extension(ui): Extension<Arc<Ui>>,
    Extension(sess): Extension<Session>,
    Path((id, task)): Path<(i64, String)>,
    Query(q): Query<PanelQuery>,
) -> UiResult {
    let panel = task_panel(&s, &sess, id, &task, q.attempt).await?;
    let src = match q.attempt {
        Some(a) => format!("/ui/runs/{id}/tasks/{task}?attempt={a}"),
        None => format!("/ui/runs/{id}/tasks/{task}"),
    };
    respond(&s, &ui, &sess, &q, src, panel).await
}

/// The log of an attempt as plain text, for download.
pub async fn log_txt(State(s): State<Arc<AppState>>, Path(id): Path<i64>) -> UiResult {
    let log = crate::attempt_log::read(&s.pool, id).await?;
    if !log.found {
        return Err(UiError::not_found(format!("no log stored for attempt {id}")));
    }
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&format!("attachment; filename=\"attempt-{id}.log\"")).expect("ascii"),
            ),
        ],
        log.text(),
    )
        .into_response())
}
