//! Where the dataset comes from: an S3 object, an HTTP(S) URL or a local file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use url::Url;

use crate::FetchError;

/// The published copy of "The Movies Dataset" the original project used (public, anonymous GET,
/// region us-west-2; the dotted bucket name needs path-style requests).
pub const DEFAULT_SOURCE: &str = "s3://com.guild.us-west-2.public-data/project-data/the-movies-dataset.zip";

/// A parsed source location.
///
/// Accepted forms: `s3://bucket/key`, `https://…`, `http://…`, `file:///abs/path` and a plain
/// path. [`Display`](fmt::Display) (and `Debug`) never show credentials: user info and the
/// values of signature/token-like query parameters of URLs are replaced by `REDACTED`.
#[derive(Clone, PartialEq, Eq)]
pub struct Source {
    pub(crate) kind: SourceKind,
}

#[derive(Clone, PartialEq, Eq)]
pub(crate) enum SourceKind {
    S3 { bucket: String, key: String },
    Http { url: Url },
    File { path: PathBuf },
}

impl Source {
    /// Parses a source location; see [`Source`] for the accepted forms.
    pub fn parse(s: &str) -> Result<Source, FetchError> {
        let s = s.trim();
        let invalid = |reason: &str| FetchError::InvalidSource {
            location: redact_str(s),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(invalid("empty source"));
        }
        let kind = if let Some(rest) = strip_prefix_ci(s, "s3://") {
            let (bucket, key) = rest
                .split_once('/')
                .ok_or_else(|| invalid("expected s3://bucket/key"))?;
            if bucket.is_empty() || key.is_empty() {
                return Err(invalid("expected s3://bucket/key"));
            }
            SourceKind::S3 {
                bucket: bucket.to_string(),
                key: key.to_string(),
            }
        } else if strip_prefix_ci(s, "http://").is_some() || strip_prefix_ci(s, "https://").is_some() {
            let url = Url::parse(s).map_err(|e| invalid(&format!("invalid URL: {e}")))?;
            if url.host_str().is_none_or(str::is_empty) {
                return Err(invalid("URL has no host"));
            }
            SourceKind::Http { url }
        } else if strip_prefix_ci(s, "file://").is_some() {
            let url = Url::parse(s).map_err(|e| invalid(&format!("invalid file URL: {e}")))?;
            let path = url
                .to_file_path()
                .map_err(|()| invalid("expected file:///absolute/path"))?;
            SourceKind::File { path }
        } else if let Some((scheme, _)) = s.split_once("://") {
            return Err(invalid(&format!(
                "unsupported scheme {scheme:?} (use s3://, https://, http://, file:// or a path)"
            )));
        } else {
            SourceKind::File { path: PathBuf::from(s) }
        };
        Ok(Source { kind })
    }

    /// `s3`, `http`, `https` or `file`.
    pub fn scheme(&self) -> &'static str {
        match &self.kind {
            SourceKind::S3 { .. } => "s3",
            SourceKind::Http { url } if url.scheme() == "https" => "https",
            SourceKind::Http { .. } => "http",
            SourceKind::File { .. } => "file",
        }
    }

    /// The local path of a `file://` or plain-path source.
    pub fn local_path(&self) -> Option<&Path> {
        match &self.kind {
            SourceKind::File { path } => Some(path),
            _ => None,
        }
    }

    /// Bucket and key of an `s3://` source.
    pub fn s3_location(&self) -> Option<(&str, &str)> {
        match &self.kind {
            SourceKind::S3 { bucket, key } => Some((bucket, key)),
            _ => None,
        }
    }
}

impl Default for Source {
    fn default() -> Self {
        Source::parse(DEFAULT_SOURCE).expect("DEFAULT_SOURCE parses")
    }
}

impl FromStr for Source {
    type Err = FetchError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Source::parse(s)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            SourceKind::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
            SourceKind::Http { url } => f.write_str(&redact_url(url)),
            SourceKind::File { path } => write!(f, "{}", path.display()),
        }
    }
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Source({self})")
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len() && s.is_char_boundary(prefix.len()) {
        let (head, rest) = s.split_at(prefix.len());
        head.eq_ignore_ascii_case(prefix).then_some(rest)
    } else {
        None
    }
}

/// Query parameters whose values are (or may be) credentials: presigned-URL signatures,
/// tokens, keys.
fn is_sensitive_param(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "sig",
        "credential",
        "token",
        "secret",
        "password",
        "passwd",
        "key",
        "auth",
        "session",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// A URL without user info and with credential-like query values replaced by `REDACTED`.
pub(crate) fn redact_url(url: &Url) -> String {
    let mut u = url.clone();
    if !u.username().is_empty() || u.password().is_some() {
        let _ = u.set_password(None);
        let _ = u.set_username("REDACTED");
    }
    u.set_fragment(None);
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_sensitive_param(&k) {
                    "REDACTED".to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.set_query(None);
        if !pairs.is_empty() {
            u.query_pairs_mut().extend_pairs(pairs);
        }
    }
    u.to_string()
}

/// Redacts a string that failed to parse as a source, in case it is a URL with credentials.
fn redact_str(s: &str) -> String {
    match Url::parse(s) {
        Ok(u) if u.has_host() => redact_url(&u),
        _ if s.contains('@') || s.contains('?') => "<unparseable URL>".to_string(),
        _ => s.to_string(),
    }
}

/// Removes every trace of `url`'s credentials (user info, query values) from a message written
/// by a lower layer (object_store error texts include the request URI).
pub(crate) fn scrub(msg: &str, source: &Source) -> String {
    let SourceKind::Http { url } = &source.kind else {
        return msg.to_string();
    };
    let mut out = msg.to_string();
    if let Some(q) = url.query() {
        if !q.is_empty() {
            out = out.replace(q, "REDACTED");
        }
    }
    if let Some(p) = url.password() {
        if !p.is_empty() {
            out = out.replace(p, "REDACTED");
        }
    }
    if !url.username().is_empty() {
        out = out.replace(&format!("{}@", url.username()), "REDACTED@");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let s = Source::parse(DEFAULT_SOURCE).unwrap();
        assert_eq!(
            s.s3_location(),
            Some(("com.guild.us-west-2.public-data", "project-data/the-movies-dataset.zip"))
        );
        assert_eq!(s.to_string(), DEFAULT_SOURCE);
        assert_eq!(Source::parse("https://example.com/a/b.zip").unwrap().scheme(), "https");
        assert_eq!(Source::parse("http://example.com/b.zip").unwrap().scheme(), "http");
        let f = Source::parse("file:///tmp/x.zip").unwrap();
        assert_eq!(f.local_path(), Some(Path::new("/tmp/x.zip")));
        let p = Source::parse("data/x.zip").unwrap();
        assert_eq!(p.local_path(), Some(Path::new("data/x.zip")));
        assert_eq!(p.to_string(), "data/x.zip");
    }

    #[test]
    fn rejects_bad_sources() {
        for bad in ["", "s3://bucket", "s3:///key", "s3://bucket/", "ftp://h/x", "https://"] {
            assert!(
                matches!(Source::parse(bad), Err(FetchError::InvalidSource { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn display_hides_credentials() {
        let s = Source::parse("https://user:hunter2@h.example/x.zip?X-Amz-Signature=abc123&X-Amz-Credential=AKIA&v=1")
            .unwrap();
        let shown = format!("{s} {s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("abc123"), "{shown}");
        assert!(!shown.contains("AKIA"), "{shown}");
        assert!(!shown.contains("user"), "{shown}");
        assert!(shown.contains("v=1"), "{shown}");
        let msg = "GET https://user:hunter2@h.example/x.zip?X-Amz-Signature=abc123&X-Amz-Credential=AKIA&v=1 failed";
        let scrubbed = scrub(msg, &s);
        assert!(
            !scrubbed.contains("abc123") && !scrubbed.contains("hunter2"),
            "{scrubbed}"
        );
        let err = Source::parse("ftp://u:pw@h/x").unwrap_err().to_string();
        assert!(!err.contains("pw@"), "{err}");
    }
}
