//! The `clean` stage of reelflow: The Movies Dataset zip in, typed tables out.
//!
//! [`clean_zip`] reads the CSV files straight out of the archive (never extracting it), checks
//! and converts every value, and writes one file per table of [`TABLES`] in PostgreSQL
//! `COPY ... FROM STDIN` text format, plus `rejects.tsv` (every rejected record with file,
//! line, reason and raw text) and `manifest.json` (a [`Manifest`]: counts per table, per file,
//! per reject reason and per unparsable column). [`CleanTask`] runs it as a DAG task.
//!
//! Architecture invariants:
//! - Bad rows are data, not errors: a record is accepted or rejected with a [`RejectReason`];
//!   a value that cannot be parsed becomes NULL and is counted. Only an unusable archive
//!   (unsafe names, symlinks, zip bombs, corruption, a missing file or column) or I/O fails
//!   the clean ([`CleanError`]).
//! - Output is deterministic: the same zip gives byte-identical files (file order everywhere,
//!   no hash-map iteration, no timestamps).
//! - Memory does not grow with the ratings file: only movie ids, dimension keys and the
//!   MovieLens user ids (8 bytes each) are held, when the file is grouped by user.
//!
//! Processing order: two threads, each with a reading thread of its own. The first cleans
//! `movies_metadata.csv` (its accepted ids decide which `credits.csv` and `keywords.csv` rows
//! are kept), then credits and keywords; the second cleans links, links_small, ratings and
//! ratings_small, which need nothing from the movie files. The second thread's rejects are
//! appended after the first's, so the output equals a single thread's. Per-file rules (one
//! module per file under `clean/`):
//! - columns are found by header name (any order; a missing one is [`CleanError::BadHeader`]);
//!   a UTF-8 BOM is dropped; CRLF and LF both work; a record whose width differs from the
//!   header's is rejected `field_count`, one that is not UTF-8 `invalid_utf8`;
//! - movies: `id` must be a positive integer (`bad_id`), the first row of an id wins
//!   (`duplicate_id`); budget and revenue `0` become NULL; the Python-literal columns give the
//!   dimension tables (first name seen per id wins) and link tables (one row per distinct key
//!   per movie);
//! - credits, keywords: as movies, plus `unknown_movie` for an id that is not an accepted movie;
//! - links: `movieId` must be a positive integer (`bad_key`) and unique (`duplicate_key`);
//!   an empty `tmdbId` is NULL;
//! - ratings: `userId` and `movieId` must be positive integers (`bad_key`); a (user, movie)
//!   pair seen anywhere earlier in the file is rejected `duplicate_rating` (the first row in
//!   file order wins, and only it is summed into `ratings_per_movie`). A file grouped by user
//!   (every real copy) is read once, holding one user's movies and the list of users; rows of
//!   a user that comes back after other users' rows are spilled to a file and settled at the
//!   end, with a second read of the entry (see `rating_keys`).
//!
//! Every key of every table is unique by construction, so a load never fails on data: movie
//! ids (first row wins), dimension ids and codes (first name wins), one link row per distinct
//! key per movie, cast and crew `ord` (the list position; one credits row per movie), links
//! `movieId`, ratings (user, movie), and `ratings_per_movie` (one row per movie id).
//!
//! Text fields that are empty in the CSV are written as NULL (CSV cannot tell empty from
//! missing); a text containing a NUL byte is NULL and counted unparsable. Integers and floats
//! that pass the checks are written as their source text; dates must be real calendar dates.
//! An integer column (ids and keys, budget, revenue, vote_count, tmdbId, ratings' timestamp)
//! also takes an exact integer written as a float, the way pandas re-saves such columns
//! (`373554033.0`, `1e3`, `1.5E2`), and writes that integer; a fractional part (`12.5`) or a
//! value outside 64 bits stays unparsable (a bad key for ids). The plain-digits path is
//! unchanged: no float parsing, no allocation.
//!
//! Records end at `\n` (a CRLF's `\r` is cut): a bare `\r` inside an unquoted field stays
//! data. That is how the real file's "3 broken rows" came about (an overview with a bare CR,
//! written unquoted); readers that also end records at CR split such a record in two, and so
//! did pandas. Here the record stays whole and loads.
//!
//! Threads: each entry is decompressed and split into CSV records on a reading thread while
//! the calling thread checks and writes (records stay in file order), and the archive's
//! SHA-256 is computed on a third. Blocking: call it from `spawn_blocking` in async code (as
//! [`CleanTask`] does).

#![warn(missing_docs)]

mod clean;
mod copy;
mod error;
mod input;
pub mod literal;
mod manifest;
mod rating_keys;
mod scalar;
mod schema;
mod task;

pub use clean::{clean_zip, clean_zip_with_cancel, RejectReason, MANIFEST_FILE, REJECTS_FILE, REQUIRED_ENTRIES};
pub use error::CleanError;
pub use manifest::{Cut, FileStats, Manifest, RejectsOutput, TableOutput, MANIFEST_FORMAT};
pub use schema::{table, ColumnDef, ForeignKey, TableDef, TABLES};
pub use task::{CleanInput, CleanOutput, CleanRecord, CleanTask};

/// Settings of a clean.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct CleanConfig {
    /// Largest decompressed size accepted for one zip entry, counted on the bytes really
    /// produced (not the size the header claims). Default 4 GiB.
    pub max_entry_bytes: u64,
    /// About how many bytes of a key-ordered table file (ratings) lie between the places the
    /// manifest records where it can be cut into key ranges ([`TableOutput::cuts`]). Default
    /// 32 MiB.
    pub cut_spacing_bytes: u64,
}

impl Default for CleanConfig {
    fn default() -> Self {
        CleanConfig {
            max_entry_bytes: 4 << 30,
            cut_spacing_bytes: 32 << 20,
        }
    }
}
