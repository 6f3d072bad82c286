//! Operator commands of the real binary (issue 13): snapshots rollback / rollforward / --to and
//! `snapshots list --json`, runs cancel, backfill guards, diagnostics and CLI rough edges.
//! A file source, a real PostgreSQL.

use std::path::PathBuf;
use std::process::{Command, Output};

use reelflow_e2e::fixture;
use reelflow_e2e::pg::TestDb;

const BIN: &str = env!("CARGO_BIN_EXE_reelflow");

struct Env {
    db: TestDb,
    dir: tempfile::TempDir,
    source: PathBuf,
}

async fn env() -> Env {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("the-movies-dataset.zip");
    std::fs::write(&source, fixture::zip()).unwrap();
    Env { db, dir, source }
}

impl Env {
    fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &self.db.url)
            .env("REELFLOW_ARTIFACTS_DIR", self.dir.path().join("artifacts"))
            .env("REELFLOW_SOURCE", &self.source)
            .env("REELFLOW_LOAD_REUSE_UNCHANGED", "false")
            .env("REELFLOW_LOG", "warn");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn snapshots(e: &Env) -> Vec<serde_json::Value> {
    let out = e.ok(&["snapshots", "list", "--json"]);
    serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap_or_else(|err| panic!("{err}: {out}"))
}

fn marked(snaps: &[serde_json::Value], field: &str) -> Vec<i64> {
    snaps
        .iter()
        .filter(|s| s[field] == true)
        .map(|s| s["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_rollback_rollforward_and_to_follow_the_publish_history() {
    let e = env().await;
    e.ok(&["run", "--period", "2026-11"]);
    e.ok(&["run", "--period", "2026-11", "--rerun"]);
    // An older period's snapshot (a backfill) is not what rollback picks.
    e.ok(&["run", "--period", "2026-09"]);
    let snaps = snapshots(&e);
    assert_eq!(snaps.len(), 3, "{snaps:?}");
    assert_eq!(marked(&snaps, "rollback_target"), [1]);
    assert_eq!(marked(&snaps, "rollforward_target"), Vec::<i64>::new());
    let table = e.ok(&["snapshots", "list"]);
    let line = table.lines().find(|l| l.trim_start().starts_with("1 ")).unwrap();
    assert!(line.ends_with("rollback target"), "{table}");

    let out = e.ok(&["snapshots", "rollback"]);
    assert_eq!(
        out.trim(),
        "published snapshot 1 (period 2026-11) again; snapshot 2 was rolled back",
        "{out}"
    );
    let snaps = snapshots(&e);
    assert_eq!(marked(&snaps, "rollforward_target"), [2]);
    assert!(e.ok(&["snapshots", "list"]).contains("rollforward target"));

    let out = e.ok(&["snapshots", "rollforward"]);
    assert_eq!(
        out.trim(),
        "published snapshot 2 (period 2026-11) again; snapshot 1 was retired",
        "{out}"
    );
    let o = e.run(&["snapshots", "rollforward"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("nothing to roll forward to"),
        "{}",
        text(&o)
    );

    let out = e.ok(&["snapshots", "rollback", "--to", "3"]);
    assert!(out.starts_with("published snapshot 3 (period 2026-09) again"), "{out}");
    let o = e.run(&["snapshots", "rollback", "--to", "99"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no such snapshot"),
        "{}",
        text(&o)
    );
    // Back to what --to replaced.
    let out = e.ok(&["snapshots", "rollback"]);
    assert!(out.starts_with("published snapshot 2 (period 2026-11) again"), "{out}");
    assert!(!out.contains("Some("), "{out}");
}
