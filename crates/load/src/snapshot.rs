use std::collections::BTreeMap;
use std::time::Instant;

use reelflow_artifacts::{Artifacts, ObjectRef};
use reelflow_clean::{CleanRecord, Cut, Manifest, TableDef, TABLES};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool, Row};

use crate::copy::open;
use crate::graph::{self, Job, Work};
use crate::reports::REPORTS;
use crate::reuse::build_id;
pub(crate) use crate::types::q;
use crate::types::{LoadConfig, LoadError, LoadOutput};

/// `"a", "b"`: quoted column names for a column list.
fn idents(cols: &[&str]) -> String {
    cols.iter().map(|c| q(c)).collect::<Vec<_>>().join(", ")
}

fn sub(sql: &str, schema: &str) -> String {
    sql.replace("{s}", &q(schema))
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
    let mut out = Vec::new();
    if !t.primary_key.is_empty() {
        out.push(format!(
            "ALTER TABLE {}.{} ADD PRIMARY KEY ({})",
            q(schema),
            q(t.name),
            idents(t.primary_key)
        ));
    }
    for idx in t.indexes {
        out.push(format!("CREATE INDEX ON {}.{} ({})", q(schema), q(t.name), idents(idx)));
    }
    out
}

/// The foreign keys of a snapshot table (build after every key exists).
pub fn fk_sql(schema: &str, t: &TableDef) -> Vec<String> {
    t.foreign_keys
        .iter()
        .map(|fk| {
            format!(
                "ALTER TABLE {s}.{} ADD FOREIGN KEY ({}) REFERENCES {s}.{} ({})",
                q(t.name),
                idents(fk.columns),
                q(fk.ref_table),
                idents(fk.ref_columns),
                s = q(schema)
            )
        })
        .collect()
}

/// One file of the clean output and the table it fills.
struct LoadTarget {
    name: &'static str,
    object: ObjectRef,
    create: String,
    copy: String,
    /// Rows the clean stage wrote.
    rows: u64,
    /// Where the file splits into key ranges (see [`reelflow_clean::TableOutput::cuts`]).
    cuts: Vec<Cut>,
}

/// A partition of a table loaded as key ranges: its name, the byte range of the table's file it
/// gets, and the COPY job that fills it.
type Part = (String, (u64, u64), usize);

/// Up to `parts - 1` of `cuts`, each the nearest to an even share of `size` bytes, in order and
/// distinct: where a key-ordered file is cut into that many ranges of about equal size.
fn pick_cuts(cuts: &[Cut], size: u64, parts: usize) -> Vec<Cut> {
    let mut out: Vec<Cut> = Vec::new();
    for k in 1..parts as u64 {
        let target = size * k / parts as u64;
        let best = cuts
            .iter()
            .filter(|c| c.offset > 0 && c.offset < size)
            .filter(|c| out.last().is_none_or(|l| c.offset > l.offset))
            .min_by_key(|c| c.offset.abs_diff(target));
        if let Some(&c) = best {
            out.push(c);
        }
    }
    out
}

/// The statements that create `t` as a table partitioned by ranges of its first column, one
/// partition per range between `cuts`, with its primary key and indexes declared on the parent
/// only (each partition's are built and attached once it is loaded). Returns them and the
/// partitions' names.
fn partitioned_table_sql(schema: &str, t: &TableDef, cuts: &[Cut]) -> (Vec<String>, Vec<String>) {
    let key = t.columns[0].name;
    let mut sql = vec![format!(
        "{} PARTITION BY RANGE ({})",
        create_table_sql(schema, t),
        q(key)
    )];
    let mut names = Vec::new();
    let bounds: Vec<String> = std::iter::once("MINVALUE".to_string())
        .chain(cuts.iter().map(|c| c.key.to_string()))
        .chain(std::iter::once("MAXVALUE".to_string()))
        .collect();
    for (i, w) in bounds.windows(2).enumerate() {
        let name = format!("{}_p{}", t.name, i + 1);
        sql.push(format!(
            "CREATE TABLE {s}.{} PARTITION OF {s}.{} FOR VALUES FROM ({}) TO ({})",
            q(&name),
            q(t.name),
            w[0],
            w[1],
            s = q(schema)
        ));
        names.push(name);
    }
    if !t.primary_key.is_empty() {
        sql.push(format!(
            "ALTER TABLE ONLY {}.{} ADD CONSTRAINT {} PRIMARY KEY ({})",
            q(schema),
            q(t.name),
            q(&format!("{}_pkey", t.name)),
            idents(t.primary_key)
        ));
    }
    for idx in t.indexes {
        sql.push(format!(
            "CREATE INDEX {} ON ONLY {}.{} ({})",
            q(&index_name(t.name, idx)),
            q(schema),
            q(t.name),
            idents(idx)
        ));
    }
    (sql, names)
}

/// The name PostgreSQL gives `CREATE INDEX ON table (cols)` (for the short names used here).
fn index_name(table: &str, cols: &[&str]) -> String {
    format!("{table}_{}_idx", cols.join("_"))
}

/// The primary key of one partition, then each index, each attached to the parent's as soon as
/// it is built; every build serial (the partitions are built side by side instead).
fn partition_key_jobs(schema: &str, t: &TableDef, part: &str) -> Vec<(String, Vec<String>, bool)> {
    let serial = |sql: Vec<String>| -> Vec<String> {
        std::iter::once("SET max_parallel_maintenance_workers = 0".to_string())
            .chain(sql)
            .chain(std::iter::once("RESET max_parallel_maintenance_workers".to_string()))
            .collect()
    };
    let mut jobs = Vec::new();
    if !t.primary_key.is_empty() {
        let pkey = format!("{part}_pkey");
        jobs.push((
            format!(
                "ALTER TABLE {}.{} ADD PRIMARY KEY ({})",
                q(schema),
                q(part),
                idents(t.primary_key)
            ),
            serial(vec![
                format!(
                    "ALTER TABLE {}.{} ADD CONSTRAINT {} PRIMARY KEY ({})",
                    q(schema),
                    q(part),
                    q(&pkey),
                    idents(t.primary_key)
                ),
                format!(
                    "ALTER INDEX {s}.{} ATTACH PARTITION {s}.{}",
                    q(&format!("{}_pkey", t.name)),
                    q(&pkey),
                    s = q(schema)
                ),
            ]),
            true,
        ));
    }
    for idx in t.indexes {
        let name = index_name(part, idx);
        jobs.push((
            format!("CREATE INDEX ON {}.{} ({})", q(schema), q(part), idents(idx)),
            serial(vec![
                format!(
                    "CREATE INDEX {} ON {}.{} ({})",
                    q(&name),
                    q(schema),
                    q(part),
                    idents(idx)
                ),
                format!(
                    "ALTER INDEX {s}.{} ATTACH PARTITION {s}.{}",
                    q(&index_name(t.name, idx)),
                    q(&name),
                    s = q(schema)
                ),
            ]),
            false,
        ));
    }
    jobs
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
    // Other periods' orphans too (this period's lock is ours, so its building ones are skipped).
    if let Err(e) = crate::orphans::sweep_orphans(pool).await {
        tracing::warn!(error = %e, "could not drop orphaned snapshots now; a later sweep will");
    }

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
            cuts: manifest.tables[t.name].cuts.clone(),
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
            cuts: Vec::new(),
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
    // Tables loaded as partitions, and the rows each partition's COPY must bring.
    let mut partitioned: BTreeMap<&str, Vec<Part>> = BTreeMap::new();
    let mut part_rows: BTreeMap<usize, (String, u64)> = BTreeMap::new();
    for t in targets {
        let LoadTarget {
            name,
            object,
            create,
            copy,
            rows,
            cuts,
        } = t;
        let size = size_of[name];
        let parts = if big(name) && size >= cfg.split_copy_min_bytes {
            cfg.parts()
        } else {
            1
        };
        let chosen = if parts > 1 {
            pick_cuts(&cuts, size, parts)
        } else {
            Vec::new()
        };
        if let (false, Some(def)) = (chosen.is_empty(), reelflow_clean::table(name)) {
            // A key-ordered big table (ratings, by user): one partition per key range, each
            // created-then-truncated and COPYed FREEZE in one transaction by its own
            // connection, then keyed and indexed on that connection while the other
            // partitions are (no shared relation, no parallel workers fighting over the cores).
            let (sql, names) = partitioned_table_sql(schema, def, &chosen);
            let created = jobs.len();
            jobs.push(Job::sql(format!("create {name} (partitioned)"), sql, vec![], size));
            let offsets: Vec<(u64, u64)> = std::iter::once((0, 0))
                .chain(chosen.iter().map(|c| (c.offset, c.rows)))
                .chain(std::iter::once((size, rows)))
                .collect();
            let mut parts = Vec::new();
            for (part, w) in names.into_iter().zip(offsets.windows(2)) {
                let ((start, rows_before), (end, rows_to)) = (w[0], w[1]);
                let job = jobs.len();
                copy_of.entry(name).or_default().push(job);
                copy_table.insert(job, name);
                part_rows.insert(job, (part.clone(), rows_to - rows_before));
                jobs.push(Job {
                    name: format!("COPY {part}"),
                    work: Work::Copy {
                        create: Some(format!("TRUNCATE {}.{}", q(schema), q(&part))),
                        copy: format!(
                            "COPY {}.{} ({}) FROM STDIN WITH (FREEZE)",
                            q(schema),
                            q(&part),
                            column_list(def)
                        ),
                        artifacts: artifacts.clone(),
                        object: object.clone(),
                        range: Some((start, end)),
                    },
                    after: vec![created],
                    weight: end - start,
                    exclusive: false,
                });
                parts.push((part, (start, end), job));
            }
            partitioned.insert(name, parts);
            continue;
        }
        if parts == 1 {
            copy_of.entry(name).or_default().push(jobs.len());
            copy_table.insert(jobs.len(), name);
            jobs.push(Job {
                name: format!("COPY {}", name),
                work: Work::Copy {
                    create: Some(create),
                    // The table is new in this transaction: its rows can be written frozen.
                    copy: format!("{copy} WITH (FREEZE)"),
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
        if let Some(p) = partitioned.get(t.name) {
            for (part, (start, end), copy_job) in p {
                // One after the other on the partition (its primary key and index builds lock
                // it against each other), each weighing what is left of the chain.
                let steps = partition_key_jobs(schema, t, part);
                let size = end - start;
                let mut left: u64 = steps.iter().map(|s| if s.2 { size } else { size + size / 4 }).sum();
                let mut prev = *copy_job;
                for (label, statements, primary) in steps {
                    let i = jobs.len();
                    keys_of.entry(t.name).or_default().push(i);
                    jobs.push(Job::sql(label, statements, vec![prev], left));
                    left -= if primary { size } else { size + size / 4 };
                    prev = i;
                }
            }
            continue;
        }
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
        if let Some((part, expected)) = part_rows.get(&i) {
            if n != *expected {
                return Err(LoadError::Validation {
                    schema: schema.into(),
                    detail: format!("{part}: {n} rows loaded, the manifest's cuts say {expected}"),
                });
            }
        }
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
                reelflow_dag::report_progress(
                    "building keys",
                    &reelflow_dag::ProgressEvent::step("building keys and indexes"),
                );
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
                reelflow_dag::report_progress(
                    "building reports",
                    &reelflow_dag::ProgressEvent::step("building reports"),
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

#[cfg(test)]
mod tests {
    use super::{pick_cuts, row_bounds, Cut};

    #[test]
    fn cuts_are_picked_nearest_to_even_shares_in_order() {
        let cut = |offset: u64| Cut {
            offset,
            rows: offset / 10,
            key: offset as i64,
        };
        let cuts: Vec<Cut> = [0, 100, 240, 260, 500, 760, 990].into_iter().map(cut).collect();
        let offsets = |v: Vec<Cut>| v.into_iter().map(|c| c.offset).collect::<Vec<_>>();
        assert_eq!(offsets(pick_cuts(&cuts, 1000, 2)), [500]);
        assert_eq!(offsets(pick_cuts(&cuts, 1000, 4)), [240, 500, 760]);
        assert_eq!(offsets(pick_cuts(&cuts, 1000, 1)), Vec::<u64>::new());
        // Fewer cuts than parts: each used once, never the start of the file.
        assert_eq!(offsets(pick_cuts(&[cut(0), cut(300)], 1000, 4)), [300]);
        assert_eq!(offsets(pick_cuts(&[], 1000, 2)), Vec::<u64>::new());
    }

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
