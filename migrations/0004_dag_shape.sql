-- Runs record the shape of the DAG they follow (tasks and edges), so a run is settled by the
-- DAG it was created with (or last brought up to date with by a rerun, retry or mark), never
-- by whichever version of the code happens to settle it. Runs from before this migration
-- followed a chain of their tasks in creation order.
ALTER TABLE reelflow.dag_runs ADD COLUMN dag_shape jsonb;
UPDATE reelflow.dag_runs r SET dag_shape = (
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'id', t.task_id,
               'upstream', CASE WHEN t.prev IS NULL THEN '[]'::jsonb ELSE jsonb_build_array(t.prev) END)
           ORDER BY t.id), '[]'::jsonb)
    FROM (SELECT id, task_id, lag(task_id) OVER (ORDER BY id) AS prev
          FROM reelflow.task_instances WHERE run_id = r.id) t);
ALTER TABLE reelflow.dag_runs ALTER COLUMN dag_shape SET NOT NULL;

-- Tries stopped by the platform (shutdown, a worker that died) do not use up max_tries; they
-- are counted here and capped by max_interruptions instead.
ALTER TABLE reelflow.task_instances
    ADD COLUMN interruptions     integer NOT NULL DEFAULT 0,
    ADD COLUMN max_interruptions integer NOT NULL DEFAULT 10;

-- Where a worker runs, so a lease held by a process that provably died on the same machine
-- (same host and boot, pid gone or reused) is taken over at once instead of after the lease.
ALTER TABLE reelflow.workers
    ADD COLUMN boot_id     text,
    ADD COLUMN pid         integer,
    ADD COLUMN start_ticks bigint;
