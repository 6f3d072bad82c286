//! Reusing a snapshot for a rerun of an unchanged source: `build_id` fingerprints what a
//! load builds; `unchanged_snapshot` finds the period's kept snapshot built from the same
//! source by the same build; `reuse_snapshot` passes it through as the load's output.

use std::collections::BTreeMap;

use sqlx::{PgPool, Row};

use reelflow_clean::TABLES;

use crate::reports::REPORTS;
use crate::types::{LoadError, LoadOutput};

/// A fingerprint of what a load builds: the reelflow version, the source of the cleaner and
/// the loader (hashed by `build.rs`), the manifest format, the table definitions and the report
/// SQL. Stored with each snapshot.
pub fn build_id() -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(env!("CARGO_PKG_VERSION"));
    h.update(env!("REELFLOW_LOAD_SOURCE_HASH"));
    h.update(reelflow_clean::MANIFEST_FORMAT.to_le_bytes());
    h.update(format!("{TABLES:?}"));
    h.update(format!("{REPORTS:?}"));
    hex::encode(&h.finalize()[..16])
}

/// The snapshot of `(dag_id, period)` that a new load of a source with this SHA-256 would only
/// rebuild: the period's newest kept snapshot, if it is published (current or kept for an
/// older period), came from the same bytes and was built by this same [`build_id`]. A
/// snapshot that was rolled back away from is never reused; one that was never published (a
/// leftover of a load-only retry or a failed run) is not considered at all.
pub async fn unchanged_snapshot(
    pool: &PgPool,
    dag_id: &str,
    period: &str,
    source_sha256: &str,
) -> Result<Option<i64>, LoadError> {
    let row = sqlx::query(
        "SELECT id, state, source_sha256, build_id FROM reelflow.snapshots
         WHERE dag_id = $1 AND period = $2 AND dropped_at IS NULL AND state IN ('published', 'retired', 'rolled_back')
         ORDER BY id DESC LIMIT 1",
    )
    .bind(dag_id)
    .bind(period)
    .fetch_optional(pool)
    .await
    .map_err(LoadError::db("looking for an unchanged snapshot"))?;
    Ok(row.and_then(|r| {
        let (id, state, sha, build): (i64, String, Option<String>, Option<String>) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let kept = state == "published" || state == "retired";
        (kept && sha.as_deref() == Some(source_sha256) && build.as_deref() == Some(build_id().as_str())).then_some(id)
    }))
}

/// The [`LoadOutput`] of an existing, still kept snapshot, marked `reused`.
pub async fn reuse_snapshot(pool: &PgPool, id: i64) -> Result<LoadOutput, LoadError> {
    let row = sqlx::query(
        "SELECT state, CASE WHEN state = 'published' THEN 'movies' ELSE schema_name END, row_counts, rejects_total
         FROM reelflow.snapshots WHERE id = $1 AND dropped_at IS NULL",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(LoadError::db("reading the reused snapshot"))?
    .ok_or_else(|| LoadError::NotPublishable {
        id,
        reason: "it was dropped after the clean task chose to reuse it; retry the clean task".into(),
    })?;
    let state: String = row.get(0);
    if state != "published" && state != "retired" {
        return Err(LoadError::NotPublishable {
            id,
            reason: format!("it is {state} now; retry the clean task"),
        });
    }
    let counts: Option<serde_json::Value> = row.get(2);
    let rows: BTreeMap<String, u64> = counts.and_then(|v| serde_json::from_value(v).ok()).unwrap_or_default();
    Ok(LoadOutput {
        snapshot_id: id,
        schema: row.get(1),
        rows,
        rejects: row.get::<Option<i64>, _>(3).unwrap_or(0) as u64,
        seconds: 0.0,
        reused: true,
    })
}
