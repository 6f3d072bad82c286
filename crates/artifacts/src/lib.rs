//! The artifact store: where the stages of a run keep the bytes they hand to each other (the
//! source zip, the COPY files, the clean manifest), behind one interface chosen by one setting,
//! `artifacts.url`:
//!
//! - a local folder (`file:///abs/path` or a plain path; the default is `artifacts_dir`), for one
//!   machine or one pod with a volume;
//! - `s3://bucket/prefix`, any S3-compatible store, reached with the same endpoint, region and
//!   path-style rules as the fetch stage ([`s3_builder`]); credentials come from the AWS
//!   environment: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`), web
//!   identity (IRSA: `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`) or ECS/EKS container
//!   credentials (`AWS_CONTAINER_CREDENTIALS_*`); with none of them requests are unsigned.
//!
//! Objects are written once under attempt-scoped keys ([`attempt_path`]), so a stale attempt
//! can never overwrite what the live one wrote; what a stage hands on is a list of
//! [`ObjectRef`]s (key, size, SHA-256), and readers check what they read against them. Uploads
//! stream in [`PART_SIZE`] parts (a 100 GB object is 1 600 parts, far below S3's 10 000);
//! reads stream, whole or by byte range.

use std::io::{self, Read as _};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{
    ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// Size of one part of a multipart upload: 64 MiB, so a 100 GB object needs 1 600 parts (S3
/// allows 10 000). A file up to this size is one plain PUT.
pub const PART_SIZE: usize = 64 << 20;
/// Parts of one upload in flight while the next is filled (memory: about
/// `(1 + this) * PART_SIZE`, 128 MiB).
const PARTS_IN_FLIGHT: usize = 1;
const READ_CHUNK: usize = 1 << 20;

/// An object a stage wrote, as the next stage must find it: its full key in the store, its
/// size and the hex SHA-256 of its bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub key: String,
    pub size: u64,
    pub sha256: String,
}

/// A failure of the artifact store.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("artifacts.url {url:?}: {reason}")]
    Config { url: String, reason: String },
    #[error("artifact {key} already exists in {store}: an attempt writes each of its objects once")]
    AlreadyExists { store: String, key: String },
    #[error(
        "artifact {key} is missing from {store}: it was removed (retention, or by hand); retry the task that wrote it"
    )]
    NotFound { store: String, key: String },
    #[error("artifact {key} in {store} does not match its record ({detail}); retry the task that wrote it")]
    Mismatch { store: String, key: String, detail: String },
    #[error("artifact store {store}: {doing} {key}: {detail}")]
    Store {
        store: String,
        key: String,
        doing: &'static str,
        detail: String,
    },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("cancelled")]
    Cancelled,
}

impl ArtifactError {
    /// Whether trying again can help: the store or the disk failed (transient), rather than
    /// the object being absent, altered or already written.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ArtifactError::Store { .. } | ArtifactError::Io { .. })
    }
}

/// How to reach an S3-compatible store; the fetch stage and the artifact store share it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S3Settings {
    /// `http(s)://host:port`; `None` = `AWS_ENDPOINT_URL` if set, else AWS itself.
    pub endpoint: Option<String>,
    pub region: String,
    /// Virtual-hosted-style requests; path-style otherwise.
    pub virtual_hosted: bool,
}

/// Applies reelflow's S3 rules to `builder`: the bucket, the region, the endpoint (the
/// configured one, else `AWS_ENDPOINT_URL`; plain `http://` endpoints are allowed) and
/// path-style requests unless `virtual_hosted`. Call it after `with_client_options`, which
/// would reset the plain-HTTP permission.
pub fn s3_builder(builder: AmazonS3Builder, bucket: &str, s: &S3Settings) -> AmazonS3Builder {
    let endpoint = s
        .endpoint
        .clone()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        .filter(|e| !e.trim().is_empty());
    let mut b = builder
        .with_bucket_name(bucket)
        .with_region(&s.region)
        .with_virtual_hosted_style_request(s.virtual_hosted);
    if let Some(ep) = endpoint {
        let http = ep.trim().to_ascii_lowercase().starts_with("http://");
        b = b.with_endpoint(ep.trim()).with_allow_http(http);
    }
    b
}

/// `<dag>/<period>/run-<run>/<task>/attempt-<attempt>`: where one attempt writes its objects
/// (below the store's prefix).
pub fn attempt_path(dag: &str, period: &str, run_id: i64, task: &str, attempt_id: i64) -> String {
    format!("{}/{task}/attempt-{attempt_id}", run_path(dag, period, run_id))
}

/// `<dag>/<period>/run-<run>`: everything a run wrote (below the store's prefix).
pub fn run_path(dag: &str, period: &str, run_id: i64) -> String {
    format!("{dag}/{period}/run-{run_id}")
}

/// The artifact store (cheap to clone).
#[derive(Clone)]
pub struct Artifacts(Arc<Inner>);

struct Inner {
    store: Arc<dyn ObjectStore>,
    /// Key prefix inside the bucket, without slashes at the ends; empty for a local folder.
    prefix: String,
    /// The folder of a local store.
    local_root: Option<PathBuf>,
    /// What to call the store in messages (never credentials).
    url: String,
}

impl std::fmt::Debug for Artifacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Artifacts({})", self.0.url)
    }
}

/// The bytes `start..end` of a file, in chunks of 1 MiB each read on tokio's blocking pool (a
/// file shorter than `end` is an `UnexpectedEof` error). object_store and s3s-fs read local
/// files 8 KiB and 4 KiB at a time, one blocking-pool hop each.
pub fn file_chunks(
    file: std::fs::File,
    start: u64,
    end: u64,
) -> impl futures::Stream<Item = io::Result<Bytes>> + Send + Sync + 'static {
    use std::io::{Seek as _, SeekFrom};
    const CHUNK: u64 = 1 << 20;
    futures::stream::try_unfold((Some(file), start), move |(file, pos)| async move {
        let Some(mut file) = file else { return Ok(None) };
        if pos >= end {
            return Ok(None);
        }
        let (file, buf) = tokio::task::spawn_blocking(move || {
            let n = (end - pos).min(CHUNK);
            let mut buf = Vec::with_capacity(n as usize);
            file.seek(SeekFrom::Start(pos))?;
            if (&mut file).take(n).read_to_end(&mut buf)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file is shorter than expected",
                ));
            }
            Ok((file, buf))
        })
        .await
        .map_err(io::Error::other)??;
        let next = pos + buf.len() as u64;
        Ok(Some((Bytes::from(buf), (Some(file), next))))
    })
}

impl Artifacts {
    /// Opens the store `url` names: empty = the local folder `local_default`; `file:///abs`
    /// or a plain path = that folder; `s3://bucket[/prefix]` = that bucket.
    pub fn open(url: &str, local_default: &Path, s3: &S3Settings) -> Result<Artifacts, ArtifactError> {
        let url = url.trim();
        let bad = |reason: &str| ArtifactError::Config {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        if url.is_empty() {
            return Artifacts::local(local_default);
        }
        let lower = url.to_ascii_lowercase();
        if lower.starts_with("s3://") {
            let rest = &url[5..];
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("expected s3://bucket or s3://bucket/prefix"));
            }
            return Artifacts::s3(bucket, prefix, s3);
        }
        if lower.starts_with("file://") {
            let parsed = url::Url::parse(url).map_err(|e| bad(&format!("invalid file URL: {e}")))?;
            let path = parsed
                .to_file_path()
                .map_err(|()| bad("expected file:///absolute/path"))?;
            return Artifacts::local(&path);
        }
        if let Some((scheme, _)) = url.split_once("://") {
            return Err(bad(&format!(
                "unsupported scheme {scheme:?} (use s3://bucket/prefix, file:///path or a path)"
            )));
        }
        Artifacts::local(Path::new(url))
    }

    /// A local folder (created if needed).
    pub fn local(root: &Path) -> Result<Artifacts, ArtifactError> {
        let io = |source| ArtifactError::Io {
            path: root.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(root).map_err(io)?;
        let root = std::fs::canonicalize(root).map_err(io)?;
        let fs = LocalFileSystem::new_with_prefix(&root).map_err(|e| ArtifactError::Config {
            url: root.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Artifacts(Arc::new(Inner {
            store: Arc::new(fs),
            prefix: String::new(),
            url: root.display().to_string(),
            local_root: Some(root),
        })))
    }

    /// An S3 bucket, keys under `prefix`. Credentials: the AWS environment; see the crate docs.
    pub fn s3(bucket: &str, prefix: &str, s: &S3Settings) -> Result<Artifacts, ArtifactError> {
        Artifacts::s3_with_keys(bucket, prefix, s, None)
    }

    /// [`Artifacts::s3`] signing with these keys (access key id, secret) instead of the
    /// environment's.
    pub fn s3_with_keys(
        bucket: &str,
        prefix: &str,
        s: &S3Settings,
        keys: Option<(&str, &str)>,
    ) -> Result<Artifacts, ArtifactError> {
        let prefix = prefix.trim_matches('/').to_string();
        let url = if prefix.is_empty() {
            format!("s3://{bucket}")
        } else {
            format!("s3://{bucket}/{prefix}")
        };
        // No overall request timeout: a streamed read of a large object into COPY takes as
        // long as the COPY does. A stalled transfer is ended by the task's timeout_secs.
        let options = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(10))
            .with_timeout_disabled();
        // fetch's credential rules: keys from the environment when set, else web identity
        // (IRSA) or container credentials when their variables are set, else unsigned requests.
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let signed = (var("AWS_ACCESS_KEY_ID").is_some() && var("AWS_SECRET_ACCESS_KEY").is_some())
            || (var("AWS_WEB_IDENTITY_TOKEN_FILE").is_some() && var("AWS_ROLE_ARN").is_some())
            || var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_some()
            || var("AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some();
        let mut builder = AmazonS3Builder::from_env().with_client_options(options);
        if let Some((id, secret)) = keys {
            builder = builder.with_access_key_id(id).with_secret_access_key(secret);
        }
        let store = s3_builder(builder, bucket, s)
            .with_skip_signature(!signed && keys.is_none())
            .build()
            .map_err(|e| ArtifactError::Config {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        if !prefix.is_empty() && ObjPath::parse(&prefix).is_err() {
            return Err(ArtifactError::Config {
                url,
                reason: "the prefix is not a valid object path".into(),
            });
        }
        Ok(Artifacts(Arc::new(Inner {
            store: Arc::new(store),
            prefix,
            local_root: None,
            url,
        })))
    }

    /// The store, for messages: `s3://bucket/prefix` or the folder.
    pub fn url(&self) -> &str {
        &self.0.url
    }

    /// The folder of a local store.
    pub fn local_root(&self) -> Option<&Path> {
        self.0.local_root.as_deref()
    }

    /// The full key of `rel` (a path below the store's prefix).
    pub fn key(&self, rel: &str) -> String {
        if self.0.prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.0.prefix)
        }
    }

    fn path(&self, key: &str) -> Result<ObjPath, ArtifactError> {
        ObjPath::parse(key).map_err(|e| ArtifactError::Store {
            store: self.0.url.clone(),
            key: key.to_string(),
            doing: "naming",
            detail: e.to_string(),
        })
    }

    fn err(&self, key: &str, doing: &'static str) -> impl FnOnce(object_store::Error) -> ArtifactError + '_ {
        let key = key.to_string();
        let writing = matches!(
            doing,
            "uploading" | "writing" | "starting the upload of" | "uploading a part of" | "completing the upload of"
        );
        move |e| match e {
            // A write finds no bucket: the configuration is wrong, retrying cannot help.
            object_store::Error::NotFound { .. } if writing => ArtifactError::Config {
                url: self.0.url.clone(),
                reason: format!("writing {key}: the bucket does not exist ({e})"),
            },
            object_store::Error::NotFound { .. } => ArtifactError::NotFound {
                store: self.0.url.clone(),
                key,
            },
            object_store::Error::AlreadyExists { .. } => ArtifactError::AlreadyExists {
                store: self.0.url.clone(),
                key,
            },
            e => ArtifactError::Store {
                store: self.0.url.clone(),
                key,
                doing,
                detail: e.to_string(),
            },
        }
    }

    /// Streams the local file `file` to the object `key` (multipart in [`PART_SIZE`] parts
    /// past one part) and returns its reference. A local store links the file in place instead
    /// of copying it when it can (same file system), and never replaces an existing object.
    /// `cancelled` is polled between chunks.
    pub async fn put_file(
        &self,
        key: &str,
        file: &Path,
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<ObjectRef, ArtifactError> {
        if let Some(root) = &self.0.local_root {
            let (src, dest) = (file.to_path_buf(), root.join(key));
            let (size, sha256) = tokio::task::spawn_blocking(move || link_or_copy(&src, &dest))
                .await
                .map_err(|e| ArtifactError::Io {
                    path: file.to_path_buf(),
                    source: io::Error::other(e),
                })?
                .map_err(|(path, source)| {
                    if source.kind() == io::ErrorKind::AlreadyExists {
                        ArtifactError::AlreadyExists {
                            store: self.0.url.clone(),
                            key: key.to_string(),
                        }
                    } else {
                        ArtifactError::Io { path, source }
                    }
                })?;
            return Ok(ObjectRef {
                key: key.to_string(),
                size,
                sha256,
            });
        }
        let path = self.path(key)?;
        let io = |source| ArtifactError::Io {
            path: file.to_path_buf(),
            source,
        };
        let mut f = tokio::fs::File::open(file).await.map_err(io)?;
        let len = f.metadata().await.map_err(io)?.len();
        let mut hasher = Sha256::new();
        if len <= PART_SIZE as u64 {
            let mut data = Vec::with_capacity(len as usize);
            tokio::io::AsyncReadExt::read_to_end(&mut f, &mut data)
                .await
                .map_err(io)?;
            hasher.update(&data);
            let size = data.len() as u64;
            self.0
                .store
                .put(&path, PutPayload::from(data))
                .await
                .map_err(self.err(key, "uploading"))?;
            return Ok(ObjectRef {
                key: key.to_string(),
                size,
                sha256: hex::encode(hasher.finalize()),
            });
        }
        let upload = self
            .0
            .store
            .put_multipart(&path)
            .await
            .map_err(self.err(key, "starting the upload of"))?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut buf = vec![0u8; READ_CHUNK];
        let mut size = 0u64;
        let result: Result<(), ArtifactError> = async {
            loop {
                if cancelled() {
                    return Err(ArtifactError::Cancelled);
                }
                let n = tokio::io::AsyncReadExt::read(&mut f, &mut buf).await.map_err(io)?;
                if n == 0 {
                    return Ok(());
                }
                hasher.update(&buf[..n]);
                size += n as u64;
                w.wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(self.err(key, "uploading a part of"))?;
                w.write(&buf[..n]);
            }
        }
        .await;
        match result {
            Ok(()) => {
                w.finish().await.map_err(self.err(key, "completing the upload of"))?;
                Ok(ObjectRef {
                    key: key.to_string(),
                    size,
                    sha256: hex::encode(hasher.finalize()),
                })
            }
            Err(e) => {
                if let Err(abort) = w.abort().await {
                    tracing::warn!(key, error = %abort, "could not abort the multipart upload; the bucket's lifecycle rule removes it");
                }
                Err(e)
            }
        }
    }

    /// Writes `bytes` to `key` only if no object is there yet (`PutMode::Create`; a local
    /// store creates the file with create-new semantics): the record a stage writes last. An
    /// object with other bytes already there is [`ArtifactError::AlreadyExists`]; one with the
    /// same bytes is this write (a retried request).
    pub async fn put_create(&self, key: &str, bytes: Vec<u8>) -> Result<ObjectRef, ArtifactError> {
        let path = self.path(key)?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let size = bytes.len() as u64;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let written = ObjectRef {
            key: key.to_string(),
            size,
            sha256,
        };
        match self.0.store.put_opts(&path, PutPayload::from(bytes), opts).await {
            Ok(_) => Ok(written),
            // Stores differ in how they refuse a create over an existing object (S3 and MinIO
            // answer 412, moto 403) and a retried PUT may find its own first try: whatever the
            // answer, an object that is there decides. The same bytes are this write; other
            // bytes are another writer's, and stay.
            Err(e) => match self.get_bytes(&written).await {
                Ok(_) => Ok(written),
                Err(ArtifactError::Mismatch { .. }) => Err(ArtifactError::AlreadyExists {
                    store: self.0.url.clone(),
                    key: key.to_string(),
                }),
                Err(_) => Err(self.err(key, "writing")(e)),
            },
        }
    }

    /// The whole object, checked against its reference.
    pub async fn get_bytes(&self, r: &ObjectRef) -> Result<Bytes, ArtifactError> {
        let path = self.path(&r.key)?;
        let bytes = self
            .0
            .store
            .get(&path)
            .await
            .map_err(self.err(&r.key, "reading"))?
            .bytes()
            .await
            .map_err(self.err(&r.key, "reading"))?;
        self.check(r, bytes.len() as u64, &hex::encode(Sha256::digest(&bytes)))?;
        Ok(bytes)
    }

    fn check(&self, r: &ObjectRef, size: u64, sha256: &str) -> Result<(), ArtifactError> {
        if size != r.size || sha256 != r.sha256 {
            return Err(ArtifactError::Mismatch {
                store: self.0.url.clone(),
                key: r.key.clone(),
                detail: format!(
                    "{size} bytes with SHA-256 {sha256}, recorded {} bytes with SHA-256 {}",
                    r.size, r.sha256
                ),
            });
        }
        Ok(())
    }

    /// Copies the object to the local file `dest` (replacing it), checking size and SHA-256.
    /// A local store links the file instead of copying it when it can.
    pub async fn download(
        &self,
        r: &ObjectRef,
        dest: &Path,
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<(), ArtifactError> {
        let io = |source| ArtifactError::Io {
            path: dest.to_path_buf(),
            source,
        };
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io)?;
        }
        let tmp = dest.with_extension("download");
        let _ = tokio::fs::remove_file(&tmp).await;
        if let Some(root) = &self.0.local_root {
            let src = root.join(&r.key);
            match tokio::fs::hard_link(&src, &tmp).await {
                Ok(()) => {
                    let (size, sha) = hash_file(tmp.clone()).await.map_err(io)?;
                    if let Err(e) = self.check(r, size, &sha) {
                        let _ = tokio::fs::remove_file(&tmp).await;
                        return Err(e);
                    }
                    return tokio::fs::rename(&tmp, dest).await.map_err(io);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(ArtifactError::NotFound {
                        store: self.0.url.clone(),
                        key: r.key.clone(),
                    })
                }
                // Another file system: copy through the stream below.
                Err(_) => {}
            }
        }
        let mut stream = self.stream(r, None).await?;
        let mut f = tokio::fs::File::create(&tmp).await.map_err(io)?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            if cancelled() {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(ArtifactError::Cancelled);
            }
            let chunk = chunk?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            f.write_all(&chunk).await.map_err(io)?;
        }
        f.flush().await.map_err(io)?;
        f.sync_all().await.map_err(io)?;
        drop(f);
        if let Err(e) = self.check(r, size, &hex::encode(hasher.finalize())) {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        tokio::fs::rename(&tmp, dest).await.map_err(io)
    }

    /// The object's bytes as a stream: all of them, or the byte range `range` (one ranged
    /// GET). An empty range is an empty stream.
    pub async fn stream(
        &self,
        r: &ObjectRef,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes, ArtifactError>>, ArtifactError> {
        let range = range.unwrap_or(0..r.size);
        if range.start >= range.end {
            return Ok(futures::stream::empty().boxed());
        }
        let path = self.path(&r.key)?;
        let opts = GetOptions {
            range: Some(GetRange::Bounded(range)),
            ..Default::default()
        };
        let got = self
            .0
            .store
            .get_opts(&path, opts)
            .await
            .map_err(self.err(&r.key, "reading"))?;
        let (store, key) = (self.0.url.clone(), r.key.clone());
        let stream = match got.payload {
            // object_store reads a local file in 8 KiB chunks, each on the blocking pool: about
            // 90,000 thread hops for the ratings file. Read it in 1 MiB chunks instead.
            object_store::GetResultPayload::File(file, path) => file_chunks(file, got.range.start, got.range.end)
                .map_err(move |e| object_store::Error::Generic {
                    store: "LocalFileSystem",
                    source: format!("reading {}: {e}", path.display()).into(),
                })
                .boxed(),
            object_store::GetResultPayload::Stream(s) => s,
        };
        Ok(stream
            .map_err(move |e| ArtifactError::Store {
                store: store.clone(),
                key: key.clone(),
                doing: "reading",
                detail: e.to_string(),
            })
            .boxed())
    }

    /// The bytes `range` of the object (one ranged GET; for small reads).
    pub async fn read_range(&self, r: &ObjectRef, range: Range<u64>) -> Result<Bytes, ArtifactError> {
        if range.start >= range.end {
            return Ok(Bytes::new());
        }
        let path = self.path(&r.key)?;
        self.0
            .store
            .get_range(&path, range)
            .await
            .map_err(self.err(&r.key, "reading"))
    }

    /// The size of the object `key`, or `None` when there is none.
    pub async fn size_of(&self, key: &str) -> Result<Option<u64>, ArtifactError> {
        let path = self.path(key)?;
        match self.0.store.head(&path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(key, "looking up")(e)),
        }
    }

    /// Deletes every object below `rel` (a path below the store's prefix, such as
    /// [`run_path`]); returns how many there were. Retention only: stages never list.
    pub async fn delete_below(&self, rel: &str) -> Result<usize, ArtifactError> {
        let key = self.key(rel);
        let path = self.path(&key)?;
        let found: Vec<ObjPath> = self
            .0
            .store
            .list(Some(&path))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(self.err(&key, "listing"))?;
        let n = found.len();
        let mut deleted = self
            .0
            .store
            .delete_stream(futures::stream::iter(found.into_iter().map(Ok)).boxed());
        while let Some(r) = deleted.next().await {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.err(&key, "deleting")(e)),
            }
        }
        if let Some(root) = &self.0.local_root {
            // The folders left empty.
            match tokio::fs::remove_dir_all(root.join(&key)).await {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(ArtifactError::Io {
                        path: root.join(&key),
                        source: e,
                    })
                }
                _ => {}
            }
        }
        Ok(n)
    }
}

/// Size and hex SHA-256 of a local file.
async fn hash_file(path: PathBuf) -> io::Result<(u64, String)> {
    tokio::task::spawn_blocking(move || hash_file_sync(&path))
        .await
        .map_err(io::Error::other)?
}

fn hash_file_sync(path: &Path) -> io::Result<(u64, String)> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// A local store's upload: syncs `src`, then links it as `dest` (never replacing an existing
/// file), or copies it through a temporary file when linking is impossible. Size and SHA-256.
fn link_or_copy(src: &Path, dest: &Path) -> Result<(u64, String), (PathBuf, io::Error)> {
    fn at(p: &Path) -> impl FnOnce(io::Error) -> (PathBuf, io::Error) {
        let p = p.to_path_buf();
        move |e| (p, e)
    }
    std::fs::File::open(src).and_then(|f| f.sync_all()).map_err(at(src))?;
    let (size, sha) = hash_file_sync(src).map_err(at(src))?;
    let parent = dest.parent().expect("an object key has a parent folder");
    std::fs::create_dir_all(parent).map_err(at(parent))?;
    match std::fs::hard_link(src, dest) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err((dest.to_path_buf(), e)),
        Err(_) => {
            let tmp = dest.with_extension(format!("tmp-{}", std::process::id()));
            std::fs::copy(src, &tmp).map_err(at(&tmp))?;
            std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(at(&tmp))?;
            let linked = std::fs::hard_link(&tmp, dest);
            let _ = std::fs::remove_file(&tmp);
            linked.map_err(at(dest))?;
        }
    }
    if let Ok(d) = std::fs::File::open(parent) {
        let _ = d.sync_all();
    }
    Ok((size, sha))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never() -> bool {
        false
    }

    #[tokio::test]
    async fn local_store_round_trip_write_once_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = Artifacts::open("", &dir.path().join("a"), &S3Settings::default()).unwrap();
        let src = dir.path().join("x.tsv");
        std::fs::write(&src, b"1\thello\n2\tworld\n").unwrap();
        let key = store.key(&format!("{}/x.tsv", attempt_path("d", "2026-10", 1, "clean", 7)));
        let r = store.put_file(&key, &src, &never).await.unwrap();
        assert_eq!(r.size, 16);
        assert_eq!(r.sha256, hex::encode(Sha256::digest(b"1\thello\n2\tworld\n")));
        // Write-once: a second upload to the same key is refused, the object is unchanged.
        std::fs::write(dir.path().join("y"), b"other").unwrap();
        let again = store.put_file(&key, &dir.path().join("y"), &never).await.unwrap_err();
        assert!(matches!(again, ArtifactError::AlreadyExists { .. }), "{again}");
        let m = store
            .put_create(&store.key("d/2026-10/run-1/m.json"), b"{}".to_vec())
            .await
            .unwrap();
        let twice = store.put_create(&m.key, b"{\"x\":1}".to_vec()).await.unwrap_err();
        assert!(matches!(twice, ArtifactError::AlreadyExists { .. }), "{twice}");
        assert_eq!(&store.get_bytes(&m).await.unwrap()[..], b"{}");
        // Ranged reads and streams.
        assert_eq!(&store.read_range(&r, 2..7).await.unwrap()[..], b"hello");
        let parts: Vec<Bytes> = store
            .stream(&r, Some(8..16))
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(parts.concat(), b"2\tworld\n");
        // Downloads are checked against the reference.
        let dest = dir.path().join("scratch/x.tsv");
        store.download(&r, &dest, &never).await.unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"1\thello\n2\tworld\n");
        let wrong = ObjectRef {
            sha256: "00".repeat(32),
            ..r.clone()
        };
        let bad = store.download(&wrong, &dest, &never).await.unwrap_err();
        assert!(matches!(bad, ArtifactError::Mismatch { .. }), "{bad}");
        // Retention deletes a run's objects.
        assert_eq!(store.delete_below(&run_path("d", "2026-10", 1)).await.unwrap(), 2);
        assert_eq!(store.size_of(&r.key).await.unwrap(), None);
        let gone = store.get_bytes(&m).await.unwrap_err();
        assert!(matches!(gone, ArtifactError::NotFound { .. }), "{gone}");
        assert!(!dir.path().join("a/d/2026-10/run-1").exists());
    }

    #[test]
    fn urls() {
        let dir = tempfile::tempdir().unwrap();
        let s3 = S3Settings {
            endpoint: Some("http://127.0.0.1:1".into()),
            region: "us-east-1".into(),
            virtual_hosted: false,
        };
        let a = Artifacts::open("s3://bucket/some/prefix/", dir.path(), &s3).unwrap();
        assert_eq!(a.url(), "s3://bucket/some/prefix");
        assert_eq!(a.key("d/p/run-1"), "some/prefix/d/p/run-1");
        assert!(a.local_root().is_none());
        let f = Artifacts::open(&format!("file://{}", dir.path().join("f").display()), dir.path(), &s3).unwrap();
        assert_eq!(
            f.local_root(),
            Some(std::fs::canonicalize(dir.path().join("f")).unwrap().as_path())
        );
        assert_eq!(f.key("d"), "d");
        for bad in ["s3://", "gs://b/p", "file://relative"] {
            assert!(
                matches!(Artifacts::open(bad, dir.path(), &s3), Err(ArtifactError::Config { .. })),
                "{bad} accepted"
            );
        }
    }
}
