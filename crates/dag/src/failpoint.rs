//! Fault points for the fault-injection suite. `failpoint("load.mid_copy")` aborts the process
//! on the spot — no destructors, no cleanup, as `kill -9` would — when the environment variable
//! `REELFLOW_FAILPOINTS` lists that name (comma-separated). `name=sleep:MS` instead pauses the
//! calling thread for MS milliseconds the first time the point is reached (so a test can restart
//! PostgreSQL under a stage), after printing `reelflow: failpoint NAME: sleeping` to stderr.
//! Unset, a failpoint costs one load of a cached flag.
//!
//! This is the one place this crate reads its environment, and the line a sleeping failpoint
//! prints to stderr is the only output it makes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

static ACTIVE: OnceLock<Vec<String>> = OnceLock::new();
static SLEPT: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
static ANY: AtomicBool = AtomicBool::new(true);

/// Every failpoint, so the suite can cover them all and a typo cannot pass silently.
pub const FAILPOINTS: &[&str] = &[
    "fetch.mid_body",
    "fetch.before_commit",
    "clean.after_movies",
    "clean.mid_ratings",
    "clean.before_swap",
    "clean.mid_upload",
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

/// Aborts (or pauses) the process if `name` is an active failpoint.
pub fn failpoint(name: &'static str) {
    debug_assert!(FAILPOINTS.contains(&name), "unknown failpoint {name}");
    if !ANY.load(Ordering::Relaxed) {
        return;
    }
    let active = active();
    if active.is_empty() {
        ANY.store(false, Ordering::Relaxed);
        return;
    }
    for a in active {
        let (point, action) = a.split_once('=').unwrap_or((a, "abort"));
        if point != name {
            continue;
        }
        match action.strip_prefix("sleep:").and_then(|ms| ms.parse::<u64>().ok()) {
            Some(ms) => {
                let mut slept = SLEPT.lock().unwrap_or_else(|e| e.into_inner());
                if slept.contains(&name) {
                    return;
                }
                slept.push(name);
                drop(slept);
                eprintln!("reelflow: failpoint {name}: sleeping");
                std::thread::sleep(Duration::from_millis(ms));
            }
            None => {
                eprintln!("reelflow: failpoint {name}: aborting");
                std::process::abort();
            }
        }
    }
}
