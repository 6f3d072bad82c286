-- Orchestrator state: DAG runs, task instances, attempt history, operator actions, workers.

CREATE TABLE reelflow.dag_runs (
    id          bigserial PRIMARY KEY,
    dag_id      text        NOT NULL,
    period      text        NOT NULL,
    state       text        NOT NULL CHECK (state IN ('queued', 'running', 'success', 'failed')),
    trigger     text        NOT NULL CHECK (trigger IN ('scheduled', 'manual', 'backfill')),
    -- Bumped each time the period is re-run; attempts keep the generation they belong to.
    generation  integer     NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz,
    ended_at    timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (dag_id, period)
);
CREATE INDEX dag_runs_active ON reelflow.dag_runs (dag_id, state) WHERE state IN ('queued', 'running');

CREATE TABLE reelflow.task_instances (
    id               bigserial PRIMARY KEY,
    run_id           bigint      NOT NULL REFERENCES reelflow.dag_runs (id) ON DELETE CASCADE,
    task_id          text        NOT NULL,
    -- 'none' = waiting for its upstream tasks (Airflow's "no status").
    state            text        NOT NULL CHECK (state IN ('none', 'queued', 'running', 'success', 'failed',
                                                           'up_for_retry', 'upstream_failed', 'skipped')),
    try_number       integer     NOT NULL DEFAULT 0,
    max_tries        integer     NOT NULL,
    next_attempt_at  timestamptz,
    -- The attempt that holds the lease: the fencing token. A result is only recorded by it.
    attempt_id       bigint,
    lease_owner      text,
    lease_expires_at timestamptz,
    outputs          jsonb,
    last_error       text,
    started_at       timestamptz,
    ended_at         timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (run_id, task_id)
);
CREATE INDEX task_instances_ready ON reelflow.task_instances (state, next_attempt_at)
    WHERE state IN ('queued', 'up_for_retry');
CREATE INDEX task_instances_running ON reelflow.task_instances (lease_expires_at) WHERE state = 'running';

CREATE TABLE reelflow.attempts (
    id               bigserial PRIMARY KEY,
    task_instance_id bigint      NOT NULL REFERENCES reelflow.task_instances (id) ON DELETE CASCADE,
    run_id           bigint      NOT NULL,
    generation       integer     NOT NULL,
    task_id          text        NOT NULL,
    try_number       integer     NOT NULL,
    worker           text        NOT NULL,
    started_at       timestamptz NOT NULL DEFAULT now(),
    ended_at         timestamptz,
    outcome          text        NOT NULL DEFAULT 'running'
        CHECK (outcome IN ('running', 'success', 'failed', 'timeout', 'lease_expired', 'cancelled', 'superseded')),
    retryable        boolean,
    error            text
);
CREATE INDEX attempts_ti ON reelflow.attempts (task_instance_id, id);
CREATE INDEX attempts_run ON reelflow.attempts (run_id, id);

CREATE TABLE reelflow.operator_actions (
    id       bigserial PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    origin   text        NOT NULL,
    action   text        NOT NULL,
    dag_id   text,
    period   text,
    run_id   bigint,
    task_id  text,
    detail   jsonb
);

CREATE TABLE reelflow.workers (
    id            text PRIMARY KEY,
    hostname      text,
    version       text,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    stopped_at    timestamptz
);
