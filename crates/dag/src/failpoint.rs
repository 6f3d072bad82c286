//! Crash points for the fault-injection suite: `failpoint("load.mid_copy")` aborts the process
//! on the spot — no destructors, no cleanup, as `kill -9` would — when the environment variable
//! `REELFLOW_FAILPOINTS` lists that name (comma-separated). Unset, a failpoint costs one load of
//! a cached flag.
//!
//! This is the one place this crate reads its environment; it never writes anything.

use std::sync::OnceLock;

static ACTIVE: OnceLock<Vec<String>> = OnceLock::new();

/// Every failpoint, so the suite can cover them all and a typo cannot pass silently.
pub const FAILPOINTS: &[&str] = &[
    "fetch.mid_body",
    "fetch.before_commit",
    "clean.after_movies",
    "clean.mid_ratings",
    "clean.before_swap",
    "load.after_schema",
    "load.mid_copy",
    "load.after_copy",
    "load.after_keys",
    "load.before_ready",
    "publish.before_commit",
    "publish.after_commit",
    "engine.before_record",
];

fn active() -> &'static [String] {
    ACTIVE.get_or_init(|| {
        std::env::var("REELFLOW_FAILPOINTS")
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// Aborts the process if `name` is an active failpoint.
pub fn failpoint(name: &'static str) {
    debug_assert!(FAILPOINTS.contains(&name), "unknown failpoint {name}");
    let active = active();
    if !active.is_empty() && active.iter().any(|a| a == name) {
        eprintln!("reelflow: failpoint {name}: aborting");
        std::process::abort();
    }
}
