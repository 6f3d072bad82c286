//! Retention of the artifact store: once retention has dropped every snapshot a run built, the
//! objects the run's attempts wrote (`<prefix>/<dag>/<period>/run-<id>/`) serve nothing any
//! more and are deleted. The `failed` snapshot rows of load tries that failed before a later
//! try succeeded hold nothing (their schemas are gone) and do not keep a succeeded run's
//! objects. A run that is not finished, or a failed run whose load failed (an operator may
//! still retry it), keeps its objects.

use reelflow_artifacts::{run_path, Artifacts};
use sqlx::{PgPool, Row};

use crate::LoadError;

/// Deletes the objects of every finished run of `dag_id` whose snapshots have all been
/// dropped by retention; returns the run ids swept. Listing an already empty run folder is one
/// request, so sweeping again is cheap.
pub async fn sweep_artifacts(pool: &PgPool, artifacts: &Artifacts, dag_id: &str) -> Result<Vec<i64>, LoadError> {
    let runs = sqlx::query(
        "SELECT r.id, r.period FROM reelflow.dag_runs r
         WHERE r.dag_id = $1 AND r.state IN ('success', 'failed')
           AND EXISTS (SELECT 1 FROM reelflow.snapshots s WHERE s.run_id = r.id AND s.state = 'dropped')
           AND NOT EXISTS (SELECT 1 FROM reelflow.snapshots s WHERE s.run_id = r.id AND s.state <> 'dropped'
                           AND NOT (s.state = 'failed' AND r.state = 'success'))
         ORDER BY r.id",
    )
    .bind(dag_id)
    .fetch_all(pool)
    .await
    .map_err(LoadError::db("listing the runs whose snapshots are gone"))?;
    let mut swept = Vec::new();
    for row in runs {
        let (id, period): (i64, String) = (row.get(0), row.get(1));
        let n = artifacts.delete_below(&run_path(dag_id, &period, id)).await?;
        if n > 0 {
            tracing::info!(run_id = id, period = %period, objects = n, store = %artifacts.url(), "retention: deleted the artifacts of a run whose snapshots are gone");
            swept.push(id);
        }
    }
    Ok(swept)
}
