use std::io;
use std::path::PathBuf;

/// Why cleaning an archive failed as a whole.
///
/// Bad *rows* are never errors: they become rejects with a reason. These are the failures that
/// make the whole archive unusable (an unsafe or corrupt zip, a missing file or column) or that
/// stop the work (disk I/O, cancellation). See [`CleanError::is_retryable`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CleanError {
    /// An entry name is absolute, climbs out with `..`, or uses a drive or backslash form.
    #[error("refusing the archive: entry name {name:?} is not a safe relative path")]
    UnsafeEntryName {
        /// The entry name as stored (lossily decoded).
        name: String,
    },
    /// An entry is a symbolic link.
    #[error("refusing the archive: entry {name:?} is a symbolic link")]
    SymlinkEntry {
        /// The entry name.
        name: String,
    },
    /// Two entries carry the same name, so which one is meant is ambiguous.
    #[error("refusing the archive: entry name {name:?} occurs more than once")]
    DuplicateEntry {
        /// The repeated entry name.
        name: String,
    },
    /// An entry decompresses (or declares it would) to more than the configured limit.
    #[error("refusing the archive: entry {name:?} is larger than the limit of {limit} bytes")]
    EntryTooLarge {
        /// The entry name.
        name: String,
        /// `CleanConfig::max_entry_bytes`.
        limit: u64,
    },
    /// A required file is not at the root of the archive.
    #[error("the archive has no entry {name:?} at its root")]
    MissingEntry {
        /// The expected entry name.
        name: String,
    },
    /// A file's header lacks required columns (or the file has no header at all).
    #[error("{file}: header lacks the required column(s) {}", missing.join(", "))]
    BadHeader {
        /// The entry name.
        file: String,
        /// The required column names that were not found.
        missing: Vec<String>,
    },
    /// The zip structure could not be read (not a zip, truncated central directory, an
    /// unsupported compression method or encryption).
    #[error("cannot read zip archive {}: {source}", path.display())]
    Zip {
        /// The archive path.
        path: PathBuf,
        /// What the zip reader said.
        #[source]
        source: zip::result::ZipError,
    },
    /// Reading or writing a file failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or folder concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An entry's data is damaged: CRC mismatch, truncated or invalid compressed data.
    #[error("entry {entry:?} is corrupt: {detail}")]
    Corrupt {
        /// The entry name.
        entry: String,
        /// What was wrong.
        detail: String,
    },
    /// The caller asked to stop.
    #[error("cleaning was cancelled")]
    Cancelled,
}

impl CleanError {
    /// Whether trying again could help: only transient disk conditions (full disk, quota,
    /// interrupted or busy I/O). A bad or unsafe archive is fatal: the same bytes fail the same
    /// way, so the fix is upstream (a new download).
    pub fn is_retryable(&self) -> bool {
        match self {
            CleanError::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::StorageFull
                    | io::ErrorKind::QuotaExceeded
                    | io::ErrorKind::ResourceBusy
                    | io::ErrorKind::Interrupted
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::WouldBlock
                    | io::ErrorKind::OutOfMemory
            ),
            _ => false,
        }
    }

    /// Whether the downloaded bytes are damaged (a truncated or corrupt zip): cleaning them
    /// again cannot help, fetching them again can.
    pub fn needs_refetch(&self) -> bool {
        matches!(self, CleanError::Zip { .. } | CleanError::Corrupt { .. })
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        CleanError::Io {
            path: path.into(),
            source,
        }
    }
}
