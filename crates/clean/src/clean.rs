//! The cleaning pipeline: zip entries -> CSV records -> checked rows in COPY text format,
//! plus rejects with reasons and a manifest.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often long entries log their progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

use csv::ByteRecord;
use sha2::{Digest, Sha256};
use zip::ZipArchive;

use crate::copy::CopyWriter;
use crate::input::{self, LimitExceeded, Limited, Records};
use crate::literal::{Document, Items, Lit};
use crate::manifest::{FileStats, Manifest, RejectsOutput, TableOutput, MANIFEST_FORMAT};
use crate::scalar::{is_date, is_f32, is_f64, parse_bool, parse_i64, parse_positive_id};
use crate::schema::{T, TABLES};
use crate::{CleanConfig, CleanError};

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
    /// A links `movieId` or a ratings (user, movie) pair already seen.
    DuplicateKey,
    /// The record is not valid UTF-8.
    InvalidUtf8,
}

impl RejectReason {
    /// Every reason, in code order.
    pub const ALL: [RejectReason; 7] = [
        RejectReason::FieldCount,
        RejectReason::BadId,
        RejectReason::DuplicateId,
        RejectReason::UnknownMovie,
        RejectReason::BadKey,
        RejectReason::DuplicateKey,
        RejectReason::InvalidUtf8,
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
    clean_zip_with_cancel(zip_path, out_dir, cfg, &|| false)
}

/// [`clean_zip`] that polls `cancelled` every 65,536 records and stops with
/// [`CleanError::Cancelled`] (leaving `out_dir` as it was) when it returns true.
pub fn clean_zip_with_cancel(
    zip_path: &Path,
    out_dir: &Path,
    cfg: &CleanConfig,
    cancelled: &(dyn Fn() -> bool + Sync),
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

    // Hash the archive on a second thread while the first one cleans.
    let stop_hash = AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        let hasher = s.spawn(|| sha256_file(zip_path, &stop_hash));
        let cleaned = clean_into(&mut archive, zip_path, &tmp, cfg, cancelled);
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

fn remove_dir_if_exists(p: &Path) -> Result<(), CleanError> {
    match fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CleanError::io(p, e)),
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), CleanError> {
    use std::io::Write;
    let mut f = File::create(path).map_err(|e| CleanError::io(path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| CleanError::io(path, e))
}

fn sha256_file(path: &Path, stop: &AtomicBool) -> Result<String, CleanError> {
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

type Cleaned = (
    BTreeMap<String, TableOutput>,
    BTreeMap<String, FileStats>,
    RejectsOutput,
);

/// Writers for every table plus the rejects file.
struct Sinks {
    tables: Vec<CopyWriter>,
    rejects: CopyWriter,
}

/// What the record loop needs besides the writers.
struct Env<'a> {
    zip_path: &'a Path,
    limit: u64,
    cancelled: &'a dyn Fn() -> bool,
}

fn clean_into(
    archive: &mut ZipArchive<File>,
    zip_path: &Path,
    dir: &Path,
    cfg: &CleanConfig,
    cancelled: &(dyn Fn() -> bool + Sync),
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
            let r = clean_links_and_ratings(zip_path, limit, check, &mut second);
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
fn clean_movie_files(
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
fn clean_links_and_ratings(
    zip_path: &Path,
    limit: u64,
    cancelled: &dyn Fn() -> bool,
    sinks: &mut Sinks,
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
    for (entry, k) in [("ratings.csv", 2), ("ratings_small.csv", 3)] {
        let mut state = RatingsState::new();
        let mut seen = 0u64;
        let main = entry == "ratings.csv";
        let stats = process(&env, &mut archive, sinks, entry, RATINGS_COLS, false, |row, t, u| {
            seen += 1;
            if seen == 2 && main {
                reelflow_dag::failpoint("clean.mid_ratings");
            }
            ratings_record(row, &mut t[k], u, &mut state, main.then_some(&mut totals))
        })?;
        files.insert(entry.to_string(), stats);
    }
    write_totals(&totals, &mut sinks.tables[4])?;
    for w in &mut sinks.tables {
        w.finish().map_err(|e| CleanError::io(w.path(), e))?;
    }
    Ok(files)
}

/// One CSV record with its required columns looked up by position.
struct Row<'r> {
    rec: &'r ByteRecord,
    idx: &'r [usize],
    /// Index of the record's last field.
    last: usize,
}

impl<'r> Row<'r> {
    /// The field of required column `k` (an index into the file's column list). The last
    /// field loses the `\r` of a CRLF line end (records end at `\n`, see
    /// [`input::spawn_reader`]).
    #[inline]
    fn get(&self, k: usize) -> &'r [u8] {
        let i = self.idx[k];
        let f = self.rec.get(i).unwrap_or(b"");
        if i == self.last {
            f.strip_suffix(b"\r").unwrap_or(f)
        } else {
            f
        }
    }
}

/// Ends a row, naming the file on a write error.
#[inline]
fn end(w: &mut CopyWriter) -> Result<(), CleanError> {
    match w.end_row() {
        Ok(()) => Ok(()),
        Err(e) => Err(CleanError::io(w.path(), e)),
    }
}

/// Reads one entry record by record: checks the header, width and (when `check_utf8`: files
/// with text columns; ratings hold only numbers, which are parsed byte by byte) UTF-8, hands
/// each record
/// to `handle` (which writes rows and returns `Some(reason)` to reject it before writing
/// anything), and writes rejects with their line and raw text.
fn process<F>(
    env: &Env<'_>,
    archive: &mut ZipArchive<File>,
    sinks: &mut Sinks,
    entry: &'static str,
    cols: &'static [&'static str],
    check_utf8: bool,
    mut handle: F,
) -> Result<FileStats, CleanError>
where
    F: FnMut(&Row<'_>, &mut [CopyWriter], &mut [u64]) -> Result<Option<RejectReason>, CleanError>,
{
    let started = Instant::now();
    let (zip_path, limit) = (env.zip_path, env.limit);
    let file = archive.by_name(entry).map_err(|source| CleanError::Zip {
        path: zip_path.to_path_buf(),
        source,
    })?;
    let stats = std::thread::scope(|scope| {
        let (mut records, reader) =
            input::spawn_reader(scope, Limited::new(file, limit)).map_err(|e| CleanError::io(zip_path, e))?;
        let result = read_records(env, &mut records, sinks, entry, cols, check_utf8, &mut handle);
        // Dropping the receiver lets the reading thread stop if the entry was not read to the end.
        drop(records);
        match reader.join() {
            Ok(()) => result,
            Err(_) => Err(CleanError::Corrupt {
                entry: entry.to_string(),
                detail: "the reading thread panicked".into(),
            }),
        }
    })?;
    tracing::info!(
        entry,
        records = stats.records,
        accepted = stats.accepted,
        rejected = stats.total_rejected(),
        unparsable = stats.total_unparsable(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "cleaned entry"
    );
    Ok(stats)
}

/// Finds the required columns in the header record: their positions, or `BadHeader`.
fn header_columns(entry: &str, header: Option<&ByteRecord>, cols: &[&str]) -> Result<Vec<usize>, CleanError> {
    let mut idx = Vec::with_capacity(cols.len());
    let mut missing = Vec::new();
    for &c in cols {
        match header.and_then(|h| h.iter().position(|name| name.trim_ascii() == c.as_bytes())) {
            Some(i) => idx.push(i),
            None => missing.push(c.to_string()),
        }
    }
    if missing.is_empty() {
        Ok(idx)
    } else {
        Err(CleanError::BadHeader {
            file: entry.to_string(),
            missing,
        })
    }
}

/// The record loop of [`process`].
fn read_records<F>(
    env: &Env<'_>,
    records: &mut Records,
    sinks: &mut Sinks,
    entry: &'static str,
    cols: &'static [&'static str],
    check_utf8: bool,
    handle: &mut F,
) -> Result<FileStats, CleanError>
where
    F: FnMut(&Row<'_>, &mut [CopyWriter], &mut [u64]) -> Result<Option<RejectReason>, CleanError>,
{
    let (zip_path, limit) = (env.zip_path, env.limit);
    let read_err = |e: csv::Error| read_error(e, entry, limit, zip_path);
    let mut header: Option<(usize, Vec<usize>)> = None;
    let mut count: u64 = 0;
    let mut accepted: u64 = 0;
    let mut rejected = [0u64; RejectReason::ALL.len()];
    let mut unparsable = vec![0u64; cols.len()];
    let progress_started = Instant::now();
    let mut last_progress = progress_started;
    while let Some(batch) = records.next_batch().map_err(read_err)? {
        for (i, rec) in batch.records().iter().enumerate() {
            let (width, idx) = match &header {
                Some((width, idx)) => (*width, idx.as_slice()),
                None => {
                    header = Some((rec.len(), header_columns(entry, Some(rec), cols)?));
                    continue;
                }
            };
            if rec.len() == 1 && rec.get(0) == Some(b"\r") {
                // A blank CRLF line (blank LF lines never reach here).
                continue;
            }
            count += 1;
            if count & 0xFFFF == 0 {
                if (env.cancelled)() {
                    return Err(CleanError::Cancelled);
                }
                if last_progress.elapsed() >= PROGRESS_EVERY {
                    last_progress = Instant::now();
                    let secs = progress_started.elapsed().as_secs_f64();
                    tracing::info!(
                        entry,
                        records = count,
                        records_per_sec = (count as f64 / secs) as u64,
                        "cleaning"
                    );
                }
            }
            let verdict = if rec.len() != width {
                Some(RejectReason::FieldCount)
            } else if check_utf8 && std::str::from_utf8(rec.as_slice()).is_err() {
                Some(RejectReason::InvalidUtf8)
            } else {
                let row = Row {
                    rec,
                    idx,
                    last: width - 1,
                };
                handle(&row, &mut sinks.tables, &mut unparsable)?
            };
            match verdict {
                None => accepted += 1,
                Some(reason) => {
                    rejected[reason as usize] += 1;
                    let (start, line) = rec.position().map_or((0, 0), |p| (p.byte(), p.line()));
                    let raw = batch.raw(start, batch.next_start(i));
                    write_reject(&mut sinks.rejects, entry, line, raw, reason)?;
                }
            }
        }
        records.recycle(batch);
    }
    if header.is_none() {
        header_columns(entry, None, cols)?;
    }

    let stats = FileStats {
        records: count,
        accepted,
        rejected: RejectReason::ALL
            .iter()
            .zip(rejected)
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| (r.as_str().to_string(), n))
            .collect(),
        unparsable: cols
            .iter()
            .zip(unparsable)
            .filter(|(_, n)| *n > 0)
            .map(|(c, n)| ((*c).to_string(), n))
            .collect(),
    };
    Ok(stats)
}

fn read_error(e: csv::Error, entry: &str, limit: u64, zip_path: &Path) -> CleanError {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => {
            if e.get_ref().is_some_and(|inner| inner.is::<LimitExceeded>()) {
                return CleanError::EntryTooLarge {
                    name: entry.to_string(),
                    limit,
                };
            }
            match e.kind() {
                io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::UnexpectedEof => {
                    CleanError::Corrupt {
                        entry: entry.to_string(),
                        detail: e.to_string(),
                    }
                }
                _ => CleanError::io(zip_path, e),
            }
        }
        other => CleanError::Corrupt {
            entry: entry.to_string(),
            detail: format!("{other:?}"),
        },
    }
}

/// Writes one rejects row: file, line, reason, raw text.
///
/// `raw` runs from where the CSV reader started the record to where the next one starts:
/// blank lines before it are skipped (advancing the line number) and the line end is cut. Invalid UTF-8 is replaced by U+FFFD, and so is NUL (PostgreSQL
/// text cannot hold it).
fn write_reject(
    w: &mut CopyWriter,
    entry: &str,
    mut line: u64,
    raw: &[u8],
    reason: RejectReason,
) -> Result<(), CleanError> {
    let lead = raw.iter().take_while(|&&c| c == b'\n' || c == b'\r').count();
    line += raw[..lead].iter().filter(|&&c| c == b'\n').count() as u64;
    let mut raw = &raw[lead..];
    if let Some(r) = raw.strip_suffix(b"\n") {
        raw = r;
    }
    if let Some(r) = raw.strip_suffix(b"\r") {
        raw = r;
    }
    w.text(entry.as_bytes());
    w.int(line as i64);
    w.raw(reason.as_str().as_bytes());
    match std::str::from_utf8(raw) {
        Ok(s) if !raw.contains(&0) => w.text(s.as_bytes()),
        _ => {
            let fixed = String::from_utf8_lossy(raw).replace('\0', "\u{FFFD}");
            w.text(fixed.as_bytes());
        }
    }
    end(w)
}

// ---------------------------------------------------------------------------------------------
// Field helpers. `u` is the file's unparsable counters, `c` the column's index in them.

/// A text field: empty is NULL; a NUL byte makes it NULL and unparsable.
#[inline]
fn text(w: &mut CopyWriter, b: &[u8], u: &mut [u64], c: usize) {
    if b.is_empty() {
        w.null();
    } else if b.contains(&0) {
        u[c] += 1;
        w.null();
    } else {
        w.text(b);
    }
}

/// A bigint field (`zero_is_null`: the dataset's 0 for "unknown" becomes NULL).
#[inline]
fn bigint(w: &mut CopyWriter, b: &[u8], u: &mut [u64], c: usize, zero_is_null: bool) {
    if b.is_empty() {
        return w.null();
    }
    match parse_i64(b) {
        Some(0) if zero_is_null => w.null(),
        // Checked digits: the source text is what PostgreSQL would read.
        Some(_) => w.raw(b),
        None => {
            u[c] += 1;
            w.null();
        }
    }
}

/// A field kept as its source text when `valid` accepts it, else NULL and unparsable.
#[inline]
/// Writes `b` when `valid`, else NULL (counting a non-empty value as unparsable); returns
/// whether the value was written.
fn checked(w: &mut CopyWriter, b: &[u8], u: &mut [u64], c: usize, valid: fn(&[u8]) -> bool) -> bool {
    if b.is_empty() {
        w.null();
        false
    } else if valid(b) {
        w.raw(b);
        true
    } else {
        u[c] += 1;
        w.null();
        false
    }
}

#[inline]
fn boolean(w: &mut CopyWriter, b: &[u8], u: &mut [u64], c: usize) {
    if b.is_empty() {
        return w.null();
    }
    match parse_bool(b) {
        Some(v) => w.bool(v),
        None => {
            u[c] += 1;
            w.null();
        }
    }
}

/// Parses a literal cell. `Ok(None)` for an empty cell; `Err(())` (counted by the caller) when
/// it is not a Python literal.
#[inline]
fn literal_cell<'d>(doc: &'d mut Document, b: &'d [u8]) -> Result<Option<Lit<'d>>, ()> {
    if b.is_empty() {
        return Ok(None);
    }
    let s = std::str::from_utf8(b).map_err(|_| ())?;
    doc.parse(s).map(Some).map_err(|_| ())
}

/// A literal list cell: its elements, or `None` (the cell counted as unparsable when it was
/// not empty).
#[inline]
fn literal_list<'d>(doc: &'d mut Document, b: &'d [u8], u: &mut [u64], c: usize) -> Option<Items<'d>> {
    match literal_cell(doc, b) {
        Ok(Some(v)) => {
            let items = v.items();
            if items.is_none() && !v.is_none() {
                u[c] += 1;
            }
            items
        }
        Ok(None) => None,
        Err(()) => {
            u[c] += 1;
            None
        }
    }
}

/// Text from a literal: `None` is NULL, a string is written, anything else (or a string with
/// NUL) is NULL and marks the cell bad.
#[inline]
fn lit_text(w: &mut CopyWriter, v: Option<Lit<'_>>, bad: &mut bool) {
    match v {
        Some(v) if v.is_none() => w.null(),
        Some(v) => match v.as_bytes() {
            Some(s) if !v.has_nul() => w.text(s),
            _ => {
                *bad = true;
                w.null();
            }
        },
        None => {
            *bad = true;
            w.null();
        }
    }
}

/// An integer from a literal, range-checked for the column type.
#[inline]
fn lit_int(w: &mut CopyWriter, v: Option<Lit<'_>>, min: i64, max: i64, bad: &mut bool) {
    match v {
        Some(v) if v.is_none() => w.null(),
        Some(v) => match v.as_i64() {
            Some(i) if (min..=max).contains(&i) => w.int(i),
            _ => {
                *bad = true;
                w.null();
            }
        },
        None => {
            *bad = true;
            w.null();
        }
    }
}

fn positive(v: Option<Lit<'_>>) -> Option<i64> {
    v.and_then(Lit::as_i64).filter(|&i| i > 0)
}

// ---------------------------------------------------------------------------------------------
// movies_metadata.csv

const MM_COLS: &[&str] = &[
    "adult",
    "belongs_to_collection",
    "budget",
    "genres",
    "homepage",
    "id",
    "imdb_id",
    "original_language",
    "original_title",
    "overview",
    "popularity",
    "poster_path",
    "production_companies",
    "production_countries",
    "release_date",
    "revenue",
    "runtime",
    "spoken_languages",
    "status",
    "tagline",
    "title",
    "video",
    "vote_average",
    "vote_count",
];
const ADULT: usize = 0;
const COLLECTION: usize = 1;
const BUDGET: usize = 2;
const GENRES: usize = 3;
const HOMEPAGE: usize = 4;
const ID: usize = 5;
const IMDB_ID: usize = 6;
const ORIGINAL_LANGUAGE: usize = 7;
const ORIGINAL_TITLE: usize = 8;
const OVERVIEW: usize = 9;
const POPULARITY: usize = 10;
const POSTER_PATH: usize = 11;
const COMPANIES: usize = 12;
const COUNTRIES: usize = 13;
const RELEASE_DATE: usize = 14;
const REVENUE: usize = 15;
const RUNTIME: usize = 16;
const LANGUAGES: usize = 17;
const STATUS: usize = 18;
const TAGLINE: usize = 19;
const TITLE: usize = 20;
const VIDEO: usize = 21;
const VOTE_AVERAGE: usize = 22;
const VOTE_COUNT: usize = 23;

/// Ids (or codes) of the dimension rows already written: the first one seen wins.
#[derive(Default)]
struct Dims {
    collections: IdSet,
    genres: IdSet,
    companies: IdSet,
    countries: HashSet<String>,
    languages: HashSet<String>,
    keywords: IdSet,
}

struct MoviesFile<'d> {
    ids: IdSet,
    dims: &'d mut Dims,
    scratch: Vec<i64>,
    doc: Document,
}

impl MoviesFile<'_> {
    fn record(
        &mut self,
        row: &Row<'_>,
        t: &mut [CopyWriter],
        u: &mut [u64],
    ) -> Result<Option<RejectReason>, CleanError> {
        let Some(id) = parse_positive_id(row.get(ID)) else {
            return Ok(Some(RejectReason::BadId));
        };
        if !self.ids.insert(id) {
            return Ok(Some(RejectReason::DuplicateId));
        }
        let collection_id = collection(
            &mut self.doc,
            row.get(COLLECTION),
            &mut t[T::Collections as usize],
            u,
            &mut self.dims.collections,
        )?;

        let w = &mut t[T::Movies as usize];
        w.int(id);
        text(w, row.get(IMDB_ID), u, IMDB_ID);
        text(w, row.get(TITLE), u, TITLE);
        text(w, row.get(ORIGINAL_TITLE), u, ORIGINAL_TITLE);
        text(w, row.get(ORIGINAL_LANGUAGE), u, ORIGINAL_LANGUAGE);
        text(w, row.get(OVERVIEW), u, OVERVIEW);
        text(w, row.get(TAGLINE), u, TAGLINE);
        text(w, row.get(HOMEPAGE), u, HOMEPAGE);
        text(w, row.get(POSTER_PATH), u, POSTER_PATH);
        text(w, row.get(STATUS), u, STATUS);
        boolean(w, row.get(ADULT), u, ADULT);
        boolean(w, row.get(VIDEO), u, VIDEO);
        bigint(w, row.get(BUDGET), u, BUDGET, true);
        bigint(w, row.get(REVENUE), u, REVENUE, true);
        checked(w, row.get(POPULARITY), u, POPULARITY, is_f64);
        checked(w, row.get(RUNTIME), u, RUNTIME, is_f64);
        checked(w, row.get(RELEASE_DATE), u, RELEASE_DATE, is_date);
        checked(w, row.get(VOTE_AVERAGE), u, VOTE_AVERAGE, is_f64);
        bigint(w, row.get(VOTE_COUNT), u, VOTE_COUNT, false);
        match collection_id {
            Some(c) => w.int(c),
            None => w.null(),
        }
        end(w)?;

        let (dims, scratch, doc) = (&mut *self.dims, &mut self.scratch, &mut self.doc);
        let [genres, movie_genres, companies, movie_companies, countries, movie_countries, languages, movie_languages] =
            pick(
                t,
                [
                    T::Genres,
                    T::MovieGenres,
                    T::Companies,
                    T::MovieCompanies,
                    T::Countries,
                    T::MovieCountries,
                    T::Languages,
                    T::MovieLanguages,
                ],
            );
        id_name_list(
            doc,
            row.get(GENRES),
            id,
            genres,
            movie_genres,
            &mut dims.genres,
            scratch,
            u,
            GENRES,
        )?;
        id_name_list(
            doc,
            row.get(COMPANIES),
            id,
            companies,
            movie_companies,
            &mut dims.companies,
            scratch,
            u,
            COMPANIES,
        )?;
        code_name_list(
            doc,
            row.get(COUNTRIES),
            "iso_3166_1",
            id,
            countries,
            movie_countries,
            &mut dims.countries,
            u,
            COUNTRIES,
        )?;
        code_name_list(
            doc,
            row.get(LANGUAGES),
            "iso_639_1",
            id,
            languages,
            movie_languages,
            &mut dims.languages,
            u,
            LANGUAGES,
        )?;
        Ok(None)
    }
}

/// Mutable references to distinct writers.
fn pick<const N: usize>(t: &mut [CopyWriter], which: [T; N]) -> [&mut CopyWriter; N] {
    let mut out: [Option<&mut CopyWriter>; N] = [const { None }; N];
    for (i, w) in t.iter_mut().enumerate() {
        if let Some(k) = which.iter().position(|x| *x as usize == i) {
            out[k] = Some(w);
        }
    }
    out.map(|w| w.expect("distinct table indexes"))
}

/// `belongs_to_collection`: a dict (or empty / `None`). Writes the collection row the first
/// time its id is seen and returns the id.
fn collection(
    doc: &mut Document,
    cell: &[u8],
    w: &mut CopyWriter,
    u: &mut [u64],
    seen: &mut IdSet,
) -> Result<Option<i64>, CleanError> {
    let v = match literal_cell(doc, cell) {
        Ok(Some(v)) => v,
        Ok(None) => return Ok(None),
        Err(()) => {
            u[COLLECTION] += 1;
            return Ok(None);
        }
    };
    if v.pairs().is_none() {
        if !v.is_none() {
            u[COLLECTION] += 1;
        }
        return Ok(None);
    }
    let [id, name, poster, backdrop] = v.fields(["id", "name", "poster_path", "backdrop_path"]);
    let Some(id) = positive(id) else {
        u[COLLECTION] += 1;
        return Ok(None);
    };
    let mut bad = false;
    if seen.insert(id) {
        w.int(id);
        lit_text(w, name, &mut bad);
        lit_text(w, poster, &mut bad);
        lit_text(w, backdrop, &mut bad);
        end(w)?;
    }
    if bad {
        u[COLLECTION] += 1;
    }
    Ok(Some(id))
}

/// A list of `{'id': int, 'name': str}` (genres, companies, keywords): a dimension row per new
/// id and one link row per distinct id of this movie. A malformed element is skipped and
/// makes the cell count as unparsable once.
#[allow(clippy::too_many_arguments)]
fn id_name_list(
    doc: &mut Document,
    cell: &[u8],
    movie_id: i64,
    dim: &mut CopyWriter,
    link: &mut CopyWriter,
    seen: &mut IdSet,
    scratch: &mut Vec<i64>,
    u: &mut [u64],
    c: usize,
) -> Result<(), CleanError> {
    let Some(items) = literal_list(doc, cell, u, c) else {
        return Ok(());
    };
    let mut bad = false;
    scratch.clear();
    for item in items {
        if item.pairs().is_none() {
            bad = true;
            continue;
        }
        let [id, name] = item.fields(["id", "name"]);
        let Some(id) = positive(id) else {
            bad = true;
            continue;
        };
        if seen.insert(id) {
            dim.int(id);
            lit_text(dim, name, &mut bad);
            end(dim)?;
        }
        if !scratch.contains(&id) {
            scratch.push(id);
            link.int(movie_id);
            link.int(id);
            end(link)?;
        }
    }
    if bad {
        u[c] += 1;
    }
    Ok(())
}

/// A list of `{'<code>': str, 'name': str}` (countries, languages), as [`id_name_list`].
#[allow(clippy::too_many_arguments)]
fn code_name_list(
    doc: &mut Document,
    cell: &[u8],
    code_key: &str,
    movie_id: i64,
    dim: &mut CopyWriter,
    link: &mut CopyWriter,
    seen: &mut HashSet<String>,
    u: &mut [u64],
    c: usize,
) -> Result<(), CleanError> {
    let Some(items) = literal_list(doc, cell, u, c) else {
        return Ok(());
    };
    let mut bad = false;
    for (i, item) in items.clone().enumerate() {
        if item.pairs().is_none() {
            bad = true;
            continue;
        }
        let [code, name] = item.fields([code_key, "name"]);
        let Some(code) = code
            .and_then(Lit::as_str)
            .filter(|s| !s.is_empty() && !s.contains('\0'))
        else {
            bad = true;
            continue;
        };
        if !seen.contains(code) {
            seen.insert(code.to_string());
            dim.text(code.as_bytes());
            lit_text(dim, name, &mut bad);
            end(dim)?;
        }
        let repeated = items
            .clone()
            .take(i)
            .any(|prev| prev.get(code_key).and_then(Lit::as_str) == Some(code));
        if !repeated {
            link.int(movie_id);
            link.text(code.as_bytes());
            end(link)?;
        }
    }
    if bad {
        u[c] += 1;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// credits.csv and keywords.csv

const CREDITS_COLS: &[&str] = &["cast", "crew", "id"];
const CAST: usize = 0;
const CREW: usize = 1;
const CREDITS_ID: usize = 2;

const KEYWORDS_COLS: &[&str] = &["id", "keywords"];
const KEYWORDS_ID: usize = 0;
const KEYWORDS: usize = 1;

/// The shared checks of a file keyed by movie id: a positive id, of an accepted movie, seen
/// once in this file.
#[inline]
fn movie_key(b: &[u8], movies: &IdSet, seen: &mut IdSet) -> Result<i64, RejectReason> {
    let id = parse_positive_id(b).ok_or(RejectReason::BadId)?;
    if !movies.contains(&id) {
        return Err(RejectReason::UnknownMovie);
    }
    if !seen.insert(id) {
        return Err(RejectReason::DuplicateId);
    }
    Ok(id)
}

fn credits_record(
    row: &Row<'_>,
    t: &mut [CopyWriter],
    u: &mut [u64],
    movies: &IdSet,
    seen: &mut IdSet,
    doc: &mut Document,
) -> Result<Option<RejectReason>, CleanError> {
    let id = match movie_key(row.get(CREDITS_ID), movies, seen) {
        Ok(id) => id,
        Err(reason) => return Ok(Some(reason)),
    };
    let [cast_w, crew_w] = pick(t, [T::CastMembers, T::CrewMembers]);
    people(doc, row.get(CAST), id, cast_w, u, CAST, true)?;
    people(doc, row.get(CREW), id, crew_w, u, CREW, false)?;
    Ok(None)
}

const I32: (i64, i64) = (i32::MIN as i64, i32::MAX as i64);
const I16: (i64, i64) = (i16::MIN as i64, i16::MAX as i64);

/// The `cast` or `crew` list: one row per element, `ord` = its position in the list.
fn people(
    doc: &mut Document,
    cell: &[u8],
    movie_id: i64,
    w: &mut CopyWriter,
    u: &mut [u64],
    c: usize,
    cast: bool,
) -> Result<(), CleanError> {
    let Some(items) = literal_list(doc, cell, u, c) else {
        return Ok(());
    };
    let mut bad = false;
    for (ord, item) in items.enumerate() {
        if item.pairs().is_none() {
            bad = true;
            continue;
        }
        w.int(movie_id);
        w.int(ord as i64);
        if cast {
            let [cast_id, credit_id, person, name, character, gender, profile] = item.fields([
                "cast_id",
                "credit_id",
                "id",
                "name",
                "character",
                "gender",
                "profile_path",
            ]);
            lit_int(w, cast_id, I32.0, I32.1, &mut bad);
            lit_text(w, credit_id, &mut bad);
            lit_int(w, person, i64::MIN, i64::MAX, &mut bad);
            lit_text(w, name, &mut bad);
            lit_text(w, character, &mut bad);
            lit_int(w, gender, I16.0, I16.1, &mut bad);
            lit_text(w, profile, &mut bad);
        } else {
            let [credit_id, person, name, department, job, gender, profile] =
                item.fields(["credit_id", "id", "name", "department", "job", "gender", "profile_path"]);
            lit_text(w, credit_id, &mut bad);
            lit_int(w, person, i64::MIN, i64::MAX, &mut bad);
            lit_text(w, name, &mut bad);
            lit_text(w, department, &mut bad);
            lit_text(w, job, &mut bad);
            lit_int(w, gender, I16.0, I16.1, &mut bad);
            lit_text(w, profile, &mut bad);
        }
        end(w)?;
    }
    if bad {
        u[c] += 1;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn keywords_record(
    row: &Row<'_>,
    t: &mut [CopyWriter],
    u: &mut [u64],
    movies: &IdSet,
    seen: &mut IdSet,
    dim_seen: &mut IdSet,
    scratch: &mut Vec<i64>,
    doc: &mut Document,
) -> Result<Option<RejectReason>, CleanError> {
    let id = match movie_key(row.get(KEYWORDS_ID), movies, seen) {
        Ok(id) => id,
        Err(reason) => return Ok(Some(reason)),
    };
    let [dim, link] = pick(t, [T::Keywords, T::MovieKeywords]);
    id_name_list(doc, row.get(KEYWORDS), id, dim, link, dim_seen, scratch, u, KEYWORDS)?;
    Ok(None)
}

// ---------------------------------------------------------------------------------------------
// links.csv, links_small.csv

const LINKS_COLS: &[&str] = &["movieId", "imdbId", "tmdbId"];
const LINK_MOVIE: usize = 0;
const LINK_IMDB: usize = 1;
const LINK_TMDB: usize = 2;

fn links_record(
    row: &Row<'_>,
    w: &mut CopyWriter,
    u: &mut [u64],
    seen: &mut IdSet,
) -> Result<Option<RejectReason>, CleanError> {
    let Some(movie) = parse_positive_id(row.get(LINK_MOVIE)) else {
        return Ok(Some(RejectReason::BadKey));
    };
    if !seen.insert(movie) {
        return Ok(Some(RejectReason::DuplicateKey));
    }
    w.int(movie);
    text(w, row.get(LINK_IMDB), u, LINK_IMDB);
    let tmdb = row.get(LINK_TMDB);
    if tmdb.is_empty() {
        w.null();
    } else if let Some(v) = parse_positive_id(tmdb) {
        w.int(v);
    } else {
        u[LINK_TMDB] += 1;
        w.null();
    }
    end(w)?;
    Ok(None)
}

// ---------------------------------------------------------------------------------------------
// ratings.csv, ratings_small.csv

const RATINGS_COLS: &[&str] = &["userId", "movieId", "rating", "timestamp"];
const R_USER: usize = 0;
const R_MOVIE: usize = 1;
const R_RATING: usize = 2;
const R_TIME: usize = 3;

/// Duplicate detection for a file sorted by user: the movies of the current user only, so
/// memory stays bounded on 26M rows. A duplicate pair split by another user's rows is not
/// seen here; the table's primary key catches it at load.
struct RatingsState {
    user: i64,
    /// Largest movie of the current user so far; `ascending` holds the movies that arrived in
    /// increasing order (the usual case: no hashing), `others` the rest.
    last: i64,
    ascending: Vec<i64>,
    others: IdSet,
}

impl RatingsState {
    fn new() -> Self {
        RatingsState {
            user: 0,
            last: 0,
            ascending: Vec::new(),
            others: IdSet::default(),
        }
    }

    /// Records (user, movie); false when the pair was already seen in this user's run.
    #[inline]
    fn insert(&mut self, user: i64, movie: i64) -> bool {
        if user != self.user {
            self.user = user;
            self.last = 0;
            self.ascending.clear();
            self.others.clear();
        }
        if movie > self.last {
            // Larger than anything seen for this user: new.
            self.last = movie;
            self.ascending.push(movie);
            return true;
        }
        self.ascending.binary_search(&movie).is_err() && self.others.insert(movie)
    }
}

/// Per MovieLens id: (rows, rows with a rating, sum of the ratings as PostgreSQL sums a
/// `real` column in double precision).
type RatingTotals = HashMap<i64, (u64, u64, f64), BuildHasherDefault<IdHasher>>;

#[inline]
fn ratings_record(
    row: &Row<'_>,
    w: &mut CopyWriter,
    u: &mut [u64],
    state: &mut RatingsState,
    totals: Option<&mut RatingTotals>,
) -> Result<Option<RejectReason>, CleanError> {
    let (Some(user), Some(movie)) = (parse_positive_id(row.get(R_USER)), parse_positive_id(row.get(R_MOVIE))) else {
        return Ok(Some(RejectReason::BadKey));
    };
    if !state.insert(user, movie) {
        return Ok(Some(RejectReason::DuplicateKey));
    }
    let rating = row.get(R_RATING);
    w.raw(row.get(R_USER));
    w.raw(row.get(R_MOVIE));
    let rated = checked(w, rating, u, R_RATING, is_f32);
    bigint(w, row.get(R_TIME), u, R_TIME, false);
    end(w)?;
    if let Some(totals) = totals {
        let t = totals.entry(movie).or_insert((0, 0, 0.0));
        t.0 += 1;
        // The value PostgreSQL stores: the text rounded to the nearest `real`.
        if rated {
            t.1 += 1;
            t.2 += f64::from(real_value(rating));
        }
    }
    Ok(None)
}

/// The `real` nearest to a decimal that [`is_f32`] accepted. `D.D` (every MovieLens rating)
/// is one correctly rounded division of two exact values; anything else goes through the
/// standard library's correctly rounded parser, like PostgreSQL's `float4in`.
#[inline]
fn real_value(b: &[u8]) -> f32 {
    match *b {
        [d] if d.is_ascii_digit() => f32::from(d - b'0'),
        [d, b'.', e] if d.is_ascii_digit() && e.is_ascii_digit() => f32::from((d - b'0') * 10 + (e - b'0')) / 10.0,
        _ => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.trim().parse::<f32>().ok())
            .unwrap_or(f32::NAN),
    }
}

/// Writes the totals sorted by MovieLens id (the same bytes for the same input).
fn write_totals(totals: &RatingTotals, w: &mut CopyWriter) -> Result<(), CleanError> {
    let mut ids: Vec<i64> = totals.keys().copied().collect();
    ids.sort_unstable();
    let mut text = String::new();
    for id in ids {
        let (rows, rated, sum) = totals[&id];
        w.int(id);
        w.int(rows as i64);
        w.int(rated as i64);
        text.clear();
        // Shortest text that reads back as the same double.
        write!(text, "{sum:?}").expect("formatting into a String");
        w.raw(text.as_bytes());
        end(w)?;
    }
    Ok(())
}
