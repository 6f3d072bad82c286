-- What built a snapshot: a fingerprint of the table definitions, the report SQL and the
-- reelflow version. A rerun whose source is unchanged reuses the snapshot only when this
-- matches too, so a new cleaner or report definition always reloads.
ALTER TABLE reelflow.snapshots ADD COLUMN build_id text;
