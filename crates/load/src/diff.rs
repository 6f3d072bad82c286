//! The snapshot diff: which movies a new snapshot adds, removes and changes against the
//! snapshot `movies` showed when its load started (none for the first load: every movie is
//! added).
//!
//! A movie is changed when the md5 of its cleaned fields (the `movies` row: every column but
//! `id`, as PostgreSQL's row text) differs. The base's hashes are copied into the new
//! snapshot when the load starts (one scan of ~45k rows), so a publish of another snapshot
//! while this one loads changes nothing; the diff itself is one job of the load's graph, run
//! once the new `movies` table has its key. Only the columns both snapshots have are hashed,
//! so a base built by an older version with fewer columns still compares.
//!
//! Relations stored in the new snapshot:
//! - `diff_movies (movie_id bigint PRIMARY KEY, change text)`: `added`, `removed` or
//!   `changed`, one row per movie that is not identical;
//! - `diff_summary (base_snapshot_id bigint, added, removed, changed, unchanged bigint)`: one
//!   row (`base_snapshot_id` NULL for the first snapshot).

use sqlx::PgConnection;

use crate::types::{q, LoadError, PUBLISHED_SCHEMA};
use reelflow_clean::table;

/// The base's hashes while the load runs (dropped by the diff job).
const BASE: &str = "diff_base";

/// The movie columns hashed: every column of the cleaned `movies` table but `id`, in order,
/// that `present` (the base's columns, when there is a base) also has.
fn hashed_columns(present: Option<&[String]>) -> Vec<&'static str> {
    table("movies")
        .expect("movies is a table")
        .columns
        .iter()
        .map(|c| c.name)
        .filter(|c| *c != "id")
        .filter(|c| present.is_none_or(|p| p.iter().any(|x| x == c)))
        .collect()
}

fn hash_expr(columns: &[&str]) -> String {
    let cols: Vec<String> = columns.iter().map(|c| format!("m.{}", q(c))).collect();
    format!("md5(ROW({})::text)", cols.join(", "))
}

/// What the load compares against: the published snapshot's id and the columns hashed.
#[derive(Debug, Clone)]
pub(crate) struct Base {
    pub id: Option<i64>,
    pub columns: Vec<&'static str>,
}

/// At the start of a load, inside the new snapshot `schema`: copies the hashes of the movies
/// that `movies` shows now into `schema.diff_base` (empty when nothing is published).
pub(crate) async fn prepare(conn: &mut PgConnection, schema: &str) -> Result<Base, LoadError> {
    let published: Option<i64> = sqlx::query_scalar("SELECT id FROM reelflow.snapshots WHERE state = 'published'")
        .fetch_optional(&mut *conn)
        .await
        .map_err(LoadError::db("finding the published snapshot for the diff"))?;
    let base_cols: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'movies'",
    )
    .bind(PUBLISHED_SCHEMA)
    .fetch_all(&mut *conn)
    .await
    .map_err(LoadError::db("reading the published movies columns"))?;
    let has_base = published.is_some() && base_cols.iter().any(|c| c == "id");
    let columns = hashed_columns(has_base.then_some(base_cols.as_slice()));
    let create = format!(
        "CREATE TABLE {}.{BASE} (id bigint PRIMARY KEY, h text NOT NULL)",
        q(schema)
    );
    sqlx::query(sqlx::AssertSqlSafe(create))
        .execute(&mut *conn)
        .await
        .map_err(LoadError::db("creating the diff base"))?;
    if has_base {
        let fill = format!(
            "INSERT INTO {}.{BASE} SELECT m.id, {} FROM {}.movies m",
            q(schema),
            hash_expr(&columns),
            q(PUBLISHED_SCHEMA)
        );
        sqlx::query(sqlx::AssertSqlSafe(fill))
            .execute(&mut *conn)
            .await
            .map_err(LoadError::db("hashing the published movies for the diff"))?;
    }
    Ok(Base {
        id: published.filter(|_| has_base),
        columns,
    })
}

/// The diff job's statements, run once `schema.movies` is loaded and keyed.
pub(crate) fn statements(schema: &str, base: &Base) -> Vec<String> {
    let s = q(schema);
    let base_id = base.id.map_or("NULL".to_string(), |id| id.to_string());
    vec![
        format!(
            "CREATE TABLE {s}.diff_movies AS
             SELECT coalesce(n.id, o.id) AS movie_id,
                    CASE WHEN o.id IS NULL THEN 'added' WHEN n.id IS NULL THEN 'removed' ELSE 'changed' END AS change
             FROM (SELECT m.id, {} AS h FROM {s}.movies m) n
             FULL JOIN {s}.{BASE} o ON o.id = n.id
             WHERE o.id IS NULL OR n.id IS NULL OR o.h <> n.h",
            hash_expr(&base.columns)
        ),
        format!("ALTER TABLE {s}.diff_movies ADD PRIMARY KEY (movie_id), ALTER COLUMN change SET NOT NULL"),
        format!(
            "CREATE TABLE {s}.diff_summary AS
             SELECT {base_id}::bigint AS base_snapshot_id,
                    count(*) FILTER (WHERE change = 'added')::bigint AS added,
                    count(*) FILTER (WHERE change = 'removed')::bigint AS removed,
                    count(*) FILTER (WHERE change = 'changed')::bigint AS changed,
                    ((SELECT count(*) FROM {s}.movies) - count(*) FILTER (WHERE change <> 'removed'))::bigint AS unchanged
             FROM {s}.diff_movies"
        ),
        format!("DROP TABLE {s}.{BASE}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_the_columns_both_sides_have() {
        let all = hashed_columns(None);
        assert!(!all.contains(&"id"));
        assert_eq!(all.len(), table("movies").unwrap().columns.len() - 1);
        let older: Vec<String> = ["id", "title", "budget", "gone"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(hashed_columns(Some(&older)), ["title", "budget"]);
        assert_eq!(
            hash_expr(&["title", "budget"]),
            r#"md5(ROW(m."title", m."budget")::text)"#
        );
    }
}
