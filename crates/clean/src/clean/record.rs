//! One CSV record at a time: reading the entry, looking columns up, writing rejects.

use super::*;

/// One CSV record with its required columns looked up by position.
pub(super) struct Row<'r> {
    pub(super) rec: &'r ByteRecord,
    pub(super) idx: &'r [usize],
    /// Index of the record's last field.
    pub(super) last: usize,
    /// The batch holding the record, and its index there (for [`Row::raw`]).
    pub(super) batch: &'r Batch,
    pub(super) i: usize,
}

impl<'r> Row<'r> {
    /// The record's 1-based start line and raw text, as [`write_reject`] takes them.
    pub(super) fn raw(&self) -> (u64, &'r [u8]) {
        let (start, line) = self.rec.position().map_or((0, 0), |p| (p.byte(), p.line()));
        (line, self.batch.raw(start, self.batch.next_start(self.i)))
    }

    /// The field of required column `k` (an index into the file's column list). The last
    /// field loses the `\r` of a CRLF line end (records end at `\n`, see
    /// [`input::spawn_reader`]).
    #[inline]
    pub(super) fn get(&self, k: usize) -> &'r [u8] {
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
pub(super) fn end(w: &mut CopyWriter) -> Result<(), CleanError> {
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
pub(super) fn process<F>(
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
pub(super) fn header_columns(
    entry: &str,
    header: Option<&ByteRecord>,
    cols: &[&str],
) -> Result<Vec<usize>, CleanError> {
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
pub(super) fn read_records<F>(
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
                    let event = reelflow_dag::ProgressEvent {
                        item: entry.to_string(),
                        done: count,
                        total: None,
                        unit: reelflow_dag::Unit::Records,
                        per_sec: count as f64 / secs,
                    };
                    reelflow_dag::report_progress("cleaning", &event);
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
                    batch: &batch,
                    i,
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

pub(super) fn read_error(e: csv::Error, entry: &str, limit: u64, zip_path: &Path) -> CleanError {
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
pub(super) fn write_reject(
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
