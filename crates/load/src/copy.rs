//! Moving bytes into PostgreSQL: a session for the load's jobs, and the COPY of one stored
//! object (or a byte range of it) into a table, checked against its recorded size and SHA-256.

use std::time::Instant;

use futures::StreamExt as _;
use reelflow_artifacts::{ArtifactError, Artifacts, ObjectRef};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use crate::types::LoadError;

pub(crate) async fn open(opts: &PgConnectOptions) -> Result<PgConnection, LoadError> {
    PgConnection::connect_with(opts)
        .await
        .map_err(LoadError::db("connecting"))
}

/// Streams one object of the clean output from the artifact store, or the byte range `range`
/// of it (one ranged GET), into `schema.table`; with `create` (a CREATE TABLE or a TRUNCATE),
/// inside the transaction that runs it (so the COPY may say FREEZE, and PostgreSQL with
/// `wal_level=minimal` can skip WAL for it). A whole
/// object must have the size and SHA-256 its reference records, a range its length, or the
/// COPY is aborted. Returns rows copied.
pub(crate) async fn copy_file(
    conn: &mut PgConnection,
    create: Option<&str>,
    copy: &str,
    artifacts: &Artifacts,
    object: &ObjectRef,
    range: Option<(u64, u64)>,
) -> Result<u64, LoadError> {
    use sha2::Digest as _;
    let mut body = artifacts.stream(object, range.map(|(a, b)| a..b)).await?;
    let expected = range.map_or(object.size, |(a, b)| b - a);
    let mut tx = conn.begin().await.map_err(LoadError::db("starting a transaction"))?;
    if let Some(create) = create {
        sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(&mut *tx)
            .await
            .map_err(LoadError::db(format!("running {create}")))?;
    }
    let mut sink = tx
        .copy_in_raw(copy)
        .await
        .map_err(LoadError::db(format!("starting {copy}")))?;
    let mut hasher = sha2::Sha256::new();
    let (started, mut last_progress, mut sent) = (Instant::now(), Instant::now(), 0u64);
    while let Some(chunk) = body.next().await {
        if last_progress.elapsed() >= std::time::Duration::from_secs(5) {
            last_progress = Instant::now();
            let event = reelflow_dag::ProgressEvent {
                item: object.key.rsplit('/').next().unwrap_or_default().to_string(),
                done: sent,
                total: Some(expected),
                unit: reelflow_dag::Unit::Bytes,
                per_sec: sent as f64 / started.elapsed().as_secs_f64().max(1e-3),
            };
            reelflow_dag::report_progress("copying", &event);
        }
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = sink.abort("reelflow could not read its input object").await;
                return Err(e.into());
            }
        };
        if range.is_none() {
            hasher.update(&chunk);
        }
        let first = sent == 0;
        sent += chunk.len() as u64;
        sink.send(chunk)
            .await
            .map_err(LoadError::db(format!("sending {}", object.key)))?;
        if first {
            // A crash or a server restart here has a COPY stream in flight.
            reelflow_dag::failpoint("load.mid_copy");
        }
    }
    let sha = range.is_none().then(|| hex::encode(hasher.finalize()));
    if sent != expected || sha.as_ref().is_some_and(|h| *h != object.sha256) {
        let _ = sink
            .abort("reelflow read an input object that does not match its record")
            .await;
        return Err(LoadError::Artifact(ArtifactError::Mismatch {
            store: artifacts.url().to_string(),
            key: object.key.clone(),
            detail: format!(
                "read {sent} bytes{}, expected {expected}{}",
                sha.as_ref().map(|h| format!(" with SHA-256 {h}")).unwrap_or_default(),
                if range.is_none() {
                    format!(" with SHA-256 {}", object.sha256)
                } else {
                    String::new()
                }
            ),
        }));
    }
    let rows = sink
        .finish()
        .await
        .map_err(LoadError::db(format!("copying {}", object.key)))?;
    tx.commit().await.map_err(LoadError::db("committing a COPY"))?;
    Ok(rows)
}
