-- The quality gate's results (the `validate` task): every check with its measured value,
-- threshold and outcome, stored with the snapshot it judged (NULL until it is judged).
ALTER TABLE reelflow.snapshots ADD COLUMN gate_checks jsonb;
