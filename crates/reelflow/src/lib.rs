//! reelflow as a library: configuration, database selection, the engine, the DAG, the
//! operator actions and the HTTP API, so the binary stays thin and tests drive the same code.

pub mod api;
pub mod attempt_log;
pub mod config;
pub mod db;
pub mod engine;
pub mod http;
mod input_fields;
pub mod listener;
pub mod metrics;
pub mod ops;
pub mod pipeline;
pub mod probes;
pub mod process;
pub mod progress;
pub mod reports_api;
pub mod run_source;
pub mod serve;
pub mod ui;
