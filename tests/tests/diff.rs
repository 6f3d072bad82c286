//! The snapshot diff against a real PostgreSQL: two fixture months with known additions,
//! removals and changes, made here by editing the fixture's movies file.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use reelflow::config::Config;
use reelflow_e2e::{fixture, pg::TestDb};
use sqlx::PgPool;

fn config(db: &TestDb, source: &Path, artifacts: &Path) -> Config {
    let vars: HashMap<&str, String> = [
        ("DATABASE_URL", db.url.clone()),
        ("REELFLOW_SOURCE", source.display().to_string()),
        ("REELFLOW_ARTIFACTS_DIR", artifacts.display().to_string()),
    ]
    .into_iter()
    .collect();
    Config::load(None, &|k| vars.get(k).cloned()).expect("test config")
}

/// `diff_summary`: base snapshot, added, removed, changed, unchanged.
type Summary = (Option<i64>, i64, i64, i64, i64);

/// The published diff: movie id -> change, and the summary row.
async fn published_diff(pool: &PgPool) -> (BTreeMap<i64, String>, Summary) {
    let rows: Vec<(i64, String)> = sqlx::query_as("SELECT movie_id, change FROM movies.diff_movies")
        .fetch_all(pool)
        .await
        .unwrap();
    let summary =
        sqlx::query_as("SELECT base_snapshot_id, added, removed, changed, unchanged FROM movies.diff_summary")
            .fetch_one(pool)
            .await
            .unwrap();
    (rows.into_iter().collect(), summary)
}

async fn movie_ids(pool: &PgPool) -> BTreeSet<i64> {
    sqlx::query_scalar::<_, i64>("SELECT id FROM movies.movies")
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// One record of the fixture's movies file: the line holding `,<id>,tt<id padded>,`.
fn line_of(movies: &str, id: i64) -> &str {
    let key = format!(",{id},tt{id:0>7},");
    let mut lines = movies.lines().filter(|l| l.contains(&key));
    let line = lines.next().unwrap_or_else(|| panic!("no line for {id}"));
    assert!(lines.next().is_none() || id == 100, "one line for {id}");
    line
}

#[tokio::test]
async fn the_diff_names_the_movies_added_removed_and_changed_since_the_published_snapshot() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("the-movies-dataset.zip");
    std::fs::write(&source, fixture::zip()).unwrap();
    let cfg = config(&db, &source, &dir.path().join("artifacts"));
    let pool = &db.pool;

    // First month: nothing was published, every movie is added.
    let a = reelflow::pipeline::run_period(&cfg, pool, "2026-01".parse().unwrap(), false)
        .await
        .unwrap();
    assert!(a.succeeded(), "{}", a.failure());
    let a_id = a.outputs["publish"]["snapshot_id"].as_i64().unwrap();
    let a_movies = movie_ids(pool).await;
    assert!(a_movies.len() >= 7, "{a_movies:?}");
    let (changes, summary) = published_diff(pool).await;
    assert_eq!(changes.keys().copied().collect::<BTreeSet<_>>(), a_movies);
    assert!(changes.values().all(|c| c == "added"));
    assert_eq!(summary, (None, a_movies.len() as i64, 0, 0, 0));

    // Second month: 101 removed, 103 and 105 changed (a revenue, a title), 108 added, and a
    // change in credits only (not a movie field) for 100.
    let movies = fixture::movies_metadata();
    let mut edited: String = movies
        .split_inclusive('\n')
        .filter(|l| !l.contains(",101,tt0000101,"))
        .collect();
    edited = edited.replace(",2787965087,", ",2787965088,");
    assert!(edited.contains("Amélie — 東京"));
    edited = edited.replace("Amélie — 東京", "Amélie 2");
    edited += &line_of(&movies, 104)
        .replace(",104,tt0000104,", ",108,tt0000108,")
        .replace("Undated", "Added Later");
    edited.push('\n');
    let entries: Vec<(&str, Vec<u8>)> = fixture::entries()
        .into_iter()
        .map(|(name, data)| match name {
            "movies_metadata.csv" => (name, edited.clone().into_bytes()),
            "credits.csv" => (
                name,
                String::from_utf8(data)
                    .unwrap()
                    .replace("Tom O'Hara", "Tom O'Hare")
                    .into_bytes(),
            ),
            _ => (name, data),
        })
        .collect();
    std::fs::write(&source, fixture::zip_bytes(&entries)).unwrap();
    let b = reelflow::pipeline::run_period(&cfg, pool, "2026-02".parse().unwrap(), false)
        .await
        .unwrap();
    assert!(b.succeeded(), "{}", b.failure());
    assert_ne!(b.outputs["publish"]["snapshot_id"].as_i64().unwrap(), a_id);
    let b_movies = movie_ids(pool).await;

    // Worked out from the edits alone.
    let added: BTreeSet<i64> = [108].into();
    let removed: BTreeSet<i64> = [101].into();
    let changed: BTreeSet<i64> = [103, 105].into();
    assert_eq!(
        b_movies,
        a_movies
            .difference(&removed)
            .copied()
            .chain(added.iter().copied())
            .collect()
    );
    let mut want: BTreeMap<i64, String> = BTreeMap::new();
    for (set, name) in [(&added, "added"), (&removed, "removed"), (&changed, "changed")] {
        want.extend(set.iter().map(|&id| (id, name.to_string())));
    }
    let (changes, summary) = published_diff(pool).await;
    assert_eq!(changes, want);
    let unchanged = a_movies.len() - removed.len() - changed.len();
    assert_eq!(summary, (Some(a_id), 1, 1, 2, unchanged as i64));

    // The same data again, loaded afresh: nothing differs from the month before.
    let mut again_cfg = cfg.clone();
    again_cfg.load.reuse_unchanged = false;
    let c = reelflow::pipeline::run_period(&again_cfg, pool, "2026-02".parse().unwrap(), true)
        .await
        .unwrap();
    assert!(c.succeeded(), "{}", c.failure());
    let b_id = b.outputs["publish"]["snapshot_id"].as_i64().unwrap();
    let (changes, summary) = published_diff(pool).await;
    assert!(changes.is_empty(), "{changes:?}");
    assert_eq!(summary, (Some(b_id), 0, 0, 0, b_movies.len() as i64));
}
