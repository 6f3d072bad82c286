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
mod query;
mod render;
mod snapshot;

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

use crate::http::{ApiError, AppState};
use catalog::{Endpoint, Op, Ty};
use cursor::Cursor;
use params::{Bind, Format, Request};
use query::*;
use render::*;
use snapshot::*;

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
