//! Reading the archive safely: entry name checks, a decompressed-size limit, and the reading
//! thread that decompresses and parses CSV (BOM stripped, raw bytes kept for rejects).

use std::collections::HashSet;
use std::fmt;
use std::io::{self, Read};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};

use csv::ByteRecord;
use zip::ZipArchive;

use crate::CleanError;

/// Whether a zip entry name is a plain relative path that stays inside its folder.
pub(crate) fn is_safe_name(name: &str) -> bool {
    let b = name.as_bytes();
    if b.is_empty() || b.contains(&0) {
        return false;
    }
    if b[0] == b'/' || b[0] == b'\\' {
        return false;
    }
    // `C:\x`, `C:/x`, `C:x`: a drive letter.
    if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
        return false;
    }
    !name.split(['/', '\\']).any(|part| part == "..")
}

/// `S_IFLNK` in the file-type bits of a unix mode.
fn is_symlink_mode(mode: u32) -> bool {
    mode & 0o170_000 == 0o120_000
}

/// The result of checking every entry of the archive before reading any data.
pub(crate) struct Inventory {
    /// Entries that are not required, sorted.
    pub(crate) ignored: Vec<String>,
}

/// Checks every entry: safe names, no symlinks, no duplicate names, the required entries
/// present at the root and not declaring more than `limit` bytes.
pub(crate) fn inspect<R: Read + io::Seek>(
    archive: &ZipArchive<R>,
    zip_path: &std::path::Path,
    required: &[&str],
    limit: u64,
) -> Result<Inventory, CleanError> {
    let mut names = HashSet::new();
    let mut ignored = Vec::new();
    for i in 0..archive.len() {
        let entry = archive.by_index_data(i).map_err(|source| CleanError::Zip {
            path: zip_path.to_path_buf(),
            source,
        })?;
        let raw = String::from_utf8_lossy(entry.name_raw()).into_owned();
        let name = match entry.name() {
            Ok(n) => n.into_owned(),
            Err(_) => raw.clone(),
        };
        if !is_safe_name(&name) || !is_safe_name(&raw) {
            return Err(CleanError::UnsafeEntryName { name });
        }
        if entry.unix_mode().is_some_and(is_symlink_mode) {
            return Err(CleanError::SymlinkEntry { name });
        }
        if !names.insert(name.clone()) {
            return Err(CleanError::DuplicateEntry { name });
        }
        if required.contains(&name.as_str()) {
            if entry.size() > limit {
                return Err(CleanError::EntryTooLarge { name, limit });
            }
        } else {
            ignored.push(name);
        }
    }
    if let Some(missing) = required.iter().find(|r| !names.contains(**r)) {
        return Err(CleanError::MissingEntry {
            name: (*missing).to_string(),
        });
    }
    ignored.sort();
    Ok(Inventory { ignored })
}

/// The marker error a [`Limited`] reader returns once the limit is passed.
#[derive(Debug)]
pub(crate) struct LimitExceeded;

impl fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("decompressed size limit exceeded")
    }
}

impl std::error::Error for LimitExceeded {}

/// Counts the bytes really produced by the inner reader and fails past `limit`.
pub(crate) struct Limited<R> {
    inner: R,
    count: u64,
    limit: u64,
}

impl<R> Limited<R> {
    pub(crate) fn new(inner: R, limit: u64) -> Self {
        Limited { inner, count: 0, limit }
    }
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > self.limit {
            return Err(io::Error::other(LimitExceeded));
        }
        Ok(n)
    }
}

const BOM: &[u8; 3] = b"\xEF\xBB\xBF";

/// A batch ends after this many records or this many bytes of fields, whichever comes first.
const BATCH_RECORDS: usize = 4096;
const BATCH_BYTES: usize = 512 * 1024;

/// Records parsed on the reading thread, with the raw bytes they were parsed from (so a
/// rejected record can be quoted exactly).
pub(crate) struct Batch {
    /// Reused records; the first `len` are this batch's.
    records: Vec<ByteRecord>,
    len: usize,
    /// The input from the first record's start to `end`.
    raw: Vec<u8>,
    raw_base: u64,
    /// Stream offset where the record after this batch starts.
    end: u64,
}

impl Batch {
    fn new() -> Self {
        Batch {
            records: Vec::new(),
            len: 0,
            raw: Vec::new(),
            raw_base: 0,
            end: 0,
        }
    }

    /// This batch's records, in file order.
    pub(crate) fn records(&self) -> &[ByteRecord] {
        &self.records[..self.len]
    }

    /// Stream offset of the record after record `i` (where record `i`'s raw text ends).
    pub(crate) fn next_start(&self, i: usize) -> u64 {
        match self.records().get(i + 1).and_then(ByteRecord::position) {
            Some(p) => p.byte(),
            None => self.end,
        }
    }

    /// The raw input between two stream offsets inside this batch.
    pub(crate) fn raw(&self, start: u64, end: u64) -> &[u8] {
        let s = (start.saturating_sub(self.raw_base) as usize).min(self.raw.len());
        let e = (end.saturating_sub(self.raw_base) as usize).clamp(s, self.raw.len());
        &self.raw[s..e]
    }
}

enum Msg {
    Batch(Batch),
    End,
    Failed(csv::Error),
}

/// The receiving end of [`spawn_reader`]: batches of records in file order.
pub(crate) struct Records {
    rx: Receiver<Msg>,
    back: Sender<Batch>,
}

impl Records {
    /// The next batch, `None` at the end of the entry, or the error that stopped the reader.
    pub(crate) fn next_batch(&mut self) -> Result<Option<Batch>, csv::Error> {
        match self.rx.recv() {
            Ok(Msg::Batch(b)) => Ok(Some(b)),
            Ok(Msg::End) => Ok(None),
            Ok(Msg::Failed(e)) => Err(e),
            Err(_) => Err(csv::Error::from(io::Error::other(
                "the reading thread stopped unexpectedly",
            ))),
        }
    }

    /// Hands a processed batch back for reuse.
    pub(crate) fn recycle(&self, batch: Batch) {
        let _ = self.back.send(batch);
    }
}

/// Decompresses and parses `src` as CSV on a scoped thread, sending batches of records.
///
/// Decompression and CSV parsing are about half the work; on their own thread they overlap
/// with the checking and writing on the caller's. Records arrive in file order, so the output
/// is the same as a single-threaded run. The CSV reader ends records at `\n` only (the caller
/// cuts a CRLF's `\r` from the last field): a bare `\r` inside an unquoted field is data.
/// (pandas wrote such an overview unquoted; readers that also end records at `\r` split it in
/// two and shift the columns: the dataset's "3 broken rows".) The thread ends at the end of
/// the entry, on an error (passed on), or when the [`Records`] is dropped.
pub(crate) fn spawn_reader<'scope, R: Read + Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    src: R,
) -> io::Result<(Records, std::thread::ScopedJoinHandle<'scope, ()>)> {
    let (tx, rx) = sync_channel(4);
    let (back_tx, back_rx) = channel();
    let handle = std::thread::Builder::new()
        .name("clean-read".into())
        .spawn_scoped(scope, move || reader_loop(src, tx, back_rx))?;
    Ok((Records { rx, back: back_tx }, handle))
}

fn reader_loop<R: Read>(src: R, tx: SyncSender<Msg>, back: Receiver<Batch>) {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .terminator(csv::Terminator::Any(b'\n'))
        .buffer_capacity(256 * 1024)
        .from_reader(Tee::new(src));
    loop {
        let mut batch = back.try_recv().unwrap_or_else(|_| Batch::new());
        batch.len = 0;
        let mut bytes = 0;
        let mut at_end = false;
        while batch.len < BATCH_RECORDS && bytes < BATCH_BYTES {
            if batch.records.len() == batch.len {
                batch.records.push(ByteRecord::new());
            }
            match rdr.read_byte_record(&mut batch.records[batch.len]) {
                Ok(true) => {
                    bytes += batch.records[batch.len].as_slice().len() + 16;
                    batch.len += 1;
                }
                Ok(false) => {
                    at_end = true;
                    break;
                }
                Err(e) => {
                    let _ = tx.send(Msg::Failed(e));
                    return;
                }
            }
        }
        if batch.len > 0 {
            let start = batch.records[0].position().map_or(0, |p| p.byte());
            let end = rdr.position().byte();
            batch.raw.clear();
            batch.raw.extend_from_slice(rdr.get_ref().slice(start, end));
            batch.raw_base = start;
            batch.end = end;
            rdr.get_mut().release_before(end);
            // A send fails only when the receiver is gone: stop quietly.
            if tx.send(Msg::Batch(batch)).is_err() {
                return;
            }
        }
        if at_end {
            let _ = tx.send(Msg::End);
            return;
        }
    }
}

/// Drops a leading UTF-8 BOM and keeps a copy of what it hands out, so the raw text of a
/// record can be recovered from the CSV reader's byte offsets.
pub(crate) struct Tee<R> {
    inner: R,
    /// Bytes from stream offset `base` on.
    kept: Vec<u8>,
    base: u64,
    /// Bytes read while looking for the BOM that still have to be handed out.
    head: [u8; 3],
    head_len: usize,
    head_pos: usize,
    bom_checked: bool,
}

impl<R: Read> Tee<R> {
    pub(crate) fn new(inner: R) -> Self {
        Tee {
            inner,
            kept: Vec::with_capacity(1 << 20),
            base: 0,
            head: [0; 3],
            head_len: 0,
            head_pos: 0,
            bom_checked: false,
        }
    }

    fn check_bom(&mut self) -> io::Result<()> {
        while self.head_len < 3 {
            match self.inner.read(&mut self.head[self.head_len..]) {
                Ok(0) => break,
                Ok(n) => self.head_len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.head_len == 3 && &self.head == BOM {
            self.head_len = 0;
        }
        self.bom_checked = true;
        Ok(())
    }

    /// The kept bytes between two stream offsets (both must still be kept).
    pub(crate) fn slice(&self, start: u64, end: u64) -> &[u8] {
        let s = start.saturating_sub(self.base) as usize;
        let e = (end.saturating_sub(self.base) as usize).min(self.kept.len());
        &self.kept[s.min(e)..e]
    }

    /// Forgets kept bytes before `pos` once enough have piled up.
    #[inline]
    pub(crate) fn release_before(&mut self, pos: u64) {
        if self.kept.len() >= (1 << 20) {
            let n = (pos.saturating_sub(self.base) as usize).min(self.kept.len());
            self.kept.drain(..n);
            self.base += n as u64;
        }
    }
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.bom_checked {
            self.check_bom()?;
        }
        let n = if self.head_pos < self.head_len {
            let n = (self.head_len - self.head_pos).min(buf.len());
            buf[..n].copy_from_slice(&self.head[self.head_pos..self.head_pos + n]);
            self.head_pos += n;
            n
        } else {
            self.inner.read(buf)?
        };
        self.kept.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names() {
        for ok in ["movies_metadata.csv", "dir/file.csv", "a..b.csv", "./x.csv", "dir/"] {
            assert!(is_safe_name(ok), "{ok}");
        }
        for bad in [
            "",
            "../evil.csv",
            "/abs.csv",
            "\\abs.csv",
            "C:\\x.csv",
            "c:/x.csv",
            "C:x",
            "a/../../b",
            "a\\..\\b",
            "..",
            "a/..",
            "nul\0.csv",
        ] {
            assert!(!is_safe_name(bad), "{bad}");
        }
    }

    #[test]
    fn symlink_mode() {
        assert!(is_symlink_mode(0o120_777));
        assert!(!is_symlink_mode(0o100_644));
        assert!(!is_symlink_mode(0o040_755));
        assert!(!is_symlink_mode(0o140_755)); // a socket, not a link
    }

    fn read_all<R: Read>(mut r: R, chunk: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0; chunk];
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn tee_strips_bom_and_keeps_bytes() {
        for (input, want) in [
            (&b"\xEF\xBB\xBFid,x\n1,2\n"[..], &b"id,x\n1,2\n"[..]),
            (b"id,x\n", b"id,x\n"),
            (b"ab", b"ab"),
            (b"", b""),
            (b"\xEF\xBB", b"\xEF\xBB"),
        ] {
            for chunk in [1, 2, 5, 64] {
                let mut tee = Tee::new(input);
                let got = read_all(&mut tee, chunk).unwrap();
                assert_eq!(got, want);
                assert_eq!(tee.slice(0, want.len() as u64), want);
            }
        }
    }

    /// (fields, raw text) of one record.
    type Parsed = (Vec<Vec<u8>>, Vec<u8>);

    /// All records of `data` through the reading thread.
    fn through_reader<R: Read + Send>(data: R) -> Result<Vec<Parsed>, csv::Error> {
        std::thread::scope(|scope| {
            let (mut records, handle) = spawn_reader(scope, data).unwrap();
            let mut out = Vec::new();
            let result = loop {
                match records.next_batch() {
                    Ok(Some(batch)) => {
                        for (i, r) in batch.records().iter().enumerate() {
                            let start = r.position().unwrap().byte();
                            let raw = batch.raw(start, batch.next_start(i)).to_vec();
                            out.push((r.iter().map(<[u8]>::to_vec).collect(), raw));
                        }
                        records.recycle(batch);
                    }
                    Ok(None) => break Ok(out),
                    Err(e) => break Err(e),
                }
            };
            drop(records);
            handle.join().unwrap();
            result
        })
    }

    #[test]
    fn reader_batches_keep_order_and_raw_text() {
        let mut data = b"\xEF\xBB\xBFa,b\r\n".to_vec();
        for i in 0..10_000 {
            data.extend_from_slice(format!("{i},\"x\ny\"\r\n").as_bytes());
        }
        let got = through_reader(&data[..]).unwrap();
        assert_eq!(got.len(), 10_001);
        assert_eq!(got[0].0, [b"a".to_vec(), b"b\r".to_vec()]);
        assert_eq!(got[0].1, b"a,b\r\n");
        for (i, (fields, raw)) in got[1..].iter().enumerate() {
            assert_eq!(fields[0], i.to_string().as_bytes());
            assert_eq!(fields[1], b"x\ny\r");
            assert_eq!(raw, format!("{i},\"x\ny\"\r\n").as_bytes());
        }
    }

    #[test]
    fn reader_passes_errors_on_and_stops_when_dropped() {
        let data = vec![b'1'; 3 << 20];
        let err = through_reader(Limited::new(&data[..], 1 << 20)).unwrap_err();
        match err.kind() {
            csv::ErrorKind::Io(e) => assert!(e.get_ref().is_some_and(|e| e.is::<LimitExceeded>())),
            other => panic!("{other:?}"),
        }
        // Dropping the receiving end early lets the thread finish.
        let many: Vec<u8> = b"1,2\n".repeat(200_000);
        std::thread::scope(|scope| {
            let (records, handle) = spawn_reader(scope, &many[..]).unwrap();
            drop(records);
            handle.join().unwrap();
        });
    }

    #[test]
    fn limited_counts_real_bytes() {
        let data = vec![0u8; 1000];
        assert!(read_all(Limited::new(&data[..], 1000), 7).is_ok());
        let err = read_all(Limited::new(&data[..], 999), 7).unwrap_err();
        assert!(err.get_ref().is_some_and(|e| e.is::<LimitExceeded>()));
    }
}
