//! Which snapshot a read sees: resolving it (published, or pinned by a cursor), its bookkeeping row compared before and after the read, and `/api/v1/snapshots/{id}`.

use super::*;

/// `/api/v1/snapshots/{id}`: one snapshot's bookkeeping with its rows per table and rejects
/// per file and reason (kept after the snapshot's schema is dropped).
pub(super) async fn snapshot_detail(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
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
pub(super) struct Snap {
    pub(super) id: i64,
    pub(super) period: String,
    pub(super) state: String,
    pub(super) schema_name: String,
    pub(super) published_at: Option<DateTime<Utc>>,
    pub(super) retired_at: Option<DateTime<Utc>>,
    pub(super) dropped_at: Option<DateTime<Utc>>,
}

impl Snap {
    /// When what a response says about this snapshot last changed: its publish, or its
    /// retirement (after which it is no longer `current`).
    pub(super) fn last_modified(&self) -> Option<DateTime<Utc>> {
        self.published_at.max(self.retired_at)
    }

    /// The schema holding this snapshot's data, if it is still kept.
    pub(super) fn schema(&self) -> Option<&str> {
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

pub(super) const SNAP_COLUMNS: &str = "id, period, state, schema_name, published_at, retired_at, dropped_at";

pub(super) async fn read_snap(conn: &mut PgConnection, id: Option<i64>) -> Result<Option<Snap>, sqlx::Error> {
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

pub(super) fn db_error(e: sqlx::Error) -> ApiError {
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

/// The snapshot to read: the published one, or `id` (pinned by a cursor when `by_cursor`).
pub(super) async fn resolve(conn: &mut PgConnection, id: Option<i64>, by_cursor: bool) -> Result<Snap, ApiError> {
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
