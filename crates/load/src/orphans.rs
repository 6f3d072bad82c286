//! Snapshots that no run will publish: a load cancelled or killed mid-way (`building`), a
//! load-only retry or a run that failed after its load (`ready`; but not one whose quality
//! gate failed, while its run is the period's latest). [`sweep_orphans`] drops them;
//! it runs before every load, after every publish or rollback (retention), and periodically in
//! `reelflow serve`.

use sqlx::{PgPool, Row};

use crate::publish::{ids, lock_snapshots};
use crate::types::{q, LoadError};

/// Drops every `building` snapshot that no loader is building (its period's load lock is free)
/// and every `ready` snapshot that no run will publish: a ready snapshot is kept only while its
/// run is queued or running and either its load task is still running (its result is being
/// recorded) or its load task's output is this snapshot and its publish task has not finished.
/// The snapshot of a run whose quality gate (`validate`) failed is kept too, while that run is
/// its period's latest run: an operator may look at it and publish it anyway by marking the
/// gate success (`tasks mark RUN validate success`); a later run of the period, or a retry of
/// the load (which builds a new snapshot), lets it go.
/// Snapshots loaded outside a run (no `run_id`) are left alone. Returns the ids dropped.
pub async fn sweep_orphans(pool: &PgPool) -> Result<Vec<i64>, LoadError> {
    let mut dropped = Vec::new();
    let mut conn = pool
        .acquire()
        .await
        .map_err(LoadError::db("connecting for the sweep"))?;
    let building = sqlx::query(
        "SELECT id, dag_id, period, schema_name FROM reelflow.snapshots
         WHERE state = 'building' AND dropped_at IS NULL ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(LoadError::db("listing building snapshots"))?;
    for row in building {
        let (id, dag, period, schema): (i64, String, String, String) = (row.get(0), row.get(1), row.get(2), row.get(3));
        // The loader holds this session lock while it builds; if we get it, nobody builds.
        let free: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended('reelflow.load:' || $1 || ':' || $2, 0))")
                .bind(&dag)
                .bind(&period)
                .fetch_one(&mut *conn)
                .await
                .map_err(LoadError::db("trying the period's load lock"))?;
        if !free {
            continue;
        }
        // Only if it is still `building`: the loader may have finished it between the listing
        // and the lock (then it is `ready`, and the check below decides).
        let result = drop_one(
            &mut conn,
            id,
            &schema,
            "building",
            "abandoned while building (cancelled or killed load)",
        )
        .await;
        sqlx::query("SELECT pg_advisory_unlock(hashtextextended('reelflow.load:' || $1 || ':' || $2, 0))")
            .bind(&dag)
            .bind(&period)
            .execute(&mut *conn)
            .await
            .map_err(LoadError::db("releasing the period's load lock"))?;
        if result? {
            dropped.push(id);
        }
    }
    let ready = sqlx::query(
        "SELECT s.id, s.schema_name FROM reelflow.snapshots s
         WHERE s.state = 'ready' AND s.dropped_at IS NULL AND s.run_id IS NOT NULL
           AND NOT EXISTS (
             SELECT 1 FROM reelflow.dag_runs r
             JOIN reelflow.task_instances l ON l.run_id = r.id AND l.task_id = 'load'
             JOIN reelflow.task_instances p ON p.run_id = r.id AND p.task_id = 'publish'
             WHERE r.id = s.run_id AND r.state IN ('queued', 'running')
               AND (l.state = 'running'
                    OR (l.state = 'success' AND (l.outputs->>'snapshot_id')::bigint = s.id
                        AND p.state IN ('none', 'queued', 'running', 'up_for_retry'))))
           AND NOT EXISTS (
             SELECT 1 FROM reelflow.dag_runs r
             JOIN reelflow.task_instances l ON l.run_id = r.id AND l.task_id = 'load'
             JOIN reelflow.task_instances v ON v.run_id = r.id AND v.task_id = 'validate'
             WHERE r.id = s.run_id AND r.state = 'failed' AND v.state = 'failed'
               AND l.state = 'success' AND (l.outputs->>'snapshot_id')::bigint = s.id
               AND NOT EXISTS (SELECT 1 FROM reelflow.dag_runs n
                               WHERE n.dag_id = r.dag_id AND n.period = r.period AND n.id > r.id))
         ORDER BY s.id",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(LoadError::db("listing ready snapshots"))?;
    for row in ready {
        let (id, schema): (i64, String) = (row.get(0), row.get(1));
        if drop_one(&mut conn, id, &schema, "ready", "orphaned: no run will publish it").await? {
            dropped.push(id);
        }
    }
    if !dropped.is_empty() {
        tracing::info!(dropped = %ids(&dropped), "dropped snapshots that no run will publish");
    }
    Ok(dropped)
}

/// Drops a snapshot's schema and records it, if it is still in `state` (checked under the
/// bookkeeping lock, so a publish cannot take it meanwhile).
async fn drop_one(
    conn: &mut sqlx::PgConnection,
    id: i64,
    schema: &str,
    state: &str,
    why: &str,
) -> Result<bool, LoadError> {
    use sqlx::Connection;
    let mut tx = conn.begin().await.map_err(LoadError::db("starting a drop"))?;
    lock_snapshots(&mut tx).await?;
    let n = sqlx::query(
        "UPDATE reelflow.snapshots SET state = 'dropped', dropped_at = now(), error = coalesce(error, $2)
         WHERE id = $1 AND state = $3 AND dropped_at IS NULL",
    )
    .bind(id)
    .bind(why)
    .bind(state)
    .execute(&mut *tx)
    .await
    .map_err(LoadError::db("recording a dropped snapshot"))?
    .rows_affected();
    if n == 1 {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            q(schema)
        )))
        .execute(&mut *tx)
        .await
        .map_err(LoadError::db(format!("dropping {schema}")))?;
    }
    tx.commit().await.map_err(LoadError::db("committing a drop"))?;
    Ok(n == 1)
}
