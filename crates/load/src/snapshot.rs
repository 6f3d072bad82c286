use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use futures::StreamExt as _;
use reelflow_artifacts::{ArtifactError, Artifacts, ObjectRef};
use reelflow_clean::{CleanOutput, CleanRecord, Manifest, TableDef, TABLES};
use reelflow_dag::{BoxFuture, Measure, Stage, TaskContext, TaskError};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool, Row};

use crate::graph::{self, Job, Work};
use crate::reports::REPORTS;

/// The stable schema name consumers read.
pub const PUBLISHED_SCHEMA: &str = "movies";

/// How loads run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoadConfig {
    /// Concurrent COPY streams and index builds.
    pub parallelism: usize,
    /// Published snapshots kept besides the current one (for rollback); older ones are dropped.
    pub keep_previous: usize,
    /// `maintenance_work_mem` of the load's sessions (index builds sort in it); empty keeps
    /// the server's setting.
    pub maintenance_work_mem: String,
    /// Reuse the period's snapshot when the source's SHA-256 and the build are unchanged.
    pub reuse_unchanged: bool,
    /// A table with a quarter of the clean output or more whose file is at least this big is
    /// COPYed in `parallelism` parts at once.
    pub split_copy_min_bytes: u64,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            parallelism: 2,
            keep_previous: 2,
            maintenance_work_mem: "512MB".into(),
            reuse_unchanged: true,
            split_copy_min_bytes: 64 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error("database error while {doing}: {source}")]
    Db { doing: String, source: sqlx::Error },
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("validation failed for snapshot {schema}: {detail}")]
    Validation { schema: String, detail: String },
    #[error("the clean output is incomplete: {0}")]
    BadInput(String),
    #[error("snapshot {id} cannot be published: {reason}")]
    NotPublishable { id: i64, reason: String },
    #[error("nothing to roll back to: no earlier published snapshot is kept")]
    NoPrevious,
    #[error("the load's job plan is invalid (a bug): {0}")]
    Plan(String),
    #[error("{0}")]
    Artifact(#[from] ArtifactError),
}

impl LoadError {
    pub(crate) fn db(doing: impl Into<String>) -> impl FnOnce(sqlx::Error) -> LoadError {
        let doing = doing.into();
        move |source| LoadError::Db { doing, source }
    }

    /// Connection losses, server restarts, lack of resources and serialisation failures can
    /// pass; bad data and constraint violations cannot.
    pub fn is_retryable(&self) -> bool {
        match self {
            LoadError::Db { source, .. } => match source {
                sqlx::Error::Database(e) => {
                    let code = e.code().map(|c| c.to_string()).unwrap_or_default();
                    code.starts_with("08")
                        || code.starts_with("53")
                        || code.starts_with("57")
                        || code == "40001"
                        || code == "40P01"
                        || code == "55P03"
                }
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Protocol(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::WorkerCrashed => true,
                _ => false,
            },
            LoadError::Io { source, .. } => source.raw_os_error() == Some(28),
            LoadError::Artifact(e) => e.is_retryable(),
            _ => false,
        }
    }
}

impl From<LoadError> for TaskError {
    fn from(e: LoadError) -> TaskError {
        let mut message = e.to_string();
        // A COPY error names the offending row only in the `where` field.
        if let LoadError::Db {
            source: sqlx::Error::Database(db),
            ..
        } = &e
        {
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                if let Some(w) = pg.r#where() {
                    message.push_str(&format!(" ({w})"));
                }
            }
        }
        if e.is_retryable() {
            TaskError::retryable(message)
        } else {
            TaskError::fatal(message)
        }
    }
}

/// What a successful load produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadOutput {
    pub snapshot_id: i64,
    pub schema: String,
    pub rows: BTreeMap<String, u64>,
    pub rejects: u64,
    pub seconds: f64,
    /// The snapshot was already built from the same source by the same build: nothing loaded.
    #[serde(default)]
    pub reused: bool,
}

/// What publishing did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishOutput {
    pub snapshot_id: i64,
    pub period: String,
    /// The snapshot that `movies` showed before.
    pub replaced: Option<i64>,
    pub dropped: Vec<i64>,
    /// false when the snapshot is of an older period than the one `movies` shows (a backfill):
    /// it is kept as that period's snapshot but `movies` stays on the newer period.
    #[serde(default = "yes")]
    pub current: bool,
}

fn yes() -> bool {
    true
}

/// A row of `reelflow.snapshots`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub id: i64,
    pub dag_id: String,
    pub period: String,
    pub state: String,
    pub schema_name: String,
    pub rows_total: Option<i64>,
    pub rejects_total: Option<i64>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub published_at: Option<chrono::DateTime<chrono::Utc>>,
    pub error: Option<String>,
}

pub(crate) fn q(schema: &str) -> String {
    format!("\"{}\"", schema.replace('"', "\"\""))
}

fn sub(sql: &str, schema: &str) -> String {
    sql.replace("{s}", &q(schema))
}

pub(crate) async fn open(opts: &PgConnectOptions) -> Result<PgConnection, LoadError> {
    PgConnection::connect_with(opts)
        .await
        .map_err(LoadError::db("connecting"))
}

/// `CREATE TABLE schema.table (...)` for a table of the snapshot.
pub fn create_table_sql(schema: &str, t: &TableDef) -> String {
    let cols: Vec<String> = t
        .columns
        .iter()
        .map(|c| {
            format!(
                "{} {}{}",
                q(c.name),
                c.sql_type,
                if c.not_null { " NOT NULL" } else { "" }
            )
        })
        .collect();
    format!("CREATE TABLE {}.{} ({})", q(schema), q(t.name), cols.join(", "))
}

/// The primary key and indexes of a snapshot table.
pub fn key_sql(schema: &str, t: &TableDef) -> Vec<String> {
    let ident = |cols: &[&str]| cols.iter().map(|c| q(c)).collect::<Vec<_>>().join(", ");
    let mut out = Vec::new();
    if !t.primary_key.is_empty() {
        out.push(format!(
            "ALTER TABLE {}.{} ADD PRIMARY KEY ({})",
            q(schema),
            q(t.name),
            ident(t.primary_key)
        ));
    }
    for idx in t.indexes {
        out.push(format!("CREATE INDEX ON {}.{} ({})", q(schema), q(t.name), ident(idx)));
    }
    out
}

/// The foreign keys of a snapshot table (build after every key exists).
pub fn fk_sql(schema: &str, t: &TableDef) -> Vec<String> {
    let ident = |cols: &[&str]| cols.iter().map(|c| q(c)).collect::<Vec<_>>().join(", ");
    t.foreign_keys
        .iter()
        .map(|fk| {
            format!(
                "ALTER TABLE {s}.{} ADD FOREIGN KEY ({}) REFERENCES {s}.{} ({})",
                q(t.name),
                ident(fk.columns),
                q(fk.ref_table),
                ident(fk.ref_columns),
                s = q(schema)
            )
        })
        .collect()
}

/// Streams one object of the clean output from the artifact store, or the byte range `range`
/// of it (one ranged GET), into `schema.table`; with `create`, inside the transaction that
/// creates the table (so PostgreSQL with `wal_level=minimal` can skip WAL for it). A whole
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
            let mb = sent as f64 / 1e6;
            tracing::info!(key = %object.key, mb_sent = mb as u64, mb_per_sec = (mb / started.elapsed().as_secs_f64()) as u64, "copying");
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
        sent += chunk.len() as u64;
        sink.send(chunk)
            .await
            .map_err(LoadError::db(format!("sending {}", object.key)))?;
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
    reelflow_dag::failpoint("load.mid_copy");
    Ok(rows)
}

/// One file of the clean output and the table it fills.
struct LoadTarget {
    name: &'static str,
    object: ObjectRef,
    create: String,
    copy: String,
    /// Rows the clean stage wrote.
    rows: u64,
}

/// Offsets that cut a COPY text object into `parts` ranges of whole rows: a row ends at a raw
/// `\n` (one inside a value is written `\\n`). Reads a little at each cut (ranged GETs).
async fn row_bounds(artifacts: &Artifacts, object: &ObjectRef, parts: usize) -> Result<Vec<u64>, LoadError> {
    const PROBE: u64 = 64 << 10;
    let size = object.size;
    let mut bounds = vec![0u64];
    for k in 1..parts {
        let mut pos = (size * k as u64 / parts as u64).max(*bounds.last().expect("non-empty"));
        loop {
            if pos >= size {
                pos = size;
                break;
            }
            let buf = artifacts.read_range(object, pos..(pos + PROBE).min(size)).await?;
            if buf.is_empty() {
                pos = size;
                break;
            }
            if let Some(at) = buf.iter().position(|&b| b == b'\n') {
                pos += at as u64 + 1;
                break;
            }
            pos += buf.len() as u64;
        }
        bounds.push(pos);
    }
    bounds.push(size);
    Ok(bounds)
}

fn snapshot_schema(id: i64) -> String {
    format!("reelflow_snap_{id}")
}

/// Drops what earlier attempts of this period left behind: schemas of snapshots that are still
/// `building`, `failed` or `ready` (a crash between load and publish).
async fn drop_leftovers(conn: &mut PgConnection, dag_id: &str, period: &str) -> Result<(), LoadError> {
    let rows = sqlx::query(
        "SELECT id, schema_name FROM reelflow.snapshots
         WHERE dag_id = $1 AND period = $2 AND state IN ('building', 'failed', 'ready') AND dropped_at IS NULL",
    )
    .bind(dag_id)
    .bind(period)
    .fetch_all(&mut *conn)
    .await
    .map_err(LoadError::db("listing leftover snapshots"))?;
    for row in rows {
        let id: i64 = row.get(0);
        let schema: String = row.get(1);
        tracing::info!(snapshot_id = id, schema = %schema, "dropping a snapshot left by an earlier attempt");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            q(&schema)
        )))
        .execute(&mut *conn)
        .await
        .map_err(LoadError::db(format!("dropping {schema}")))?;
        sqlx::query(
            "UPDATE reelflow.snapshots SET state = CASE WHEN state = 'failed' THEN 'failed' ELSE 'dropped' END,
                 dropped_at = now(), error = coalesce(error, 'superseded by a later attempt')
             WHERE id = $1",
        )
        .bind(id)
        .execute(&mut *conn)
        .await
        .map_err(LoadError::db("recording a dropped snapshot"))?;
    }
    Ok(())
}

/// Loads the clean output recorded by `record` (the clean task's `manifest.json` in the
/// artifact store) into a new snapshot schema and leaves it `ready`. Only the objects the
/// record names are read, never a listing.
pub async fn load_snapshot(
    pool: &PgPool,
    artifacts: &Artifacts,
    record: &ObjectRef,
    dag_id: &str,
    period: &str,
    run_id: Option<i64>,
    cfg: &LoadConfig,
) -> Result<LoadOutput, LoadError> {
    let started = Instant::now();
    let text = artifacts.get_bytes(record).await?;
    let CleanRecord { manifest, files } =
        serde_json::from_slice(&text).map_err(|e| LoadError::BadInput(format!("{}: {e}", record.key)))?;
    for t in TABLES {
        if !manifest.tables.contains_key(t.name) {
            return Err(LoadError::BadInput(format!(
                "manifest has no table {}: another reelflow version cleaned it; retry the clean task",
                t.name
            )));
        }
    }
    let file_of = |name: &str| {
        files.get(name).cloned().ok_or_else(|| {
            LoadError::BadInput(format!(
                "{} names no object for {name}: retry the clean task",
                record.key
            ))
        })
    };
    let objects: BTreeMap<&str, ObjectRef> = TABLES
        .iter()
        .map(|t| Ok((t.name, file_of(&manifest.tables[t.name].file)?)))
        .chain([Ok(("rejects", file_of(&manifest.rejects.file)?))])
        .collect::<Result<_, LoadError>>()?;

    let opts = pool.connect_options().as_ref().clone();
    // One loader per (dag, period) at a time: a session advisory lock, released if we die.
    let mut guard = open(&opts).await?;
    sqlx::query("SELECT pg_advisory_lock(hashtextextended('reelflow.load:' || $1 || ':' || $2, 0))")
        .bind(dag_id)
        .bind(period)
        .execute(&mut guard)
        .await
        .map_err(LoadError::db("taking the period's load lock"))?;
    drop_leftovers(&mut guard, dag_id, period).await?;

    let id: i64 = sqlx::query_scalar(
        "INSERT INTO reelflow.snapshots (dag_id, period, run_id, schema_name, state, source_sha256, manifest, build_id)
         VALUES ($1, $2, $3, 'pending-' || gen_random_uuid(), 'building', $4, $5, $6) RETURNING id",
    )
    .bind(dag_id)
    .bind(period)
    .bind(run_id)
    .bind(&manifest.source_sha256)
    .bind(sqlx::types::Json(&manifest))
    .bind(build_id())
    .fetch_one(&mut guard)
    .await
    .map_err(LoadError::db("registering the snapshot"))?;
    let schema = snapshot_schema(id);
    sqlx::query("UPDATE reelflow.snapshots SET schema_name = $1 WHERE id = $2")
        .bind(&schema)
        .bind(id)
        .execute(&mut guard)
        .await
        .map_err(LoadError::db("naming the snapshot"))?;

    let result = build(&mut guard, &opts, artifacts, &objects, &manifest, &schema, id, cfg).await;
    match result {
        Ok(rows) => {
            let rejects = manifest.rejects.rows;
            let _ = guard.close().await;
            Ok(LoadOutput {
                snapshot_id: id,
                schema,
                rows,
                rejects,
                seconds: started.elapsed().as_secs_f64(),
                reused: false,
            })
        }
        Err(e) => {
            tracing::warn!(snapshot_id = id, error = %e, "load failed; dropping the half-built snapshot");
            // Best effort on a fresh connection: the guard may be the one that broke.
            let cleanup = async {
                let mut c = open(&opts).await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {} CASCADE",
                    q(&schema)
                )))
                .execute(&mut c)
                .await
                .map_err(LoadError::db("dropping the failed snapshot"))?;
                sqlx::query(
                    "UPDATE reelflow.snapshots SET state = 'failed', error = $2, dropped_at = now() WHERE id = $1",
                )
                .bind(id)
                .bind(e.to_string())
                .execute(&mut c)
                .await
                .map_err(LoadError::db("recording the failed snapshot"))?;
                Ok::<(), LoadError>(())
            };
            if let Err(ce) = cleanup.await {
                tracing::warn!(snapshot_id = id, error = %ce, "could not clean up now; the next load of this period will");
            }
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn build(
    conn: &mut PgConnection,
    opts: &PgConnectOptions,
    artifacts: &Artifacts,
    objects: &BTreeMap<&str, ObjectRef>,
    manifest: &Manifest,
    schema: &str,
    id: i64,
    cfg: &LoadConfig,
) -> Result<BTreeMap<String, u64>, LoadError> {
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {}", q(schema))))
        .execute(&mut *conn)
        .await
        .map_err(LoadError::db(format!("creating schema {schema}")))?;

    reelflow_dag::failpoint("load.after_schema");

    // Per-reason and per-column counts, stored with the snapshot they belong to.
    store_counts(conn, manifest, schema).await?;
    // What `movies` shows now, for the diff (see `diff`).
    let diff_base = crate::diff::prepare(conn, schema).await?;

    // Everything else is a graph of jobs over `parallelism` connections (see `graph`).
    let mut jobs: Vec<Job> = Vec::new();
    // Per table: the jobs that must all end before it is loaded.
    let mut copy_of: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    // COPY job -> the table it fills (several jobs for a table loaded in parts).
    let mut copy_table: BTreeMap<usize, &str> = BTreeMap::new();
    let mut keys_of: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut size_of: BTreeMap<&str, u64> = BTreeMap::new();
    // What to load: every table of `TABLES`, then the rejects.
    let column_list = |t: &TableDef| t.columns.iter().map(|c| q(c.name)).collect::<Vec<_>>().join(", ");
    let targets: Vec<LoadTarget> = TABLES
        .iter()
        .map(|t| LoadTarget {
            name: t.name,
            object: objects[t.name].clone(),
            create: create_table_sql(schema, t),
            copy: format!("COPY {}.{} ({}) FROM STDIN", q(schema), q(t.name), column_list(t)),
            rows: manifest.tables[t.name].rows,
        })
        .chain([LoadTarget {
            name: "rejects",
            object: objects["rejects"].clone(),
            create: format!(
                "CREATE TABLE {}.rejects (file text NOT NULL, line bigint NOT NULL, reason text NOT NULL, raw text)",
                q(schema)
            ),
            copy: format!("COPY {}.rejects (file, line, reason, raw) FROM STDIN", q(schema)),
            rows: manifest.rejects.rows,
        }])
        .collect();
    for t in &targets {
        size_of.insert(t.name, t.object.size);
    }
    // A table with a quarter of the bytes or more (ratings) is big enough for PostgreSQL to
    // build its indexes with parallel workers: those jobs run one at a time. Its COPY is split
    // over the connections instead of being the one long stream everything else waits for
    // (the parts are WAL-logged: they cannot share the creating transaction).
    let total_bytes: u64 = size_of.values().sum();
    let big = |name: &str| size_of.get(name).is_some_and(|&b| b >= total_bytes / 4);
    let expected_rows: BTreeMap<&str, u64> = targets.iter().map(|t| (t.name, t.rows)).collect();
    for t in targets {
        let LoadTarget {
            name,
            object,
            create,
            copy,
            ..
        } = t;
        let size = size_of[name];
        let parts = if big(name) && size >= cfg.split_copy_min_bytes {
            cfg.parallelism.max(1)
        } else {
            1
        };
        if parts == 1 {
            copy_of.entry(name).or_default().push(jobs.len());
            copy_table.insert(jobs.len(), name);
            jobs.push(Job {
                name: format!("COPY {}", name),
                work: Work::Copy {
                    create: Some(create),
                    copy,
                    artifacts: artifacts.clone(),
                    object,
                    range: None,
                },
                after: vec![],
                weight: size,
                exclusive: false,
            });
            continue;
        }
        let created = jobs.len();
        jobs.push(Job::sql(format!("create {}", name), vec![create], vec![], size));
        let bounds = row_bounds(artifacts, &object, parts).await?;
        for (k, w) in bounds.windows(2).enumerate() {
            copy_of.entry(name).or_default().push(jobs.len());
            copy_table.insert(jobs.len(), name);
            jobs.push(Job {
                name: format!("COPY {} part {}/{}", name, k + 1, parts),
                work: Work::Copy {
                    create: None,
                    copy: copy.clone(),
                    artifacts: artifacts.clone(),
                    object: object.clone(),
                    range: Some((w[0], w[1])),
                },
                after: vec![created],
                weight: w[1] - w[0],
                exclusive: false,
            });
        }
    }
    let mut parts_left: BTreeMap<&str, usize> = copy_of.iter().map(|(t, v)| (*t, v.len())).collect();
    let mut rows_of: BTreeMap<&str, u64> = BTreeMap::new();
    let keys_start = jobs.len();
    // Keys and indexes: each as soon as its table is loaded. A secondary index sorts rows in
    // random order, so it weighs a little more than the primary key of the same table.
    for t in TABLES {
        let statements = key_sql(schema, t);
        for (k, sql) in statements.into_iter().enumerate() {
            let weight = if k == 0 && !t.primary_key.is_empty() {
                size_of[t.name]
            } else {
                size_of[t.name] + size_of[t.name] / 4
            };
            keys_of.entry(t.name).or_default().push(jobs.len());
            jobs.push(Job::sql(sql.clone(), vec![sql], copy_of[t.name].clone(), weight).exclusive(big(t.name)));
        }
    }
    jobs.push(Job::sql(
        "index rejects",
        vec![format!("CREATE INDEX ON {}.rejects (file, reason)", q(schema))],
        copy_of["rejects"].clone(),
        size_of["rejects"],
    ));
    let keyed = |names: &mut dyn Iterator<Item = &str>| -> Vec<usize> {
        let mut v: Vec<usize> = names
            .flat_map(|n| keys_of.get(n).cloned().unwrap_or_else(|| copy_of[n].clone()))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let keys_end = jobs.len();
    let movies_keyed = keys_of["movies"].clone();
    jobs.push(Job::sql(
        "diff movies",
        crate::diff::statements(schema, &diff_base),
        movies_keyed,
        0,
    ));
    // Foreign keys, one after the other (each locks the referenced table), once the keys of
    // both sides exist.
    let fk_tables: Vec<&str> = TABLES
        .iter()
        .filter(|t| !t.foreign_keys.is_empty())
        .flat_map(|t| std::iter::once(t.name).chain(t.foreign_keys.iter().map(|f| f.ref_table)))
        .collect();
    let fk_job = jobs.len();
    jobs.push(Job::sql(
        "foreign keys",
        TABLES.iter().flat_map(|t| fk_sql(schema, t)).collect(),
        keyed(&mut fk_tables.iter().copied()),
        fk_tables.iter().map(|t| size_of[t]).sum::<u64>() / 4,
    ));
    // Statistics for the report queries, after the foreign keys (ANALYZE waits for their locks).
    let analyzed: Vec<&str> = {
        let mut v: Vec<&str> = REPORTS
            .iter()
            .flat_map(|r| r.reads.iter().copied())
            .filter(|n| TABLES.iter().any(|t| t.name == *n))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let analyze_job = jobs.len();
    let mut after = keyed(&mut analyzed.iter().copied());
    after.push(fk_job);
    jobs.push(Job::sql(
        "analyze report inputs",
        analyzed
            .iter()
            .map(|t| format!("ANALYZE {}.{}", q(schema), q(t)))
            .collect(),
        after,
        0,
    ));
    // The clean stage's per-movie totals must add up to the ratings loaded.
    let n = manifest.tables["ratings"].rows;
    let totals = format!(
        "(SELECT coalesce(sum(ratings), 0) FROM {}.ratings_per_movie)",
        q(schema)
    );
    let check_totals = jobs.len();
    jobs.push(Job::sql(
        "check ratings_per_movie",
        vec![format!(
            "DO $$ BEGIN IF {totals} <> {n} THEN RAISE EXCEPTION 'ratings_per_movie adds up to % ratings, but ratings has {n} rows', {totals}; END IF; END $$"
        )],
        [&copy_of["ratings_per_movie"], &copy_of["ratings"]].into_iter().flatten().copied().collect(),
        0,
    ));
    let mut report_job: BTreeMap<&str, usize> = BTreeMap::new();
    for r in REPORTS {
        let mut after = vec![analyze_job];
        if r.reads.contains(&"ratings_per_movie") {
            after.push(check_totals);
        }
        after.extend(r.reads.iter().filter_map(|n| report_job.get(n)));
        let mut statements = vec![sub(r.sql, schema)];
        statements.extend(r.indexes.iter().map(|i| sub(i, schema)));
        statements.push(format!("ANALYZE {}.{}", q(schema), q(r.name)));
        report_job.insert(r.name, jobs.len());
        jobs.push(Job::sql(format!("report {}", r.name), statements, after, 0));
    }

    let session: Vec<String> = Some(&cfg.maintenance_work_mem)
        .filter(|m| !m.is_empty())
        .map(|m| format!("SET maintenance_work_mem = '{}'", m.replace('\'', "''")))
        .into_iter()
        .collect();
    let started = Instant::now();
    let (mut copies_left, mut keys_left) = (copy_of.len(), keys_end - keys_start);
    let mut rows: BTreeMap<String, u64> = BTreeMap::new();
    let mut on_done = |i: usize, n: u64| -> Result<(), LoadError> {
        if let Some(&name) = copy_table.get(&i) {
            *rows_of.entry(name).or_default() += n;
            let left = parts_left.get_mut(name).expect("a table of the graph");
            *left -= 1;
            if *left > 0 {
                return Ok(());
            }
            // Validation: every table holds exactly what the clean stage counted.
            let n = rows_of[name];
            let expected = expected_rows[name];
            if n != expected {
                return Err(LoadError::Validation {
                    schema: schema.into(),
                    detail: format!("{name}: {n} rows loaded, manifest says {expected}"),
                });
            }
            rows.insert(name.to_string(), n);
            copies_left -= 1;
            if copies_left == 0 {
                tracing::info!(schema, seconds = started.elapsed().as_secs_f64(), "COPY done");
                reelflow_dag::failpoint("load.after_copy");
            }
        } else if (keys_start..keys_end).contains(&i) {
            keys_left -= 1;
            if keys_left == 0 {
                tracing::info!(
                    schema,
                    seconds = started.elapsed().as_secs_f64(),
                    "keys and indexes built"
                );
                reelflow_dag::failpoint("load.after_keys");
            }
        }
        Ok(())
    };
    graph::run(opts, cfg.parallelism, &session, &jobs, &mut on_done).await?;
    tracing::info!(
        schema,
        seconds = started.elapsed().as_secs_f64(),
        "tables, keys and reports built"
    );

    reelflow_dag::failpoint("load.before_ready");
    let row_counts = serde_json::to_value(&rows).expect("counts serialise");
    let reject_counts: BTreeMap<&str, &BTreeMap<String, u64>> = manifest
        .files
        .iter()
        .map(|(f, fm)| (f.as_str(), &fm.rejected))
        .collect();
    let total: u64 = TABLES.iter().map(|t| rows[t.name]).sum();
    sqlx::query(
        "UPDATE reelflow.snapshots SET state = 'ready', ready_at = now(), row_counts = $2, reject_counts = $3,
             rows_total = $4, rejects_total = $5 WHERE id = $1",
    )
    .bind(id)
    .bind(row_counts)
    .bind(sqlx::types::Json(reject_counts))
    .bind(total as i64)
    .bind(manifest.rejects.rows as i64)
    .execute(&mut *conn)
    .await
    .map_err(LoadError::db("marking the snapshot ready"))?;
    Ok(rows)
}

/// Stores the clean stage's per-reason reject and per-column unparsable counts in the snapshot.
async fn store_counts(conn: &mut PgConnection, manifest: &Manifest, schema: &str) -> Result<(), LoadError> {
    for ddl in [
        "CREATE TABLE {s}.reject_counts (file text NOT NULL, reason text NOT NULL, rows bigint NOT NULL, PRIMARY KEY (file, reason))",
        "CREATE TABLE {s}.unparsable_counts (file text NOT NULL, column_name text NOT NULL, values_nulled bigint NOT NULL, PRIMARY KEY (file, column_name))",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sub(ddl, schema)))
            .execute(&mut *conn)
            .await
            .map_err(LoadError::db("creating count tables"))?;
    }
    let (mut f1, mut r1, mut n1, mut f2, mut c2, mut n2) = (vec![], vec![], vec![], vec![], vec![], vec![]);
    for (file, fm) in &manifest.files {
        for (reason, n) in &fm.rejected {
            f1.push(file.clone());
            r1.push(reason.clone());
            n1.push(*n as i64);
        }
        for (col, n) in &fm.unparsable {
            f2.push(file.clone());
            c2.push(col.clone());
            n2.push(*n as i64);
        }
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {}.reject_counts SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])",
        q(schema)
    )))
    .bind(&f1)
    .bind(&r1)
    .bind(&n1)
    .execute(&mut *conn)
    .await
    .map_err(LoadError::db("storing reject counts"))?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {}.unparsable_counts SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])",
        q(schema)
    )))
    .bind(&f2)
    .bind(&c2)
    .bind(&n2)
    .execute(&mut *conn)
    .await
    .map_err(LoadError::db("storing unparsable counts"))?;
    Ok(())
}

/// Publishes a `ready` snapshot: in one transaction the current `movies` schema goes back to
/// its own name and the new one becomes `movies`. Readers see the old or the new snapshot,
/// never a mix and never none. Published snapshots beyond `keep_previous` are then dropped.
pub async fn publish(pool: &PgPool, snapshot_id: i64, keep_previous: usize) -> Result<PublishOutput, LoadError> {
    let mut tx = pool
        .begin()
        .await
        .map_err(LoadError::db("starting the publish transaction"))?;
    sqlx::query("LOCK TABLE reelflow.snapshots IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .map_err(LoadError::db("locking snapshot bookkeeping"))?;
    let row = sqlx::query("SELECT state, schema_name, period FROM reelflow.snapshots WHERE id = $1")
        .bind(snapshot_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(LoadError::db("reading the snapshot"))?
        .ok_or(LoadError::NotPublishable {
            id: snapshot_id,
            reason: "no such snapshot".into(),
        })?;
    let (state, schema, period): (String, String, String) = (row.get(0), row.get(1), row.get(2));
    if state == "published" {
        return Ok(PublishOutput {
            snapshot_id,
            period,
            replaced: None,
            dropped: vec![],
            current: true,
        });
    }
    if state != "ready" {
        // Published before and that publish's result was lost (the worker died before
        // recording it): it was kept as an older period's snapshot (a backfill), and may have
        // been retired, rolled back or dropped by retention since. The publish happened; do not
        // undo what came after it. Only if no later snapshot of the period was published.
        let repeat: bool = sqlx::query_scalar(
            "SELECT s.published_at IS NOT NULL AND NOT EXISTS (
                 SELECT 1 FROM reelflow.snapshots l
                 WHERE l.dag_id = s.dag_id AND l.period = s.period AND l.id > s.id AND l.published_at IS NOT NULL)
             FROM reelflow.snapshots s WHERE s.id = $1",
        )
        .bind(snapshot_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(LoadError::db("reading the period's snapshots"))?;
        if repeat {
            tracing::info!(snapshot_id, state = %state, "published before; nothing to do");
            return Ok(PublishOutput {
                snapshot_id,
                period,
                replaced: None,
                dropped: vec![],
                current: false,
            });
        }
    }
    if state != "ready" {
        return Err(LoadError::NotPublishable {
            id: snapshot_id,
            reason: format!("it is {state}, not ready"),
        });
    }
    let newer: Option<String> =
        sqlx::query_scalar("SELECT period FROM reelflow.snapshots WHERE state = 'published' AND period > $1")
            .bind(&period)
            .fetch_optional(&mut *tx)
            .await
            .map_err(LoadError::db("reading the published period"))?;
    if let Some(newer) = newer {
        // A backfill of an older period: keep its snapshot, leave `movies` on the newer one.
        sqlx::query("UPDATE reelflow.snapshots SET state = 'retired', published_at = now() WHERE id = $1")
            .bind(snapshot_id)
            .execute(&mut *tx)
            .await
            .map_err(LoadError::db("keeping the older period's snapshot"))?;
        tx.commit().await.map_err(LoadError::db("committing the publish"))?;
        let dropped = prune(pool, keep_previous).await?;
        tracing::info!(snapshot_id, period = %period, newer = %newer, "snapshot kept; movies stays on the newer period");
        return Ok(PublishOutput {
            snapshot_id,
            period,
            replaced: None,
            dropped,
            current: false,
        });
    }
    let replaced = switch_to(&mut tx, snapshot_id, &schema, "retired").await?;
    reelflow_dag::failpoint("publish.before_commit");
    tx.commit().await.map_err(LoadError::db("committing the publish"))?;
    reelflow_dag::failpoint("publish.after_commit");
    let dropped = prune(pool, keep_previous).await?;
    tracing::info!(snapshot_id, period = %period, ?replaced, ?dropped, "snapshot published");
    Ok(PublishOutput {
        snapshot_id,
        period,
        replaced,
        dropped,
        current: true,
    })
}

/// Inside `tx`: renames the published schema back to its own name (its row gets `old_state`)
/// and `schema` to `movies`. Returns the id of the snapshot that was replaced.
async fn switch_to(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    id: i64,
    schema: &str,
    old_state: &str,
) -> Result<Option<i64>, LoadError> {
    let current = sqlx::query("SELECT id, schema_name FROM reelflow.snapshots WHERE state = 'published'")
        .fetch_optional(&mut **tx)
        .await
        .map_err(LoadError::db("finding the published snapshot"))?;
    let published_exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(PUBLISHED_SCHEMA)
        .fetch_one(&mut **tx)
        .await
        .map_err(LoadError::db("looking for the movies schema"))?;
    let replaced = match current {
        Some(row) => {
            let (old_id, old_schema): (i64, String) = (row.get(0), row.get(1));
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER SCHEMA {} RENAME TO {}",
                q(PUBLISHED_SCHEMA),
                q(&old_schema)
            )))
            .execute(&mut **tx)
            .await
            .map_err(LoadError::db("renaming the published schema"))?;
            sqlx::query("UPDATE reelflow.snapshots SET state = $2, retired_at = now() WHERE id = $1")
                .bind(old_id)
                .bind(old_state)
                .execute(&mut **tx)
                .await
                .map_err(LoadError::db("retiring the published snapshot"))?;
            Some(old_id)
        }
        None if published_exists => {
            return Err(LoadError::NotPublishable {
                id,
                reason: format!(
                    "a schema named {PUBLISHED_SCHEMA} exists that reelflow did not publish; rename or drop it"
                ),
            })
        }
        None => None,
    };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER SCHEMA {} RENAME TO {}",
        q(schema),
        q(PUBLISHED_SCHEMA)
    )))
    .execute(&mut **tx)
    .await
    .map_err(LoadError::db("renaming the new snapshot to movies"))?;
    sqlx::query("UPDATE reelflow.snapshots SET state = 'published', published_at = now() WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await
        .map_err(LoadError::db("marking the snapshot published"))?;
    Ok(replaced)
}

/// Drops retired snapshots beyond the `keep` most recently published ones.
async fn prune(pool: &PgPool, keep: usize) -> Result<Vec<i64>, LoadError> {
    let old = sqlx::query(
        "SELECT id, schema_name FROM reelflow.snapshots WHERE state IN ('retired', 'rolled_back')
         ORDER BY published_at DESC NULLS LAST, id DESC OFFSET $1",
    )
    .bind(keep as i64)
    .fetch_all(pool)
    .await
    .map_err(LoadError::db("listing old snapshots"))?;
    let mut dropped = Vec::new();
    for row in old {
        let (id, schema): (i64, String) = (row.get(0), row.get(1));
        let mut tx = pool.begin().await.map_err(LoadError::db("starting a drop"))?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            q(&schema)
        )))
        .execute(&mut *tx)
        .await
        .map_err(LoadError::db(format!("dropping {schema}")))?;
        sqlx::query("UPDATE reelflow.snapshots SET state = 'dropped', dropped_at = now() WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(LoadError::db("recording a dropped snapshot"))?;
        tx.commit().await.map_err(LoadError::db("committing a drop"))?;
        dropped.push(id);
    }
    Ok(dropped)
}

/// Publishes the most recent earlier snapshot again; the current one becomes `rolled_back`
/// (kept, but never chosen by a later rollback).
pub async fn rollback(pool: &PgPool) -> Result<PublishOutput, LoadError> {
    let mut tx = pool
        .begin()
        .await
        .map_err(LoadError::db("starting the rollback transaction"))?;
    sqlx::query("LOCK TABLE reelflow.snapshots IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .map_err(LoadError::db("locking snapshot bookkeeping"))?;
    let prev = sqlx::query(
        "SELECT id, schema_name, period FROM reelflow.snapshots WHERE state = 'retired'
         ORDER BY retired_at DESC NULLS LAST, id DESC LIMIT 1",
    )
    .fetch_optional(&mut *tx)
    .await
    .map_err(LoadError::db("finding the previous snapshot"))?
    .ok_or(LoadError::NoPrevious)?;
    let (id, schema, period): (i64, String, String) = (prev.get(0), prev.get(1), prev.get(2));
    let replaced = switch_to(&mut tx, id, &schema, "rolled_back").await?;
    tx.commit().await.map_err(LoadError::db("committing the rollback"))?;
    tracing::info!(snapshot_id = id, period = %period, ?replaced, "rolled back");
    Ok(PublishOutput {
        snapshot_id: id,
        period,
        replaced,
        dropped: vec![],
        current: true,
    })
}

/// Every snapshot that still has a schema, newest first, then the rest.
pub async fn list_snapshots(pool: &PgPool) -> Result<Vec<SnapshotInfo>, LoadError> {
    let rows = sqlx::query(
        "SELECT id, dag_id, period, state, CASE WHEN state = 'published' THEN 'movies' ELSE schema_name END,
                rows_total, rejects_total, created_at, published_at, error
         FROM reelflow.snapshots ORDER BY id DESC",
    )
    .fetch_all(pool)
    .await
    .map_err(LoadError::db("listing snapshots"))?;
    Ok(rows
        .into_iter()
        .map(|r| SnapshotInfo {
            id: r.get(0),
            dag_id: r.get(1),
            period: r.get(2),
            state: r.get(3),
            schema_name: r.get(4),
            rows_total: r.get(5),
            rejects_total: r.get(6),
            created_at: r.get(7),
            published_at: r.get(8),
            error: r.get(9),
        })
        .collect())
}

/// A fingerprint of what a load builds: the reelflow version, the source of the cleaner and
/// the loader (hashed by `build.rs`), the manifest format, the table definitions and the report
/// SQL. Stored with each snapshot.
pub fn build_id() -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(env!("CARGO_PKG_VERSION"));
    h.update(env!("REELFLOW_LOAD_SOURCE_HASH"));
    h.update(reelflow_clean::MANIFEST_FORMAT.to_le_bytes());
    h.update(format!("{TABLES:?}"));
    h.update(format!("{REPORTS:?}"));
    hex::encode(&h.finalize()[..16])
}

/// The snapshot of `(dag_id, period)` that a new load of a source with this SHA-256 would only
/// rebuild: the period's newest kept snapshot, if it is published (current or kept for an
/// older period), came from the same bytes and was built by this same [`build_id`]. A
/// snapshot that was rolled back away from is never reused.
pub async fn unchanged_snapshot(
    pool: &PgPool,
    dag_id: &str,
    period: &str,
    source_sha256: &str,
) -> Result<Option<i64>, LoadError> {
    let row = sqlx::query(
        "SELECT id, state, source_sha256, build_id FROM reelflow.snapshots
         WHERE dag_id = $1 AND period = $2 AND dropped_at IS NULL AND state NOT IN ('building', 'failed')
         ORDER BY id DESC LIMIT 1",
    )
    .bind(dag_id)
    .bind(period)
    .fetch_optional(pool)
    .await
    .map_err(LoadError::db("looking for an unchanged snapshot"))?;
    Ok(row.and_then(|r| {
        let (id, state, sha, build): (i64, String, Option<String>, Option<String>) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let kept = state == "published" || state == "retired";
        (kept && sha.as_deref() == Some(source_sha256) && build.as_deref() == Some(build_id().as_str())).then_some(id)
    }))
}

/// The [`LoadOutput`] of an existing, still kept snapshot, marked `reused`.
pub async fn reuse_snapshot(pool: &PgPool, id: i64) -> Result<LoadOutput, LoadError> {
    let row = sqlx::query(
        "SELECT state, CASE WHEN state = 'published' THEN 'movies' ELSE schema_name END, row_counts, rejects_total
         FROM reelflow.snapshots WHERE id = $1 AND dropped_at IS NULL",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(LoadError::db("reading the reused snapshot"))?
    .ok_or_else(|| LoadError::NotPublishable {
        id,
        reason: "it was dropped after the clean task chose to reuse it; retry the clean task".into(),
    })?;
    let state: String = row.get(0);
    if state != "published" && state != "retired" {
        return Err(LoadError::NotPublishable {
            id,
            reason: format!("it is {state} now; retry the clean task"),
        });
    }
    let counts: Option<serde_json::Value> = row.get(2);
    let rows: BTreeMap<String, u64> = counts.and_then(|v| serde_json::from_value(v).ok()).unwrap_or_default();
    Ok(LoadOutput {
        snapshot_id: id,
        schema: row.get(1),
        rows,
        rejects: row.get::<Option<i64>, _>(3).unwrap_or(0) as u64,
        seconds: 0.0,
        reused: true,
    })
}

/// What the `load` task reads: the `clean` task's output.
#[derive(Clone, Debug, Deserialize)]
pub struct LoadInput {
    pub clean: CleanOutput,
}

/// The `load` task: COPYs the clean output into a new snapshot (or passes an unchanged
/// source's snapshot through) and outputs [`LoadOutput`].
pub struct LoadTask {
    pub pool: PgPool,
    pub config: LoadConfig,
}

impl Stage for LoadTask {
    const ID: &'static str = "load";
    type Input = LoadInput;
    type Output = LoadOutput;

    fn run<'a>(&'a self, ctx: &'a TaskContext, input: LoadInput) -> BoxFuture<'a, Result<LoadOutput, TaskError>> {
        Box::pin(async move {
            let record = match input.clean {
                CleanOutput::Unchanged {
                    unchanged_snapshot: id, ..
                } => {
                    let out = reuse_snapshot(&self.pool, id).await?;
                    tracing::info!(
                        snapshot_id = id,
                        "source unchanged: the snapshot is reused, nothing loaded"
                    );
                    return Ok(out);
                }
                CleanOutput::Cleaned { record, .. } => record,
            };
            let period = ctx.period.to_string();
            let work = load_snapshot(
                &self.pool,
                &ctx.artifacts,
                &record,
                &ctx.dag_id,
                &period,
                Some(ctx.run_id),
                &self.config,
            );
            tokio::select! {
                r = work => Ok(r?),
                _ = ctx.cancel.cancelled() => Err(TaskError::cancelled()),
            }
        })
    }

    fn measures(out: &LoadOutput) -> Vec<Measure> {
        if out.reused {
            return vec![];
        }
        out.rows
            .iter()
            .map(|(table, n)| Measure::Rows {
                table: table.clone(),
                outcome: "loaded",
                n: *n,
            })
            .collect()
    }

    fn summary(l: &LoadOutput) -> Vec<String> {
        if l.reused {
            return vec![];
        }
        let mut lines = vec![format!("load: snapshot {} ({})", l.snapshot_id, l.schema)];
        lines.extend(l.rows.iter().map(|(t, n)| format!("  {t:<20} {n:>10} rows")));
        lines
    }
}

/// What the `publish` task reads: the `load` task's output.
#[derive(Clone, Debug, Deserialize)]
pub struct PublishInput {
    pub load: LoadOutput,
}

/// The `publish` task: makes the loaded snapshot the schema `movies`; outputs [`PublishOutput`].
pub struct PublishTask {
    pub pool: PgPool,
    pub config: LoadConfig,
}

impl Stage for PublishTask {
    const ID: &'static str = "publish";
    type Input = PublishInput;
    type Output = PublishOutput;

    fn run<'a>(&'a self, ctx: &'a TaskContext, input: PublishInput) -> BoxFuture<'a, Result<PublishOutput, TaskError>> {
        Box::pin(async move {
            // A reused snapshot was published before: publish() leaves it as it is.
            let out = publish(&self.pool, input.load.snapshot_id, self.config.keep_previous).await?;
            // Retention of the artifact store follows the snapshots' (best effort: the next
            // publish sweeps again).
            if let Err(e) = crate::sweep_artifacts(&self.pool, &ctx.artifacts, &ctx.dag_id).await {
                tracing::warn!(error = %e, "could not delete the artifacts of runs whose snapshots are gone; the next publish tries again");
            }
            Ok(out)
        })
    }

    fn summary(p: &PublishOutput) -> Vec<String> {
        let id = p.snapshot_id;
        if !p.current {
            return vec![format!(
                "publish: snapshot {id} kept for {}; `movies` stays on a newer period",
                p.period
            )];
        }
        let replaced = p
            .replaced
            .map_or_else(|| "none".to_string(), |r| format!("snapshot {r}"));
        let dropped = if p.dropped.is_empty() {
            "none".to_string()
        } else {
            p.dropped.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        };
        vec![format!(
            "publish: snapshot {id} is now the schema `movies` (replaced: {replaced}, dropped: {dropped})"
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::row_bounds;

    #[tokio::test]
    async fn row_bounds_cut_only_after_raw_newlines_and_cover_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = reelflow_artifacts::Artifacts::local(&dir.path().join("store")).unwrap();
        let path = dir.path().join("t.tsv");
        // Escaped newlines (`\n` as two characters) inside values are not row ends.
        let mut text = String::new();
        for i in 0..500 {
            text += &format!("{i}\tline one\\nline two\\\\n\t\\N\n");
        }
        std::fs::write(&path, &text).unwrap();
        let object = store.put_file("t/1.tsv", &path, &|| false).await.unwrap();
        let size = text.len() as u64;
        for parts in 1..=7 {
            let b = row_bounds(&store, &object, parts).await.unwrap();
            assert_eq!(b.len(), parts + 1);
            assert_eq!((b[0], b[parts]), (0, size));
            assert!(b.windows(2).all(|w| w[0] <= w[1]), "{b:?}");
            for &cut in &b[1..parts] {
                assert_eq!(text.as_bytes()[cut as usize - 1], b'\n', "{parts} parts: {b:?}");
            }
            let rows: usize = b
                .windows(2)
                .map(|w| text[w[0] as usize..w[1] as usize].matches('\n').count())
                .sum();
            assert_eq!(rows, 500);
        }
        // One long row: no cut inside it.
        std::fs::write(&path, "x".repeat(200_000) + "\n").unwrap();
        let object = store.put_file("t/2.tsv", &path, &|| false).await.unwrap();
        assert_eq!(row_bounds(&store, &object, 2).await.unwrap(), [0, 200_001, 200_001]);
    }
}
