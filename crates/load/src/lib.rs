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

mod copy;
mod diff;
mod gate;
mod graph;
mod orphans;
mod plan;
mod publish;
mod reports;
mod retention;
mod reuse;
mod snapshot;
mod task;
mod types;

pub use gate::{
    diff_summary, failure_message, run_checks, thousands, Check, DiffSummary, GateConfig, GateOutput, SqlCheck,
    ValidateInput, ValidateTask,
};
pub use orphans::sweep_orphans;
pub use publish::{list_snapshots, publish, publish_with, roll, rollback};
pub use reports::{Report, REPORTS};
pub use retention::sweep_artifacts;
pub use reuse::{build_id, reuse_snapshot, unchanged_snapshot};
pub use snapshot::{create_table_sql, fk_sql, key_sql, load_snapshot};
pub use task::{LoadInput, LoadTask, PublishInput, PublishTask};
pub use types::q as quote_ident;
pub use types::{LoadConfig, LoadError, LoadOutput, PublishOutput, RollTarget, SnapshotInfo, PUBLISHED_SCHEMA};
