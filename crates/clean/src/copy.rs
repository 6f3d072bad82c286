//! Writing PostgreSQL `COPY ... FROM STDIN` text format.
//!
//! Fields are separated by a tab, rows end with `\n`, NULL is `\N`, and a backslash, tab,
//! newline or carriage return inside a value is written `\\`, `\t`, `\n`, `\r`. Rows are built
//! in an in-memory buffer (infallible pushes on the hot path) and flushed to the file in large
//! chunks.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const FLUSH_AT: usize = 256 * 1024;

/// Watches the first column of a file whose rows should arrive in key order (ratings, by
/// user): whether they do, and where the file could be cut into key ranges.
struct KeyOrder {
    last: Option<i64>,
    sorted: bool,
    cuts: Vec<crate::manifest::Cut>,
    next_cut_at: u64,
    spacing: u64,
}

/// One output file in COPY text format.
pub(crate) struct CopyWriter {
    /// `None` for a placeholder that stands in for a writer owned by another thread.
    file: Option<File>,
    path: PathBuf,
    buf: Vec<u8>,
    rows: u64,
    row_start: bool,
    /// Bytes written to the file so far (the buffer not counted).
    written: u64,
    order: Option<KeyOrder>,
}

impl CopyWriter {
    pub(crate) fn create(path: &Path) -> io::Result<Self> {
        Ok(CopyWriter {
            file: Some(File::create(path)?),
            path: path.to_path_buf(),
            buf: Vec::with_capacity(FLUSH_AT + 64 * 1024),
            rows: 0,
            row_start: true,
            written: 0,
            order: None,
        })
    }

    /// Records whether the rows arrive in non-decreasing order of the key given to
    /// [`CopyWriter::key`], and about every `spacing` bytes a cut: a row start where the key is
    /// greater than in every row before. When the whole file turns out to be in order, each cut
    /// splits it into two key ranges (see [`CopyWriter::cuts`]).
    pub(crate) fn track_key_order(&mut self, spacing: u64) {
        self.order = Some(KeyOrder {
            last: None,
            sorted: true,
            cuts: Vec::new(),
            next_cut_at: spacing,
            spacing,
        });
    }

    /// The key of the row about to be written (call before its first field).
    #[inline]
    pub(crate) fn key(&mut self, key: i64) {
        let offset = self.written + self.buf.len() as u64;
        let rows = self.rows;
        let Some(o) = self.order.as_mut() else { return };
        match o.last {
            Some(last) if key < last => o.sorted = false,
            Some(last) if key > last && o.sorted && offset >= o.next_cut_at => {
                o.cuts.push(crate::manifest::Cut { offset, rows, key });
                o.next_cut_at = offset + o.spacing;
            }
            _ => {}
        }
        o.last = Some(key);
    }

    /// The cuts recorded by [`CopyWriter::track_key_order`] if every row came in key order;
    /// empty otherwise (or when not tracked).
    pub(crate) fn cuts(&self) -> Vec<crate::manifest::Cut> {
        match &self.order {
            Some(o) if o.sorted => o.cuts.clone(),
            _ => Vec::new(),
        }
    }

    /// Stands in for `self` while another thread owns it (see `std::mem::replace`); writing
    /// to the placeholder fails at the first flush, finishing it is a no-op.
    pub(crate) fn placeholder(&self) -> Self {
        CopyWriter {
            file: None,
            path: self.path.clone(),
            buf: Vec::new(),
            rows: 0,
            row_start: true,
            written: 0,
            order: None,
        }
    }

    /// Appends the rows of a finished COPY file written by another writer.
    pub(crate) fn append_file(&mut self, path: &Path, rows: u64) -> io::Result<()> {
        debug_assert!(self.row_start, "append in the middle of a row");
        self.flush_buf()?;
        let file = self.file.as_mut().ok_or_else(placeholder_error)?;
        self.written += io::copy(&mut File::open(path)?, file)?;
        self.rows += rows;
        if let Some(o) = self.order.as_mut() {
            // Rows not seen by `key`: their order is unknown.
            o.sorted = false;
        }
        Ok(())
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn rows(&self) -> u64 {
        self.rows
    }

    #[inline]
    fn sep(&mut self) {
        if self.row_start {
            self.row_start = false;
        } else {
            self.buf.push(b'\t');
        }
    }

    /// A NULL field.
    #[inline]
    pub(crate) fn null(&mut self) {
        self.sep();
        self.buf.extend_from_slice(b"\\N");
    }

    /// A field whose bytes need no escaping (checked numbers, dates).
    #[inline]
    pub(crate) fn raw(&mut self, b: &[u8]) {
        self.sep();
        self.buf.extend_from_slice(b);
    }

    /// A text field, escaped. The caller has made sure it holds no NUL byte.
    #[inline]
    pub(crate) fn text(&mut self, s: &[u8]) {
        self.sep();
        escape_into(&mut self.buf, s);
    }

    /// An integer field.
    #[inline]
    pub(crate) fn int(&mut self, v: i64) {
        self.sep();
        push_i64(&mut self.buf, v);
    }

    /// A boolean field (`t` / `f`).
    #[inline]
    pub(crate) fn bool(&mut self, v: bool) {
        self.sep();
        self.buf.push(if v { b't' } else { b'f' });
    }

    /// Ends the current row; writes the buffer out when it is large.
    #[inline]
    pub(crate) fn end_row(&mut self) -> io::Result<()> {
        self.buf.push(b'\n');
        self.row_start = true;
        self.rows += 1;
        if self.buf.len() >= FLUSH_AT {
            self.flush_buf()?;
        }
        Ok(())
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file.as_mut().ok_or_else(placeholder_error)?.write_all(&self.buf)?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Writes what is buffered and syncs the file to disk.
    pub(crate) fn finish(&mut self) -> io::Result<()> {
        debug_assert!(self.row_start, "finish in the middle of a row");
        self.flush_buf()?;
        match &self.file {
            Some(f) => f.sync_all(),
            None => Ok(()),
        }
    }
}

fn placeholder_error() -> io::Error {
    io::Error::other("internal error: a row was written to a table owned by the other cleaning thread")
}

/// Whether any of the 8 bytes of `w` is below 14 (tab, newline, CR among them) or a backslash.
#[inline]
fn word_may_need_escape(w: u64) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let below_14 = w.wrapping_sub(LO * 14) & !w & HI;
    let x = w ^ (LO * u64::from(b'\\'));
    let backslash = x.wrapping_sub(LO) & !x & HI;
    below_14 | backslash != 0
}

/// Appends `s` with COPY text escapes.
#[inline]
pub(crate) fn escape_into(out: &mut Vec<u8>, s: &[u8]) {
    // Fast path: skip whole words that need no escaping.
    let mut clean = 0;
    for chunk in s.chunks_exact(8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        if word_may_need_escape(u64::from_le_bytes(w)) {
            break;
        }
        clean += 8;
    }
    if clean == s.len() {
        out.extend_from_slice(s);
        return;
    }
    let mut start = 0;
    for (i, &c) in s.iter().enumerate().skip(clean) {
        let e = match c {
            b'\\' => b'\\',
            b'\t' => b't',
            b'\n' => b'n',
            b'\r' => b'r',
            _ => continue,
        };
        out.extend_from_slice(&s[start..i]);
        out.push(b'\\');
        out.push(e);
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
}

/// Appends the decimal form of `v`.
#[inline]
pub(crate) fn push_i64(out: &mut Vec<u8>, v: i64) {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut m = v.unsigned_abs();
    if m < 10 {
        if v < 0 {
            out.push(b'-');
        }
        out.push(b'0' + m as u8);
        return;
    }
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    while m >= 100 {
        let d = (m % 100) as usize * 2;
        m /= 100;
        i -= 2;
        tmp[i..i + 2].copy_from_slice(&PAIRS[d..d + 2]);
    }
    if m >= 10 {
        let d = m as usize * 2;
        i -= 2;
        tmp[i..i + 2].copy_from_slice(&PAIRS[d..d + 2]);
    } else {
        i -= 1;
        tmp[i] = b'0' + m as u8;
    }
    if v < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&tmp[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes rows with keys `keys` (cut spacing 20 bytes) and returns the file and the cuts.
    fn write_keys(keys: &[i64]) -> (Vec<u8>, Vec<crate::manifest::Cut>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.tsv");
        let mut w = CopyWriter::create(&path).unwrap();
        w.track_key_order(20);
        for &k in keys {
            w.key(k);
            w.int(k);
            w.raw(b"some-value");
            w.end_row().unwrap();
        }
        w.finish().unwrap();
        (std::fs::read(&path).unwrap(), w.cuts())
    }

    #[test]
    fn cuts_of_a_key_ordered_file_split_it_into_key_ranges() {
        let keys = [1, 1, 1, 2, 2, 3, 5, 5, 5, 5, 8, 9, 9];
        let (file, cuts) = write_keys(&keys);
        assert!(cuts.len() >= 2, "{cuts:?}");
        for c in &cuts {
            let at = c.offset as usize;
            assert!(at == 0 || file[at - 1] == b'\n', "a cut starts a row: {c:?}");
            assert_eq!(file[..at].iter().filter(|&&b| b == b'\n').count() as u64, c.rows);
            let first: i64 = std::str::from_utf8(&file[at..])
                .unwrap()
                .split('\t')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(first, c.key);
            let before = &keys[..c.rows as usize];
            assert!(before.iter().all(|&k| k < c.key), "{c:?}: every key before is smaller");
            assert!(keys[c.rows as usize..].iter().all(|&k| k >= c.key));
        }
        assert!(
            cuts.windows(2).all(|w| w[0].offset + 20 <= w[1].offset),
            "about one per spacing: {cuts:?}"
        );
    }

    #[test]
    fn a_file_out_of_key_order_has_no_cuts() {
        let (_, cuts) = write_keys(&[1, 2, 3, 4, 5, 6, 7, 8, 3, 9]);
        assert_eq!(cuts, []);
        let (_, cuts) = write_keys(&[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert!(!cuts.is_empty());
    }

    #[test]
    fn escapes() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"plain", b"plain"),
            (b"", b""),
            (b"a\tb", b"a\\tb"),
            (b"line1\nline2\r\n", b"line1\\nline2\\r\\n"),
            (b"back\\slash", b"back\\\\slash"),
            (b"\\.", b"\\\\."),
            ("Ri¢hie".as_bytes(), "Ri¢hie".as_bytes()),
            (b"a long clean value of many words", b"a long clean value of many words"),
            (b"sixteen bytes!!!\tthen a tab", b"sixteen bytes!!!\\tthen a tab"),
            (b"0123456\\89abcdef", b"0123456\\\\89abcdef"),
            (
                b"\x01\x02 control bytes stay as they are\x0b\x0c",
                b"\x01\x02 control bytes stay as they are\x0b\x0c",
            ),
            (b"........\r", b"........\\r"),
        ];
        for &(input, want) in cases {
            let mut out = Vec::new();
            escape_into(&mut out, input);
            assert_eq!(out, want, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn integers() {
        for v in [
            0,
            7,
            -7,
            10,
            99,
            100,
            -100,
            101,
            12345,
            2_787_965_087,
            i64::MAX,
            i64::MIN,
            i64::MIN + 1,
        ] {
            let mut out = Vec::new();
            push_i64(&mut out, v);
            assert_eq!(out, v.to_string().as_bytes());
        }
    }
}
