//! The OpenAPI 3.1 document of the consumer endpoints, generated from [`ENDPOINTS`] (the same
//! table that routes, validates and builds the SQL) and [`COMMON`].

use serde_json::{json, Map, Value};

use super::catalog::{Column, Endpoint, Op, Ty, DEFAULT_LIMIT, ENDPOINTS, MAX_LIMIT};
use super::params::COMMON;
use super::{NEXT_CURSOR_HEADER, PERIOD_HEADER, SNAPSHOT_HEADER};

fn column_schema(c: &Column) -> Value {
    let (ty, format) = match c.ty {
        Ty::Int => ("integer", Some("int32")),
        Ty::BigInt => ("integer", Some("int64")),
        Ty::Float => ("number", Some("double")),
        Ty::Text => ("string", None),
    };
    let mut s = Map::new();
    s.insert("type".into(), if c.nullable { json!([ty, "null"]) } else { json!(ty) });
    if let Some(f) = format {
        s.insert("format".into(), json!(f));
    }
    s.insert("description".into(), json!(c.doc));
    Value::Object(s)
}

fn schema_name(ep: &Endpoint) -> String {
    ep.relation
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect::<String>()
        + "Row"
}

fn parameters(ep: &Endpoint) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(p) = &ep.path_id {
        out.push(json!({
            "name": "id", "in": "path", "required": true,
            "description": format!("The {} id; 404 when the snapshot has no such {}.", p.noun, p.noun),
            "schema": {"type": "integer", "format": "int64", "minimum": 1}
        }));
    }
    for f in ep.filters {
        let schema = if f.op == Op::Contains {
            json!({"type": "string", "minLength": f.min, "maxLength": f.max})
        } else if f.max == i64::MAX {
            json!({"type": "integer", "format": "int64", "minimum": f.min})
        } else {
            json!({"type": "integer", "minimum": f.min, "maximum": f.max})
        };
        out.push(json!({
            "name": f.param, "in": "query", "required": false,
            "description": format!("{} Filters `{}` {} the value.", f.doc, f.column, match f.op {
                Op::Eq => "equal to",
                Op::Ge => "at least",
                Op::Le => "at most",
                Op::Contains => "containing",
            }),
            "schema": schema
        }));
    }
    for c in COMMON {
        let schema = match c.name {
            "sort" => {
                let names: Vec<String> = ep.sorts.iter().map(|s| s.join(",")).collect();
                json!({"type": "string", "enum": names, "default": names[0]})
            }
            "order" => json!({"type": "string", "enum": ["asc", "desc"], "default": "asc"}),
            "limit" => json!({"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}),
            "snapshot" => json!({"type": "integer", "format": "int64", "minimum": 1}),
            "format" => json!({"type": "string", "enum": ["json", "csv"], "default": "json"}),
            _ => json!({"type": "string"}),
        };
        out.push(json!({"name": c.name, "in": "query", "required": false, "description": c.doc, "schema": schema}));
    }
    out
}

fn error(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

fn snapshot_headers() -> Value {
    json!({
        "ETag": {"description": "Changes with the snapshot and the parameters; send it back in If-None-Match.", "schema": {"type": "string"}},
        "Last-Modified": {"description": "When the snapshot was published (or retired, for a retired one).", "schema": {"type": "string"}},
        SNAPSHOT_HEADER: {"description": "Id of the snapshot the rows come from.", "schema": {"type": "integer"}},
        PERIOD_HEADER: {"description": "Period (YYYY-MM) of that snapshot.", "schema": {"type": "string"}},
    })
}

fn operation(ep: &Endpoint) -> Value {
    let row = schema_name(ep);
    let sorts: Vec<String> = ep.sorts.iter().map(|s| format!("`{}`", s.join(","))).collect();
    let mut headers = snapshot_headers();
    headers[NEXT_CURSOR_HEADER] =
        json!({"description": "Cursor of the next page, when there is one.", "schema": {"type": "string"}});
    headers["Link"] =
        json!({"description": "`<next page URL>; rel=\"next\"`, when there is one.", "schema": {"type": "string"}});
    let mut responses = json!({
        "200": {
            "description": "A page of rows, in the sort order asked for.",
            "headers": headers,
            "content": {
                "application/json": {"schema": {
                    "type": "object",
                    "required": ["snapshot", "sort", "order", "limit", "rows", "next_cursor", "next"],
                    "properties": {
                        "snapshot": {"$ref": "#/components/schemas/Snapshot"},
                        "sort": {"type": "array", "items": {"type": "string"}},
                        "order": {"type": "string", "enum": ["asc", "desc"]},
                        "limit": {"type": "integer"},
                        "rows": {"type": "array", "items": {"$ref": format!("#/components/schemas/{row}")}},
                        "next_cursor": {"type": ["string", "null"], "description": "Pass as `cursor` for the next page; null on the last page."},
                        "next": {"type": ["string", "null"], "description": "Path and query of the next page; null on the last page."}
                    }
                }},
                "text/csv": {"schema": {
                    "type": "string",
                    "description": format!("A header line, then one line per row: {}.", ep.columns.iter().map(|c| c.name).collect::<Vec<_>>().join(","))
                }}
            }
        },
        "304": {"description": "Not modified: If-None-Match matched the ETag (or If-Modified-Since is not older than the snapshot).", "headers": snapshot_headers()},
        "400": error("A parameter is invalid; the message names it."),
        "410": error("The cursor's snapshot (or the snapshot asked for) has been dropped: start again without a cursor."),
        "503": error("No snapshot has been published yet, or the database is unavailable."),
    });
    responses["404"] = error(if ep.path_id.is_some() {
        "The id is not in the snapshot, or the snapshot asked for is not kept."
    } else {
        "The snapshot asked for is not kept."
    });
    json!({
        "operationId": ep.id,
        "tags": [ep.tag],
        "summary": ep.summary,
        "description": format!(
            "{}\n\nReads the relation `{}` of the snapshot. Sort orders (unique keys, so cursor pages never repeat or skip rows): {}.",
            ep.description, ep.relation, sorts.join(", ")
        ),
        "parameters": parameters(ep),
        "responses": responses,
    })
}

/// The fields of `reelflow_load::SnapshotInfo` as `/api/v1/snapshots` (served by `api.rs`)
/// returns them; a test compares them with a live response.
pub const SNAPSHOT_INFO: &[(&str, &str, &str)] = &[
    ("id", "integer", "Snapshot id."),
    ("dag_id", "string", "The DAG that loaded it."),
    ("period", "string", "YYYY-MM."),
    (
        "state",
        "string",
        "building, ready, published, retired, rolled_back, failed or dropped.",
    ),
    ("schema_name", "string", "Where its data is: movies while published."),
    (
        "rows_total",
        "integer",
        "Rows loaded over all tables (null until loaded).",
    ),
    (
        "rejects_total",
        "integer",
        "Rows rejected by the cleaner (null until loaded).",
    ),
    ("created_at", "string", "When its load started."),
    ("published_at", "string", "When it was (last) published; null if never."),
    ("error", "string", "Why its load failed, if it did."),
    (
        "rollback_target",
        "boolean",
        "true for the snapshot `snapshots rollback` would publish: what movies showed before the current one.",
    ),
    (
        "rollforward_target",
        "boolean",
        "true for the snapshot `snapshots rollforward` would publish: the one last rolled back away from.",
    ),
];

/// The orchestration endpoints (`api.rs`): (path, method, summary, JSON body fields, whether
/// it needs the admin token). Tagged `orchestration`; a test checks each is served.
pub const ORCHESTRATION: &[(&str, &str, &str, &[&str], bool)] = &[
    (
        "/api/v1/runs",
        "get",
        "DAG runs, newest period first (?state=queued|running|success|failed, ?limit=1..1000)",
        &[],
        false,
    ),
    (
        "/api/v1/runs",
        "post",
        "Create a period's run (idempotent); rerun resets a finished one; source fetches another source for this run",
        &["period", "rerun", "source"],
        true,
    ),
    (
        "/api/v1/runs/{id}",
        "get",
        "A run with its task instances, attempts and recorded source",
        &[],
        false,
    ),
    (
        "/api/v1/runs/{id}/cancel",
        "post",
        "Cancel a run that has not finished: it ends failed, a running task stops",
        &[],
        true,
    ),
    (
        "/api/v1/runs/{id}/tasks/{task}/retry",
        "post",
        "Run a task again (clear); downstream also re-runs the tasks after it",
        &["downstream"],
        true,
    ),
    (
        "/api/v1/runs/{id}/tasks/{task}/mark",
        "post",
        "Set a task's state by hand (success or failed)",
        &["state"],
        true,
    ),
    (
        "/api/v1/backfill",
        "post",
        "Create runs for every period from..to; more than engine.max_backfill_runs needs yes",
        &["from", "to", "rerun", "yes"],
        true,
    ),
    (
        "/api/v1/backfill/cancel",
        "post",
        "Cancel every backfill run that is still queued",
        &[],
        true,
    ),
    (
        "/api/v1/snapshots/rollback",
        "post",
        "Publish what movies showed before the current snapshot, or the kept snapshot `to`",
        &["to"],
        true,
    ),
    (
        "/api/v1/snapshots/rollforward",
        "post",
        "Undo the last rollback",
        &[],
        true,
    ),
    (
        "/api/v1/actions",
        "get",
        "The audit trail of operator actions, newest first (?limit=1..1000)",
        &[],
        false,
    ),
];

fn orchestration() -> Vec<(&'static str, Value)> {
    let mut out: Vec<(&'static str, Map<String, Value>)> = Vec::new();
    for (path, method, summary, fields, token) in ORCHESTRATION {
        let mut op = json!({
            "tags": ["orchestration"],
            "summary": summary,
            "responses": {
                "200": {"description": "JSON; see README \"Orchestration\".", "content": {"application/json": {"schema": {"type": "object"}}}},
                "400": error("A bad parameter or body, a period that has not ended, a backfill over the limit."),
                "404": error("No such run or task."),
                "409": error("A conflict: the run has finished, nothing to roll back to, ..."),
            }
        });
        if *token {
            op["security"] = json!([{"bearer": []}]);
            op["responses"]["401"] = error("Missing or wrong bearer token.");
            op["responses"]["403"] = error("No admin token is configured: mutations are disabled.");
        }
        if !fields.is_empty() {
            let props: Map<String, Value> = fields.iter().map(|f| (f.to_string(), json!({}))).collect();
            op["requestBody"] = json!({"required": false, "content": {"application/json": {"schema": {
                "type": "object", "properties": props, "additionalProperties": false}}}});
        }
        match out.iter_mut().find(|(p, _)| p == path) {
            Some((_, item)) => {
                item.insert(method.to_string(), op);
            }
            None => {
                let mut item = Map::new();
                item.insert(method.to_string(), op);
                out.push((path, item));
            }
        }
    }
    out.into_iter().map(|(p, m)| (p, Value::Object(m))).collect()
}

/// The document served at `/api/v1/openapi.json`.
pub fn document() -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for ep in ENDPOINTS {
        paths.insert(ep.path.to_string(), json!({"get": operation(ep)}));
        let props: Map<String, Value> = ep
            .columns
            .iter()
            .map(|c| (c.name.to_string(), column_schema(c)))
            .collect();
        let required: Vec<&str> = ep.columns.iter().map(|c| c.name).collect();
        schemas.insert(
            schema_name(ep),
            json!({"type": "object", "properties": props, "required": required, "additionalProperties": false}),
        );
    }
    paths.insert(
        "/api/v1/snapshots".into(),
        json!({"get": {
            "operationId": "snapshots",
            "tags": ["lookup"],
            "summary": "Every snapshot, newest first",
            "description": "Published, retired and rolled-back snapshots can be read (their id goes in `snapshot=`); \
                            dropped ones are gone. rows_total and rejects_total count the rows loaded and rejected.",
            "responses": {"200": {"description": "The snapshots.", "content": {"application/json": {"schema": {
                "type": "object",
                "required": ["snapshots"],
                "properties": {"snapshots": {"type": "array", "items": {"$ref": "#/components/schemas/SnapshotInfo"}}}
            }}}}}
        }}),
    );
    paths.insert(
        "/api/v1/snapshots/{id}".into(),
        json!({"get": {
            "operationId": "snapshot",
            "tags": ["lookup"],
            "summary": "One snapshot: state, schema, rows per table, rejected rows per file and reason",
            "description": "Bookkeeping of one snapshot, kept after its schema is dropped. `schema` is where its \
                            data can be read (null once dropped).",
            "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "integer", "format": "int64", "minimum": 1}}],
            "responses": {
                "200": {"description": "The snapshot.", "headers": snapshot_headers(), "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SnapshotDetail"}}}},
                "304": {"description": "Not modified: If-None-Match matched the ETag.", "headers": snapshot_headers()},
                "400": error("The id is not a positive integer."),
                "404": error("No such snapshot."),
            }
        }}),
    );
    schemas.insert(
        "SnapshotDetail".into(),
        json!({
            "type": "object",
            "required": ["snapshot", "state", "schema", "rows_total", "rejects_total", "row_counts", "reject_counts"],
            "properties": {
                "snapshot": {"$ref": "#/components/schemas/Snapshot"},
                "state": {"type": "string", "description": "building, ready, published, retired, rolled_back, failed or dropped."},
                "schema": {"type": ["string", "null"], "description": "movies while published, reelflow_snap_<id> while kept, null otherwise."},
                "rows_total": {"type": ["integer", "null"]},
                "rejects_total": {"type": ["integer", "null"]},
                "row_counts": {"type": ["object", "null"], "description": "Rows loaded per table.", "additionalProperties": {"type": "integer"}},
                "reject_counts": {"type": ["object", "null"], "description": "Rows rejected per file, then per reason code.", "additionalProperties": {"type": "object", "additionalProperties": {"type": "integer"}}}
            }
        }),
    );
    let info: Map<String, Value> = SNAPSHOT_INFO
        .iter()
        .map(|(name, ty, desc)| (name.to_string(), json!({"type": ty, "description": desc})))
        .collect();
    schemas.insert(
        "SnapshotInfo".into(),
        json!({"type": "object", "properties": info, "required": SNAPSHOT_INFO.iter().map(|f| f.0).collect::<Vec<_>>()}),
    );
    paths.insert(
        "/api/v1/openapi.json".into(),
        json!({"get": {
            "operationId": "openapi",
            "summary": "This document",
            "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}}
        }}),
    );
    schemas.insert(
        "Snapshot".into(),
        json!({
            "type": "object",
            "required": ["id", "period", "published_at", "current"],
            "properties": {
                "id": {"type": "integer", "format": "int64"},
                "period": {"type": "string", "description": "YYYY-MM"},
                "published_at": {"type": ["string", "null"], "format": "date-time"},
                "current": {"type": "boolean", "description": "Whether it is the published snapshot (false for a retired one read through a cursor or `snapshot=`)."}
            }
        }),
    );
    schemas.insert(
        "Error".into(),
        json!({
            "type": "object",
            "required": ["error"],
            "properties": {"error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "description": "bad_request, not_found, cursor_expired, snapshot_dropped, no_snapshot, unavailable, internal"},
                    "message": {"type": "string"}
                }
            }}
        }),
    );
    for (path, item) in orchestration() {
        paths.insert(path.to_string(), item);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "reelflow reports",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Read-only yearly reports of The Movies Dataset, served from the published snapshot (the \
                            schema `movies`). Every response names its snapshot; cursors pin it. \
                            `/api/v1/snapshots` lists the snapshots."
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "engine.admin_token"}}
        },
    })
}
