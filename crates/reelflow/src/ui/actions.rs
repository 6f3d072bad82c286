//! Actions from the page: every form first posts to `/ui/actions/preview`, which shows the dry
//! run (`ops::preview`) and a confirm form; confirming posts the same fields to
//! `/ui/actions/perform`, which runs the action through `ops` (the CLI's and the API's code)
//! with the operator's optional note, then returns to the affected page.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Redirect};
use axum::Extension;
use maud::html;

use super::{field, form, layout, page, Session, UiError, UiResult};
use crate::http::AppState;
use crate::ops::{self, Action};

fn period(f: &[(String, String)], name: &str) -> Result<reelflow_dag::Period, UiError> {
    field(f, name)
        .unwrap_or("")
        .trim()
        .parse()
        .map_err(|e: reelflow_dag::PeriodError| UiError::bad_request(format!("{name}: {e}")))
}

fn run_id(f: &[(String, String)]) -> Result<i64, UiError> {
    field(f, "run_id")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| UiError::bad_request("run_id: expected a run id"))
}

fn task(f: &[(String, String)]) -> Result<String, UiError> {
    field(f, "task")
        .filter(|t| !t.is_empty())
        .map(String::from)
        .ok_or_else(|| UiError::bad_request("task: missing"))
}

/// The action a form describes.
pub fn parse(f: &[(String, String)]) -> Result<Action, UiError> {
    let rerun = field(f, "rerun").is_some_and(|v| v == "1" || v == "on" || v == "true");
    Ok(match field(f, "action").unwrap_or("") {
        "retry" => Action::Retry {
            run_id: run_id(f)?,
            task: task(f)?,
            downstream: field(f, "scope") == Some("downstream"),
        },
        "retry_failed" => Action::RetryFailed { run_id: run_id(f)? },
        "mark" => Action::Mark {
            run_id: run_id(f)?,
            task: task(f)?,
            state: match field(f, "state") {
                Some(s @ ("success" | "failed")) => s.to_string(),
                _ => return Err(UiError::bad_request("state: expected success or failed")),
            },
        },
        "trigger" => Action::Trigger {
            period: period(f, "period")?,
            rerun,
        },
        "backfill" => Action::Backfill {
            from: period(f, "from")?,
            to: period(f, "to")?,
            rerun,
        },
        "rollback" => Action::Rollback,
        other => return Err(UiError::bad_request(format!("unknown action {other:?}"))),
    })
}

/// The hidden fields that describe `action` again in the confirm form.
fn hidden(a: &Action) -> Vec<(&'static str, String)> {
    match a {
        Action::Retry {
            run_id,
            task,
            downstream,
        } => vec![
            ("action", "retry".into()),
            ("run_id", run_id.to_string()),
            ("task", task.clone()),
            ("scope", if *downstream { "downstream" } else { "only" }.into()),
        ],
        Action::RetryFailed { run_id } => vec![("action", "retry_failed".into()), ("run_id", run_id.to_string())],
        Action::Mark { run_id, task, state } => vec![
            ("action", "mark".into()),
            ("run_id", run_id.to_string()),
            ("task", task.clone()),
            ("state", state.clone()),
        ],
        Action::Trigger { period, rerun } => vec![
            ("action", "trigger".into()),
            ("period", period.to_string()),
            ("rerun", if *rerun { "1" } else { "0" }.into()),
        ],
        Action::Backfill { from, to, rerun } => vec![
            ("action", "backfill".into()),
            ("from", from.to_string()),
            ("to", to.to_string()),
            ("rerun", if *rerun { "1" } else { "0" }.into()),
        ],
        Action::Rollback => vec![("action", "rollback".into())],
    }
}

fn back(a: &Action) -> String {
    match a {
        Action::Retry { run_id, .. } | Action::RetryFailed { run_id } | Action::Mark { run_id, .. } => {
            format!("/ui/runs/{run_id}")
        }
        Action::Rollback => "/ui/snapshots".into(),
        _ => "/".into(),
    }
}

pub async fn preview(State(s): State<Arc<AppState>>, Extension(sess): Extension<Session>, body: String) -> UiResult {
    let f = form(&body);
    let action = parse(&f)?;
    let p = ops::preview(&s.pool, &s.dag, &action).await?;
    Ok(page(layout(
        "Confirm",
        &sess,
        html! {
            section.preview #preview {
                h1 { "Confirm: " (p.summary) }
                @if p.changes.is_empty() {
                    p #preview-empty { "Nothing would change." }
                } @else {
                    p { "This will change:" }
                    table.changes #preview-changes {
                        thead { tr { th { "run" } th { "period" } th { "task" } th { "snapshot" } th { "now" } th { "after" } } }
                        tbody {
                            @for c in &p.changes {
                                tr {
                                    td { (c.run_id.map(|r| r.to_string()).unwrap_or_default()) }
                                    td { (c.period.clone().unwrap_or_default()) }
                                    td.task { (c.task_id.clone().unwrap_or_default()) }
                                    td { (c.snapshot_id.map(|r| r.to_string()).unwrap_or_default()) }
                                    td { (c.from.replace('_', " ")) }
                                    td { (c.to) }
                                }
                            }
                        }
                    }
                }
                form method="post" action="/ui/actions/perform" {
                    @for (k, v) in hidden(&action) { input type="hidden" name=(k) value=(v); }
                    label.note { "Note (optional, recorded with the action) " textarea name="note" rows="2" cols="60" maxlength="2000" {} }
                    div.actrow {
                        button #confirm type="submit" disabled[p.changes.is_empty()] { "Confirm" }
                        a.cancel href=(back(&action)) { "Cancel" }
                    }
                }
            }
        },
    )))
}

pub async fn perform(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: String,
) -> UiResult {
    let f = form(&body);
    let action = parse(&f)?;
    let note = field(&f, "note").map(String::from);
    let origin = format!("ui {}", peer.ip());
    let out = ops::with_note(note, ops::perform(&s.pool, &s.dag, &action, &s.ops, &origin)).await?;
    if let Some(e) = &s.engine {
        e.wake();
    }
    let to = match (
        &action,
        out.get("run").and_then(|r| r.get("id")).and_then(|i| i.as_i64()),
    ) {
        (Action::Trigger { .. }, Some(id)) => format!("/ui/runs/{id}"),
        _ => back(&action),
    };
    Ok(Redirect::to(&to).into_response())
}
