//! Why a fetch failed, and whether a retry can help.

use std::path::PathBuf;

use reelflow_dag::{ErrorKind, TaskError};

/// A failed fetch. Every variant names the source it failed on, in its credential-free
/// [`Display`](std::fmt::Display) form (`location`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The source string is not a location we can fetch from.
    #[error("invalid source {location}: {reason}")]
    InvalidSource { location: String, reason: String },
    /// 404, no such key, no such file.
    #[error("failed to fetch {location}: object not found (404)")]
    NotFound { location: String },
    /// 401/403 (wrong or missing credentials, a private bucket), or a file we may not read.
    #[error("failed to fetch {location}: access denied ({detail})")]
    AccessDenied { location: String, detail: String },
    /// The body is not a zip archive (an HTML error page, the wrong object); the file is deleted.
    #[error("failed to fetch {location}: not a zip archive (starts with {head})")]
    NotAZip { location: String, head: String },
    /// No response, or no body bytes, within the configured timeout.
    #[error("failed to fetch {location}: timed out ({detail})")]
    Timeout { location: String, detail: String },
    /// Connection refused, reset, DNS, TLS, a body cut short.
    #[error("failed to fetch {location}: network error: {detail}")]
    Network { location: String, detail: String },
    /// 5xx, 429 or 408 from the server.
    #[error("failed to fetch {location}: server error {status}: {detail}")]
    Server {
        location: String,
        status: u16,
        detail: String,
    },
    /// Any other unexpected answer (a redirect, 400, a malformed response).
    #[error("failed to fetch {location}: unexpected response: {detail}")]
    Protocol { location: String, detail: String },
    /// The body ended before the announced size.
    #[error("failed to fetch {location}: body ended after {received} of {expected} bytes")]
    Incomplete {
        location: String,
        expected: u64,
        received: u64,
    },
    /// The object kept changing while it was being downloaded.
    #[error("failed to fetch {location}: the object changed during the download")]
    Changed { location: String },
    /// Reading or writing a local file failed.
    #[error("failed to fetch {location}: I/O error on {}: {source}", path.display())]
    Io {
        location: String,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The client could not be built (bad endpoint, region…).
    #[error("failed to fetch {location}: bad configuration: {detail}")]
    Config { location: String, detail: String },
    /// The fetch was cancelled; a partial download is kept for the next attempt.
    #[error("fetch of {location} cancelled")]
    Cancelled { location: String },
}

impl FetchError {
    /// Whether trying the same fetch again later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            FetchError::Timeout { .. }
                | FetchError::Network { .. }
                | FetchError::Server { .. }
                | FetchError::Incomplete { .. }
                | FetchError::Changed { .. }
                | FetchError::Io { .. }
        )
    }

    pub fn is_cancelled(&self) -> bool {
        matches!(self, FetchError::Cancelled { .. })
    }

    /// Whether a retry can help, in the DAG's terms.
    pub fn kind(&self) -> ErrorKind {
        if self.is_cancelled() {
            ErrorKind::Cancelled
        } else if self.is_retryable() {
            ErrorKind::Retryable
        } else {
            ErrorKind::Fatal
        }
    }
}

impl From<FetchError> for TaskError {
    fn from(e: FetchError) -> Self {
        TaskError {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_kinds() {
        let e = FetchError::NotFound {
            location: "s3://bucket/key".into(),
        };
        assert_eq!(e.to_string(), "failed to fetch s3://bucket/key: object not found (404)");
        assert_eq!(TaskError::from(e).kind, ErrorKind::Fatal);
        let e = FetchError::Timeout {
            location: "s3://b/k".into(),
            detail: "x".into(),
        };
        assert!(TaskError::from(e).is_retryable());
        let e = FetchError::Cancelled {
            location: "s3://b/k".into(),
        };
        assert_eq!(TaskError::from(e).kind, ErrorKind::Cancelled);
    }
}
