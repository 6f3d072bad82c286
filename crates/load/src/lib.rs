//! The load and publish stages: cleaned COPY files -> a new snapshot schema -> keys, indexes,
//! validation and reports -> an atomic switch of the schema `movies`.
//!
//! Architecture invariants:
//! - Data enters PostgreSQL only through COPY, never row-by-row INSERT.
//! - A snapshot is built in its own schema `reelflow_snap_<id>`; nothing touches `movies`
//!   until [`publish`], which renames schemas inside one transaction. A failed or crashed load
//!   leaves `movies` as it was, and its half-built schema is dropped (at once, or by the next
//!   load of the same period).
//! - Every snapshot has a row in `reelflow.snapshots`; a schema is never created without one.

mod diff;
mod graph;
mod plan;
mod reports;
mod retention;
mod snapshot;

pub use reports::{Report, REPORTS};
pub use retention::sweep_artifacts;
pub use snapshot::{
    build_id, create_table_sql, fk_sql, key_sql, list_snapshots, load_snapshot, publish, reuse_snapshot, rollback,
    unchanged_snapshot, LoadConfig, LoadError, LoadInput, LoadOutput, LoadTask, PublishInput, PublishOutput,
    PublishTask, SnapshotInfo, PUBLISHED_SCHEMA,
};
