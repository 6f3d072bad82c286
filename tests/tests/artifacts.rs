//! The artifact store against two independent S3 implementations: the in-process s3s server
//! (`reelflow_e2e::s3`) and moto's server mode (PyPI `moto[server]`, installed by
//! scripts/setup). Each runs the same suite: a multipart upload of more than one part, whole
//! and ranged streaming reads checked against the reference, create-only records, an
//! attempt-scoped key that is never overwritten, and retention's delete of a run.
//!
//! Without moto the moto test says loudly that it is skipped, and fails when `CI=true`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use reelflow_artifacts::{attempt_path, run_path, ArtifactError, Artifacts, S3Settings, PART_SIZE};
use reelflow_e2e::s3::S3Server;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BUCKET: &str = "artifacts";

fn settings(endpoint: &str) -> S3Settings {
    S3Settings {
        endpoint: Some(endpoint.to_string()),
        region: "us-east-1".into(),
        virtual_hosted: false,
    }
}

/// A file of `len` bytes that are not all alike (so a wrong range shows).
fn big_file(dir: &std::path::Path, len: usize) -> (PathBuf, Vec<u8>) {
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8 ^ (i >> 20) as u8).collect();
    let path = dir.join("big.bin");
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

/// The suite every S3 implementation must pass. Returns the number of bytes uploaded.
async fn exercise(store: &Artifacts) {
    let dir = tempfile::tempdir().unwrap();
    // More than one part: a multipart upload.
    let (path, data) = big_file(dir.path(), PART_SIZE + 3 * 1024 * 1024 + 17);
    let scope = attempt_path("movies_monthly", "2026-11", 7, "clean", 42);
    let key = store.key(&format!("{scope}/ratings.tsv"));
    let r = store.put_file(&key, &path, &|| false).await.expect("multipart upload");
    assert_eq!(r.size, data.len() as u64);
    assert_eq!(r.sha256, hex::encode(Sha256::digest(&data)));
    assert_eq!(store.size_of(&key).await.unwrap(), Some(data.len() as u64));

    // Whole and ranged streaming reads.
    let whole: Vec<bytes::Bytes> = store.stream(&r, None).await.unwrap().try_collect().await.unwrap();
    assert!(whole.concat() == data, "the object differs from the file");
    let (a, b) = (PART_SIZE as u64 - 1000, PART_SIZE as u64 + 5000);
    let part: Vec<bytes::Bytes> = store.stream(&r, Some(a..b)).await.unwrap().try_collect().await.unwrap();
    assert!(
        part.concat() == data[a as usize..b as usize],
        "a ranged read across the part boundary"
    );
    assert_eq!(&store.read_range(&r, 10..20).await.unwrap()[..], &data[10..20]);

    // Downloads are checked against the reference.
    let dest = dir.path().join("scratch/ratings.tsv");
    store.download(&r, &dest, &|| false).await.unwrap();
    assert!(std::fs::read(&dest).unwrap() == data);
    let forged = reelflow_artifacts::ObjectRef {
        sha256: "0".repeat(64),
        ..r.clone()
    };
    let err = store.download(&forged, &dest, &|| false).await.unwrap_err();
    assert!(matches!(err, ArtifactError::Mismatch { .. }), "{err}");

    // The record is create-only: a second writer (a stale attempt) is refused, the first stays.
    let record_key = store.key(&format!("{scope}/manifest.json"));
    let record = store
        .put_create(&record_key, b"{\"first\":true}".to_vec())
        .await
        .unwrap();
    let err = store
        .put_create(&record_key, b"{\"second\":true}".to_vec())
        .await
        .unwrap_err();
    assert!(matches!(err, ArtifactError::AlreadyExists { .. }), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(&store.get_bytes(&record).await.unwrap()[..], b"{\"first\":true}");

    // Small files are one PUT.
    let small = dir.path().join("small.tsv");
    std::fs::write(&small, b"1\ta\n").unwrap();
    let s = store
        .put_file(&store.key(&format!("{scope}/small.tsv")), &small, &|| false)
        .await
        .unwrap();
    assert_eq!(&store.get_bytes(&s).await.unwrap()[..], b"1\ta\n");

    // A missing object is NotFound, not a transient failure.
    let gone = reelflow_artifacts::ObjectRef {
        key: store.key("movies_monthly/2026-11/run-7/nothing"),
        size: 1,
        sha256: "00".into(),
    };
    let err = store.get_bytes(&gone).await.unwrap_err();
    assert!(matches!(err, ArtifactError::NotFound { .. }), "{err}");

    // Retention deletes everything of the run, and nothing of another run.
    let other = store.key(&format!(
        "{}/x",
        attempt_path("movies_monthly", "2026-11", 8, "fetch", 43)
    ));
    let kept = store.put_create(&other, b"kept".to_vec()).await.unwrap();
    let n = store
        .delete_below(&run_path("movies_monthly", "2026-11", 7))
        .await
        .unwrap();
    assert_eq!(n, 3);
    assert_eq!(store.size_of(&key).await.unwrap(), None);
    assert_eq!(store.size_of(&record_key).await.unwrap(), None);
    assert_eq!(&store.get_bytes(&kept).await.unwrap()[..], b"kept");
}

#[tokio::test]
async fn the_artifact_store_on_the_in_process_s3_server() {
    let server = S3Server::start(None).await;
    server.create_bucket(BUCKET);
    let store = Artifacts::s3(BUCKET, "reelflow/test", &settings(&server.endpoint)).unwrap();
    exercise(&store).await;
    let stats = server.stats();
    assert!(stats.parts >= 2, "a multipart upload: {stats:?}");

    assert!(
        stats.create_conflicts >= 1,
        "the create-only record was refused once: {stats:?}"
    );
    assert!(stats.ranged_gets >= 2, "ranged reads: {stats:?}");
}

/// moto's server (`moto_server`): `REELFLOW_MOTO_SERVER`, else the venv scripts/setup makes,
/// else `moto_server` on the PATH.
fn moto_server() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("REELFLOW_MOTO_SERVER") {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let venv = PathBuf::from(home).join(".cache/reelflow-moto/venv/bin/moto_server");
    if venv.is_file() {
        return Some(venv);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("moto_server"))
            .find(|p| p.is_file())
    })
}

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One raw HTTP request (moto takes unsigned ones); the status code.
async fn http(addr: &str, method: &str, path: &str) -> std::io::Result<u16> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    let text = String::from_utf8_lossy(&out);
    Ok(text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0))
}

#[tokio::test]
async fn the_artifact_store_on_moto_a_second_s3_implementation() {
    let Some(bin) = moto_server() else {
        let msg = "SKIPPED: moto_server not found (scripts/setup installs moto[server] into ~/.cache/reelflow-moto/venv; or set REELFLOW_MOTO_SERVER)";
        eprintln!("\n!!!!!! {msg} !!!!!!\n");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true: {msg}");
        return;
    };
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _moto = Moto(
        Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display())),
    );
    let addr = format!("127.0.0.1:{port}");
    let started = Instant::now();
    loop {
        if http(&addr, "GET", "/").await.is_ok() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "moto did not start on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = http(&addr, "PUT", &format!("/{BUCKET}")).await.unwrap();
    assert_eq!(status, 200, "creating the bucket on moto");
    // Signed requests, as in production (moto answers anonymous ones with 403s where S3 would
    // not); moto accepts any key.
    let store = Artifacts::s3_with_keys(
        BUCKET,
        "reelflow",
        &settings(&format!("http://{addr}")),
        Some(("test", "test")),
    )
    .unwrap();
    exercise(&store).await;
    // A bucket that does not exist is a configuration error, not worth a retry (s3s-fs creates
    // buckets on demand, moto answers NoSuchBucket as S3 does).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"x").unwrap();
    let nowhere = Artifacts::s3_with_keys(
        "no-such-bucket",
        "p",
        &settings(&format!("http://{addr}")),
        Some(("test", "test")),
    )
    .unwrap();
    let err = nowhere
        .put_file("p/a/f", &dir.path().join("f"), &|| false)
        .await
        .unwrap_err();
    assert!(matches!(err, ArtifactError::Config { .. }), "{err}");
    assert!(
        !err.is_retryable() && err.to_string().contains("bucket does not exist"),
        "{err}"
    );
}
