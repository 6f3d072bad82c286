-- Bookkeeping of snapshot schemas. The published snapshot is the schema named `movies`;
-- every other snapshot lives under its own `schema_name`.
CREATE SCHEMA IF NOT EXISTS reelflow;

CREATE TABLE reelflow.snapshots (
    id             bigserial PRIMARY KEY,
    dag_id         text        NOT NULL,
    period         text        NOT NULL,
    run_id         bigint,
    schema_name    text        NOT NULL UNIQUE,
    state          text        NOT NULL
        CHECK (state IN ('building', 'ready', 'published', 'retired', 'rolled_back', 'failed', 'dropped')),
    source_sha256  text,
    manifest       jsonb,
    row_counts     jsonb,
    reject_counts  jsonb,
    rows_total     bigint,
    rejects_total  bigint,
    error          text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    ready_at       timestamptz,
    published_at   timestamptz,
    retired_at     timestamptz,
    dropped_at     timestamptz
);

-- At most one snapshot is published at any time.
CREATE UNIQUE INDEX snapshots_one_published ON reelflow.snapshots ((true)) WHERE state = 'published';
CREATE INDEX snapshots_period ON reelflow.snapshots (dag_id, period);
