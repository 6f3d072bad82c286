//! Rollback, roll-forward and retention follow the publish history (issue 13, point 1): runs
//! of older periods never take the slots that rollback needs, and rollback publishes what
//! `movies` showed before the current snapshot.

use std::collections::HashMap;

use reelflow::config::Config;
use reelflow_e2e::{fixture, pg::TestDb};
use reelflow_load::RollTarget;
use sqlx::PgPool;

fn config(db: &TestDb, dir: &std::path::Path) -> Config {
    let source = dir.join("the-movies-dataset.zip");
    std::fs::write(&source, fixture::zip()).unwrap();
    let vars: HashMap<&str, String> = [
        ("DATABASE_URL", db.url.clone()),
        ("REELFLOW_SOURCE", source.display().to_string()),
        ("REELFLOW_ARTIFACTS_DIR", dir.join("artifacts").display().to_string()),
        // Every rerun loads a new snapshot, as a changed source would.
        ("REELFLOW_LOAD_REUSE_UNCHANGED", "false".into()),
        ("REELFLOW_LOAD_KEEP_PERIODS", "2".into()),
    ]
    .into_iter()
    .collect();
    Config::load(None, &|k| vars.get(k).cloned()).expect("test config")
}

async fn run(cfg: &Config, pool: &PgPool, period: &str, rerun: bool) -> i64 {
    let r = reelflow::pipeline::run_period(cfg, pool, period.parse().unwrap(), rerun)
        .await
        .unwrap();
    assert!(r.succeeded(), "{}", r.failure());
    r.outputs["load"]["snapshot_id"].as_i64().unwrap()
}

async fn states(pool: &PgPool) -> Vec<(i64, String, String)> {
    sqlx::query_as("SELECT id, period, state FROM reelflow.snapshots ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

fn state_of(all: &[(i64, String, String)], id: i64) -> &str {
    &all.iter().find(|s| s.0 == id).unwrap().2
}

async fn targets(pool: &PgPool) -> (Option<i64>, Option<i64>) {
    let snaps = reelflow_load::list_snapshots(pool).await.unwrap();
    let back: Vec<i64> = snaps.iter().filter(|s| s.rollback_target).map(|s| s.id).collect();
    let fwd: Vec<i64> = snaps.iter().filter(|s| s.rollforward_target).map(|s| s.id).collect();
    assert!(back.len() <= 1 && fwd.len() <= 1, "{back:?} {fwd:?}");
    (back.first().copied(), fwd.first().copied())
}

async fn published(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT id FROM reelflow.snapshots WHERE state = 'published'")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn rollback_publishes_what_movies_showed_before_not_an_older_periods_snapshot() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&db, dir.path());
    let pool = &db.pool;
    let (keep, periods) = (cfg.load.keep_previous, cfg.load.keep_periods);
    assert_eq!((keep, periods), (2, 2));

    // The sequence: 2026-11 twice, two backfilled older periods, 2026-11 again.
    let a = run(&cfg, pool, "2026-11", false).await;
    let b = run(&cfg, pool, "2026-11", true).await;
    let sep = run(&cfg, pool, "2026-09", false).await;
    let jul = run(&cfg, pool, "2026-07", false).await;
    let c = run(&cfg, pool, "2026-11", true).await;
    assert_eq!(published(pool).await, c);
    let all = states(pool).await;
    // The snapshots rollback needs (b, then a) are kept; the older periods keep theirs too.
    for id in [a, b, sep, jul] {
        assert_eq!(state_of(&all, id), "retired", "{id}: {all:?}");
    }
    assert_eq!(targets(pool).await, (Some(b), None));

    // Rollback: b (what movies showed before c), not the 2026-07 backfill.
    let out = reelflow_load::roll(pool, RollTarget::Previous, keep, periods)
        .await
        .unwrap();
    assert_eq!(
        (out.snapshot_id, out.period.as_str(), out.replaced),
        (b, "2026-11", Some(c))
    );
    assert_eq!(published(pool).await, b);
    assert_eq!(state_of(&states(pool).await, c), "rolled_back");
    assert_eq!(targets(pool).await, (Some(a), Some(c)));

    // A second rollback goes one step further back, not back to c.
    let out = reelflow_load::roll(pool, RollTarget::Previous, keep, periods)
        .await
        .unwrap();
    assert_eq!(out.snapshot_id, a);
    assert_eq!(targets(pool).await, (None, Some(b)));
    let err = reelflow_load::roll(pool, RollTarget::Previous, keep, periods)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("was the first one published"), "{err}");

    // Roll forward twice: b, then c again.
    let out = reelflow_load::roll(pool, RollTarget::Forward, keep, periods)
        .await
        .unwrap();
    assert_eq!((out.snapshot_id, out.replaced), (b, Some(a)));
    let out = reelflow_load::roll(pool, RollTarget::Forward, keep, periods)
        .await
        .unwrap();
    assert_eq!((out.snapshot_id, out.replaced), (c, Some(b)));
    assert_eq!(targets(pool).await, (Some(b), None));
    let err = reelflow_load::roll(pool, RollTarget::Forward, keep, periods)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nothing to roll forward to"), "{err}");

    // Older periods: the newest snapshot of each, for the two newest periods. A third older
    // period pushes 2026-07 out; the publish history chain (b, a) stays.
    let aug = run(&cfg, pool, "2026-08", false).await;
    let all = states(pool).await;
    assert_eq!(state_of(&all, jul), "dropped", "{all:?}");
    assert_eq!(state_of(&all, aug), "retired", "{all:?}");
    assert_eq!(state_of(&all, sep), "retired", "{all:?}");
    assert_eq!(targets(pool).await.0, Some(b));
    // A rerun of an older period replaces that period's kept snapshot.
    let sep2 = run(&cfg, pool, "2026-09", true).await;
    let all = states(pool).await;
    assert_eq!(state_of(&all, sep), "dropped", "{all:?}");
    assert_eq!(state_of(&all, sep2), "retired", "{all:?}");
    // --to: any kept snapshot; the next rollback returns to what it replaced.
    let out = reelflow_load::roll(pool, RollTarget::Id(sep2), keep, periods)
        .await
        .unwrap();
    assert_eq!((out.snapshot_id, out.period.as_str()), (sep2, "2026-09"));
    assert_eq!(targets(pool).await.0, Some(c));
    let out = reelflow_load::roll(pool, RollTarget::Previous, keep, periods)
        .await
        .unwrap();
    assert_eq!(out.snapshot_id, c);
    let err = reelflow_load::roll(pool, RollTarget::Id(c), keep, periods)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("published snapshot already"), "{err}");

    // And with every 2026-11 rerun the chain moves: c, then b stay; a goes.
    let d = run(&cfg, pool, "2026-11", true).await;
    let all = states(pool).await;
    assert_eq!(state_of(&all, d), "published");
    assert_eq!(state_of(&all, c), "retired", "{all:?}");
    assert_eq!(state_of(&all, b), "retired", "{all:?}");
    assert_eq!(state_of(&all, a), "dropped", "{all:?}");
    let schemas: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_namespace n JOIN reelflow.snapshots s ON s.schema_name = n.nspname
         WHERE s.state = 'dropped'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(schemas, 0, "a dropped snapshot has no schema");
}
