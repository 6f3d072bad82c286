//! The rules of ratings.csv and ratings_small.csv: repeated pairs anywhere in the file, and the per-movie totals.

use super::*;

// ratings.csv, ratings_small.csv

pub(super) const RATINGS_COLS: &[&str] = &["userId", "movieId", "rating", "timestamp"];
pub(super) const R_USER: usize = 0;
pub(super) const R_MOVIE: usize = 1;
pub(super) const R_RATING: usize = 2;
pub(super) const R_TIME: usize = 3;

/// Per MovieLens id: (rows, rows with a rating, sum of the ratings as PostgreSQL sums a
/// `real` column in double precision).
pub(super) type RatingTotals = HashMap<i64, (u64, u64, f64), BuildHasherDefault<IdHasher>>;

/// The user and movie of a ratings row, and whether both were plain digits (their text can be
/// copied as is); `None` when either is not a positive integer.
#[inline]
pub(super) fn rating_keys(row: &Row<'_>) -> Option<(i64, i64, bool)> {
    let (u, m) = (row.get(R_USER), row.get(R_MOVIE));
    match (parse_plain_id(u), parse_plain_id(m)) {
        (Some(u), Some(m)) => Some((u, m, true)),
        _ => Some((parse_positive_id(u)?, parse_positive_id(m)?, false)),
    }
}

/// The state of one ratings file's first pass: its duplicate detection and where deferred
/// rows go.
pub(super) struct RatingsPass {
    pub(super) keys: RatingKeys,
    pub(super) spill: Option<io::BufWriter<File>>,
    pub(super) spill_path: PathBuf,
    /// Rows spilled.
    pub(super) deferred: u64,
}

#[inline]
pub(super) fn ratings_record(
    row: &Row<'_>,
    w: &mut CopyWriter,
    u: &mut [u64],
    pass: &mut RatingsPass,
    totals: Option<&mut RatingTotals>,
) -> Result<Option<RejectReason>, CleanError> {
    let Some((user, movie, plain)) = rating_keys(row) else {
        return Ok(Some(RejectReason::BadKey));
    };
    match pass.keys.insert(user, movie) {
        Seen::New => {}
        Seen::Duplicate => return Ok(Some(RejectReason::DuplicateRating)),
        Seen::Defer => {
            defer_rating(pass, row, user, movie)?;
            return Ok(None);
        }
    }
    let keys = plain.then(|| (row.get(R_USER), row.get(R_MOVIE)));
    write_rating(w, u, totals, user, movie, keys, row.get(R_RATING), row.get(R_TIME))
}

/// Spills a deferred row (counted accepted for now; [`resolve_deferred`] settles it).
#[cold]
pub(super) fn defer_rating(pass: &mut RatingsPass, row: &Row<'_>, user: i64, movie: i64) -> Result<(), CleanError> {
    let path = &pass.spill_path;
    if pass.spill.is_none() {
        let f = File::create(path).map_err(|e| CleanError::io(path, e))?;
        pass.spill = Some(io::BufWriter::new(f));
    }
    let spill = pass.spill.as_mut().expect("spill file just opened");
    let (line, raw) = row.raw();
    pass.deferred += 1;
    rating_keys::write_deferred(spill, user, movie, line, row.get(R_RATING), row.get(R_TIME), raw)
        .map_err(|e| CleanError::io(path, e))
}

/// Writes one accepted ratings row and counts it in `totals`. `keys` is the source text of
/// user and movie when it is plain digits (copied as is), else the integers are written.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(super) fn write_rating(
    w: &mut CopyWriter,
    u: &mut [u64],
    totals: Option<&mut RatingTotals>,
    user: i64,
    movie: i64,
    keys: Option<(&[u8], &[u8])>,
    rating: &[u8],
    time: &[u8],
) -> Result<Option<RejectReason>, CleanError> {
    w.key(user);
    match keys {
        Some((user, movie)) => {
            w.raw(user);
            w.raw(movie);
        }
        None => {
            w.int(user);
            w.int(movie);
        }
    }
    let rated = checked(w, rating, u, R_RATING, is_f32);
    bigint(w, time, u, R_TIME, false);
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

/// At most this many (user, movie) pairs are held at once while settling deferred ratings
/// (about 40 MiB); more are settled in several partitions of the revisited users.
pub(crate) const PAIR_BUDGET: usize = 1_800_000;

/// The partition of `user` among `parts`.
#[inline]
pub(super) fn partition(user: i64, parts: u64) -> u64 {
    ((user as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % parts
}

/// Settles the deferred rows of a ratings file whose first pass deferred some (a file not
/// grouped by user): reads the entry again for the pairs the first pass wrote for the
/// revisited users, then goes through the spilled rows in file order, writing each new pair
/// (after the file's other rows) and rejecting a repeated one `duplicate_rating`. Fixes
/// `stats` (the deferred rows were counted accepted).
///
/// Memory: when the pairs to hold (the revisited users' earlier pairs plus the deferred rows)
/// would pass `budget`, the revisited users are split by a hash into partitions settled one
/// after the other, each with its own read of the entry and of the spill (a file far from
/// grouped by user costs more reads, not more memory). A user's rows stay in file order.
#[allow(clippy::too_many_arguments)]
pub(super) fn resolve_deferred(
    env: &Env<'_>,
    archive: &mut ZipArchive<File>,
    entry: &'static str,
    pass: RatingsPass,
    w: &mut CopyWriter,
    rejects: &mut CopyWriter,
    totals: Option<&mut RatingTotals>,
    stats: &mut FileStats,
    budget: usize,
) -> Result<(), CleanError> {
    let RatingsPass {
        keys,
        spill,
        spill_path,
        deferred,
    } = pass;
    let Some(mut spill) = spill else {
        return Ok(());
    };
    spill.flush().map_err(|e| CleanError::io(&spill_path, e))?;
    drop(spill);
    let started = Instant::now();
    let revisited = keys.revisited();
    // First try everything in one partition, giving up as soon as it would not fit.
    let room = budget.saturating_sub(deferred as usize);
    let (parts, mut first) = match earlier_pairs(env, archive, entry, revisited, (0, 1), Some(room))? {
        Scan::Done(taken) if taken.len() + deferred as usize <= budget.max(1) => (1, Some(taken)),
        Scan::Done(taken) => {
            let parts = (taken.len() as u64 + deferred).div_ceil(budget.max(1) as u64).max(2);
            (parts, None)
        }
        Scan::TooMany { held, index } => {
            let earlier = held as u64 * keys.pairs() / index.max(1);
            let parts = (earlier + deferred).div_ceil(budget.max(1) as u64).max(2);
            (parts, None)
        }
    };
    let mut u = [0u64; RATINGS_COLS.len()];
    let mut totals = totals;
    let mut duplicates = 0u64;
    let mut d = rating_keys::Deferred {
        user: 0,
        movie: 0,
        line: 0,
        rating: Vec::new(),
        time: Vec::new(),
        raw: Vec::new(),
    };
    for part in 0..parts {
        let mut taken = match first.take() {
            Some(t) => t,
            None => match earlier_pairs(env, archive, entry, revisited, (part, parts), None)? {
                Scan::Done(t) => t,
                Scan::TooMany { .. } => unreachable!("a scan without a limit does not stop early"),
            },
        };
        let f = File::open(&spill_path).map_err(|e| CleanError::io(&spill_path, e))?;
        let mut r = io::BufReader::with_capacity(1 << 16, f);
        while rating_keys::read_deferred(&mut r, &mut d).map_err(|e| CleanError::io(&spill_path, e))? {
            if parts > 1 && partition(d.user, parts) != part {
                continue;
            }
            if taken.insert((d.user, d.movie)) {
                write_rating(
                    w,
                    &mut u,
                    totals.as_deref_mut(),
                    d.user,
                    d.movie,
                    None,
                    &d.rating,
                    &d.time,
                )?;
            } else {
                duplicates += 1;
                write_reject(rejects, entry, d.line, &d.raw, RejectReason::DuplicateRating)?;
            }
        }
    }
    fs::remove_file(&spill_path).map_err(|e| CleanError::io(&spill_path, e))?;
    stats.accepted -= duplicates;
    if duplicates > 0 {
        *stats
            .rejected
            .entry(RejectReason::DuplicateRating.as_str().to_string())
            .or_default() += duplicates;
    }
    for (c, n) in RATINGS_COLS.iter().zip(u) {
        if n > 0 {
            *stats.unparsable.entry((*c).to_string()).or_default() += n;
        }
    }
    tracing::info!(
        entry,
        revisited_users = revisited.len(),
        deferred,
        duplicates,
        partitions = parts,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "ratings not grouped by user: deferred rows settled"
    );
    Ok(())
}

/// What [`earlier_pairs`] found.
pub(super) enum Scan {
    /// The pairs.
    Done(PairSet),
    /// More than the limit: `held` pairs when the pair of index `index` passed it.
    TooMany { held: usize, index: u64 },
}

/// The pairs the first pass wrote (or rejected as repeats) for the revisited users of
/// partition `part.0` of `part.1`: their pairs before each one's first deferred row, from a
/// second read of the entry. Stops early when more than `limit` pairs would be held.
pub(super) fn earlier_pairs(
    env: &Env<'_>,
    archive: &mut ZipArchive<File>,
    entry: &'static str,
    revisited: &HashMap<i64, u64, BuildHasherDefault<IdHasher>>,
    (part, parts): (u64, u64),
    limit: Option<usize>,
) -> Result<Scan, CleanError> {
    let (zip_path, limit_bytes) = (env.zip_path, env.limit);
    let file = archive.by_name(entry).map_err(|source| CleanError::Zip {
        path: zip_path.to_path_buf(),
        source,
    })?;
    std::thread::scope(|scope| {
        let (mut records, reader) =
            input::spawn_reader(scope, Limited::new(file, limit_bytes)).map_err(|e| CleanError::io(zip_path, e))?;
        let read_err = |e: csv::Error| read_error(e, entry, limit_bytes, zip_path);
        let mut scan = || -> Result<Scan, CleanError> {
            let mut taken = PairSet::default();
            let mut header: Option<(usize, Vec<usize>)> = None;
            let (mut index, mut count) = (0u64, 0u64);
            while let Some(batch) = records.next_batch().map_err(read_err)? {
                for (i, rec) in batch.records().iter().enumerate() {
                    // The same records, in the same order, as the first pass's handler saw.
                    let (width, idx) = match &header {
                        Some((width, idx)) => (*width, idx.as_slice()),
                        None => {
                            header = Some((rec.len(), header_columns(entry, Some(rec), RATINGS_COLS)?));
                            continue;
                        }
                    };
                    if rec.len() == 1 && rec.get(0) == Some(b"\r") {
                        continue;
                    }
                    count += 1;
                    if count & 0xFFFF == 0 && (env.cancelled)() {
                        return Err(CleanError::Cancelled);
                    }
                    if rec.len() != width {
                        continue;
                    }
                    let row = Row {
                        rec,
                        idx,
                        last: width - 1,
                        batch: &batch,
                        i,
                    };
                    let Some((user, movie, _)) = rating_keys(&row) else {
                        continue;
                    };
                    let n = index;
                    index += 1;
                    if revisited.get(&user).is_some_and(|&first| n < first)
                        && (parts == 1 || partition(user, parts) == part)
                    {
                        taken.insert((user, movie));
                        if limit.is_some_and(|l| taken.len() > l) {
                            return Ok(Scan::TooMany {
                                held: taken.len(),
                                index: n + 1,
                            });
                        }
                    }
                }
                records.recycle(batch);
            }
            Ok(Scan::Done(taken))
        };
        let result = scan();
        drop(records);
        match reader.join() {
            Ok(()) => result,
            Err(_) => Err(CleanError::Corrupt {
                entry: entry.to_string(),
                detail: "the reading thread panicked".into(),
            }),
        }
    })
}

/// The `real` nearest to a decimal that [`is_f32`] accepted. `D.D` (every MovieLens rating)
/// is one correctly rounded division of two exact values; anything else goes through the
/// standard library's correctly rounded parser, like PostgreSQL's `float4in`.
#[inline]
pub(super) fn real_value(b: &[u8]) -> f32 {
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
pub(super) fn write_totals(totals: &RatingTotals, w: &mut CopyWriter) -> Result<(), CleanError> {
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
