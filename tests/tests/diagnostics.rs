//! Error messages that send the operator the right way (issue 13, point 5), at the library
//! level: a 503's message, a damaged zip's hint, marking a task success without outputs.

use reelflow_dag::Cancel;
use reelflow_e2e::pg::TestDb;
use reelflow_fetch::{fetch, FetchConfig, Source};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTP server that answers every request with `response`.
async fn answering(response: &'static str) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(response.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_503_with_an_empty_body_reads_cleanly() {
    let addr = answering("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
    let dir = tempfile::tempdir().unwrap();
    let source = Source::parse(&format!("http://{addr}/movies.zip")).unwrap();
    let err = fetch(&source, dir.path(), &FetchConfig::default(), &Cancel::never())
        .await
        .unwrap_err();
    assert!(err.is_retryable());
    let text = err.to_string();
    assert!(text.ends_with("server error 503: Service Unavailable"), "{text}");
    assert!(!text.trim_end().ends_with(':'), "dangling colon: {text:?}");
}

#[tokio::test]
async fn marking_a_task_success_without_outputs_is_refused_with_the_fix() {
    let db = TestDb::new().await;
    let cfg = reelflow::config::Config::load(None, &|k| (k == "DATABASE_URL").then(|| db.url.clone())).unwrap();
    let dag = reelflow::pipeline::dag_spec(&cfg);
    let t = reelflow::ops::trigger(&db.pool, &dag, "2026-10".parse().unwrap(), false, "manual", "test")
        .await
        .unwrap();
    let id = t.run.id;
    let err = reelflow::ops::mark(&db.pool, &dag, id, "fetch", "success", "test")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("task fetch of run"), "{err}");
    assert!(
        err.contains(&format!("`reelflow tasks retry {id} fetch --downstream`")),
        "{err}"
    );
    // Failed is fine, and so is success for the last task (nothing reads its outputs).
    reelflow::ops::mark(&db.pool, &dag, id, "fetch", "failed", "test")
        .await
        .unwrap();
    reelflow::ops::mark(&db.pool, &dag, id, "publish", "success", "test")
        .await
        .unwrap();
}

#[test]
fn a_damaged_archive_sends_the_operator_to_fetch_again() {
    let hint = reelflow::ops::retry_hint(
        7,
        "clean",
        Some("clean: cannot read zip archive x.zip: invalid Zip archive: ...; fetch it again with `reelflow tasks retry 7 fetch --downstream`"),
    );
    assert_eq!(hint, "reelflow tasks retry 7 fetch --downstream");
    assert_eq!(
        reelflow::ops::retry_hint(7, "load", Some("boom")),
        "reelflow tasks retry 7 load"
    );
}

#[tokio::test]
async fn an_expired_lease_names_its_run_period_and_worker() {
    let db = TestDb::new().await;
    let cfg = reelflow::config::Config::load(None, &|k| (k == "DATABASE_URL").then(|| db.url.clone())).unwrap();
    let dag = reelflow::pipeline::dag_spec(&cfg);
    let t = reelflow::ops::trigger(&db.pool, &dag, "2026-09".parse().unwrap(), false, "manual", "test")
        .await
        .unwrap();
    reelflow_store::runs::start_queued_runs(&db.pool, &dag.id, 1)
        .await
        .unwrap();
    let lease = std::time::Duration::from_millis(300);
    reelflow_store::runs::claim(&db.pool, "w-gone", lease, std::slice::from_ref(&dag.id), None)
        .await
        .unwrap()
        .expect("fetch is ready");
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let expired = reelflow_store::runs::expire_leases(&db.pool).await.unwrap();
    assert_eq!(expired.len(), 1);
    let e = &expired[0];
    assert_eq!(
        (e.run_id, e.period.as_str(), e.worker.as_str()),
        (t.run.id, "2026-09", "w-gone")
    );
}
