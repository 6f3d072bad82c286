//! The cleaning pipeline: zip entries -> CSV records -> checked rows in COPY text format,
//! plus rejects with reasons and a manifest.
//!
//! This module runs the pipeline (two threads: the movie files on one, links and ratings on
//! the other); `record` reads one CSV record at a time and writes rejects; `fields` holds the
//! field writers; `movies`, `credits`, `links` and `ratings` hold each file's rules. A new file
//! in the zip means a new module beside them, its tables in `crate::schema::TABLES`, and one
//! `process` call in `clean_movie_files` or `clean_links_and_ratings`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Read, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often long entries log their progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

use csv::ByteRecord;
use sha2::{Digest, Sha256};
use zip::ZipArchive;

use crate::copy::CopyWriter;
use crate::input::{self, Batch, LimitExceeded, Limited, Records};
use crate::literal::{Document, Items, Lit};
use crate::manifest::{FileStats, Manifest, RejectsOutput, TableOutput, MANIFEST_FORMAT};
use crate::rating_keys::{self, PairSet, RatingKeys, Seen};
use crate::scalar::{
    is_date, is_f32, is_f64, parse_bool, parse_i64, parse_integral_float, parse_plain_id, parse_positive_id,
};
use crate::schema::{T, TABLES};
use crate::{CleanConfig, CleanError};

mod credits;
mod fields;
mod links;
mod movies;
mod ratings;
mod record;

use credits::*;
use fields::*;
use links::*;
use movies::*;
use ratings::*;
use record::*;

/// The entries every archive must hold at its root, in the order they are processed
/// (movies first: the other files are checked against its ids).
pub const REQUIRED_ENTRIES: [&str; 7] = [
    "movies_metadata.csv",
    "credits.csv",
    "keywords.csv",
    "links.csv",
    "links_small.csv",
    "ratings.csv",
    "ratings_small.csv",
];

/// Name of the rejects file in the output folder.
pub const REJECTS_FILE: &str = "rejects.tsv";
/// Name of the manifest file in the output folder.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Why a record was rejected: a bounded set of codes, usable as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RejectReason {
    /// The record has more or fewer fields than the header.
    FieldCount,
    /// A movie id (`id`) is not a positive integer.
    BadId,
    /// A movie id already seen in the same file (the first row in file order wins).
    DuplicateId,
    /// A credits or keywords row for a movie that is not an accepted movie.
    UnknownMovie,
    /// A links or ratings key (`movieId`, `userId`) is not a positive integer.
    BadKey,
    /// A links `movieId` already seen in the same file (the first row wins).
    DuplicateKey,
    /// The record is not valid UTF-8.
    InvalidUtf8,
    /// A ratings (user, movie) pair already seen anywhere earlier in the same file (the first
    /// row in file order wins).
    DuplicateRating,
}

impl RejectReason {
    /// Every reason, in code order.
    pub const ALL: [RejectReason; 8] = [
        RejectReason::FieldCount,
        RejectReason::BadId,
        RejectReason::DuplicateId,
        RejectReason::UnknownMovie,
        RejectReason::BadKey,
        RejectReason::DuplicateKey,
        RejectReason::InvalidUtf8,
        RejectReason::DuplicateRating,
    ];

    /// The snake_case code written to `rejects.tsv` and the manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::FieldCount => "field_count",
            RejectReason::BadId => "bad_id",
            RejectReason::DuplicateId => "duplicate_id",
            RejectReason::UnknownMovie => "unknown_movie",
            RejectReason::BadKey => "bad_key",
            RejectReason::DuplicateKey => "duplicate_key",
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::DuplicateRating => "duplicate_rating",
        }
    }
}

/// A fast hasher for integer keys (ids are not attacker-chosen hash flooding material: the
/// worst case is a slower clean, bounded by the entry size limit).
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_i64(&mut self, v: i64) {
        self.0 = (self.0 ^ v as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }
}

pub(crate) type IdSet = HashSet<i64, BuildHasherDefault<IdHasher>>;

/// Cleans the archive at `zip_path` into `out_dir` (replaced if it exists).
///
/// Writes one `<table>.tsv` per entry of [`crate::TABLES`] in PostgreSQL COPY text format,
/// `rejects.tsv` and `manifest.json`, and returns the manifest. Everything is written to a
/// sibling temporary folder first and renamed into place at the end, so `out_dir` is never
/// half written. The same archive always gives byte-identical files.
pub fn clean_zip(zip_path: &Path, out_dir: &Path, cfg: &CleanConfig) -> Result<Manifest, CleanError> {
    clean_zip_with_cancel(zip_path, out_dir, cfg, &|| false, None)
}

/// [`clean_zip`] that polls `cancelled` every 65,536 records and stops with
/// [`CleanError::Cancelled`] (leaving `out_dir` as it was) when it returns true. With
/// `known_sha256` (the zip was just checked against its recorded checksum) the archive is not
/// read once more to hash it.
pub fn clean_zip_with_cancel(
    zip_path: &Path,
    out_dir: &Path,
    cfg: &CleanConfig,
    cancelled: &(dyn Fn() -> bool + Sync),
    known_sha256: Option<&str>,
) -> Result<Manifest, CleanError> {
    clean_zip_with_budget(zip_path, out_dir, cfg, cancelled, PAIR_BUDGET, known_sha256)
}

/// [`clean_zip_with_cancel`] holding at most `pair_budget` rating pairs while settling a
/// ratings file not grouped by user (tests pass a tiny one).
pub(super) fn clean_zip_with_budget(
    zip_path: &Path,
    out_dir: &Path,
    cfg: &CleanConfig,
    cancelled: &(dyn Fn() -> bool + Sync),
    pair_budget: usize,
    known_sha256: Option<&str>,
) -> Result<Manifest, CleanError> {
    let started = Instant::now();
    let name = out_dir.file_name().ok_or_else(|| {
        CleanError::io(
            out_dir,
            io::Error::new(io::ErrorKind::InvalidInput, "output folder has no name"),
        )
    })?;
    let parent = match out_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = parent.join(format!(".{}.tmp", name.to_string_lossy()));
    let old = parent.join(format!(".{}.old", name.to_string_lossy()));

    let file = File::open(zip_path).map_err(|e| CleanError::io(zip_path, e))?;
    let mut archive = ZipArchive::new(file).map_err(|source| CleanError::Zip {
        path: zip_path.to_path_buf(),
        source,
    })?;
    let inventory = input::inspect(&archive, zip_path, &REQUIRED_ENTRIES, cfg.max_entry_bytes)?;

    fs::create_dir_all(&parent).map_err(|e| CleanError::io(&parent, e))?;
    remove_dir_if_exists(&tmp)?;
    fs::create_dir(&tmp).map_err(|e| CleanError::io(&tmp, e))?;

    // Hash the archive on a second thread while the first one cleans (unless it is known).
    let stop_hash = AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        let hasher = s.spawn(|| match known_sha256 {
            Some(sha) => Ok(sha.to_string()),
            None => sha256_file(zip_path, &stop_hash),
        });
        let cleaned = clean_into(&mut archive, zip_path, &tmp, cfg, cancelled, pair_budget);
        if cleaned.is_err() {
            stop_hash.store(true, Ordering::Relaxed);
        }
        let hashed = hasher
            .join()
            .unwrap_or_else(|_| Err(CleanError::io(zip_path, io::Error::other("hashing thread panicked"))));
        cleaned.and_then(|(tables, files, rejects)| Ok((tables, files, rejects, hashed?)))
    });
    let (tables, files, rejects, sha) = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };

    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        source_sha256: sha,
        tables,
        files,
        rejects,
        ignored_entries: inventory.ignored,
    };
    let finish = || -> Result<(), CleanError> {
        let mut json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| CleanError::io(tmp.join(MANIFEST_FILE), io::Error::other(e)))?;
        json.push(b'\n');
        write_synced(&tmp.join(MANIFEST_FILE), &json)?;
        reelflow_dag::failpoint("clean.before_swap");
        // Swap the folders: out_dir is either the old complete one or the new complete one.
        remove_dir_if_exists(&old)?;
        if out_dir.exists() {
            fs::rename(out_dir, &old).map_err(|e| CleanError::io(out_dir, e))?;
        }
        fs::rename(&tmp, out_dir).map_err(|e| CleanError::io(out_dir, e))?;
        if let Ok(d) = File::open(&parent) {
            let _ = d.sync_all();
        }
        remove_dir_if_exists(&old)
    };
    if let Err(e) = finish() {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    tracing::info!(
        zip = %zip_path.display(),
        out = %out_dir.display(),
        records = manifest.total_records(),
        rows = manifest.total_rows(),
        rejected = manifest.total_rejected(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "clean finished"
    );
    Ok(manifest)
}

pub(super) fn remove_dir_if_exists(p: &Path) -> Result<(), CleanError> {
    match fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CleanError::io(p, e)),
    }
}

pub(super) fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), CleanError> {
    use std::io::Write;
    let mut f = File::create(path).map_err(|e| CleanError::io(path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| CleanError::io(path, e))
}

pub(super) fn sha256_file(path: &Path, stop: &AtomicBool) -> Result<String, CleanError> {
    let mut f = File::open(path).map_err(|e| CleanError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(String::new());
        }
        let n = match f.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CleanError::io(path, e)),
        };
        if n == 0 {
            return Ok(hex::encode(h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

pub(super) type Cleaned = (
    BTreeMap<String, TableOutput>,
    BTreeMap<String, FileStats>,
    RejectsOutput,
);

/// Writers for every table plus the rejects file.
pub(super) struct Sinks {
    pub(super) tables: Vec<CopyWriter>,
    pub(super) rejects: CopyWriter,
}

/// What the record loop needs besides the writers.
pub(super) struct Env<'a> {
    pub(super) zip_path: &'a Path,
    pub(super) limit: u64,
    pub(super) cancelled: &'a dyn Fn() -> bool,
}

pub(super) fn clean_into(
    archive: &mut ZipArchive<File>,
    zip_path: &Path,
    dir: &Path,
    cfg: &CleanConfig,
    cancelled: &(dyn Fn() -> bool + Sync),
    pair_budget: usize,
) -> Result<Cleaned, CleanError> {
    let create = |name: &str| {
        let p = dir.join(name);
        CopyWriter::create(&p).map_err(|e| CleanError::io(&p, e))
    };
    let mut sinks = Sinks {
        tables: TABLES
            .iter()
            .map(|t| create(&format!("{}.tsv", t.name)))
            .collect::<Result<_, _>>()?,
        rejects: create(REJECTS_FILE)?,
    };
    // The ratings arrive sorted by user: the load can split them into user ranges.
    for t in [T::Ratings, T::RatingsSmall] {
        sinks.tables[t as usize].track_key_order(cfg.cut_spacing_bytes.max(1));
    }
    // The links and ratings files need nothing from the movie files, so a second thread
    // cleans them (most of the bytes: ratings.csv) while this one cleans the movie files. It
    // owns its four tables and a rejects file of its own, appended after this thread's rejects
    // at the end: the output is the same as one thread's, byte for byte.
    const SECOND: [T; 5] = [T::Links, T::LinksSmall, T::Ratings, T::RatingsSmall, T::RatingsPerMovie];
    const SECOND_REJECTS: &str = ".rejects.second.tsv";
    let mut second = Sinks {
        tables: SECOND
            .iter()
            .map(|&t| {
                let w = &mut sinks.tables[t as usize];
                let placeholder = w.placeholder();
                std::mem::replace(w, placeholder)
            })
            .collect(),
        rejects: create(SECOND_REJECTS)?,
    };
    // Either thread's failure stops the other one at its next cancellation check.
    let stop = AtomicBool::new(false);
    let check = || stop.load(Ordering::Relaxed) || cancelled();
    let limit = cfg.max_entry_bytes;

    let (first, second_result) = std::thread::scope(|s| {
        let (check, stop) = (&check, &stop);
        // Lines of the second thread carry the caller's span (run, task, try) too.
        let span = tracing::Span::current();
        let other = s.spawn(move || {
            let _entered = span.enter();
            let r = clean_links_and_ratings(zip_path, limit, check, &mut second, pair_budget);
            if r.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            r.map(|files| (files, second))
        });
        let env = Env {
            zip_path,
            limit,
            cancelled: check,
        };
        let first = clean_movie_files(&env, archive, &mut sinks);
        if first.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        let second_result = other.join().unwrap_or_else(|_| {
            Err(CleanError::Corrupt {
                entry: "ratings.csv".into(),
                detail: "the cleaning thread panicked".into(),
            })
        });
        (first, second_result)
    });
    let (mut files, (more_files, mut second)) = match (first, second_result) {
        (Ok(a), Ok(b)) => (a, b),
        // The root cause, not the cancellation it caused in the other thread.
        (Err(CleanError::Cancelled), Err(e)) | (Err(e), _) | (Ok(_), Err(e)) => return Err(e),
    };
    files.extend(more_files);
    for (&t, w) in SECOND.iter().zip(second.tables) {
        sinks.tables[t as usize] = w;
    }
    let w = &mut second.rejects;
    w.finish().map_err(|e| CleanError::io(w.path(), e))?;
    let second_path = dir.join(SECOND_REJECTS);
    sinks
        .rejects
        .append_file(&second_path, second.rejects.rows())
        .map_err(|e| CleanError::io(&second_path, e))?;
    fs::remove_file(&second_path).map_err(|e| CleanError::io(&second_path, e))?;

    let mut tables = BTreeMap::new();
    for (def, w) in TABLES.iter().zip(sinks.tables.iter_mut()) {
        w.finish().map_err(|e| CleanError::io(w.path(), e))?;
        tables.insert(
            def.name.to_string(),
            TableOutput {
                file: format!("{}.tsv", def.name),
                rows: w.rows(),
                cuts: w.cuts(),
            },
        );
    }
    let w = &mut sinks.rejects;
    w.finish().map_err(|e| CleanError::io(w.path(), e))?;
    let rejects = RejectsOutput {
        file: REJECTS_FILE.to_string(),
        rows: w.rows(),
    };
    Ok((tables, files, rejects))
}

/// movies_metadata.csv, then credits.csv and keywords.csv (which keep only known movies).
pub(super) fn clean_movie_files(
    env: &Env<'_>,
    archive: &mut ZipArchive<File>,
    sinks: &mut Sinks,
) -> Result<BTreeMap<String, FileStats>, CleanError> {
    let mut files = BTreeMap::new();
    let mut dims = Dims::default();
    let movie_ids = {
        let mut movies = MoviesFile {
            ids: IdSet::default(),
            dims: &mut dims,
            scratch: Vec::new(),
            doc: Document::new(),
        };
        let stats = process(
            env,
            archive,
            sinks,
            "movies_metadata.csv",
            MM_COLS,
            true,
            |row, t, u| movies.record(row, t, u),
        )?;
        files.insert("movies_metadata.csv".to_string(), stats);
        reelflow_dag::failpoint("clean.after_movies");
        movies.ids
    };
    {
        let mut seen = IdSet::default();
        let mut doc = Document::new();
        let stats = process(env, archive, sinks, "credits.csv", CREDITS_COLS, true, |row, t, u| {
            credits_record(row, t, u, &movie_ids, &mut seen, &mut doc)
        })?;
        files.insert("credits.csv".to_string(), stats);
    }
    {
        let mut seen = IdSet::default();
        let mut scratch = Vec::new();
        let mut doc = Document::new();
        let stats = process(env, archive, sinks, "keywords.csv", KEYWORDS_COLS, true, |row, t, u| {
            keywords_record(
                row,
                t,
                u,
                &movie_ids,
                &mut seen,
                &mut dims.keywords,
                &mut scratch,
                &mut doc,
            )
        })?;
        files.insert("keywords.csv".to_string(), stats);
    }
    Ok(files)
}

/// links, links_small, ratings and ratings_small, from an archive reader of their own, into
/// `sinks` whose tables are those four and ratings_per_movie, in that order. Finishes
/// (flushes and syncs) them.
pub(super) fn clean_links_and_ratings(
    zip_path: &Path,
    limit: u64,
    cancelled: &dyn Fn() -> bool,
    sinks: &mut Sinks,
    pair_budget: usize,
) -> Result<BTreeMap<String, FileStats>, CleanError> {
    let file = File::open(zip_path).map_err(|e| CleanError::io(zip_path, e))?;
    let mut archive = ZipArchive::new(file).map_err(|source| CleanError::Zip {
        path: zip_path.to_path_buf(),
        source,
    })?;
    let env = Env {
        zip_path,
        limit,
        cancelled,
    };
    let mut files = BTreeMap::new();
    for (entry, k) in [("links.csv", 0), ("links_small.csv", 1)] {
        let mut seen = IdSet::default();
        let stats = process(&env, &mut archive, sinks, entry, LINKS_COLS, true, |row, t, u| {
            links_record(row, &mut t[k], u, &mut seen)
        })?;
        files.insert(entry.to_string(), stats);
    }
    let mut totals = RatingTotals::default();
    let dir = sinks.rejects.path().parent().map(Path::to_path_buf).unwrap_or_default();
    for (entry, k) in [("ratings.csv", 2), ("ratings_small.csv", 3)] {
        let mut pass = RatingsPass {
            keys: RatingKeys::default(),
            spill: None,
            spill_path: dir.join(format!(".{entry}.deferred")),
            deferred: 0,
        };
        let mut seen = 0u64;
        let main = entry == "ratings.csv";
        let mut stats = process(&env, &mut archive, sinks, entry, RATINGS_COLS, false, |row, t, u| {
            seen += 1;
            if seen == 2 && main {
                reelflow_dag::failpoint("clean.mid_ratings");
            }
            ratings_record(row, &mut t[k], u, &mut pass, main.then_some(&mut totals))
        })?;
        if pass.keys.deferred_any() {
            let Sinks { tables, rejects } = &mut *sinks;
            let totals = main.then_some(&mut totals);
            resolve_deferred(
                &env,
                &mut archive,
                entry,
                pass,
                &mut tables[k],
                rejects,
                totals,
                &mut stats,
                pair_budget,
            )?;
        }
        files.insert(entry.to_string(), stats);
    }
    write_totals(&totals, &mut sinks.tables[4])?;
    for w in &mut sinks.tables {
        w.finish().map_err(|e| CleanError::io(w.path(), e))?;
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A ratings file far from grouped by user (sorted by movie), cleaned with room for three
    /// pairs: many partitions, each settled with its own reads. The same rows and rejects as
    /// with the default budget (one partition), and as a set of every pair says.
    #[test]
    fn deferred_ratings_settle_the_same_in_many_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let mut ratings = String::from("userId,movieId,rating,timestamp\n");
        let mut seen = HashSet::new();
        let (mut kept, mut dups) = (Vec::new(), 0);
        let mut line = 1;
        for movie in 1..=40u32 {
            for user in (1..=30).filter(|u| !(u * movie).is_multiple_of(7)) {
                // Every eleventh row repeats its pair further down.
                for _ in 0..1 + usize::from((user + movie).is_multiple_of(11)) {
                    line += 1;
                    let r = format!("{user},{movie},{}.5,{line}", (user + movie) % 5);
                    if seen.insert((user, movie)) {
                        kept.push(r.replace(',', "\t"));
                    } else {
                        dups += 1;
                    }
                    ratings += &r;
                    ratings.push('\n');
                }
            }
        }
        assert!(dups > 10);
        let zip_path = dir.path().join("in.zip");
        let mut zw = zip::ZipWriter::new(File::create(&zip_path).unwrap());
        let opts = zip::write::SimpleFileOptions::default();
        for name in REQUIRED_ENTRIES {
            zw.start_file(name, opts).unwrap();
            let text = match name {
                "movies_metadata.csv" => "id\n".to_string(),
                "credits.csv" => "cast,crew,id\n".to_string(),
                "keywords.csv" => "id,keywords\n".to_string(),
                "links.csv" | "links_small.csv" => "movieId,imdbId,tmdbId\n".to_string(),
                _ => ratings.clone(),
            };
            let text = if name == "movies_metadata.csv" {
                format!("{}\n", MM_COLS.join(","))
            } else {
                text
            };
            zw.write_all(text.as_bytes()).unwrap();
        }
        zw.finish().unwrap();
        let read = |out: &Path, file: &str| -> Vec<String> {
            let mut v: Vec<String> = fs::read_to_string(out.join(file))
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect();
            v.sort();
            v
        };
        let mut outs = Vec::new();
        for (name, budget) in [("one", PAIR_BUDGET), ("many", 3)] {
            let out = dir.path().join(name);
            let m = clean_zip_with_budget(&zip_path, &out, &CleanConfig::default(), &|| false, budget, None).unwrap();
            let f = &m.files["ratings.csv"];
            assert_eq!(f.accepted, kept.len() as u64, "{name}");
            assert_eq!(f.rejected["duplicate_rating"], dups, "{name}");
            let mut want = kept.clone();
            want.sort();
            assert_eq!(read(&out, "ratings.tsv"), want, "{name}");
            assert_eq!(read(&out, "ratings_small.tsv"), want, "{name}");
            outs.push((read(&out, "rejects.tsv"), read(&out, "ratings_per_movie.tsv")));
        }
        assert_eq!(outs[0], outs[1]);
    }
}
