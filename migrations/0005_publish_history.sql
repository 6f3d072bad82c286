-- Every change of what `movies` shows, in order: which snapshot became `movies` (`snapshot_id`),
-- which one it replaced, and how (`publish`, `rollback`, `rollforward`, `pick` for
-- `snapshots rollback --to`). Rollback follows this history, never the snapshots' ages.
CREATE TABLE reelflow.publish_history (
    seq          bigserial   PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    snapshot_id  bigint      NOT NULL,
    replaced_id  bigint,
    action       text        NOT NULL CHECK (action IN ('publish', 'rollback', 'rollforward', 'pick'))
);
CREATE INDEX publish_history_snapshot ON reelflow.publish_history (snapshot_id, seq);

-- Seed it from what the snapshots say: those that were `movies` (the published one, and those
-- switched out of `movies`, which have `retired_at`) in publish order, each replacing the one
-- before it. Snapshots kept for an older period (a backfill) were never `movies`.
INSERT INTO reelflow.publish_history (at, snapshot_id, replaced_id, action)
SELECT coalesce(published_at, created_at), id,
       lag(id) OVER (ORDER BY published_at NULLS FIRST, id), 'publish'
FROM reelflow.snapshots
WHERE published_at IS NOT NULL AND (state = 'published' OR retired_at IS NOT NULL)
ORDER BY published_at, id;

-- A run's own source (`runs trigger --source`, `POST /runs {"source"}`): the fetch task of that
-- run reads it instead of the configured one. NULL: the configured source.
ALTER TABLE reelflow.dag_runs ADD COLUMN source text;
