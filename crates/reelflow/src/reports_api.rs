//! Read-only report endpoints for data consumers, served from the published snapshot.
//!
//! Everything an endpoint does comes from its entry in [`catalog::ENDPOINTS`]: the route, the
//! parameters it accepts, the SQL (identifiers only from the catalog and from
//! `reelflow.snapshots`, values always bound), the output columns and the OpenAPI document.
//!
//! Snapshot consistency: a request first resolves which snapshot it reads (the published one,
//! or the one its cursor pins) and that snapshot's schema (`movies` while published,
//! `reelflow_snap_<id>` once retired), then reads the data, then reads the snapshot's
//! bookkeeping row again. PostgreSQL resolves schema names against the latest committed
//! catalog even inside a REPEATABLE READ transaction, so a publish committing between the two
//! statements could otherwise make `movies` name a different snapshot than the one just
//! resolved. Every rename of a snapshot's schema (publish, rollback, drop) updates its row in
//! the same transaction, so an unchanged row after the read proves the schema name meant the
//! same snapshot throughout; a changed row makes the request start over (at most three times).

pub mod catalog;
pub mod cursor;
pub mod openapi;
pub mod params;

use std::sync::{Arc, OnceLock};

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, Postgres, Row};

use crate::api::{ApiError, AppState};
use catalog::{Endpoint, Op, Ty};
use cursor::Cursor;
use params::{Bind, Format, Request};

/// The header naming the snapshot id a response comes from.
pub const SNAPSHOT_HEADER: &str = "x-reelflow-snapshot";
/// The header naming that snapshot's period.
pub const PERIOD_HEADER: &str = "x-reelflow-snapshot-period";
/// The header carrying the next page's cursor (also in `Link: <...>; rel="next"`).
pub const NEXT_CURSOR_HEADER: &str = "x-reelflow-next-cursor";

/// The report routes, merged into [`crate::api::router`].
pub fn routes() -> Router<Arc<AppState>> {
    let mut r = Router::new()
        .route("/api/v1/openapi.json", get(openapi_json))
        .route("/api/v1/snapshots/{id}", get(snapshot_detail));
    for ep in catalog::ENDPOINTS {
        r = if ep.path_id.is_some() {
            r.route(
                ep.path,
                get(
                    move |State(s): State<Arc<AppState>>,
                          Path(id): Path<String>,
                          RawQuery(q): RawQuery,
                          h: HeaderMap| { serve(ep, s, Some(id), q, h) },
                ),
            )
        } else {
            r.route(
                ep.path,
                get(
                    move |State(s): State<Arc<AppState>>, RawQuery(q): RawQuery, h: HeaderMap| serve(ep, s, None, q, h),
                ),
            )
        };
    }
    r
}

async fn openapi_json() -> Response {
    static DOC: OnceLock<String> = OnceLock::new();
    let doc = DOC.get_or_init(|| openapi::document().to_string());
    ([(header::CONTENT_TYPE, "application/json")], doc.as_str()).into_response()
}

/// `/api/v1/snapshots/{id}`: one snapshot's bookkeeping with its rows per table and rejects
/// per file and reason (kept after the snapshot's schema is dropped).
async fn snapshot_detail(State(s): State<Arc<AppState>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let result = async {
        let id = params::parse_id("id", &id)?;
        let mut conn = s.pool.acquire().await.map_err(db_error)?;
        let snap = read_snap(&mut conn, Some(id))
            .await
            .map_err(db_error)?
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no snapshot {id}")))?;
        let etag = {
            let mut h = params::Fnv::new();
            h.write(&format!("{snap:?}"));
            format!("\"i{}-{:016x}\"", snap.id, h.finish())
        };
        let meta = Meta {
            snap: &snap,
            etag,
            current: snap.state == "published",
        };
        if not_modified(&headers, &meta.etag, None) {
            let mut r = StatusCode::NOT_MODIFIED.into_response();
            meta.headers(r.headers_mut());
            return Ok(r);
        }
        let counts: (
            Option<i64>,
            Option<i64>,
            Option<serde_json::Value>,
            Option<serde_json::Value>,
        ) = sqlx::query_as(
            "SELECT rows_total, rejects_total, row_counts, reject_counts FROM reelflow.snapshots WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error)?;
        let body = serde_json::json!({
            "snapshot": SnapshotOut {
                id: snap.id,
                period: &snap.period,
                published_at: snap.published_at,
                current: meta.current,
            },
            "state": snap.state,
            "schema": snap.schema(),
            "rows_total": counts.0,
            "rejects_total": counts.1,
            "row_counts": counts.2,
            "reject_counts": counts.3,
        });
        let mut r = axum::Json(body).into_response();
        meta.headers(r.headers_mut());
        Ok::<_, ApiError>(r)
    }
    .await;
    result.unwrap_or_else(|e| e.into_response())
}

/// A row of `reelflow.snapshots` as far as readers care; compared whole before and after a
/// read (see the module documentation).
#[derive(Debug, Clone, PartialEq)]
struct Snap {
    id: i64,
    period: String,
    state: String,
    schema_name: String,
    published_at: Option<DateTime<Utc>>,
    retired_at: Option<DateTime<Utc>>,
    dropped_at: Option<DateTime<Utc>>,
}

impl Snap {
    /// When what a response says about this snapshot last changed: its publish, or its
    /// retirement (after which it is no longer `current`).
    fn last_modified(&self) -> Option<DateTime<Utc>> {
        self.published_at.max(self.retired_at)
    }

    /// The schema holding this snapshot's data, if it is still kept.
    fn schema(&self) -> Option<&str> {
        match self.state.as_str() {
            "published" => Some(reelflow_load::PUBLISHED_SCHEMA),
            "retired" | "rolled_back"
                if self.schema_name.starts_with("reelflow_snap_")
                    && self.schema_name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
            {
                Some(&self.schema_name)
            }
            _ => None,
        }
    }
}

const SNAP_COLUMNS: &str = "id, period, state, schema_name, published_at, retired_at, dropped_at";

async fn read_snap(conn: &mut PgConnection, id: Option<i64>) -> Result<Option<Snap>, sqlx::Error> {
    let row = match id {
        Some(id) => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {SNAP_COLUMNS} FROM reelflow.snapshots WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
        }
        None => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {SNAP_COLUMNS} FROM reelflow.snapshots WHERE state = 'published'"
            )))
            .fetch_optional(&mut *conn)
            .await?
        }
    };
    Ok(row.map(|r| Snap {
        id: r.get(0),
        period: r.get(1),
        state: r.get(2),
        schema_name: r.get(3),
        published_at: r.get(4),
        retired_at: r.get(5),
        dropped_at: r.get(6),
    }))
}

fn db_error(e: sqlx::Error) -> ApiError {
    tracing::error!(error = %e, "report request failed");
    match e {
        sqlx::Error::Database(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        ),
        _ => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the database is unavailable; try again",
        ),
    }
}

/// One output value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_none(),
            Value::Int(n) => s.serialize_i64(*n),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Text(t) => s.serialize_str(t),
        }
    }
}

/// What the data statements found.
enum Found {
    /// The `{id}` of the path is not in the snapshot.
    NoSuchId,
    Rows(Vec<Vec<Value>>),
}

fn q(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// `%value%` for ILIKE, with the value's own wildcards and escape character taken literally.
fn contains_pattern(v: &str) -> String {
    let mut p = String::with_capacity(v.len() + 2);
    p.push('%');
    for c in v.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// The page statement: identifiers from the catalog and `schema`, every value a parameter.
fn page_sql(ep: &Endpoint, req: &Request, schema: &str) -> (String, Vec<Bind>) {
    let cols: Vec<String> = ep.columns.iter().map(|c| q(c.name)).collect();
    let mut conds = Vec::new();
    let mut binds = Vec::new();
    if let (Some(id), Some(p)) = (req.path_id, &ep.path_id) {
        binds.push(Bind::Int(id));
        conds.push(format!("{} = ${}", q(p.column), binds.len()));
    }
    for (f, v) in &req.filters {
        binds.push(match (f.op, v) {
            (Op::Contains, Bind::Text(t)) => Bind::Text(contains_pattern(t)),
            _ => v.clone(),
        });
        conds.push(format!("{} {} ${}", q(f.column), f.op.sql(), binds.len()));
    }
    let key = ep.sorts[req.sort];
    let key_cols: Vec<String> = key.iter().map(|k| q(k)).collect();
    if let Some(c) = &req.cursor {
        let mut ph = Vec::new();
        for v in &c.key {
            binds.push(Bind::Int(*v));
            ph.push(format!("${}", binds.len()));
        }
        conds.push(format!(
            "({}) {} ({})",
            key_cols.join(", "),
            if req.desc { "<" } else { ">" },
            ph.join(", ")
        ));
    }
    let dir = if req.desc { " DESC" } else { "" };
    let order: Vec<String> = key_cols.iter().map(|k| format!("{k}{dir}")).collect();
    binds.push(Bind::Int(req.limit + 1));
    let sql = format!(
        "SELECT {} FROM {}.{}{}{} ORDER BY {} LIMIT ${}",
        cols.join(", "),
        q(schema),
        q(ep.relation),
        if conds.is_empty() { "" } else { " WHERE " },
        conds.join(" AND "),
        order.join(", "),
        binds.len()
    );
    (sql, binds)
}

async fn fetch(conn: &mut PgConnection, ep: &Endpoint, req: &Request, schema: &str) -> Result<Found, sqlx::Error> {
    if let (Some(id), Some(p)) = (req.path_id, &ep.path_id) {
        let exists: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT EXISTS (SELECT 1 FROM {}.{} WHERE id = $1)",
            q(schema),
            q(p.table)
        )))
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
        if !exists {
            return Ok(Found::NoSuchId);
        }
    }
    let (sql, binds) = page_sql(ep, req, schema);
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for b in binds {
        query = match b {
            Bind::Int(n) => query.bind(n),
            Bind::Text(t) => query.bind(t),
        };
    }
    let rows = query.fetch_all(&mut *conn).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let mut vals = Vec::with_capacity(ep.columns.len());
        for (i, c) in ep.columns.iter().enumerate() {
            vals.push(
                match c.ty {
                    Ty::Int => row.try_get::<Option<i32>, _>(i)?.map(|v| Value::Int(v.into())),
                    Ty::BigInt => row.try_get::<Option<i64>, _>(i)?.map(Value::Int),
                    Ty::Float => row.try_get::<Option<f64>, _>(i)?.map(Value::Float),
                    Ty::Text => row.try_get::<Option<String>, _>(i)?.map(Value::Text),
                }
                .unwrap_or(Value::Null),
            );
        }
        out.push(vals);
    }
    Ok(Found::Rows(out))
}

fn http_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// `If-None-Match` (weak comparison; `*` matches), else `If-Modified-Since`.
fn not_modified(headers: &HeaderMap, etag: &str, last_modified: Option<DateTime<Utc>>) -> bool {
    let inm: Vec<&str> = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !inm.is_empty() {
        let ours = etag.trim_start_matches("W/");
        return inm
            .iter()
            .flat_map(|v| v.split(','))
            .map(|t| t.trim())
            .any(|t| t == "*" || t.trim_start_matches("W/") == ours);
    }
    let ims = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| DateTime::parse_from_rfc2822(v).ok());
    match (ims, last_modified) {
        (Some(ims), Some(lm)) => lm.timestamp() <= ims.timestamp(),
        _ => false,
    }
}

async fn serve(
    ep: &'static Endpoint,
    state: Arc<AppState>,
    path_id: Option<String>,
    raw_query: Option<String>,
    headers: HeaderMap,
) -> Response {
    match respond(ep, &state, path_id.as_deref(), raw_query.as_deref(), &headers).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn respond(
    ep: &'static Endpoint,
    state: &AppState,
    path_id: Option<&str>,
    raw_query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let req = Request::parse(ep, path_id, raw_query, headers)?;
    let mut conn: PoolConnection<Postgres> = state.pool.acquire().await.map_err(db_error)?;
    let wanted = req.cursor.as_ref().map(|c| c.snapshot).or(req.snapshot);
    for _ in 0..3 {
        let snap = resolve(&mut conn, wanted, req.cursor.is_some()).await?;
        let schema = snap.schema().expect("resolve returns kept snapshots").to_string();
        let etag = {
            let mut h = params::Fnv::new();
            h.write(&req.representation(ep).to_string());
            h.write(&snap.state);
            h.write(&format!("{:?}", snap.published_at));
            format!("\"s{}-{:016x}\"", snap.id, h.finish())
        };
        let meta = Meta {
            snap: &snap,
            etag,
            current: snap.state == "published",
        };
        if not_modified(headers, &meta.etag, snap.last_modified()) {
            let mut r = StatusCode::NOT_MODIFIED.into_response();
            meta.headers(r.headers_mut());
            return Ok(r);
        }
        let found = fetch(&mut conn, ep, &req, &schema).await;
        let after = read_snap(&mut conn, Some(snap.id)).await.map_err(db_error)?;
        if after.as_ref() != Some(&snap) {
            tracing::debug!(snapshot_id = snap.id, "a publish raced a report read; reading again");
            continue;
        }
        return match found.map_err(db_error)? {
            Found::NoSuchId => {
                let p = ep.path_id.as_ref().expect("only nested paths check ids");
                Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!(
                        "no {} {} in snapshot {} (period {})",
                        p.noun,
                        req.path_id.unwrap_or_default(),
                        snap.id,
                        snap.period
                    ),
                ))
            }
            Found::Rows(rows) => Ok(render(ep, &req, path_id, meta, rows)),
        };
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "snapshots were being published throughout the request; try again",
    ))
}

/// The snapshot to read: the published one, or `id` (pinned by a cursor when `by_cursor`).
async fn resolve(conn: &mut PgConnection, id: Option<i64>, by_cursor: bool) -> Result<Snap, ApiError> {
    let snap = read_snap(conn, id).await.map_err(db_error)?;
    match (snap, id) {
        (Some(s), _) if s.schema().is_some() => Ok(s),
        (None, None) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_snapshot",
            "no snapshot has been published yet; the first successful run publishes one",
        )),
        (s, Some(id)) if by_cursor => Err(ApiError::new(
            StatusCode::GONE,
            "cursor_expired",
            format!(
                "this cursor reads snapshot {id}{}, which is no longer kept; start again without a cursor to \
                 read the published snapshot",
                s.map(|s| format!(" (period {})", s.period)).unwrap_or_default()
            ),
        )),
        (Some(s), Some(id)) if s.state == "dropped" => Err(ApiError::new(
            StatusCode::GONE,
            "snapshot_dropped",
            format!("snapshot {id} (period {}) has been dropped", s.period),
        )),
        (s, _) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no readable snapshot {}{}; /api/v1/snapshots lists them",
                id.unwrap_or_default(),
                s.map(|s| format!(" (it is {})", s.state)).unwrap_or_default()
            ),
        )),
    }
}

/// What every response (200 and 304) says about where it comes from.
struct Meta<'a> {
    snap: &'a Snap,
    etag: String,
    current: bool,
}

impl Meta<'_> {
    fn headers(&self, h: &mut HeaderMap) {
        let mut set = |name: HeaderName, v: &str| {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.insert(name, v);
            }
        };
        set(HeaderName::from_static(SNAPSHOT_HEADER), &self.snap.id.to_string());
        set(HeaderName::from_static(PERIOD_HEADER), &self.snap.period);
        set(header::ETAG, &self.etag);
        if let Some(t) = self.snap.last_modified() {
            set(header::LAST_MODIFIED, &http_date(t));
        }
        set(header::CACHE_CONTROL, "no-cache");
        set(header::VARY, "Accept");
    }
}

#[derive(Serialize)]
struct SnapshotOut<'a> {
    id: i64,
    period: &'a str,
    published_at: Option<DateTime<Utc>>,
    /// Whether this is the published snapshot (false when a cursor or `snapshot=` reads a
    /// retired one).
    current: bool,
}

struct Rows<'a> {
    ep: &'a Endpoint,
    rows: &'a [Vec<Value>],
}

struct RowOut<'a> {
    ep: &'a Endpoint,
    vals: &'a [Value],
}

impl Serialize for Rows<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.rows.len()))?;
        for vals in self.rows {
            seq.serialize_element(&RowOut { ep: self.ep, vals })?;
        }
        seq.end()
    }
}

impl Serialize for RowOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.vals.len()))?;
        for (c, v) in self.ep.columns.iter().zip(self.vals) {
            map.serialize_entry(c.name, v)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct Page<'a> {
    snapshot: SnapshotOut<'a>,
    sort: &'static [&'static str],
    order: &'static str,
    limit: i64,
    rows: Rows<'a>,
    next_cursor: Option<&'a str>,
    next: Option<&'a str>,
}

fn csv_field(out: &mut String, v: &Value) {
    match v {
        Value::Null => {}
        Value::Int(n) => out.push_str(&n.to_string()),
        Value::Float(f) if f.is_finite() => out.push_str(&f.to_string()),
        Value::Float(_) => {}
        Value::Text(t) if t.contains([',', '"', '\n', '\r']) => {
            out.push('"');
            out.push_str(&t.replace('"', "\"\""));
            out.push('"');
        }
        Value::Text(t) => out.push_str(t),
    }
}

fn render(ep: &Endpoint, req: &Request, path_id: Option<&str>, meta: Meta<'_>, mut rows: Vec<Vec<Value>>) -> Response {
    let more = rows.len() as i64 > req.limit;
    rows.truncate(req.limit as usize);
    let key = ep.sorts[req.sort];
    let next_cursor = match rows.last() {
        Some(last) if more => {
            let key_vals = key
                .iter()
                .map(|k| {
                    let i = ep
                        .columns
                        .iter()
                        .position(|c| c.name == *k)
                        .expect("sort columns are columns");
                    match last[i] {
                        Value::Int(n) => n,
                        _ => unreachable!("sort columns are non-null integers"),
                    }
                })
                .collect();
            Some(cursor::encode(&Cursor {
                snapshot: meta.snap.id,
                endpoint: ep.id.to_string(),
                sort: req.sort,
                desc: req.desc,
                scope: req.scope(ep),
                key: key_vals,
            }))
        }
        _ => None,
    };
    let next = next_cursor.as_ref().map(|c| {
        let path = match path_id {
            Some(id) => ep.path.replace("{id}", id),
            None => ep.path.to_string(),
        };
        format!("{path}?{}", req.next_query(ep, c))
    });

    let (content_type, body) = match req.format {
        Format::Json => {
            let page = Page {
                snapshot: SnapshotOut {
                    id: meta.snap.id,
                    period: &meta.snap.period,
                    published_at: meta.snap.published_at,
                    current: meta.current,
                },
                sort: key,
                order: if req.desc { "desc" } else { "asc" },
                limit: req.limit,
                rows: Rows { ep, rows: &rows },
                next_cursor: next_cursor.as_deref(),
                next: next.as_deref(),
            };
            (
                "application/json",
                serde_json::to_string(&page).expect("pages serialise"),
            )
        }
        Format::Csv => {
            let mut out = String::with_capacity(64 * (rows.len() + 1));
            let names: Vec<&str> = ep.columns.iter().map(|c| c.name).collect();
            out.push_str(&names.join(","));
            out.push_str("\r\n");
            for r in &rows {
                for (i, v) in r.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    csv_field(&mut out, v);
                }
                out.push_str("\r\n");
            }
            ("text/csv; charset=utf-8; header=present", out)
        }
    };
    let mut r = (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response();
    meta.headers(r.headers_mut());
    if let (Some(c), Some(n)) = (&next_cursor, &next) {
        let h = r.headers_mut();
        if let Ok(v) = HeaderValue::from_str(c) {
            h.insert(HeaderName::from_static(NEXT_CURSOR_HEADER), v);
        }
        if let Ok(v) = HeaderValue::from_str(&format!("<{n}>; rel=\"next\"")) {
            h.insert(header::LINK, v);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_they_must_be() {
        let mut out = String::new();
        for v in [
            Value::Text("Lion's Gate".into()),
            Value::Text("Smith, Jones \"and\" Co\n".into()),
            Value::Null,
            Value::Int(-100),
            Value::Float(185.07),
            Value::Float(8.0),
            Value::Float(f64::NAN),
        ] {
            csv_field(&mut out, &v);
            out.push('|');
        }
        assert_eq!(out, "Lion's Gate|\"Smith, Jones \"\"and\"\" Co\n\"||-100|185.07|8||");
    }

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(contains_pattern(r"50%_a\b"), r"%50\%\_a\\b%");
    }

    #[test]
    fn page_sql_binds_every_value() {
        let ep = catalog::ENDPOINTS
            .iter()
            .find(|e| e.id == "company_genre_yearly")
            .unwrap();
        let req = Request::parse(
            ep,
            None,
            Some("company_id=2&year_from=2010&sort=genre_id,year,company_id&order=desc&limit=2"),
            &HeaderMap::new(),
        )
        .unwrap();
        let (sql, binds) = page_sql(ep, &req, "movies");
        assert_eq!(
            sql,
            "SELECT \"company_id\", \"company_name\", \"year\", \"genre_id\", \"genre_name\", \"releases\" \
             FROM \"movies\".\"company_genre_yearly\" WHERE \"company_id\" = $1 AND \"year\" >= $2 \
             ORDER BY \"genre_id\" DESC, \"year\" DESC, \"company_id\" DESC LIMIT $3"
        );
        assert_eq!(binds, vec![Bind::Int(2), Bind::Int(2010), Bind::Int(3)]);
    }
}
