//! The fetch stage against a real S3-protocol server (s3s + s3s-fs) in this process.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use reelflow_dag::{Cancel, ErrorKind, Outputs, Period, Task, TaskContext, TaskError};
use reelflow_e2e::s3::{Fault, FaultProxy, S3Server};
use reelflow_fetch::{fetch, FetchConfig, FetchError, FetchOutput, FetchTask, S3Credentials, Source};
use sha2::{Digest, Sha256};

const BUCKET: &str = "com.example.us-west-2.public-data";
const KEY: &str = "project-data/the-movies-dataset.zip";
const MIB: usize = 1 << 20;

/// A valid zip (one stored entry) of about `len` bytes of pseudo-random data.
fn zip_of(len: usize, seed: u64) -> Vec<u8> {
    let mut data = Vec::with_capacity(len);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while data.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(len);
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    w.start_file("data.bin", opts).unwrap();
    w.write_all(&data).unwrap();
    w.finish().unwrap().into_inner()
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn s3_source() -> Source {
    Source::parse(&format!("s3://{BUCKET}/{KEY}")).unwrap()
}

fn config(endpoint: &str, credentials: S3Credentials) -> FetchConfig {
    FetchConfig {
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(5),
        max_resumes: 3,
        s3_endpoint: Some(endpoint.to_string()),
        s3_credentials: credentials,
        ..FetchConfig::default()
    }
}

fn anonymous(endpoint: &str) -> FetchConfig {
    config(endpoint, S3Credentials::Anonymous)
}

fn assert_fetched(out: &FetchOutput, dest: &Path, object: &[u8]) {
    assert_eq!(out.path, dest.join("source.zip"));
    assert_eq!(out.size, object.len() as u64);
    assert_eq!(out.sha256, sha256(object));
    let on_disk = std::fs::read(&out.path).unwrap();
    assert!(on_disk == object, "the file differs from the object");
    let stored: FetchOutput = serde_json::from_slice(&std::fs::read(dest.join("source.json")).unwrap()).unwrap();
    assert_eq!(&stored, out, "source.json holds the output");
    assert!(!dest.join("source.zip.part").exists(), "no .part left");
    assert!(!dest.join("source.zip.part.json").exists(), "no .part.json left");
}

#[tokio::test]
async fn signed_fetch_with_credentials() {
    let server = S3Server::start(Some(("AKIDTEST", "secret-key-for-tests"))).await;
    let object = zip_of(3 * MIB, 1);
    server.put(BUCKET, KEY, &object);
    let dest = tempfile::tempdir().unwrap();

    let cfg = config(&server.endpoint, S3Credentials::new("AKIDTEST", "secret-key-for-tests"));
    let out = fetch(&s3_source(), dest.path(), &cfg, &Cancel::never()).await.unwrap();

    assert_fetched(&out, dest.path(), &object);
    assert!(!out.reused);
    assert_eq!(out.resumes, 0);
    assert_eq!(out.source, format!("s3://{BUCKET}/{KEY}"));
    assert!(out.etag.is_some(), "S3 sends an ETag");
    assert!(out.last_modified.is_some());
    assert!(
        !format!("{cfg:?}").contains("secret-key-for-tests"),
        "Debug hides the secret"
    );
}

#[tokio::test]
async fn anonymous_fetch() {
    let server = S3Server::start(None).await;
    let object = zip_of(2 * MIB + 17, 2);
    server.put(BUCKET, KEY, &object);
    let dest = tempfile::tempdir().unwrap();

    let out = fetch(
        &s3_source(),
        dest.path(),
        &anonymous(&server.endpoint),
        &Cancel::never(),
    )
    .await
    .unwrap();
    assert_fetched(&out, dest.path(), &object);
    assert_eq!(server.stats().bodies, 1);
}

#[tokio::test]
async fn wrong_secret_or_no_signature_is_access_denied() {
    let server = S3Server::start(Some(("AKIDTEST", "the-right-secret"))).await;
    server.put(BUCKET, KEY, &zip_of(64 * 1024, 3));
    let dest = tempfile::tempdir().unwrap();

    let cfg = config(&server.endpoint, S3Credentials::new("AKIDTEST", "a-wrong-secret"));
    let err = fetch(&s3_source(), dest.path(), &cfg, &Cancel::never())
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::AccessDenied { .. }), "{err:?}");
    assert!(!err.is_retryable());
    let msg = err.to_string();
    assert!(msg.contains(&format!("s3://{BUCKET}/{KEY}")), "{msg}");
    assert!(!msg.contains("a-wrong-secret"), "{msg}");
    assert_eq!(TaskError::from(err).kind, ErrorKind::Fatal);

    let err = fetch(
        &s3_source(),
        dest.path(),
        &anonymous(&server.endpoint),
        &Cancel::never(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, FetchError::AccessDenied { .. }), "{err:?}");
    assert!(!dest.path().join("source.zip").exists());
}

#[tokio::test]
async fn missing_object_is_not_found() {
    let server = S3Server::start(None).await;
    server.create_bucket(BUCKET);
    let dest = tempfile::tempdir().unwrap();
    let source = Source::parse(&format!("s3://{BUCKET}/no/such.zip")).unwrap();

    let err = fetch(&source, dest.path(), &anonymous(&server.endpoint), &Cancel::never())
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::NotFound { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("failed to fetch s3://{BUCKET}/no/such.zip: object not found (404)")
    );
    assert_eq!(TaskError::from(err).kind, ErrorKind::Fatal);
}

#[tokio::test]
async fn unreachable_endpoint_is_retryable() {
    // Bind then drop a listener: its port is (almost certainly) closed now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dest = tempfile::tempdir().unwrap();
    let cfg = anonymous(&format!("http://127.0.0.1:{port}"));
    let err = fetch(&s3_source(), dest.path(), &cfg, &Cancel::never())
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Network { .. }), "{err:?}");
    assert!(TaskError::from(err).is_retryable());
}

#[tokio::test]
async fn server_error_is_retryable() {
    let server = S3Server::start(None).await;
    let object = zip_of(MIB, 17);
    server.put(BUCKET, KEY, &object);
    server.fail_next_gets(1);
    let dest = tempfile::tempdir().unwrap();
    let cfg = anonymous(&server.endpoint);

    let err = fetch(&s3_source(), dest.path(), &cfg, &Cancel::never())
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Server { status: 500, .. }), "{err:?}");
    assert!(TaskError::from(err).is_retryable());
    let out = fetch(&s3_source(), dest.path(), &cfg, &Cancel::never()).await.unwrap();
    assert_fetched(&out, dest.path(), &object);
}

#[tokio::test]
async fn http_source_with_reuse_and_hidden_token() {
    let server = S3Server::start(None).await;
    let object = zip_of(MIB + 1, 18);
    server.put(BUCKET, KEY, &object);
    let dest = tempfile::tempdir().unwrap();
    let url = format!("{}/{BUCKET}/{KEY}?token=hunter2", server.endpoint);
    let source = Source::parse(&url).unwrap();
    assert!(!source.to_string().contains("hunter2"));

    let out = fetch(&source, dest.path(), &FetchConfig::default(), &Cancel::never())
        .await
        .unwrap();
    assert_fetched(&out, dest.path(), &object);
    assert!(!out.source.contains("hunter2"), "{}", out.source);
    let again = fetch(&source, dest.path(), &FetchConfig::default(), &Cancel::never())
        .await
        .unwrap();
    assert!(again.reused);
    assert_eq!(server.stats().not_modified, 1);

    let missing = Source::parse(&format!("{}/{BUCKET}/missing.zip?token=hunter2", server.endpoint)).unwrap();
    let err = fetch(&missing, dest.path(), &FetchConfig::default(), &Cancel::never())
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::NotFound { .. }), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[tokio::test]
async fn dropped_connection_resumes_with_range() {
    let server = S3Server::start(None).await;
    let object = zip_of(4 * MIB, 4);
    server.put(BUCKET, KEY, &object);
    // The first two connections are cut after 1 MiB of body.
    let proxy = FaultProxy::start(server.addr, Fault::Cut { after: MIB as u64 }, 2).await;
    let dest = tempfile::tempdir().unwrap();

    let out = fetch(&s3_source(), dest.path(), &anonymous(&proxy.endpoint), &Cancel::never())
        .await
        .unwrap();

    assert_fetched(&out, dest.path(), &object);
    assert_eq!(proxy.faults(), 2);
    assert_eq!(out.resumes, 2);
    let stats = server.stats();
    assert_eq!(stats.ranged_gets, 2, "{stats:?}");
    assert_eq!(stats.precondition_failed, 0, "{stats:?}");
}

#[tokio::test]
async fn too_many_cuts_fail_retryably_and_the_next_attempt_resumes() {
    let server = S3Server::start(None).await;
    let object = zip_of(3 * MIB, 5);
    server.put(BUCKET, KEY, &object);
    let proxy = FaultProxy::start(server.addr, Fault::Cut { after: 256 * 1024 }, 100).await;
    let dest = tempfile::tempdir().unwrap();
    let mut cfg = anonymous(&proxy.endpoint);
    cfg.max_resumes = 1;

    let err = fetch(&s3_source(), dest.path(), &cfg, &Cancel::never())
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(dest.path().join("source.zip.part").exists());
    assert!(dest.path().join("source.zip.part.json").exists());

    // The next attempt (here straight to the server) continues from the part.
    let before = server.stats();
    let out = fetch(
        &s3_source(),
        dest.path(),
        &anonymous(&server.endpoint),
        &Cancel::never(),
    )
    .await
    .unwrap();
    assert_fetched(&out, dest.path(), &object);
    let after = server.stats();
    assert_eq!(
        after.ranged_gets - before.ranged_gets,
        1,
        "resumed with a Range request"
    );
    assert_eq!(after.bodies - before.bodies, 1, "one request");
}

#[tokio::test]
async fn stalled_body_hits_the_read_timeout_and_resumes() {
    let server = S3Server::start(None).await;
    let object = zip_of(3 * MIB, 6);
    server.put(BUCKET, KEY, &object);
    let stall = Fault::Stall {
        after: 512 * 1024,
        pause: Duration::from_secs(60),
    };
    let proxy = FaultProxy::start(server.addr, stall, 1).await;
    let dest = tempfile::tempdir().unwrap();
    let mut cfg = anonymous(&proxy.endpoint);
    cfg.read_timeout = Duration::from_millis(500);

    let started = Instant::now();
    let out = fetch(&s3_source(), dest.path(), &cfg, &Cancel::never()).await.unwrap();

    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert_fetched(&out, dest.path(), &object);
    assert_eq!(proxy.faults(), 1);
    assert_eq!(out.resumes, 1);
    assert_eq!(server.stats().ranged_gets, 1);
}

#[tokio::test]
async fn stall_without_resumes_is_a_timeout() {
    let server = S3Server::start(None).await;
    server.put(BUCKET, KEY, &zip_of(MIB, 7));
    let stall = Fault::Stall {
        after: 1000,
        pause: Duration::from_secs(60),
    };
    let proxy = FaultProxy::start(server.addr, stall, 10).await;
    let dest = tempfile::tempdir().unwrap();
    let mut cfg = anonymous(&proxy.endpoint);
    cfg.read_timeout = Duration::from_millis(300);
    cfg.max_resumes = 0;

    let err = fetch(&s3_source(), dest.path(), &cfg, &Cancel::never())
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Timeout { .. }), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn unchanged_object_is_reused_via_304() {
    let server = S3Server::start(None).await;
    let object = zip_of(2 * MIB, 8);
    server.put(BUCKET, KEY, &object);
    let dest = tempfile::tempdir().unwrap();
    let cfg = anonymous(&server.endpoint);

    let first = fetch(&s3_source(), dest.path(), &cfg, &Cancel::never()).await.unwrap();
    assert!(!first.reused);
    let second = fetch(&s3_source(), dest.path(), &cfg, &Cancel::never()).await.unwrap();

    assert!(second.reused);
    assert_eq!(second.sha256, first.sha256);
    assert_eq!(second.etag, first.etag);
    assert_eq!(second.path, first.path);
    let stats = server.stats();
    assert_eq!(stats.not_modified, 1, "{stats:?}");
    assert_eq!(stats.bodies, 1, "the second fetch transferred no body: {stats:?}");
    assert_eq!(std::fs::read(&second.path).unwrap(), object);
}

#[tokio::test]
async fn changed_object_is_downloaded_again() {
    let server = S3Server::start(None).await;
    let v1 = zip_of(MIB, 9);
    server.put(BUCKET, KEY, &v1);
    let dest = tempfile::tempdir().unwrap();
    let cfg = anonymous(&server.endpoint);
    let first = fetch(&s3_source(), dest.path(), &cfg, &Cancel::never()).await.unwrap();

    // Same size, other bytes: only the ETag tells.
    let v2 = zip_of(MIB, 10);
    assert_eq!(v1.len(), v2.len());
    server.put(BUCKET, KEY, &v2);
    let second = fetch(&s3_source(), dest.path(), &cfg, &Cancel::never()).await.unwrap();

    assert!(!second.reused);
    assert_ne!(second.etag, first.etag);
    assert_fetched(&second, dest.path(), &v2);
    assert_eq!(server.stats().not_modified, 0);
}

#[tokio::test]
async fn cancelled_fetch_keeps_the_part_and_resumes_later() {
    let server = S3Server::start(None).await;
    let object = zip_of(3 * MIB, 11);
    server.put(BUCKET, KEY, &object);
    let stall = Fault::Stall {
        after: MIB as u64,
        pause: Duration::from_secs(60),
    };
    let proxy = FaultProxy::start(server.addr, stall, 1).await;
    let dest = tempfile::tempdir().unwrap();
    let (cancel_tx, cancel) = Cancel::new();

    let started = Instant::now();
    let dest_path = dest.path().to_path_buf();
    let endpoint = proxy.endpoint.clone();
    let task = tokio::spawn(async move { fetch(&s3_source(), &dest_path, &anonymous(&endpoint), &cancel).await });
    // Wait until the stall has been reached, then cancel.
    while proxy.faults() == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    cancel_tx.send(true).unwrap();
    let err = task.await.unwrap().unwrap_err();
    assert!(err.is_cancelled(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(4), "cancel was prompt");
    assert_eq!(TaskError::from(err).kind, ErrorKind::Cancelled);
    let part_len = std::fs::metadata(dest.path().join("source.zip.part")).unwrap().len();
    assert!(part_len >= MIB as u64, "the part holds what arrived: {part_len}");

    let out = fetch(
        &s3_source(),
        dest.path(),
        &anonymous(&server.endpoint),
        &Cancel::never(),
    )
    .await
    .unwrap();
    assert_fetched(&out, dest.path(), &object);
    assert_eq!(server.stats().ranged_gets, 1, "continued with a Range request");
}

#[tokio::test]
async fn object_changed_since_the_part_restarts_from_zero() {
    let server = S3Server::start(None).await;
    server.put(BUCKET, KEY, &zip_of(2 * MIB, 12));
    let proxy = FaultProxy::start(server.addr, Fault::Cut { after: 300_000 }, 100).await;
    let dest = tempfile::tempdir().unwrap();
    let mut cfg = anonymous(&proxy.endpoint);
    cfg.max_resumes = 0;
    let err = fetch(&s3_source(), dest.path(), &cfg, &Cancel::never())
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(dest.path().join("source.zip.part.json").exists());

    let v2 = zip_of(2 * MIB + 5, 13);
    server.put(BUCKET, KEY, &v2);
    let out = fetch(
        &s3_source(),
        dest.path(),
        &anonymous(&server.endpoint),
        &Cancel::never(),
    )
    .await
    .unwrap();
    assert_fetched(&out, dest.path(), &v2);
    assert_eq!(server.stats().precondition_failed, 1, "the If-Match resume was refused");
}

#[tokio::test]
async fn non_zip_body_is_not_a_zip() {
    let server = S3Server::start(None).await;
    let mut html = b"<html><body>Service moved</body></html>\n".repeat(50_000);
    html.truncate(2 * MIB);
    server.put(BUCKET, KEY, &html);
    let dest = tempfile::tempdir().unwrap();

    let err = fetch(
        &s3_source(),
        dest.path(),
        &anonymous(&server.endpoint),
        &Cancel::never(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, FetchError::NotAZip { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("3c 68 74 6d"), "{err}");
    for f in ["source.zip", "source.zip.part", "source.zip.part.json", "source.json"] {
        assert!(!dest.path().join(f).exists(), "{f} left behind");
    }
}

#[tokio::test]
async fn file_url_and_plain_path_sources() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("movies.zip");
    let object = zip_of(MIB + 3, 14);
    std::fs::write(&file, &object).unwrap();

    for spec in [format!("file://{}", file.display()), file.display().to_string()] {
        let source = Source::parse(&spec).unwrap();
        let dest = tempfile::tempdir().unwrap();
        let cfg = FetchConfig::default();
        let out = fetch(&source, dest.path(), &cfg, &Cancel::never()).await.unwrap();
        assert_fetched(&out, dest.path(), &object);
        assert_eq!(out.etag, None);
        assert!(!out.reused);

        let again = fetch(&source, dest.path(), &cfg, &Cancel::never()).await.unwrap();
        assert!(again.reused, "unchanged size and mtime");
        assert_eq!(again.sha256, out.sha256);
    }

    // A changed file is copied again.
    let dest = tempfile::tempdir().unwrap();
    let source = Source::parse(&file.display().to_string()).unwrap();
    fetch(&source, dest.path(), &FetchConfig::default(), &Cancel::never())
        .await
        .unwrap();
    let v2 = zip_of(MIB + 3, 15);
    std::fs::write(&file, &v2).unwrap();
    let f = std::fs::File::options().write(true).open(&file).unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    drop(f);
    let out = fetch(&source, dest.path(), &FetchConfig::default(), &Cancel::never())
        .await
        .unwrap();
    assert!(!out.reused);
    assert_fetched(&out, dest.path(), &v2);

    // Missing and non-zip files.
    let missing = Source::parse(&dir.path().join("nope.zip").display().to_string()).unwrap();
    let err = fetch(&missing, dest.path(), &FetchConfig::default(), &Cancel::never())
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::NotFound { .. }), "{err:?}");
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    let err = fetch(
        &Source::parse(&text.display().to_string()).unwrap(),
        tempfile::tempdir().unwrap().path(),
        &FetchConfig::default(),
        &Cancel::never(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, FetchError::NotAZip { .. }), "{err:?}");
}

#[tokio::test]
async fn fetch_task_downloads_to_scratch_and_stores_the_zip_under_its_attempt() {
    let server = S3Server::start(None).await;
    let object = zip_of(MIB, 16);
    server.put(BUCKET, KEY, &object);
    let artifacts = tempfile::tempdir().unwrap();
    let task = FetchTask {
        source: s3_source(),
        config: anonymous(&server.endpoint),
    };
    let ctx = TaskContext {
        dag_id: "movies_monthly".into(),
        run_id: 1,
        period: Period::new(2026, 11).unwrap(),
        try_number: 1,
        attempt_id: 5,
        scratch_dir: artifacts.path().join("scratch"),
        artifacts: reelflow_artifacts::Artifacts::local(&artifacts.path().join("store")).unwrap(),
        cancel: Cancel::never(),
    };

    assert_eq!(task.id(), "fetch");
    // Downloads of other periods in scratch: a finished one goes, one in progress stays.
    let scratch = artifacts.path().join("scratch");
    std::fs::create_dir_all(scratch.join("../2026-09/fetch")).unwrap();
    std::fs::write(scratch.join("../2026-09/fetch/source.zip"), b"old").unwrap();
    std::fs::create_dir_all(scratch.join("../2026-10/fetch")).unwrap();
    std::fs::write(scratch.join("../2026-10/fetch/source.zip.part"), b"busy").unwrap();
    let value = task.run(&ctx, &Outputs::new()).await.unwrap();
    assert!(
        !scratch.join("../2026-09/fetch").exists(),
        "an older finished download is removed"
    );
    assert!(
        scratch.join("../2026-10/fetch/source.zip.part").exists(),
        "a download in progress stays"
    );
    let zip = artifacts.path().join("scratch/fetch/source.zip");
    assert_eq!(value["path"], serde_json::json!(zip));
    assert_eq!(value["sha256"], sha256(&object));
    let out: FetchOutput = serde_json::from_value(value).unwrap();
    // source.json in scratch describes the download; the output adds the stored object.
    let download = FetchOutput {
        object: None,
        ..out.clone()
    };
    assert_fetched(&download, &artifacts.path().join("scratch/fetch"), &object);
    // The zip is in the artifact store under this attempt's key, with its size and checksum.
    let stored = out.object.clone().expect("the stored zip");
    assert_eq!(stored.key, "movies_monthly/2026-11/run-1/fetch/attempt-5/source.zip");
    assert_eq!(
        (stored.size, stored.sha256.as_str()),
        (object.len() as u64, out.sha256.as_str())
    );
    assert_eq!(
        std::fs::read(artifacts.path().join("store").join(&stored.key)).unwrap(),
        object
    );

    let missing = FetchTask {
        source: Source::parse(&format!("s3://{BUCKET}/missing.zip")).unwrap(),
        config: anonymous(&server.endpoint),
    };
    let err = missing.run(&ctx, &Outputs::new()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Fatal);
    assert!(err.message.contains("missing.zip"), "{}", err.message);
}
