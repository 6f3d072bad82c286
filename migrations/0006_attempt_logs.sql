-- Per-attempt logs: the lines each task attempt emitted, kept bounded (the newest lines win;
-- `lines_cut` counts those dropped), written in batches while the attempt runs.
CREATE TABLE reelflow.attempt_logs (
    attempt_id  bigint      PRIMARY KEY REFERENCES reelflow.attempts (id) ON DELETE CASCADE,
    lines_total bigint      NOT NULL DEFAULT 0,
    lines_cut   bigint      NOT NULL DEFAULT 0,
    finished    boolean     NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE reelflow.attempt_log_lines (
    attempt_id bigint NOT NULL REFERENCES reelflow.attempt_logs (attempt_id) ON DELETE CASCADE,
    seq        bigint NOT NULL,
    line       text   NOT NULL,
    PRIMARY KEY (attempt_id, seq)
);
