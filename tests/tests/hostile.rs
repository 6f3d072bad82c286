//! Hostile archives through the whole pipeline against a real PostgreSQL: each gives a clear
//! error naming the problem, or rejected rows with reasons, and the published snapshot stays
//! untouched.

use std::collections::HashMap;
use std::io::Write;

use reelflow::config::Config;
use reelflow_e2e::fixture;
use reelflow_e2e::pg::{published_checksums, TestDb};

fn with(name: &str, data: Vec<u8>) -> Vec<(&'static str, Vec<u8>)> {
    let mut e: Vec<(&'static str, Vec<u8>)> = fixture::entries().into_iter().filter(|(n, _)| *n != name).collect();
    let name: &'static str = Box::leak(name.to_string().into_boxed_str());
    e.push((name, data));
    e
}

fn movies_with_row(row: &[u8]) -> Vec<u8> {
    let mut m = fixture::movies_metadata().into_bytes();
    m.extend_from_slice(row);
    m
}

fn stored_zip(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut w = zip::ZipWriter::new(&mut buf);
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in entries {
        w.start_file(*name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap();
    buf.into_inner()
}

fn symlink_zip() -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut w = zip::ZipWriter::new(&mut buf);
    let opts = zip::write::SimpleFileOptions::default();
    for (name, data) in fixture::entries() {
        w.start_file(name, opts).unwrap();
        w.write_all(&data).unwrap();
    }
    w.add_symlink("passwd.csv", "/etc/passwd", opts).unwrap();
    w.finish().unwrap();
    buf.into_inner()
}

enum Expect {
    /// The run fails; the message contains all of these.
    Fails(&'static [&'static str]),
    /// The run succeeds; the manifest's movies_metadata.csv stats contain this JSON fragment.
    Succeeds(&'static str),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_archives_fail_clearly_or_reject_rows_and_never_touch_the_published_snapshot() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg_for = |zip: &[u8], name: &str| -> Config {
        let path = dir.path().join(format!("{name}.zip"));
        std::fs::write(&path, zip).unwrap();
        let vars: HashMap<&str, String> = [
            ("DATABASE_URL", db.url.clone()),
            ("REELFLOW_SOURCE", path.display().to_string()),
            (
                "REELFLOW_ARTIFACTS_DIR",
                dir.path().join("artifacts").display().to_string(),
            ),
            ("REELFLOW_CLEAN_MAX_ENTRY_BYTES", (8u64 << 20).to_string()),
        ]
        .into_iter()
        .collect();
        Config::load(None, &|k| vars.get(k).cloned()).unwrap()
    };
    let good = cfg_for(&fixture::zip(), "good");
    let report = reelflow::pipeline::run_period(&good, &db.pool, "2026-11".parse().unwrap(), false)
        .await
        .unwrap();
    assert!(report.succeeded());
    let published = published_checksums(&db.pool).await;

    let full = fixture::zip();
    let mut bad_crc = stored_zip(&fixture::entries());
    // Flip a byte inside the stored data of the first entry (after its 30-byte header + name).
    bad_crc[30 + "credits.csv".len() + 10] ^= 0xff;
    let mut deep = b"False,,1,\"".to_vec();
    deep.extend(std::iter::repeat_n(b'[', 10_000));
    deep.extend(std::iter::repeat_n(b']', 10_000));
    deep.extend_from_slice(
        b"\",,900,tt0000900,en,Deep,x,1.0,,\"[]\",\"[]\",2015-01-01,1,,\"[]\",Released,,Deep,False,1.0,1\n",
    );
    let mut huge = b"False,,1,\"[]\",,901,tt0000901,en,Huge,\"".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 100 << 20));
    huge.extend_from_slice(b"\",1.0,,\"[]\",\"[]\",2015-01-01,1,,\"[]\",Released,,Huge,False,1.0,1\n");
    let mut bad_header = fixture::movies_metadata();
    bad_header = bad_header.replacen(",id,imdb_id,", ",identifier,imdb_id,", 1);

    let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
        ("zip slip", fixture::zip_bytes(&with("../evil.csv", b"a\n".to_vec())), Expect::Fails(&["task clean failed", "../evil.csv"])),
        ("absolute path", fixture::zip_bytes(&with("/etc/evil.csv", b"a\n".to_vec())), Expect::Fails(&["task clean failed", "/etc/evil.csv"])),
        ("symlink", symlink_zip(), Expect::Fails(&["task clean failed", "passwd.csv"])),
        ("zip bomb", fixture::zip_bytes(&with("ratings.csv", vec![b'0'; 64 << 20])), Expect::Fails(&["task clean failed", "ratings.csv"])),
        ("truncated", full[..full.len() / 2].to_vec(), Expect::Fails(&["task clean failed"])),
        ("wrong crc", bad_crc, Expect::Fails(&["task clean failed", "credits.csv"])),
        ("missing file", fixture::zip_bytes(&fixture::entries().into_iter().filter(|(n, _)| *n != "ratings.csv").collect::<Vec<_>>()), Expect::Fails(&["task clean failed", "ratings.csv"])),
        ("wrong header", fixture::zip_bytes(&with("movies_metadata.csv", bad_header.into_bytes())), Expect::Fails(&["task clean failed", "movies_metadata.csv", "id"])),
        ("not a zip", b"<html>rate limited</html>".to_vec(), Expect::Fails(&["task fetch failed", "not a zip"])),
        ("extra files", fixture::zip_bytes(&with("README.txt", b"hello".to_vec())), Expect::Succeeds(r#""duplicate_id":3"#)),
        ("invalid utf-8", fixture::zip_bytes(&with("movies_metadata.csv", movies_with_row(b"False,,1,\"[]\",,902,tt0000902,en,Bad\xff\xfe,x,1.0,,\"[]\",\"[]\",2015-01-01,1,,\"[]\",Released,,Bad,False,1.0,1\n"))), Expect::Succeeds(r#""invalid_utf8":1"#)),
        ("10,000-deep literal", fixture::zip_bytes(&with("movies_metadata.csv", movies_with_row(&deep))), Expect::Succeeds(r#""genres":2"#)),
        ("100 MB field", fixture::zip_bytes(&with("movies_metadata.csv", movies_with_row(&huge))), Expect::Succeeds(r#""accepted":9"#)),
    ];
    for (i, (name, zip, expect)) in cases.into_iter().enumerate() {
        // Older periods: even a success must not replace what `movies` shows.
        let period: reelflow_dag::Period = format!("2025-{:02}", i % 12 + 1).parse().unwrap();
        let period = if i >= 12 {
            format!("2024-{:02}", i - 11).parse().unwrap()
        } else {
            period
        };
        let mut cfg = cfg_for(&zip, &format!("case{i}"));
        cfg.clean.max_entry_bytes = if name == "100 MB field" { 1 << 30 } else { 8 << 20 };
        let report = reelflow::pipeline::run_period(&cfg, &db.pool, period, false)
            .await
            .unwrap();
        match expect {
            Expect::Fails(needles) => {
                assert!(!report.succeeded(), "{name}: should fail");
                let msg = report.failure().to_string();
                for n in needles {
                    assert!(msg.contains(n), "{name}: {n:?} missing from: {msg}");
                }
                assert!(msg.contains("retrying will not help"), "{name}: {msg}");
            }
            Expect::Succeeds(fragment) => {
                assert!(report.succeeded(), "{name}: {}", report.failure());
                let stats = report.outputs["clean"]["manifest"]["files"]["movies_metadata.csv"].to_string();
                assert!(stats.contains(fragment), "{name}: {fragment} missing from {stats}");
            }
        }
        assert_eq!(
            published_checksums(&db.pool).await,
            published,
            "{name}: the published snapshot changed"
        );
    }
}
