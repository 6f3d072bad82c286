//! Publishing and what `movies` shows: `publish` (a rename inside one transaction; an older
//! period's snapshot is kept beside the newer `movies`), `roll` (rollback, roll-forward, `--to`)
//! following `reelflow.publish_history`, retention (`prune`: the rollback chain, and the newest
//! snapshot of each recent period) and `list_snapshots` (which one rollback would pick).

use sqlx::{PgConnection, PgPool, Row};

use crate::types::{q, LoadConfig, LoadError, PublishOutput, RollTarget, SnapshotInfo, PUBLISHED_SCHEMA};

/// Publishes a `ready` snapshot: in one transaction the current `movies` schema goes back to
/// its own name and the new one becomes `movies`. Readers see the old or the new snapshot,
/// never a mix and never none. Published snapshots beyond `keep_previous` are then dropped.
pub async fn publish(pool: &PgPool, snapshot_id: i64, keep_previous: usize) -> Result<PublishOutput, LoadError> {
    publish_with(pool, snapshot_id, keep_previous, LoadConfig::default().keep_periods).await
}

/// [`publish`] with both retention settings (see [`LoadConfig`]).
pub async fn publish_with(
    pool: &PgPool,
    snapshot_id: i64,
    keep_previous: usize,
    keep_periods: usize,
) -> Result<PublishOutput, LoadError> {
    let mut tx = pool
        .begin()
        .await
        .map_err(LoadError::db("starting the publish transaction"))?;
    lock_snapshots(&mut tx).await?;
    let row = sqlx::query("SELECT state, schema_name, period FROM reelflow.snapshots WHERE id = $1")
        .bind(snapshot_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(LoadError::db("reading the snapshot"))?
        .ok_or(LoadError::NotPublishable {
            id: snapshot_id,
            reason: "no such snapshot".into(),
        })?;
    let (state, schema, period): (String, String, String) = (row.get(0), row.get(1), row.get(2));
    if state == "published" {
        return Ok(PublishOutput {
            snapshot_id,
            period,
            replaced: None,
            dropped: vec![],
            current: true,
        });
    }
    if state != "ready" {
        // Published before and that publish's result was lost (the worker died before
        // recording it): it was kept as an older period's snapshot (a backfill), and may have
        // been retired, rolled back or dropped by retention since. The publish happened; do not
        // undo what came after it. Only if no later snapshot of the period was published.
        let repeat: bool = sqlx::query_scalar(
            "SELECT s.published_at IS NOT NULL AND NOT EXISTS (
                 SELECT 1 FROM reelflow.snapshots l
                 WHERE l.dag_id = s.dag_id AND l.period = s.period AND l.id > s.id AND l.published_at IS NOT NULL)
             FROM reelflow.snapshots s WHERE s.id = $1",
        )
        .bind(snapshot_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(LoadError::db("reading the period's snapshots"))?;
        if repeat {
            tracing::info!(snapshot_id, state = %state, "published before; nothing to do");
            return Ok(PublishOutput {
                snapshot_id,
                period,
                replaced: None,
                dropped: vec![],
                current: false,
            });
        }
    }
    if state != "ready" {
        let hint = if state == "dropped" || state == "failed" {
            "; retry the load task with --downstream to build and publish a new one"
        } else {
            ""
        };
        return Err(LoadError::NotPublishable {
            id: snapshot_id,
            reason: format!("it is {state}, not ready{hint}"),
        });
    }
    let newer: Option<String> =
        sqlx::query_scalar("SELECT period FROM reelflow.snapshots WHERE state = 'published' AND period > $1")
            .bind(&period)
            .fetch_optional(&mut *tx)
            .await
            .map_err(LoadError::db("reading the published period"))?;
    if let Some(newer) = newer {
        // A backfill of an older period: keep its snapshot, leave `movies` on the newer one.
        sqlx::query("UPDATE reelflow.snapshots SET state = 'retired', published_at = now() WHERE id = $1")
            .bind(snapshot_id)
            .execute(&mut *tx)
            .await
            .map_err(LoadError::db("keeping the older period's snapshot"))?;
        tx.commit().await.map_err(LoadError::db("committing the publish"))?;
        let dropped = prune(pool, keep_previous, keep_periods).await?;
        tracing::info!(snapshot_id, period = %period, newer = %newer, "snapshot kept; movies stays on the newer period");
        return Ok(PublishOutput {
            snapshot_id,
            period,
            replaced: None,
            dropped,
            current: false,
        });
    }
    let replaced = switch_to(&mut tx, snapshot_id, &schema, "retired", "publish").await?;
    reelflow_dag::failpoint("publish.before_commit");
    tx.commit().await.map_err(LoadError::db("committing the publish"))?;
    reelflow_dag::failpoint("publish.after_commit");
    let dropped = prune(pool, keep_previous, keep_periods).await?;
    tracing::info!(
        snapshot_id,
        period = %period,
        replaced = replaced.map(|r| r.to_string()).unwrap_or_else(|| "none".into()),
        dropped = %ids(&dropped),
        "snapshot published"
    );
    Ok(PublishOutput {
        snapshot_id,
        period,
        replaced,
        dropped,
        current: true,
    })
}

/// `1, 2, 3` (or `none`) for messages and log fields.
/// Takes the lock that serialises every change of snapshot bookkeeping (publish, rollback,
/// retention, the orphan sweep) for the rest of `tx`.
pub(crate) async fn lock_snapshots(tx: &mut PgConnection) -> Result<(), LoadError> {
    sqlx::query("LOCK TABLE reelflow.snapshots IN SHARE ROW EXCLUSIVE MODE")
        .execute(tx)
        .await
        .map_err(LoadError::db("locking snapshot bookkeeping"))?;
    Ok(())
}

pub(crate) fn ids(v: &[i64]) -> String {
    if v.is_empty() {
        return "none".into();
    }
    v.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

/// Inside `tx`: renames the published schema back to its own name (its row gets `old_state`)
/// and `schema` to `movies`, and records the change in `reelflow.publish_history` as `action`.
/// Returns the id of the snapshot that was replaced.
pub(crate) async fn switch_to(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    id: i64,
    schema: &str,
    old_state: &str,
    action: &str,
) -> Result<Option<i64>, LoadError> {
    let current = sqlx::query("SELECT id, schema_name FROM reelflow.snapshots WHERE state = 'published'")
        .fetch_optional(&mut **tx)
        .await
        .map_err(LoadError::db("finding the published snapshot"))?;
    let published_exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(PUBLISHED_SCHEMA)
        .fetch_one(&mut **tx)
        .await
        .map_err(LoadError::db("looking for the movies schema"))?;
    let replaced = match current {
        Some(row) => {
            let (old_id, old_schema): (i64, String) = (row.get(0), row.get(1));
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER SCHEMA {} RENAME TO {}",
                q(PUBLISHED_SCHEMA),
                q(&old_schema)
            )))
            .execute(&mut **tx)
            .await
            .map_err(LoadError::db("renaming the published schema"))?;
            sqlx::query("UPDATE reelflow.snapshots SET state = $2, retired_at = now() WHERE id = $1")
                .bind(old_id)
                .bind(old_state)
                .execute(&mut **tx)
                .await
                .map_err(LoadError::db("retiring the published snapshot"))?;
            Some(old_id)
        }
        None if published_exists => {
            return Err(LoadError::NotPublishable {
                id,
                reason: format!(
                    "a schema named {PUBLISHED_SCHEMA} exists that reelflow did not publish; rename or drop it"
                ),
            })
        }
        None => None,
    };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER SCHEMA {} RENAME TO {}",
        q(schema),
        q(PUBLISHED_SCHEMA)
    )))
    .execute(&mut **tx)
    .await
    .map_err(LoadError::db("renaming the new snapshot to movies"))?;
    sqlx::query("UPDATE reelflow.snapshots SET state = 'published', published_at = now() WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await
        .map_err(LoadError::db("marking the snapshot published"))?;
    sqlx::query("INSERT INTO reelflow.publish_history (snapshot_id, replaced_id, action) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(replaced)
        .bind(action)
        .execute(&mut **tx)
        .await
        .map_err(LoadError::db("recording the publish history"))?;
    Ok(replaced)
}

/// The snapshot `movies` shows, if any: (id, period).
pub(crate) async fn current(conn: &mut PgConnection) -> Result<Option<(i64, String)>, LoadError> {
    sqlx::query_as("SELECT id, period FROM reelflow.snapshots WHERE state = 'published'")
        .fetch_optional(&mut *conn)
        .await
        .map_err(LoadError::db("finding the published snapshot"))
}

/// The snapshot `movies` showed before `id` became `movies` the last time other than by a
/// rollback: what a rollback from `id` publishes. Rollbacks are skipped so that two rollbacks
/// go two steps back instead of back and forth.
pub(crate) async fn previous_of(conn: &mut PgConnection, id: i64) -> Result<Option<i64>, LoadError> {
    let prev: Option<Option<i64>> = sqlx::query_scalar(
        "SELECT replaced_id FROM reelflow.publish_history
         WHERE snapshot_id = $1 AND action <> 'rollback' ORDER BY seq DESC LIMIT 1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(LoadError::db("reading the publish history"))?;
    Ok(prev.flatten())
}

/// The snapshot that the last rollback to `id` moved away from: what a roll-forward publishes.
pub(crate) async fn forward_of(conn: &mut PgConnection, id: i64) -> Result<Option<i64>, LoadError> {
    let next: Option<Option<i64>> = sqlx::query_scalar(
        "SELECT replaced_id FROM reelflow.publish_history
         WHERE snapshot_id = $1 AND action = 'rollback' ORDER BY seq DESC LIMIT 1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(LoadError::db("reading the publish history"))?;
    Ok(next.flatten())
}

/// Whether a snapshot still has its schema and may be published again.
pub(crate) async fn kept(conn: &mut PgConnection, id: i64) -> Result<Option<(String, String, String)>, LoadError> {
    sqlx::query_as(
        "SELECT state, schema_name, period FROM reelflow.snapshots
         WHERE id = $1 AND dropped_at IS NULL AND state IN ('retired', 'rolled_back')",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(LoadError::db("reading a kept snapshot"))
}

/// What rollback and roll-forward would publish now.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Targets {
    previous: Option<i64>,
    forward: Option<i64>,
}

impl Targets {
    async fn read(conn: &mut PgConnection) -> Result<Targets, LoadError> {
        let Some((cur, _)) = current(conn).await? else {
            return Ok(Targets::default());
        };
        let mut t = Targets::default();
        if let Some(p) = previous_of(conn, cur).await? {
            t.previous = kept(conn, p).await?.map(|_| p);
        }
        if let Some(f) = forward_of(conn, cur).await? {
            t.forward = kept(conn, f).await?.map(|_| f);
        }
        Ok(t)
    }
}

/// Retention, under the bookkeeping lock: keeps the published snapshot, the `keep_previous`
/// snapshots a chain of rollbacks would publish (the publish history, not the snapshots'
/// ages), as many roll-forward steps, and the newest snapshot of each other period for the
/// `keep_periods` newest such periods. Every other retired or rolled-back snapshot is dropped.
pub(crate) async fn prune(pool: &PgPool, keep_previous: usize, keep_periods: usize) -> Result<Vec<i64>, LoadError> {
    let mut tx = pool.begin().await.map_err(LoadError::db("starting retention"))?;
    lock_snapshots(&mut tx).await?;
    let mut keep: Vec<i64> = Vec::new();
    let cur = current(&mut tx).await?;
    if let Some((cur_id, _)) = &cur {
        let mut at = *cur_id;
        for _ in 0..keep_previous {
            match previous_of(&mut tx, at).await? {
                Some(p) if kept(&mut tx, p).await?.is_some() && !keep.contains(&p) && p != *cur_id => {
                    keep.push(p);
                    at = p;
                }
                _ => break,
            }
        }
        // The same number of roll-forward steps.
        let mut at = *cur_id;
        for _ in 0..keep_previous.max(1) {
            match forward_of(&mut tx, at).await? {
                Some(f) if kept(&mut tx, f).await?.is_some() && !keep.contains(&f) && f != *cur_id => {
                    keep.push(f);
                    at = f;
                }
                _ => break,
            }
        }
    }
    let cur_period = cur.as_ref().map(|c| c.1.clone()).unwrap_or_default();
    let per_period: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM (
             SELECT DISTINCT ON (dag_id, period) id, period FROM reelflow.snapshots
             WHERE state = 'retired' AND dropped_at IS NULL AND period <> $1
             ORDER BY dag_id, period, id DESC) newest
         ORDER BY period DESC, id DESC LIMIT $2",
    )
    .bind(&cur_period)
    .bind(keep_periods as i64)
    .fetch_all(&mut *tx)
    .await
    .map_err(LoadError::db("listing older periods' snapshots"))?;
    keep.extend(per_period);
    let old = sqlx::query(
        "SELECT id, schema_name FROM reelflow.snapshots
         WHERE state IN ('retired', 'rolled_back') AND dropped_at IS NULL AND NOT (id = ANY($1))
         ORDER BY id",
    )
    .bind(&keep)
    .fetch_all(&mut *tx)
    .await
    .map_err(LoadError::db("listing old snapshots"))?;
    let mut dropped = Vec::new();
    for row in old {
        let (id, schema): (i64, String) = (row.get(0), row.get(1));
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            q(&schema)
        )))
        .execute(&mut *tx)
        .await
        .map_err(LoadError::db(format!("dropping {schema}")))?;
        sqlx::query("UPDATE reelflow.snapshots SET state = 'dropped', dropped_at = now() WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(LoadError::db("recording a dropped snapshot"))?;
        dropped.push(id);
    }
    tx.commit().await.map_err(LoadError::db("committing retention"))?;
    match crate::orphans::sweep_orphans(pool).await {
        Ok(orphans) => dropped.extend(orphans),
        Err(e) => tracing::warn!(error = %e, "could not drop orphaned snapshots now; a later sweep will"),
    }
    if !dropped.is_empty() {
        tracing::info!(dropped = %ids(&dropped), "retention dropped old snapshots");
    }
    Ok(dropped)
}

/// Publishes the snapshot `movies` showed before the current one again (following the publish
/// history); the current one becomes `rolled_back` (kept for [`RollTarget::Forward`]).
pub async fn rollback(pool: &PgPool) -> Result<PublishOutput, LoadError> {
    let d = LoadConfig::default();
    roll(pool, RollTarget::Previous, d.keep_previous, d.keep_periods).await
}

/// Publishes a kept snapshot again: the previous one, the one rolled back away from, or a given
/// one. The snapshot it replaces becomes `rolled_back` (a roll-forward retires it instead).
/// Retention runs afterwards.
pub async fn roll(
    pool: &PgPool,
    target: RollTarget,
    keep_previous: usize,
    keep_periods: usize,
) -> Result<PublishOutput, LoadError> {
    let mut tx = pool
        .begin()
        .await
        .map_err(LoadError::db("starting the rollback transaction"))?;
    lock_snapshots(&mut tx).await?;
    let cur = current(&mut tx).await?;
    let (id, action, old_state) = match (target, &cur) {
        (RollTarget::Id(id), Some((cur_id, _))) if id == *cur_id => {
            return Err(LoadError::NotPublishable {
                id,
                reason: "it is the published snapshot already".into(),
            })
        }
        (RollTarget::Id(id), _) => (id, "pick", "rolled_back"),
        (RollTarget::Previous, None) => return Err(LoadError::NoPrevious("no snapshot is published".into())),
        (RollTarget::Forward, None) => return Err(LoadError::NoForward("no snapshot is published".into())),
        (RollTarget::Previous, Some((cur_id, _))) => match previous_of(&mut tx, *cur_id).await? {
            Some(p) => (p, "rollback", "rolled_back"),
            None => {
                return Err(LoadError::NoPrevious(format!(
                    "snapshot {cur_id} was the first one published"
                )))
            }
        },
        (RollTarget::Forward, Some((cur_id, _))) => match forward_of(&mut tx, *cur_id).await? {
            Some(f) => (f, "rollforward", "retired"),
            None => {
                return Err(LoadError::NoForward(format!(
                    "snapshot {cur_id} was not published by a rollback"
                )))
            }
        },
    };
    let Some((_, schema, period)) = kept(&mut tx, id).await? else {
        let state: Option<String> = sqlx::query_scalar("SELECT state FROM reelflow.snapshots WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(LoadError::db("reading the snapshot"))?;
        let reason = match state {
            None => "no such snapshot".to_string(),
            Some(s) if s == "dropped" || s == "failed" => format!("it is {s}: its schema is gone"),
            Some(s) => format!("it is {s}; only retired or rolled-back snapshots can be published again"),
        };
        return Err(match target {
            RollTarget::Previous => LoadError::NoPrevious(format!("snapshot {id} is not kept ({reason})")),
            RollTarget::Forward => LoadError::NoForward(format!("snapshot {id} is not kept ({reason})")),
            RollTarget::Id(_) => LoadError::NotPublishable { id, reason },
        });
    };
    let replaced = switch_to(&mut tx, id, &schema, old_state, action).await?;
    tx.commit().await.map_err(LoadError::db("committing the rollback"))?;
    let dropped = prune(pool, keep_previous, keep_periods).await?;
    tracing::info!(
        snapshot_id = id,
        period = %period,
        action,
        replaced = replaced.map(|r| r.to_string()).unwrap_or_else(|| "none".into()),
        "published a kept snapshot again"
    );
    Ok(PublishOutput {
        snapshot_id: id,
        period,
        replaced,
        dropped,
        current: true,
    })
}

/// Every snapshot that still has a schema, newest first, then the rest.
pub async fn list_snapshots(pool: &PgPool) -> Result<Vec<SnapshotInfo>, LoadError> {
    let rows = sqlx::query(
        "SELECT id, dag_id, period, state, CASE WHEN state = 'published' THEN 'movies' ELSE schema_name END,
                rows_total, rejects_total, created_at, published_at, error
         FROM reelflow.snapshots ORDER BY id DESC",
    )
    .fetch_all(pool)
    .await
    .map_err(LoadError::db("listing snapshots"))?;
    let mut conn = pool.acquire().await.map_err(LoadError::db("listing snapshots"))?;
    let targets = Targets::read(&mut conn).await?;
    Ok(rows
        .into_iter()
        .map(|r| SnapshotInfo {
            id: r.get(0),
            dag_id: r.get(1),
            period: r.get(2),
            state: r.get(3),
            schema_name: r.get(4),
            rows_total: r.get(5),
            rejects_total: r.get(6),
            created_at: r.get(7),
            published_at: r.get(8),
            error: r.get(9),
            rollback_target: Some(r.get::<i64, _>(0)) == targets.previous,
            rollforward_target: Some(r.get::<i64, _>(0)) == targets.forward,
        })
        .collect())
}
