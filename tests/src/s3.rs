//! A real S3 protocol server in-process, and a TCP proxy that breaks its responses on purpose.
//!
//! [`S3Server`] serves a temp directory with s3s + s3s-fs over HTTP on `127.0.0.1:0`
//! (path-style; buckets are directories of [`S3Server::root`]). With an access key it checks
//! SigV4 signatures and refuses anonymous requests; without one it takes anonymous requests.
//! s3s-fs ignores `If-None-Match` and `If-Match` on GET, so the server wraps its `get_object` to
//! answer 304 and 412 like S3 does, and counts what it was asked ([`S3Stats`]). It also serves
//! multipart uploads, deletes and create-only PUTs (`If-None-Match: *`, answered 412 when the
//! object exists, as S3 does), which the artifact store uses.
//!
//! [`FaultProxy`] sits between a client and a server and cuts or stalls the response body of
//! its first connections after a given number of bytes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::dto::{
    AbortMultipartUploadInput, AbortMultipartUploadOutput, CompleteMultipartUploadInput, CompleteMultipartUploadOutput,
    CreateMultipartUploadInput, CreateMultipartUploadOutput, DeleteObjectInput, DeleteObjectOutput, DeleteObjectsInput,
    DeleteObjectsOutput, ETag, ETagCondition, GetObjectInput, GetObjectOutput, HeadObjectInput, HeadObjectOutput,
    ListObjectsV2Input, ListObjectsV2Output, PutObjectInput, PutObjectOutput, UploadPartInput, UploadPartOutput,
};
use s3s::service::S3ServiceBuilder;
use s3s::{s3_error, S3Request, S3Response, S3Result, S3};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the server was asked, for assertions ("the second fetch transferred no body").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct S3Stats {
    /// GetObject requests received (all outcomes).
    pub gets: u64,
    /// GetObject requests with a Range header that returned a body.
    pub ranged_gets: u64,
    /// Answered 304 Not Modified (If-None-Match matched).
    pub not_modified: u64,
    /// Answered 412 Precondition Failed (If-Match did not match).
    pub precondition_failed: u64,
    /// GetObject requests that returned a body (200 or 206).
    pub bodies: u64,
    /// PutObject requests that stored an object.
    pub puts: u64,
    /// UploadPart requests that stored a part.
    pub parts: u64,
    /// Create-only PUTs refused because the object existed.
    pub create_conflicts: u64,
}

#[derive(Default)]
struct Counters {
    fail_next: AtomicU64,
    gets: AtomicU64,
    ranged_gets: AtomicU64,
    not_modified: AtomicU64,
    precondition_failed: AtomicU64,
    bodies: AtomicU64,
    puts: AtomicU64,
    parts: AtomicU64,
    create_conflicts: AtomicU64,
}

/// s3s-fs with S3's conditional GET semantics.
struct ConditionalFs {
    fs: s3s_fs::FileSystem,
    counters: Arc<Counters>,
    root: PathBuf,
    /// Serialises create-only PUTs, so two of them cannot both see "absent".
    create: tokio::sync::Mutex<()>,
}

fn condition_matches(cond: &ETagCondition, etag: Option<&ETag>) -> bool {
    match cond {
        ETagCondition::Any => etag.is_some(),
        ETagCondition::ETag(want) => etag.is_some_and(|have| have.value() == want.value()),
    }
}

#[async_trait::async_trait]
impl S3 for ConditionalFs {
    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let c = &self.counters;
        c.gets.fetch_add(1, Ordering::SeqCst);
        if c.fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(s3_error!(InternalError, "failure injected by the test"));
        }
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let if_match = req.input.if_match.clone();
        let if_none_match = req.input.if_none_match.clone();
        let ranged = req.input.range.is_some();
        // The body is a lazy file stream: answering 304/412 after this reads nothing.
        let resp = self.fs.get_object(req).await?;
        let etag = resp.output.e_tag.as_ref();
        if let Some(cond) = &if_match {
            if !condition_matches(cond, etag) {
                c.precondition_failed.fetch_add(1, Ordering::SeqCst);
                return Err(s3_error!(PreconditionFailed));
            }
        }
        if let Some(cond) = &if_none_match {
            if condition_matches(cond, etag) {
                c.not_modified.fetch_add(1, Ordering::SeqCst);
                return Err(s3_error!(NotModified));
            }
        }
        c.bodies.fetch_add(1, Ordering::SeqCst);
        if ranged {
            c.ranged_gets.fetch_add(1, Ordering::SeqCst);
        }
        let mut resp = resp;
        // s3s-fs reads the file 4 KiB at a time, each read a hop to tokio's blocking pool: at
        // 300 MB that costs the benchmark's shared cores more than the client's whole fetch.
        // The same bytes in 1 MiB reads.
        let len = resp.output.content_length.unwrap_or(0).max(0) as u64;
        let start = resp
            .output
            .content_range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes "))
            .and_then(|r| r.split('-').next())
            .and_then(|a| a.parse::<u64>().ok())
            .unwrap_or(0);
        let path = self.root.join(&bucket).join(&key);
        if let Ok(file) = std::fs::File::open(&path) {
            resp.output.body = Some(s3s::dto::StreamingBlob::wrap(reelflow_artifacts::file_chunks(
                file,
                start,
                start + len,
            )));
        }
        Ok(resp)
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        self.fs.head_object(req).await
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        if matches!(req.input.if_none_match, Some(ETagCondition::Any)) {
            let _one_at_a_time = self.create.lock().await;
            if self.root.join(&req.input.bucket).join(&req.input.key).exists() {
                self.counters.create_conflicts.fetch_add(1, Ordering::SeqCst);
                return Err(s3_error!(PreconditionFailed));
            }
            let r = self.fs.put_object(req).await?;
            self.counters.puts.fetch_add(1, Ordering::SeqCst);
            return Ok(r);
        }
        let r = self.fs.put_object(req).await?;
        self.counters.puts.fetch_add(1, Ordering::SeqCst);
        Ok(r)
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.fs.create_multipart_upload(req).await
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        let r = self.fs.upload_part(req).await?;
        self.counters.parts.fetch_add(1, Ordering::SeqCst);
        Ok(r)
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.fs.complete_multipart_upload(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.fs.abort_multipart_upload(req).await
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.fs.delete_object(req).await
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.fs.delete_objects(req).await
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.fs.list_objects_v2(req).await
    }
}

/// An S3 server on `127.0.0.1:<random port>`, stopped when dropped.
pub struct S3Server {
    /// `http://127.0.0.1:PORT`: use as the S3 endpoint (path-style).
    pub endpoint: String,
    pub addr: SocketAddr,
    /// The served directory: `root/<bucket>/<key>`.
    pub root: TempDir,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl S3Server {
    /// Starts a server. With `Some((access_key, secret_key))` requests must be signed with
    /// that key (anonymous ones get 403 AccessDenied); with `None` anonymous requests are served
    /// (and signed ones get 501, as s3s has no key to check them with).
    pub async fn start(access_key: Option<(&str, &str)>) -> S3Server {
        let root = tempfile::tempdir().expect("temp dir for the S3 server");
        let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs over the temp dir");
        let counters = Arc::new(Counters::default());
        let mut builder = S3ServiceBuilder::new(ConditionalFs {
            fs,
            counters: Arc::clone(&counters),
            root: root.path().to_path_buf(),
            create: tokio::sync::Mutex::new(()),
        });
        if let Some((ak, sk)) = access_key {
            builder.set_auth(s3s::auth::SimpleAuth::from_single(ak, sk.to_string()));
        }
        let service = builder.build();

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the S3 server");
        let addr = listener.local_addr().expect("S3 server address");
        let task = tokio::spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let http = http.clone();
                let service = service.clone();
                tokio::spawn(async move {
                    let _ = http.serve_connection(TokioIo::new(socket), service).await;
                });
            }
        });
        S3Server {
            endpoint: format!("http://{addr}"),
            addr,
            root,
            counters,
            task,
        }
    }

    /// Where `bucket/key` lives on disk.
    pub fn path_of(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.path().join(bucket).join(key)
    }

    /// Creates the bucket directory if needed and writes the object (replacing it).
    pub fn put(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let path = self.path_of(bucket, key);
        std::fs::create_dir_all(path.parent().expect("object path has a parent")).expect("create the bucket directory");
        std::fs::write(&path, bytes).expect("write the object");
    }

    /// Creates an empty bucket.
    pub fn create_bucket(&self, bucket: &str) {
        std::fs::create_dir_all(self.root.path().join(bucket)).expect("create the bucket");
    }

    /// The next `n` GetObject requests fail with 500 InternalError.
    pub fn fail_next_gets(&self, n: u64) {
        self.counters.fail_next.store(n, Ordering::SeqCst);
    }

    pub fn stats(&self) -> S3Stats {
        let c = &self.counters;
        S3Stats {
            gets: c.gets.load(Ordering::SeqCst),
            ranged_gets: c.ranged_gets.load(Ordering::SeqCst),
            not_modified: c.not_modified.load(Ordering::SeqCst),
            precondition_failed: c.precondition_failed.load(Ordering::SeqCst),
            bodies: c.bodies.load(Ordering::SeqCst),
            puts: c.puts.load(Ordering::SeqCst),
            parts: c.parts.load(Ordering::SeqCst),
            create_conflicts: c.create_conflicts.load(Ordering::SeqCst),
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What [`FaultProxy`] does to a faulty connection's response.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Forward `after` body bytes, then close the connection.
    Cut { after: u64 },
    /// Forward `after` body bytes, then forward nothing for `pause` (then carry on).
    Stall { after: u64, pause: Duration },
}

/// A TCP proxy on `127.0.0.1:<random port>` in front of `upstream`. The first
/// `faulty_connections` connections it accepts get `fault` applied to their response body;
/// later ones pass through untouched.
///
/// "Body bytes" are counted from the end of the first response's headers on the connection,
/// which is exact for the one GET an S3 client sends on a fresh connection.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`: use instead of the server's endpoint.
    pub endpoint: String,
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    faults: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr, fault: Fault, faulty_connections: usize) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the fault proxy");
        let addr = listener.local_addr().expect("fault proxy address");
        let connections = Arc::new(AtomicUsize::new(0));
        let faults = Arc::new(AtomicUsize::new(0));
        let (conns, flts) = (Arc::clone(&connections), Arc::clone(&faults));
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let n = conns.fetch_add(1, Ordering::SeqCst);
                let fault = (n < faulty_connections).then_some(fault);
                let flts = Arc::clone(&flts);
                tokio::spawn(async move {
                    let _ = proxy_connection(client, upstream, fault, flts).await;
                });
            }
        });
        FaultProxy {
            endpoint: format!("http://{addr}"),
            addr,
            connections,
            faults,
            task,
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Faults actually applied (a response shorter than `after` escapes its fault).
    pub fn faults(&self) -> usize {
        self.faults.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn proxy_connection(
    client: TcpStream,
    upstream: SocketAddr,
    fault: Option<Fault>,
    faults: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    let server = TcpStream::connect(upstream).await?;
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_r, mut client_w) = client.into_split();
    let (mut server_r, mut server_w) = server.into_split();

    let requests = async {
        let _ = tokio::io::copy(&mut client_r, &mut server_w).await;
    };
    let responses = async {
        let mut pending = fault;
        let mut header = Vec::new();
        let mut body_seen: Option<u64> = None;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = server_r.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), std::io::Error>(());
            }
            let data = &buf[..n];
            let Some(f) = pending else {
                client_w.write_all(data).await?;
                continue;
            };
            let body_start = match body_seen {
                Some(_) => 0,
                None => {
                    let before = header.len();
                    header.extend_from_slice(data);
                    match header.windows(4).position(|w| w == b"\r\n\r\n") {
                        Some(p) => {
                            body_seen = Some(0);
                            p + 4 - before
                        }
                        None => {
                            client_w.write_all(data).await?;
                            continue;
                        }
                    }
                }
            };
            let seen = body_seen.unwrap_or(0);
            let after = match f {
                Fault::Cut { after } | Fault::Stall { after, .. } => after,
            };
            let body = (n - body_start) as u64;
            if seen + body < after {
                client_w.write_all(data).await?;
                body_seen = Some(seen + body);
                continue;
            }
            let split = body_start + (after - seen) as usize;
            client_w.write_all(&data[..split]).await?;
            client_w.flush().await?;
            faults.fetch_add(1, Ordering::SeqCst);
            match f {
                Fault::Cut { .. } => return Ok(()),
                Fault::Stall { pause, .. } => {
                    tokio::time::sleep(pause).await;
                    client_w.write_all(&data[split..]).await?;
                    pending = None;
                }
            }
        }
    };
    // Whichever side ends first ends the connection (a cut drops both halves).
    tokio::select! {
        () = requests => {}
        _ = responses => {}
    }
    Ok(())
}
