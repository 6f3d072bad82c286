//! `cargo xtask bench`: the benchmark of issues 6 and 16, in one invocation on this machine.
//!
//! 1. Builds `target/release/reelflow` (`cargo build --release -p reelflow`; `--no-build` to
//!    use the one there) and starts a private PostgreSQL for the bench in `target/bench/pg`
//!    (`EmbeddedPg`, durable settings: fsync on).
//! 2. For each scale of `--scale` (a comma list: `0.25,1,4`), in turn:
//!    - checks the free disk space (statvfs of the target folder) against an estimate
//!      ([`DISK_PER_ZIP`] times the zip) and refuses clearly when it is short; generates the
//!      dataset zip for the scale and seed (cached under `target/bench/`);
//!    - alternates, `--runs` times, in fresh databases: the clean stage alone in-process
//!      (`clean_zip`, timed: the "clean alone" figure, and its output is the next side's input);
//!      **raw COPY**, the floor: the snapshot tables created from `reelflow_clean::TABLES`, one
//!      `psql -c "\copy ..."` per table file in turn, then the same primary keys, indexes and
//!      foreign keys as the loader, one statement at a time; the **bare psql script**
//!      (`bench/bare-psql.sh`, [`bare`]): unzip four CSVs, `\copy` them, the ratings primary key;
//!      **reelflow**: `reelflow run --period 2026-11 --source s3://...` against a local
//!      S3-protocol server (`reelflow_e2e::s3::S3Server`), with its peak RSS sampled from
//!      `/proc/<pid>/status` (VmHWM), the per-stage times read from `reelflow.attempts` and its
//!      CPU from `getrusage(RUSAGE_CHILDREN)`. Every run also records the CPU of the bench
//!      PostgreSQL's process tree and of the whole machine ([`sys`]);
//!    - runs `reelflow run --period 2026-11 --rerun` 41 more times on the last reelflow database
//!      and artifact folder (unchanged source: the fetch gets a 304 and reuses its artifact):
//!      the rerun figure and the hand-off samples;
//!    - measures the idle daemon (transactions per second, CPU, RSS) and the start-up of
//!      `reelflow --version` and `reelflow runs list` ([`daemon`]);
//!    - drops its databases and deletes its working files (unless `--keep`).
//! 3. Prints a Markdown report ([`report`]): a section per scale with the ratios reelflow / bare
//!    script and reelflow / raw COPY per alternated pair, a summary across scales and the table
//!    of issue 16's targets (also written to `target/bench/report-s<scales>-seed<seed>.md`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use reelflow_clean::{Manifest, TABLES};
use reelflow_e2e::s3::S3Server;
use reelflow_store::EmbeddedPg;
use sqlx::{Connection, PgConnection, Row};

use crate::gen;

mod bare;
mod daemon;
mod report;
mod sys;

use bare::BareRun;
use daemon::{DaemonFigures, StartupFigures};
use report::fmt_s;
use sys::{proc_memory, MachineCpu, MachineTicks};

const PERIOD: &str = "2026-11";
/// Unchanged-source reruns after the measured runs, for enough hand-off samples for a p99.
const HANDOFF_RERUNS: usize = 40;
const BUCKET: &str = "bench-data";
const KEY: &str = "project-data/the-movies-dataset.zip";

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Dataset scales, one after the other (1 = the real row counts): `--scale 0.25,1,4`.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    scale: Vec<f64>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Measured runs of each side at each scale, alternated (raw COPY, bare script, reelflow,
    /// raw COPY, ...).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Keep every working file (clean output, artifacts, logs) in DIR, keep the databases and
    /// leave the bench PostgreSQL running. Without it all of that is removed after each scale.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// Use the existing target/release/reelflow instead of running
    /// `cargo build --release -p reelflow` first.
    #[arg(long)]
    no_build: bool,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { root.join(p) })
        .unwrap_or_else(|| root.join("target"))
}

fn note(s: &str) {
    eprintln!("xtask bench: {s}");
}

use reelflow_load::{create_table_sql, fk_sql, key_sql};

fn q(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn cols(c: &[&str]) -> String {
    c.iter().map(|c| q(c)).collect::<Vec<_>>().join(", ")
}

/// URL of database `name` on the bench server.
fn db_url(pg: &EmbeddedPg, name: &str) -> String {
    pg.url(name)
}

async fn admin_exec(pg: &EmbeddedPg, sql: &str) -> anyhow::Result<()> {
    let mut c = PgConnection::connect(&pg.url("postgres")).await?;
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut c)
        .await
        .with_context(|| format!("running {sql}"))?;
    c.close().await?;
    Ok(())
}

async fn fresh_database(pg: &EmbeddedPg, name: &str) -> anyhow::Result<String> {
    admin_exec(pg, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
    admin_exec(pg, &format!("CREATE DATABASE {name}")).await?;
    // Start every measured run from a clean WAL state.
    admin_exec(pg, "CHECKPOINT").await?;
    Ok(db_url(pg, name))
}

/// One raw COPY run.
#[derive(Debug, Default, Clone)]
struct RawRun {
    create: f64,
    copy: f64,
    keys: f64,
    fks: f64,
    total: f64,
    /// Slowest steps, for the profile.
    steps: Vec<(String, f64)>,
    /// The machine over the run (the work is in the server's backends).
    machine: MachineCpu,
    /// CPU seconds of the bench PostgreSQL over the run ([`sys::server_cpu_seconds`]).
    server_cpu_s: f64,
    /// CPU seconds of its clients: the psql processes and this process's SQL connection.
    client_cpu_s: f64,
}

/// The bench server's postmaster, from the first line of `postmaster.pid` in its data folder.
fn postmaster_pid(pg: &EmbeddedPg) -> anyhow::Result<u32> {
    let path = pg.data_dir.join("postmaster.pid");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .with_context(|| format!("no pid in {}", path.display()))
}

fn psql_path() -> PathBuf {
    reelflow_store::embedded::find_bin_dir()
        .map(|d| d.join("psql"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("psql"))
}

async fn raw_copy(url: &str, clean_dir: &Path, manifest: &Manifest, postmaster: u32) -> anyhow::Result<RawRun> {
    let schema = "raw";
    let psql = psql_path();
    let mut run = RawRun::default();
    let (ticks, server) = (MachineTicks::now(), sys::server_cpu_seconds(postmaster));
    let client = sys::children_cpu_seconds() + sys::self_cpu_seconds();
    let started = Instant::now();
    let mut conn = PgConnection::connect(url).await?;
    let t = Instant::now();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {}", q(schema))))
        .execute(&mut conn)
        .await?;
    for t in TABLES {
        sqlx::query(sqlx::AssertSqlSafe(create_table_sql(schema, t)))
            .execute(&mut conn)
            .await?;
    }
    run.create = t.elapsed().as_secs_f64();

    let t0 = Instant::now();
    for t in TABLES {
        let file = clean_dir.join(&manifest.tables[t.name].file);
        let path = file.display().to_string().replace('\'', "''");
        let cmd = format!(
            "\\copy {}.{} ({}) FROM '{path}'",
            q(schema),
            q(t.name),
            cols(&t.columns.iter().map(|c| c.name).collect::<Vec<_>>())
        );
        let t1 = Instant::now();
        let out = Command::new(&psql)
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", &cmd])
            .output()
            .with_context(|| format!("running {}", psql.display()))?;
        if !out.status.success() {
            bail!("psql {cmd} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        run.steps
            .push((format!("\\copy {}", t.name), t1.elapsed().as_secs_f64()));
    }
    run.copy = t0.elapsed().as_secs_f64();

    let t0 = Instant::now();
    for sql in TABLES.iter().flat_map(|t| key_sql(schema, t)) {
        let t1 = Instant::now();
        sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&mut conn)
            .await
            .with_context(|| format!("running {sql}"))?;
        run.steps.push((sql, t1.elapsed().as_secs_f64()));
    }
    run.keys = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    for sql in TABLES.iter().flat_map(|t| fk_sql(schema, t)) {
        let t1 = Instant::now();
        sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&mut conn)
            .await
            .with_context(|| format!("running {sql}"))?;
        run.steps.push((sql, t1.elapsed().as_secs_f64()));
    }
    run.fks = t0.elapsed().as_secs_f64();
    conn.close().await?;
    run.total = started.elapsed().as_secs_f64();
    run.machine = MachineTicks::now().since(&ticks);
    run.server_cpu_s = sys::server_cpu_seconds(postmaster) - server;
    run.client_cpu_s = sys::children_cpu_seconds() + sys::self_cpu_seconds() - client;
    Ok(run)
}

/// One `reelflow run`.
#[derive(Debug, Default, Clone)]
struct RfRun {
    wall: f64,
    peak_rss_kib: u64,
    /// Task id -> (seconds from first start to last end, tries).
    stages: BTreeMap<String, (f64, i32)>,
    /// Task id -> largest VmRSS sampled while it ran, KiB.
    stage_rss_kib: BTreeMap<String, u64>,
    /// First task start to last task end, from the database.
    dag_span: f64,
    /// Gaps between a task's end and the next task's start, in seconds.
    handoffs: Vec<f64>,
    /// Seconds from the start of the load's job graph at which the loader logged its
    /// milestones: "COPY done", "keys and indexes built", "tables, keys and reports built".
    load_phases: BTreeMap<String, f64>,
    /// The load's jobs ("load job done"): name -> (seconds it ran, seconds from the graph's start to its end).
    load_jobs: BTreeMap<String, (f64, f64)>,
    /// The clean task found the period's snapshot built from the same bytes and reused it.
    snapshot_reused: bool,
    /// Seconds the clean stage logged per zip entry ("cleaned entry").
    clean_entries: BTreeMap<String, f64>,
    fetch_reused: bool,
    stdout: String,
    /// CPU seconds (user + system) of the reelflow process: `getrusage(RUSAGE_CHILDREN)`
    /// before the spawn and after the wait.
    cpu_s: f64,
    /// The whole machine over the run (reelflow and the PostgreSQL backends it drives).
    machine: MachineCpu,
    /// CPU seconds of the bench PostgreSQL over the run ([`sys::server_cpu_seconds`]).
    server_cpu_s: f64,
}

struct RunEnv<'a> {
    bin: &'a Path,
    /// The bench PostgreSQL's postmaster, for its CPU time.
    postmaster: u32,
    endpoint: &'a str,
    source: &'a str,
}

fn reelflow_command(env: &RunEnv<'_>, url: &str, artifacts: &Path) -> Command {
    let mut c = Command::new(env.bin);
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::var("HOME").unwrap_or_default())
        .env("DATABASE_URL", url)
        .env("REELFLOW_ARTIFACTS_DIR", artifacts)
        .env("REELFLOW_FETCH_S3_ENDPOINT", env.endpoint)
        // Load job timings are debug lines of the job graph.
        .env("REELFLOW_LOG", "info,reelflow_load::graph=debug")
        .env("REELFLOW_LOG_FORMAT", "json");
    c
}

async fn reelflow_run(env: &RunEnv<'_>, url: &str, dir: &Path, rerun: bool) -> anyhow::Result<RfRun> {
    let artifacts = dir.join("artifacts");
    std::fs::create_dir_all(&artifacts)?;
    let tag = if rerun { "rerun" } else { "run" };
    let stdout_path = dir.join(format!("{tag}.stdout.log"));
    let stderr_path = dir.join(format!("{tag}.stderr.log"));
    let mut cmd = reelflow_command(env, url, &artifacts);
    cmd.args(["run", "--period", PERIOD, "--source", env.source]);
    if rerun {
        cmd.arg("--rerun");
    }
    cmd.stdout(std::fs::File::create(&stdout_path)?)
        .stderr(std::fs::File::create(&stderr_path)?)
        .stdin(Stdio::null());
    let (children_cpu, ticks) = (sys::children_cpu_seconds(), MachineTicks::now());
    let server = sys::server_cpu_seconds(env.postmaster);
    let started = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {}", env.bin.display()))?;
    let pid = child.id();
    let mut peak = 0u64;
    // (wall-clock seconds since the epoch, VmRSS KiB), to attribute memory to stages.
    let mut samples: Vec<(f64, u64)> = Vec::new();
    let status = loop {
        if let Some((hwm, rss)) = proc_memory(pid) {
            peak = peak.max(hwm);
            samples.push((unix_now(), rss));
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let wall = started.elapsed().as_secs_f64();
    let (cpu_s, machine) = (
        sys::children_cpu_seconds() - children_cpu,
        MachineTicks::now().since(&ticks),
    );
    let server_cpu_s = sys::server_cpu_seconds(env.postmaster) - server;
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    if !status.success() {
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        bail!(
            "reelflow run exited with {status}\nstdout (tail):\n{}\nstderr:\n{stderr}",
            tail(&stdout, 30)
        );
    }
    let mut run = RfRun {
        wall,
        cpu_s,
        machine,
        server_cpu_s,
        peak_rss_kib: peak,
        fetch_reused: stdout.contains("unchanged: reused the earlier download"),
        snapshot_reused: stdout.contains("source unchanged since snapshot"),
        ..RfRun::default()
    };
    for line in stdout.lines().filter(|l| l.starts_with('{')) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let fields = &v["fields"];
        let msg = fields["message"].as_str().unwrap_or("");
        if let Some(secs) = fields["seconds"].as_f64() {
            if matches!(
                msg,
                "COPY done" | "keys and indexes built" | "tables, keys and reports built"
            ) {
                run.load_phases.insert(msg.to_string(), secs);
            }
            if let (true, Some(job), Some(end)) = (
                msg == "load job done",
                fields["job"].as_str(),
                fields["ended_at"].as_f64(),
            ) {
                run.load_jobs.insert(job.to_string(), (secs, end));
            }
        }
        if let (true, Some(entry), Some(ms)) = (
            msg == "cleaned entry",
            fields["entry"].as_str(),
            fields["elapsed_ms"].as_f64(),
        ) {
            run.clean_entries.insert(entry.to_string(), ms / 1000.0);
        }
    }
    run.stdout = stdout
        .lines()
        .filter(|l| !l.starts_with('{'))
        .collect::<Vec<_>>()
        .join("\n");

    let mut conn = PgConnection::connect(url).await?;
    let rows = sqlx::query(
        "SELECT a.task_id, a.try_number,
                extract(epoch FROM a.started_at)::float8, extract(epoch FROM a.ended_at)::float8
           FROM reelflow.attempts a JOIN reelflow.dag_runs r ON r.id = a.run_id
          WHERE r.period = $1 AND a.generation = r.generation
          ORDER BY a.id",
    )
    .bind(PERIOD)
    .fetch_all(&mut conn)
    .await?;
    conn.close().await?;
    // task -> (first start, last end, tries)
    let mut spans: Vec<(String, f64, f64, i32)> = Vec::new();
    for r in rows {
        let task: String = r.get(0);
        let tries: i32 = r.get(1);
        let start: f64 = r.get(2);
        let end: Option<f64> = r.get(3);
        let end = end.unwrap_or(start);
        match spans.iter_mut().find(|s| s.0 == task) {
            Some(s) => {
                s.2 = s.2.max(end);
                s.3 = s.3.max(tries);
            }
            None => spans.push((task, start, end, tries)),
        }
    }
    for w in spans.windows(2) {
        run.handoffs.push(w[1].1 - w[0].2);
    }
    if let (Some(first), Some(last)) = (spans.first(), spans.last()) {
        run.dag_span = last.2 - first.1;
    }
    for (task, start, end, tries) in spans {
        let rss = samples
            .iter()
            .filter(|(t, _)| *t >= start && *t <= end)
            .map(|(_, r)| *r)
            .max()
            .unwrap_or(0);
        run.stage_rss_kib.insert(task.clone(), rss);
        run.stages.insert(task, (end - start, tries));
    }
    Ok(run)
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Puts the zip in the S3 server's directory without copying it when possible, with a
/// stored ETag so s3s-fs does not MD5 600 MB on every request.
fn serve_zip(s3: &S3Server, zip: &Path, etag: &str) -> anyhow::Result<()> {
    let dest = s3.path_of(BUCKET, KEY);
    std::fs::create_dir_all(dest.parent().expect("object path has a parent"))?;
    let _ = std::fs::remove_file(&dest);
    if std::fs::hard_link(zip, &dest).is_err() {
        std::fs::copy(zip, &dest).with_context(|| format!("copying {} to {}", zip.display(), dest.display()))?;
    }
    // s3s-fs keeps per-object metadata in `.bucket-<b64>.object-<b64>.internal.json` at its root.
    let info = s3.root.path().join(format!(
        ".bucket-{}.object-{}.internal.json",
        b64url(BUCKET),
        b64url(KEY)
    ));
    std::fs::write(info, serde_json::json!({ "e_tag": etag }).to_string())?;
    Ok(())
}

fn b64url(s: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &x)| acc | (x as u32) << (16 - 8 * i));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Disk space a scale takes at its peak, as a multiple of its zip: the zip, the last reelflow
/// database (its tables and indexes: the most of it), its artifacts (the zip and the clean
/// output), the clean output of the raw side or the bare script's CSVs, and WAL. Measured: 19.7x
/// at scale 0.25 (databases 11x, WAL 4x, work files 4x), where the part that does not grow with
/// the data (the WAL, an empty cluster) weighs most. The report prints the measured multiple
/// ("disk at peak") to keep this honest.
const DISK_PER_ZIP: u64 = 20;
/// Bytes of the generator's zip per unit of scale (73.1 MB at scale 0.25), for a zip that has
/// not been generated yet.
const ZIP_BYTES_PER_SCALE: f64 = 292.6e6;

/// Checks `free` bytes against what a scale still needs: [`DISK_PER_ZIP`] times its zip (the
/// zip's size estimated from the scale when it is still to be generated), less the zip when it
/// is already there. Returns the estimate.
fn check_disk(scale: f64, free: u64, zip_bytes: Option<u64>) -> anyhow::Result<u64> {
    let zip = zip_bytes.unwrap_or((scale * ZIP_BYTES_PER_SCALE) as u64);
    let need = DISK_PER_ZIP * zip - zip_bytes.unwrap_or(0);
    if free < need {
        bail!(
            "scale {scale} needs about {:.1} GB of free disk ({DISK_PER_ZIP}x its {:.2} GB zip{}); {:.1} GB are free: \
             free some space or leave this scale out",
            need as f64 / 1e9,
            zip as f64 / 1e9,
            if zip_bytes.is_some() {
                ", less the zip already there"
            } else {
                ""
            },
            free as f64 / 1e9
        );
    }
    Ok(need)
}

/// `0.25` -> `0_25`: the scale in database names.
fn scale_tag(scale: f64) -> String {
    scale.to_string().replace(['.', '-'], "_")
}

/// What does not change from one scale to the next.
struct Bench<'a> {
    args: &'a BenchArgs,
    root: PathBuf,
    target: PathBuf,
    bench_dir: PathBuf,
    bin: PathBuf,
    pg: EmbeddedPg,
    postmaster: u32,
    /// Every scale's working files go under `work/s<scale>`.
    work: PathBuf,
    keep: bool,
    rt: tokio::runtime::Runtime,
}

/// One scale's dataset.
struct Dataset {
    scale: f64,
    plan: gen::Plan,
    zip: PathBuf,
    zip_bytes: u64,
    /// Bytes of CSV in the zip, in all and per entry.
    csv_bytes: u64,
    entries: Vec<(String, u64)>,
}

/// Everything measured at one scale, for its section, the summary and the targets.
struct ScaleResult {
    data: Dataset,
    rows_loaded: u64,
    /// (userId, movieId) pairs of ratings.csv the clean stage found twice or more.
    duplicate_ratings: u64,
    clean_walls: Vec<f64>,
    clean_cpus: Vec<f64>,
    raws: Vec<RawRun>,
    bares: Vec<BareRun>,
    rfs: Vec<RfRun>,
    rerun: RfRun,
    rerun_not_modified: u64,
    rerun_bodies: u64,
    /// Extra unchanged-source reruns, for hand-off samples.
    handoff_runs: Vec<RfRun>,
    /// The idle daemon's figures, or why they could not be taken.
    daemon: Result<DaemonFigures, String>,
    startup: StartupFigures,
    /// Free disk space at the start of the scale (statvfs), and the most the bench's own files
    /// took meanwhile: the PostgreSQL data folder, the scale's working files and the zip.
    disk_free_bytes: u64,
    disk_peak_bytes: u64,
    /// The largest size seen of the databases (`base`), of the WAL and of the work files.
    disk_parts: Vec<u64>,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if args.scale.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        bail!("--scale takes positive numbers, comma-separated: --scale 0.25,1,4");
    }
    let root = workspace_root();
    let target = target_dir(&root);
    let bench_dir = target.join("bench");
    std::fs::create_dir_all(&bench_dir)?;
    // Refuse at once rather than after hours of the smaller scales.
    let free = sys::free_bytes(&target)?;
    for &scale in &args.scale {
        let zip = zip_path(&bench_dir, scale, args.seed);
        check_disk(scale, free, std::fs::metadata(&zip).ok().map(|m| m.len()))?;
    }

    let bin = target.join("release").join("reelflow");
    if !args.no_build {
        note("building reelflow: cargo build --release -p reelflow");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "-p", "reelflow", "--bin", "reelflow"])
            .current_dir(&root)
            .status()?;
        if !status.success() {
            bail!("cargo build --release -p reelflow failed");
        }
    }
    if !bin.is_file() {
        bail!(
            "{} is missing: run `cargo build --release -p reelflow` (or drop --no-build)",
            bin.display()
        );
    }

    let (work, keep) = match &args.keep {
        Some(d) => (d.clone(), true),
        None => (bench_dir.join(format!("work-{}", std::process::id())), false),
    };
    std::fs::create_dir_all(&work)?;
    let work = std::path::absolute(&work)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    note("starting the bench PostgreSQL in target/bench/pg");
    let pg = EmbeddedPg::start(&bench_dir.join("pg"), false)?;
    let postmaster = postmaster_pid(&pg)?;
    // An invocation stopped during the daemon figures leaves autovacuum off: on again.
    rt.block_on(admin_exec(&pg, "ALTER SYSTEM RESET autovacuum"))?;
    rt.block_on(admin_exec(&pg, "SELECT pg_reload_conf()"))?;
    let bench = Bench {
        args: &args,
        root,
        target,
        bench_dir,
        bin,
        pg,
        postmaster,
        work,
        keep,
        rt,
    };

    let mut sections = Vec::new();
    let mut results = Vec::new();
    for &scale in &args.scale {
        match run_scale(&bench, scale) {
            Ok(r) => {
                let section = report::section(&r, args.runs, args.seed);
                eprintln!("{section}");
                sections.push(section);
                results.push(r);
            }
            Err(e) => {
                bench.finish();
                return Err(e.context(format!("scale {scale}")));
            }
        }
    }
    let report = format!(
        "{}{}{}",
        sections.join("\n"),
        report::summary(&results),
        report::targets(&results)
    );
    println!("{report}");
    let scales: Vec<String> = args.scale.iter().map(|s| s.to_string()).collect();
    let path = bench
        .bench_dir
        .join(format!("report-s{}-seed{}.md", scales.join("_"), args.seed));
    std::fs::write(&path, &report)?;
    note(&format!("report written to {}", path.display()));
    bench.finish();
    Ok(())
}

fn zip_path(bench_dir: &Path, scale: f64, seed: u64) -> PathBuf {
    bench_dir.join(format!("movies-s{scale}-seed{seed}-g{}.zip", gen::GENERATOR_VERSION))
}

impl Bench<'_> {
    /// Stops the bench PostgreSQL and removes the working folder, unless `--keep`.
    fn finish(&self) {
        if self.keep {
            note(&format!(
                "kept {} and the databases on {} (stop with: pg_ctl stop -D {})",
                self.work.display(),
                self.pg.url("postgres"),
                self.pg.data_dir.display()
            ));
        } else {
            let _ = self.pg.stop();
            let _ = std::fs::remove_dir_all(&self.work);
        }
    }

    /// Drops the scale's databases and deletes its working files (unless `--keep`).
    fn clean_up_scale(&self, dbs: &[String], work: &Path) {
        if self.keep {
            return;
        }
        for name in dbs {
            let _ = self.rt.block_on(admin_exec(
                &self.pg,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            ));
        }
        let _ = std::fs::remove_dir_all(work);
    }
}

/// One scale: the disk check, the zip, the alternated runs, the reruns and the daemon.
fn run_scale(b: &Bench<'_>, scale: f64) -> anyhow::Result<ScaleResult> {
    let args = b.args;
    let plan = gen::Plan::new(scale, args.seed)?;
    let zip = zip_path(&b.bench_dir, scale, args.seed);
    let free = sys::free_bytes(&b.target)?;
    let need = check_disk(scale, free, std::fs::metadata(&zip).ok().map(|m| m.len()))?;
    note(&format!(
        "scale {scale}: {:.1} GB free on the target folder's disk, about {:.1} GB needed",
        free as f64 / 1e9,
        need as f64 / 1e9
    ));
    let work = b.work.join(format!("s{scale}"));
    // The data folder without its WAL, the WAL, the working files.
    let disk = sys::DiskWatch::start(vec![
        b.pg.data_dir.join("base"),
        b.pg.data_dir.join("pg_wal"),
        work.clone(),
    ]);
    if zip.is_file() {
        note(&format!("reusing {}", zip.display()));
    } else {
        note(&format!("generating {} (scale {scale})", zip.display()));
        gen::generate(&plan, &zip)?;
    }
    let zip_bytes = std::fs::metadata(&zip)?.len();
    let (csv_bytes, entries) = zip_entries(&zip)?;
    let data = Dataset {
        scale,
        plan,
        zip,
        zip_bytes,
        csv_bytes,
        entries,
    };
    std::fs::create_dir_all(&work)?;

    let s3 = b.rt.block_on(S3Server::start(None));
    let etag = format!(
        "{:016x}{:016x}",
        crate::rng::mix(args.seed ^ scale.to_bits()),
        crate::rng::mix(zip_bytes ^ gen::GENERATOR_VERSION as u64)
    );
    serve_zip(&s3, &data.zip, &etag)?;
    let source = format!("s3://{BUCKET}/{KEY}");
    let env = RunEnv {
        bin: &b.bin,
        postmaster: b.postmaster,
        endpoint: &s3.endpoint,
        source: &source,
    };
    let script = b.root.join("bench").join("bare-psql.sh");
    let psql = psql_path();
    let script = bare::Script {
        path: &script,
        psql_dir: psql.parent().filter(|d| psql.is_absolute() && d.is_dir()),
        postmaster: b.postmaster,
    };
    let mut dbs: Vec<String> = Vec::new();
    let measured =
        b.rt.block_on(measure_scale(b, data, &work, &env, &script, &s3, &mut dbs));
    drop(s3);
    b.clean_up_scale(&dbs, &work);
    let (disk_peak, disk_parts) = disk.stop();
    let mut r = measured?;
    r.disk_free_bytes = free;
    r.disk_peak_bytes = disk_peak + zip_bytes;
    r.disk_parts = disk_parts;
    Ok(r)
}

/// (bytes of CSV, (entry, bytes) for each entry) of the zip.
fn zip_entries(zip: &Path) -> anyhow::Result<(u64, Vec<(String, u64)>)> {
    let mut a = zip::ZipArchive::new(std::fs::File::open(zip)?)?;
    let mut total = 0;
    let mut entries = Vec::new();
    for i in 0..a.len() {
        let f = a.by_index(i)?;
        total += f.size();
        entries.push((f.name()?.to_string(), f.size()));
    }
    Ok((total, entries))
}

/// The alternated runs of one scale, then the reruns and the idle daemon; every database it
/// creates is added to `dbs` (for the clean-up) as soon as it exists.
async fn measure_scale(
    b: &Bench<'_>,
    data: Dataset,
    work: &Path,
    env: &RunEnv<'_>,
    script: &bare::Script<'_>,
    s3: &S3Server,
    dbs: &mut Vec<String>,
) -> anyhow::Result<ScaleResult> {
    let (pg, runs, scale, zip) = (&b.pg, b.args.runs, data.scale, data.zip.as_path());
    let tag = scale_tag(scale);
    // The clean stage alone, in-process, before each raw COPY run: its output is that run's
    // input, and its wall and CPU times give the "clean alone" figure.
    let clean_dir = work.join("clean");
    let clean_alone = || -> anyhow::Result<(Manifest, f64, f64)> {
        let _ = std::fs::remove_dir_all(&clean_dir);
        let (cpu0, t0) = (sys::self_cpu_seconds(), Instant::now());
        let manifest = reelflow_clean::clean_zip(zip, &clean_dir, &reelflow_clean::CleanConfig::default())?;
        Ok((manifest, t0.elapsed().as_secs_f64(), sys::self_cpu_seconds() - cpu0))
    };
    let mut manifest: Option<Manifest> = None;
    let (mut clean_walls, mut clean_cpus) = (Vec::new(), Vec::new());
    let (mut raws, mut bares, mut rfs) = (Vec::new(), Vec::new(), Vec::new());
    let run_note = |i: usize, what: &str| note(&format!("scale {scale}, run {}/{runs}: {what}", i + 1));
    for i in 0..runs {
        run_note(i, "clean alone (clean_zip in-process)");
        let (m, wall, cpu) = clean_alone()?;
        note(&format!("  clean: {} wall, {cpu:.1} CPU s", fmt_s(wall)));
        clean_walls.push(wall);
        clean_cpus.push(cpu);
        let m = manifest.insert(m);

        let name = format!("bench_raw_{tag}_{i}");
        dbs.push(name.clone());
        let url = fresh_database(pg, &name).await?;
        run_note(i, "raw COPY");
        let raw = raw_copy(&url, &clean_dir, m, b.postmaster).await?;
        note(&format!("  raw COPY: {}", fmt_s(raw.total)));
        raws.push(raw);
        if !b.keep {
            admin_exec(pg, &format!("DROP DATABASE {name} WITH (FORCE)")).await?;
            // The next clean alone writes it again; the reelflow run does not read it.
            let _ = std::fs::remove_dir_all(&clean_dir);
        }

        let name = format!("bench_bare_{tag}_{i}");
        dbs.push(name.clone());
        let url = fresh_database(pg, &name).await?;
        let csv_dir = work.join(format!("bare-{i}"));
        run_note(i, "bare psql script");
        let bare = bare::run(script, zip, &url, &csv_dir)?;
        note(&format!(
            "  bare psql script: {} (unzip {}, load {})",
            fmt_s(bare.wall),
            fmt_s(bare.unzip),
            fmt_s(bare.load)
        ));
        bares.push(bare);
        if !b.keep {
            admin_exec(pg, &format!("DROP DATABASE {name} WITH (FORCE)")).await?;
            let _ = std::fs::remove_dir_all(&csv_dir);
        }

        let name = format!("bench_rf_{tag}_{i}");
        dbs.push(name.clone());
        let url = fresh_database(pg, &name).await?;
        let dir = work.join(format!("reelflow-{i}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        run_note(i, "reelflow run");
        let rf = reelflow_run(env, &url, &dir, false).await?;
        note(&format!(
            "  reelflow: {} (peak RSS {} MiB, {:.1} CPU s)",
            fmt_s(rf.wall),
            rf.peak_rss_kib / 1024,
            rf.cpu_s
        ));
        rfs.push(rf);
        if !b.keep && i + 1 < runs {
            admin_exec(pg, &format!("DROP DATABASE {name} WITH (FORCE)")).await?;
            let _ = std::fs::remove_dir_all(dir.join("artifacts"));
        }
    }
    // Unchanged source: the same period again on the last run's database and artifacts.
    let last = runs - 1;
    let url = db_url(pg, &format!("bench_rf_{tag}_{last}"));
    let dir = work.join(format!("reelflow-{last}"));
    let before = s3.stats();
    admin_exec(pg, "CHECKPOINT").await?;
    note("unchanged-source rerun: reelflow run --rerun");
    let rerun = reelflow_run(env, &url, &dir, true).await?;
    let after = s3.stats();
    note(&format!("  rerun: {}", fmt_s(rerun.wall)));
    // More hand-offs for a p99: reruns are quick when the snapshot is reused.
    let mut handoff_runs = Vec::new();
    if rerun.snapshot_reused {
        note(&format!("task hand-off: {HANDOFF_RERUNS} more reruns"));
        for _ in 0..HANDOFF_RERUNS {
            handoff_runs.push(reelflow_run(env, &url, &dir, true).await?);
        }
    }
    note(&format!(
        "idle daemon: reelflow serve twice, {}",
        "for its transactions, CPU and RSS (about 45 s)"
    ));
    // Not fatal: a daemon that does not come up is a finding for the report.
    let daemon = match daemon::idle_daemon(env, pg, &format!("bench_rf_{tag}_{last}"), &dir).await {
        Ok(d) => {
            note(&format!(
                "  {:.2} transactions/s, {:.2} % of a core",
                d.tx_per_s(),
                d.cpu_percent()
            ));
            Ok(d)
        }
        Err(e) => {
            note(&format!("  not measured: {e:#}"));
            Err(format!("{e:#}"))
        }
    };
    note("start-up: reelflow --version and reelflow runs list, 20 runs each");
    let startup = daemon::startup(env, &url, &dir)?;

    let manifest = manifest.expect("at least one run");
    let duplicate_ratings = manifest
        .files
        .get("ratings.csv")
        .and_then(|f| f.rejected.get("duplicate_rating").copied())
        .unwrap_or(0);
    Ok(ScaleResult {
        data,
        rows_loaded: TABLES.iter().map(|t| manifest.tables[t.name].rows).sum(),
        duplicate_ratings,
        clean_walls,
        clean_cpus,
        raws,
        bares,
        rfs,
        rerun,
        rerun_not_modified: after.not_modified - before.not_modified,
        rerun_bodies: after.bodies - before.bodies,
        handoff_runs,
        daemon,
        startup,
        disk_free_bytes: 0,
        disk_peak_bytes: 0,
        disk_parts: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_without_padding() {
        assert_eq!(b64url("bench-data"), "YmVuY2gtZGF0YQ");
        assert_eq!(b64url("a"), "YQ");
        assert_eq!(b64url("ab"), "YWI");
        assert_eq!(b64url("abc"), "YWJj");
    }

    #[test]
    fn the_disk_check_counts_a_zip_still_to_be_generated() {
        let zip = 100_000_000;
        // A generated zip already takes its share.
        assert_eq!(check_disk(0.25, u64::MAX, Some(zip)).unwrap(), (DISK_PER_ZIP - 1) * zip);
        // No zip yet: its size estimated from the scale.
        let need = check_disk(1.0, u64::MAX, None).unwrap();
        assert_eq!(need, DISK_PER_ZIP * ZIP_BYTES_PER_SCALE as u64);
        let e = check_disk(4.0, 10_000_000_000, None).unwrap_err().to_string();
        let want = format!(
            "scale 4 needs about {:.1} GB of free disk ({DISK_PER_ZIP}x its 1.17 GB zip)",
            DISK_PER_ZIP as f64 * 4.0 * ZIP_BYTES_PER_SCALE / 1e9
        );
        assert!(e.starts_with(&want), "{e}");
        assert!(e.contains("10.0 GB are free"), "{e}");
    }

    #[test]
    fn scale_tags_are_identifiers() {
        assert_eq!(scale_tag(0.25), "0_25");
        assert_eq!(scale_tag(4.0), "4");
    }

    #[test]
    fn ddl_matches_the_loader_shape() {
        let movies = reelflow_clean::table("movies").unwrap();
        assert!(create_table_sql("s", movies).starts_with("CREATE TABLE \"s\".\"movies\" (\"id\" bigint NOT NULL"));
        assert_eq!(
            key_sql("s", movies)[0],
            "ALTER TABLE \"s\".\"movies\" ADD PRIMARY KEY (\"id\")"
        );
        assert!(fk_sql("s", movies)[0].contains("REFERENCES \"s\".\"collections\" (\"id\")"));
    }
}
