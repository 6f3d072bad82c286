//! `cargo xtask bench`: the benchmark of issue 6, in one invocation on this machine.
//!
//! 1. Builds `target/release/reelflow` (`cargo build --release -p reelflow`; `--no-build` to
//!    use the one there) and generates the dataset zip for the scale and seed (cached under
//!    `target/bench/`).
//! 2. Starts a private PostgreSQL for the bench in `target/bench/pg` (`EmbeddedPg`, durable
//!    settings: fsync on) and runs the clean stage once in-process (`clean_zip`, timed: the
//!    "clean alone" figure) to get its COPY files.
//! 3. Alternates, `--runs` times, in fresh databases:
//!    - raw COPY, the floor: the snapshot tables created from `reelflow_clean::TABLES`, one
//!      `psql -c "\copy ..."` per table file in turn, then the same primary keys, indexes and
//!      foreign keys as the loader, one statement at a time;
//!    - reelflow: `reelflow run --period 2026-11 --source s3://...` against a local S3-protocol
//!      server (`reelflow_e2e::s3::S3Server`), with its peak RSS sampled from
//!      `/proc/<pid>/status` (VmHWM) and the per-stage times read from `reelflow.attempts`.
//! 4. Runs `reelflow run --period 2026-11 --rerun` once more on the last reelflow database and
//!    artifact folder (unchanged source: the fetch gets a 304 and reuses its artifact), and
//!    samples the idle RSS of `reelflow serve`.
//! 5. Prints medians and the ratio reelflow / raw COPY as a Markdown table (also written to
//!    `target/bench/report-s<scale>-seed<seed>.md`).

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
mod sys;

use bare::BareRun;
use sys::{proc_memory, MachineCpu, MachineTicks};

const PERIOD: &str = "2026-11";
/// Unchanged-source reruns after the measured runs, for enough hand-off samples for a p99.
const HANDOFF_RERUNS: usize = 40;
const BUCKET: &str = "bench-data";
const KEY: &str = "project-data/the-movies-dataset.zip";

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Dataset scale (1 = the real row counts).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Measured runs of each side, alternated (raw, reelflow, raw, reelflow, ...).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Keep every working file (clean output, artifacts, logs) in DIR, keep the databases and
    /// leave the bench PostgreSQL running. Without it all of that is removed at the end.
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

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// The nearest-rank percentile (`p` in 0..=1): the smallest sample with at least `p` of the
/// samples at or below it.
fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
        (lo.min(x), hi.max(x))
    })
}

/// The ratio of each alternated pair, `num(a[i]) / den(b[i])`: runs side by side share the
/// machine's state at the time, so a ratio per pair is steadier than a ratio of medians.
fn pair_ratios<A, B>(a: &[A], num: impl Fn(&A) -> f64, b: &[B], den: impl Fn(&B) -> f64) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| num(x) / den(y)).collect()
}

/// "**1.07x** median (pairs 1.10x, 1.02x, 1.07x)".
fn fmt_ratios(r: &[f64]) -> String {
    if r.is_empty() {
        return "–".into();
    }
    let pairs: Vec<String> = r.iter().map(|x| format!("{x:.2}x")).collect();
    format!("**{:.2}x** median (pairs {})", median(r), pairs.join(", "))
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

/// Idle RSS of `reelflow serve` (scheduler disabled) a few seconds after start, in KiB.
async fn idle_daemon_rss(env: &RunEnv<'_>, url: &str, dir: &Path) -> anyhow::Result<Option<u64>> {
    let artifacts = dir.join("artifacts");
    std::fs::create_dir_all(&artifacts)?;
    let mut cmd = reelflow_command(env, url, &artifacts);
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .env("REELFLOW_SCHEDULE_ENABLED", "false")
        .stdout(std::fs::File::create(dir.join("serve.stdout.log"))?)
        .stderr(std::fs::File::create(dir.join("serve.stderr.log"))?)
        .stdin(Stdio::null());
    let mut child = cmd.spawn()?;
    let pid = child.id();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss = match child.try_wait()? {
        Some(status) => {
            note(&format!("reelflow serve exited early ({status}); see serve.stderr.log"));
            None
        }
        None => proc_memory(pid).map(|(_, rss)| rss),
    };
    // SIGTERM the daemon we started (by its pid), then give it its grace period.
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(rss)
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

fn fmt_s(x: f64) -> String {
    if x.is_nan() {
        "–".into()
    } else if x < 10.0 {
        format!("{x:.2} s")
    } else {
        format!("{x:.1} s")
    }
}

fn fmt_int(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt_range(v: &[f64]) -> String {
    if v.is_empty() {
        return "–".into();
    }
    let (lo, hi) = min_max(v);
    if v.len() == 1 {
        fmt_s(v[0])
    } else {
        format!(
            "{} [{}–{}]",
            fmt_s(median(v)),
            fmt_s(lo).trim_end_matches(" s"),
            fmt_s(hi).trim_end_matches(" s")
        )
    }
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let root = workspace_root();
    let target = target_dir(&root);
    let bench_dir = target.join("bench");
    std::fs::create_dir_all(&bench_dir)?;

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

    let plan = gen::Plan::new(args.scale, args.seed)?;
    let zip = bench_dir.join(format!(
        "movies-s{}-seed{}-g{}.zip",
        args.scale,
        args.seed,
        gen::GENERATOR_VERSION
    ));
    if zip.is_file() {
        note(&format!("reusing {}", zip.display()));
    } else {
        note(&format!("generating {} (scale {})", zip.display(), args.scale));
        gen::generate(&plan, &zip)?;
    }
    let zip_bytes = std::fs::metadata(&zip)?.len();
    let (csv_bytes, entries) = {
        let mut a = zip::ZipArchive::new(std::fs::File::open(&zip)?)?;
        let mut total = 0;
        let mut entries = Vec::new();
        for i in 0..a.len() {
            let f = a.by_index(i)?;
            total += f.size();
            entries.push((f.name()?.to_string(), f.size()));
        }
        (total, entries)
    };

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

    // The clean stage alone, in-process, before each raw COPY run: its output is that run's
    // input, and its wall and CPU times give the "clean alone" figure.
    let clean_dir = work.join("clean");
    let clean_alone = || -> anyhow::Result<(Manifest, f64, f64)> {
        let _ = std::fs::remove_dir_all(&clean_dir);
        let (cpu0, t0) = (sys::self_cpu_seconds(), Instant::now());
        let manifest = reelflow_clean::clean_zip(&zip, &clean_dir, &reelflow_clean::CleanConfig::default())?;
        Ok((manifest, t0.elapsed().as_secs_f64(), sys::self_cpu_seconds() - cpu0))
    };
    let mut manifest: Option<Manifest> = None;
    let mut clean_walls: Vec<f64> = Vec::new();
    let mut clean_cpus: Vec<f64> = Vec::new();

    let s3 = rt.block_on(S3Server::start(None));
    let etag = format!(
        "{:016x}{:016x}",
        crate::rng::mix(args.seed ^ args.scale.to_bits()),
        crate::rng::mix(zip_bytes ^ gen::GENERATOR_VERSION as u64)
    );
    serve_zip(&s3, &zip, &etag)?;
    let source = format!("s3://{BUCKET}/{KEY}");
    let postmaster = postmaster_pid(&pg)?;
    let env = RunEnv {
        bin: &bin,
        postmaster,
        endpoint: &s3.endpoint,
        source: &source,
    };

    let script = root.join("bench").join("bare-psql.sh");
    let psql = psql_path();
    let script = bare::Script {
        path: &script,
        psql_dir: psql.parent().filter(|d| psql.is_absolute() && d.is_dir()),
        postmaster,
    };
    let mut raws: Vec<RawRun> = Vec::new();
    let mut bares: Vec<BareRun> = Vec::new();
    let mut rfs: Vec<RfRun> = Vec::new();
    let mut dbs: Vec<String> = Vec::new();
    let result = rt.block_on(async {
        for i in 0..args.runs {
            note(&format!(
                "run {}/{}: clean alone (clean_zip in-process)",
                i + 1,
                args.runs
            ));
            let (m, wall, cpu) = clean_alone()?;
            note(&format!("  clean: {} wall, {cpu:.1} CPU s", fmt_s(wall)));
            clean_walls.push(wall);
            clean_cpus.push(cpu);
            let m = manifest.insert(m);

            let name = format!("bench_raw_{i}");
            let url = fresh_database(&pg, &name).await?;
            note(&format!("run {}/{}: raw COPY", i + 1, args.runs));
            let raw = raw_copy(&url, &clean_dir, m, postmaster).await?;
            note(&format!("  raw COPY: {}", fmt_s(raw.total)));
            raws.push(raw);
            if keep {
                dbs.push(name);
            } else {
                admin_exec(&pg, &format!("DROP DATABASE {name} WITH (FORCE)")).await?;
                // The next clean alone writes it again; the reelflow run does not read it.
                let _ = std::fs::remove_dir_all(&clean_dir);
            }

            let name = format!("bench_bare_{i}");
            let url = fresh_database(&pg, &name).await?;
            let csv_dir = work.join(format!("bare-{i}"));
            note(&format!("run {}/{}: bare psql script", i + 1, args.runs));
            let bare = bare::run(&script, &zip, &url, &csv_dir)?;
            note(&format!(
                "  bare psql script: {} (unzip {}, load {})",
                fmt_s(bare.wall),
                fmt_s(bare.unzip),
                fmt_s(bare.load)
            ));
            bares.push(bare);
            if keep {
                dbs.push(name);
            } else {
                admin_exec(&pg, &format!("DROP DATABASE {name} WITH (FORCE)")).await?;
                let _ = std::fs::remove_dir_all(&csv_dir);
            }

            let name = format!("bench_rf_{i}");
            let url = fresh_database(&pg, &name).await?;
            let dir = work.join(format!("reelflow-{i}"));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)?;
            note(&format!("run {}/{}: reelflow run", i + 1, args.runs));
            let rf = reelflow_run(&env, &url, &dir, false).await?;
            note(&format!(
                "  reelflow: {} (peak RSS {} MiB)",
                fmt_s(rf.wall),
                rf.peak_rss_kib / 1024
            ));
            rfs.push(rf);
            let last = i + 1 == args.runs;
            if keep || last {
                dbs.push(name);
            } else {
                admin_exec(&pg, &format!("DROP DATABASE {name} WITH (FORCE)")).await?;
                let _ = std::fs::remove_dir_all(dir.join("artifacts"));
            }
        }
        // Unchanged source: the same period again on the last run's database and artifacts.
        let last = args.runs - 1;
        let url = db_url(&pg, &format!("bench_rf_{last}"));
        let dir = work.join(format!("reelflow-{last}"));
        let before = s3.stats();
        admin_exec(&pg, "CHECKPOINT").await?;
        note("unchanged-source rerun: reelflow run --rerun");
        let rerun = reelflow_run(&env, &url, &dir, true).await?;
        let after = s3.stats();
        note(&format!("  rerun: {}", fmt_s(rerun.wall)));
        // More hand-offs for a p99: reruns are quick when the snapshot is reused.
        let mut handoff_runs = Vec::new();
        if rerun.snapshot_reused {
            note(&format!("task hand-off: {HANDOFF_RERUNS} more reruns"));
            for _ in 0..HANDOFF_RERUNS {
                handoff_runs.push(reelflow_run(&env, &url, &dir, true).await?);
            }
        }
        note("idle daemon RSS: reelflow serve");
        let idle = idle_daemon_rss(&env, &url, &dir).await?;
        Ok::<_, anyhow::Error>((
            rerun,
            after.not_modified - before.not_modified,
            after.bodies - before.bodies,
            idle,
            handoff_runs,
        ))
    });

    let cleanup = |dbs: &[String]| {
        if keep {
            note(&format!(
                "kept {} and databases {} on {} (stop with: pg_ctl stop -D {})",
                work.display(),
                dbs.join(", "),
                pg.url("postgres"),
                pg.data_dir.display()
            ));
        } else {
            for name in dbs {
                let _ = rt.block_on(admin_exec(&pg, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")));
            }
            let _ = pg.stop();
            let _ = std::fs::remove_dir_all(&work);
        }
    };
    let (rerun, not_modified, bodies, idle, handoff_runs) = match result {
        Ok(r) => r,
        Err(e) => {
            cleanup(&dbs);
            return Err(e);
        }
    };
    drop(s3);
    let manifest = manifest.expect("at least one run");
    let rows_loaded: u64 = TABLES.iter().map(|t| manifest.tables[t.name].rows).sum();

    let report = render(&Report {
        args: &args,
        plan: &plan,
        zip_bytes,
        csv_bytes,
        entries: &entries,
        rows_loaded,
        clean_walls: &clean_walls,
        clean_cpus: &clean_cpus,
        raws: &raws,
        bares: &bares,
        rfs: &rfs,
        rerun: &rerun,
        rerun_not_modified: not_modified,
        rerun_bodies: bodies,
        idle_rss_kib: idle,
        handoff_runs: &handoff_runs,
    });
    println!("{report}");
    let path = bench_dir.join(format!("report-s{}-seed{}.md", args.scale, args.seed));
    std::fs::write(&path, &report)?;
    note(&format!("report written to {}", path.display()));
    cleanup(&dbs);
    Ok(())
}

struct Report<'a> {
    args: &'a BenchArgs,
    plan: &'a gen::Plan,
    zip_bytes: u64,
    csv_bytes: u64,
    entries: &'a [(String, u64)],
    rows_loaded: u64,
    clean_walls: &'a [f64],
    clean_cpus: &'a [f64],
    raws: &'a [RawRun],
    bares: &'a [BareRun],
    rfs: &'a [RfRun],
    rerun: &'a RfRun,
    rerun_not_modified: u64,
    rerun_bodies: u64,
    idle_rss_kib: Option<u64>,
    /// Extra unchanged-source reruns, for hand-off samples.
    handoff_runs: &'a [RfRun],
}

fn render(r: &Report<'_>) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let mb = |b: u64| b as f64 / 1e6;
    let raw = |f: fn(&RawRun) -> f64| r.raws.iter().map(f).collect::<Vec<_>>();
    let stage = |t: &str| {
        r.rfs
            .iter()
            .map(|x| x.stages.get(t).map(|s| s.0).unwrap_or(f64::NAN))
            .collect::<Vec<_>>()
    };
    let phase = |p: &str| {
        r.rfs
            .iter()
            .filter_map(|x| x.load_phases.get(p).copied())
            .collect::<Vec<_>>()
    };
    let rf_wall: Vec<f64> = r.rfs.iter().map(|x| x.wall).collect();
    let raw_total = raw(|x| x.total);
    let rf_wall_of = |x: &RfRun| x.wall;
    let ratios = pair_ratios(r.rfs, rf_wall_of, r.raws, |x| x.total);
    let vs_bare = pair_ratios(r.rfs, rf_wall_of, r.bares, |x| x.load);
    let vs_bare_unzip = pair_ratios(r.rfs, rf_wall_of, r.bares, |x| x.wall);
    let rss: Vec<f64> = r.rfs.iter().map(|x| x.peak_rss_kib as f64 / 1024.0).collect();
    let handoffs: Vec<f64> = r
        .rfs
        .iter()
        .chain(std::iter::once(r.rerun))
        .chain(r.handoff_runs)
        .flat_map(|x| x.handoffs.iter().map(|h| h * 1000.0))
        .collect();
    let handoff_p99 = percentile(&handoffs, 0.99);
    let clean_stage_mbps = median(&stage("clean").iter().map(|t| mb(r.csv_bytes) / t).collect::<Vec<_>>());

    let _ = writeln!(
        s,
        "### Scale {} (seed {}), {} runs of each side alternated: medians [min–max]\n",
        r.args.scale, r.args.seed, r.args.runs
    );
    let _ = writeln!(
        s,
        "Dataset: {} zip, {:.1} MB of CSV ({}); {} rows loaded into the {} snapshot tables.\n",
        format_args!("{:.1} MB", mb(r.zip_bytes)),
        mb(r.csv_bytes),
        r.entries
            .iter()
            .map(|(n, b)| format!("{n} {:.1} MB", mb(*b)))
            .collect::<Vec<_>>()
            .join(", "),
        fmt_int(r.rows_loaded),
        TABLES.len()
    );
    let _ = writeln!(
        s,
        "movies_metadata.csv: {} records ({} repeated ids, {} broken rows); ratings.csv: {} rows.\n",
        fmt_int(r.plan.movie_records),
        r.plan.ids_twice + r.plan.ids_thrice,
        r.plan.broken,
        fmt_int(r.plan.ratings)
    );
    let bare = |f: fn(&BareRun) -> f64| r.bares.iter().map(f).collect::<Vec<_>>();
    let bare_step = |pick: fn(&str) -> bool| {
        r.bares
            .iter()
            .map(|x| x.steps.iter().filter(|(n, _)| pick(n)).map(|(_, t)| t).sum::<f64>())
            .collect::<Vec<_>>()
    };
    let bare_load = bare(|x| x.load);
    let bare_wall = bare(|x| x.wall);
    let bare_rows = r.bares.first().map(|x| x.rows).unwrap_or(0);
    let cores = |m: fn(&MachineCpu) -> f64, v: Vec<MachineCpu>| median(&v.iter().map(m).collect::<Vec<_>>());
    let machine = |v: Vec<MachineCpu>| {
        let cpus = v.first().map(|m| m.cpus).unwrap_or(0);
        format!(
            "{:.2} of {cpus} busy, {:.2} in iowait",
            cores(|m| m.busy_cores, v.clone()),
            cores(|m| m.iowait_cores, v)
        )
    };
    let _ = writeln!(s, "| step | bare psql script | raw COPY (psql \\copy) | reelflow run |");
    let _ = writeln!(s, "|---|---:|---:|---:|");
    let _ = writeln!(
        s,
        "| unzip (zip -> 4 CSVs) / fetch (S3 -> artifact) | {} | – | {} |",
        fmt_range(&bare(|x| x.unzip)),
        fmt_range(&stage("fetch"))
    );
    let _ = writeln!(
        s,
        "| clean (zip -> COPY files) | – | – (clean alone: below) | {} |",
        fmt_range(&stage("clean"))
    );
    let _ = writeln!(
        s,
        "| create tables | {} | {} | (in COPY) |",
        fmt_range(&bare_step(|n| n == "create")),
        fmt_range(&raw(|x| x.create))
    );
    let _ = writeln!(
        s,
        "| COPY all tables | {} (ratings) + {} (3 text tables), sequential | {} (sequential) | all done at {} (parallel streams) |",
        fmt_range(&bare_step(|n| n == "copy ratings")),
        fmt_range(&bare_step(|n| n.starts_with("copy ") && n != "copy ratings")),
        fmt_range(&raw(|x| x.copy)),
        fmt_range(&phase("COPY done"))
    );
    let _ = writeln!(
        s,
        "| keys + indexes + foreign keys | {} (the ratings primary key only) | {} + {} (after COPY) | all done at {} (each once its tables are in) |",
        fmt_range(&bare_step(|n| n == "ratings primary key")),
        fmt_range(&raw(|x| x.keys)),
        fmt_range(&raw(|x| x.fks)),
        fmt_range(&phase("keys and indexes built"))
    );
    let _ = writeln!(
        s,
        "| reports | – | – | all done at {} |",
        fmt_range(&phase("tables, keys and reports built"))
    );
    let _ = writeln!(
        s,
        "| load in all | **{}** (after the unzip) | – | {} (load stage) |",
        fmt_range(&bare_load),
        fmt_range(&stage("load"))
    );
    let _ = writeln!(s, "| publish | – | – | {} |", fmt_range(&stage("publish")));
    let _ = writeln!(
        s,
        "| tasks, fetch start to publish end (database times) | – | – | {} |",
        fmt_range(&r.rfs.iter().map(|x| x.dag_span).collect::<Vec<_>>())
    );
    let _ = writeln!(
        s,
        "| **total** (process start to exit) | {} (unzip included) | **{}** | **{}** |",
        fmt_range(&bare_wall),
        fmt_range(&raw_total),
        fmt_range(&rf_wall)
    );
    let _ = writeln!(
        s,
        "| rows loaded; rows/s (of the load / the total) | {}; {} | {}; {} | {}; {} |",
        fmt_int(bare_rows),
        fmt_int((bare_rows as f64 / median(&bare_load)) as u64),
        fmt_int(r.rows_loaded),
        fmt_int((r.rows_loaded as f64 / median(&raw_total)) as u64),
        fmt_int(r.rows_loaded),
        fmt_int((r.rows_loaded as f64 / median(&rf_wall)) as u64)
    );
    let rf_cpu: Vec<f64> = r.rfs.iter().map(|x| x.cpu_s).collect();
    let rf_cores: Vec<f64> = r.rfs.iter().map(|x| x.cpu_s / x.wall).collect();
    let _ = writeln!(
        s,
        "| CPU of the reelflow process (getrusage, user + system) | – | – | {} CPU s = {:.2} cores on average |",
        fmt_range(&rf_cpu).replace(" s", ""),
        median(&rf_cores)
    );
    let server = |cpu: Vec<f64>, wall: Vec<f64>| {
        let cores: Vec<f64> = cpu.iter().zip(&wall).map(|(c, w)| c / w).collect();
        format!(
            "{} CPU s = {:.2} cores",
            fmt_range(&cpu).replace(" s", ""),
            median(&cores)
        )
    };
    let _ = writeln!(
        s,
        "| CPU of the bench PostgreSQL (its process tree) | {} | {} | {} |",
        server(bare(|x| x.server_cpu_s), bare_wall.clone()),
        server(raw(|x| x.server_cpu_s), raw_total.clone()),
        server(r.rfs.iter().map(|x| x.server_cpu_s).collect(), rf_wall.clone())
    );
    let both: Vec<f64> = r.rfs.iter().map(|x| (x.cpu_s + x.server_cpu_s) / x.wall).collect();
    let _ = writeln!(
        s,
        "| reelflow + PostgreSQL, cores on average over the run | | | {:.2} of {} |",
        median(&both),
        r.rfs.first().map(|x| x.machine.cpus).unwrap_or(0)
    );
    let _ = writeln!(
        s,
        "| machine CPU over the run (/proc/stat, cores) | {} | {} | {} |",
        machine(r.bares.iter().map(|x| x.machine).collect()),
        machine(r.raws.iter().map(|x| x.machine).collect()),
        machine(r.rfs.iter().map(|x| x.machine).collect())
    );
    let _ = writeln!(
        s,
        "| peak RSS | – | – | {:.0} MiB (max {:.0}) |",
        median(&rss),
        min_max(&rss).1
    );
    let stage_rss = |t: &str| {
        median(
            &r.rfs
                .iter()
                .filter_map(|x| x.stage_rss_kib.get(t).map(|k| *k as f64 / 1024.0))
                .collect::<Vec<_>>(),
        )
    };
    let _ = writeln!(
        s,
        "| RSS by stage (largest VmRSS sample) | – | – | fetch {:.0}, clean {:.0}, load {:.0}, publish {:.0} MiB |",
        stage_rss("fetch"),
        stage_rss("clean"),
        stage_rss("load"),
        stage_rss("publish")
    );
    let _ = writeln!(
        s,
        "| **reelflow / bare psql script** (its load, without the unzip; target ≤ 1.0x) | | | {} |",
        fmt_ratios(&vs_bare)
    );
    let _ = writeln!(
        s,
        "| reelflow / bare psql script with its unzip | | | {} |",
        fmt_ratios(&vs_bare_unzip)
    );
    let _ = writeln!(
        s,
        "| **reelflow / raw COPY** (target ≤ 0.8x) | | | {} |",
        fmt_ratios(&ratios)
    );
    let _ = writeln!(s);

    let rr = r.rerun;
    let _ = writeln!(
        s,
        "Unchanged-source rerun (`reelflow run --period {PERIOD} --rerun`, same database and artifacts): {} \
         (fetch {}, clean {}, load {}, publish {}); fetch reused its artifact: {} ({} conditional GET answered 304, \
         {} bodies sent); peak RSS {} MiB.\n",
        fmt_s(rr.wall),
        fmt_s(rr.stages.get("fetch").map(|x| x.0).unwrap_or(f64::NAN)),
        fmt_s(rr.stages.get("clean").map(|x| x.0).unwrap_or(f64::NAN)),
        fmt_s(rr.stages.get("load").map(|x| x.0).unwrap_or(f64::NAN)),
        fmt_s(rr.stages.get("publish").map(|x| x.0).unwrap_or(f64::NAN)),
        if rr.fetch_reused { "yes" } else { "no" },
        r.rerun_not_modified,
        r.rerun_bodies,
        rr.peak_rss_kib / 1024
    );
    let clean_wall = median(r.clean_walls);
    let clean_cpu = median(r.clean_cpus);
    let _ = writeln!(
        s,
        "Clean stage alone (in-process `clean_zip`, before each raw run): {} wall, {:.1} CPU s (median): \
         {:.0} MB/s of CSV wall, {:.0} MB/s per CPU-second; inside the runs the clean task ran at {:.0} MB/s wall.",
        fmt_s(clean_wall),
        clean_cpu,
        mb(r.csv_bytes) / clean_wall,
        mb(r.csv_bytes) / clean_cpu,
        clean_stage_mbps
    );
    let per_file: Vec<String> = r
        .entries
        .iter()
        .filter(|(_, b)| *b >= r.csv_bytes / 50)
        .map(|(name, bytes)| {
            let t = median(
                &r.rfs
                    .iter()
                    .filter_map(|x| x.clean_entries.get(name).copied())
                    .collect::<Vec<_>>(),
            );
            format!("{name} {} = {:.0} MB/s", fmt_s(t), mb(*bytes) / t)
        })
        .collect();
    let _ = writeln!(s, "Clean task per entry (its log, median): {}.\n", per_file.join(", "));
    let _ = writeln!(
        s,
        "Task hand-off (a task's end -> the next task's start, from `reelflow.attempts`): median {:.1} ms, \
         p99 {:.1} ms, max {:.1} ms over {} hand-offs. Idle `reelflow serve` RSS after 5 s: {}.\n",
        median(&handoffs),
        handoff_p99,
        min_max(&handoffs).1,
        handoffs.len(),
        r.idle_rss_kib
            .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
            .unwrap_or_else(|| "n/a".into())
    );

    let mut jobs: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for run in r.rfs {
        for (name, t) in &run.load_jobs {
            jobs.entry(name.clone()).or_default().push(*t);
        }
    }
    let mut jobs: Vec<(String, f64, f64)> = jobs
        .into_iter()
        .map(|(k, v)| {
            let secs: Vec<f64> = v.iter().map(|t| t.0).collect();
            let ends: Vec<f64> = v.iter().map(|t| t.1).collect();
            (k, median(&secs), median(&ends))
        })
        .collect();
    jobs.sort_by(|a, b| b.1.total_cmp(&a.1));
    let _ = writeln!(
        s,
        "Slowest reelflow load jobs (median seconds, and when they ended, from the start of the load's job graph): {}.\n",
        jobs.iter()
            .take(8)
            .map(|(k, v, end)| format!("`{}` {} (ended at {})", k.replace("\"reelflow_snap_", "\"snap_"), fmt_s(*v), fmt_s(*end)))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let mut steps: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for run in r.raws {
        for (name, secs) in &run.steps {
            steps.entry(name.clone()).or_default().push(*secs);
        }
    }
    let mut slowest: Vec<(String, f64)> = steps.into_iter().map(|(k, v)| (k, median(&v))).collect();
    slowest.sort_by(|a, b| b.1.total_cmp(&a.1));
    let _ = writeln!(
        s,
        "Slowest raw COPY steps (median): {}.\n",
        slowest
            .iter()
            .take(6)
            .map(|(k, v)| format!("`{}` {}", k.replace("\"raw\".", ""), fmt_s(*v)))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let bare_steps: Vec<String> = r
        .bares
        .first()
        .map(|b| b.steps.iter().map(|(n, _)| n.clone()).collect())
        .unwrap_or_default();
    let _ = writeln!(
        s,
        "Bare psql script steps (`bench/bare-psql.sh`, median): {}.\n",
        bare_steps
            .iter()
            .map(|n| {
                let t: Vec<f64> = r
                    .bares
                    .iter()
                    .filter_map(|b| b.steps.iter().find(|(m, _)| m == n).map(|x| x.1))
                    .collect();
                format!("{n} {}", fmt_s(median(&t)))
            })
            .collect::<Vec<_>>()
            .join(", ")
    );

    let _ = writeln!(s, "| issue 16 target | goal | measured | met |");
    let _ = writeln!(s, "|---|---|---|---|");
    let yes = |b: bool| if b { "yes" } else { "no" };
    let ratio = median(&vs_bare);
    let _ = writeln!(
        s,
        "| full run / bare psql script (without its unzip) | ≤ 1.0x | {ratio:.2}x | {} |",
        yes(ratio <= 1.0)
    );
    let ratio = median(&ratios);
    let _ = writeln!(
        s,
        "| full run / raw COPY | ≤ 0.8x | {ratio:.2}x | {} |",
        yes(ratio <= 0.8)
    );
    let peak = min_max(&rss).1;
    let _ = writeln!(
        s,
        "| peak RSS of the run | ≤ 200 MiB | {peak:.0} MiB | {} |",
        yes(peak <= 200.0)
    );
    let per_cpu = mb(r.csv_bytes) / clean_cpu;
    let _ = writeln!(
        s,
        "| clean alone | ≥ 150 MB/s on one core | {per_cpu:.0} MB/s per CPU-second | {} |",
        yes(per_cpu >= 150.0)
    );
    let _ = writeln!(
        s,
        "| unchanged-source rerun | < 2 s, nothing reloaded | {} ({}) | {} |",
        fmt_s(rr.wall),
        if rr.snapshot_reused {
            "snapshot reused, nothing reloaded"
        } else {
            "re-cleaned and re-loaded"
        },
        yes(rr.wall < 2.0 && rr.snapshot_reused)
    );
    let _ = writeln!(
        s,
        "| task hand-off p99 | < 10 ms | {handoff_p99:.1} ms over {} | {} |",
        handoffs.len(),
        yes(handoff_p99 < 10.0)
    );
    let _ = writeln!(
        s,
        "| idle daemon RSS | < 30 MiB | {} | {} |",
        r.idle_rss_kib
            .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
            .unwrap_or_else(|| "n/a".into()),
        r.idle_rss_kib.map(|k| yes(k < 30 * 1024)).unwrap_or("n/a")
    );
    s
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
    fn ddl_matches_the_loader_shape() {
        let movies = reelflow_clean::table("movies").unwrap();
        assert!(create_table_sql("s", movies).starts_with("CREATE TABLE \"s\".\"movies\" (\"id\" bigint NOT NULL"));
        assert_eq!(
            key_sql("s", movies)[0],
            "ALTER TABLE \"s\".\"movies\" ADD PRIMARY KEY (\"id\")"
        );
        assert!(fk_sql("s", movies)[0].contains("REFERENCES \"s\".\"collections\" (\"id\")"));
    }

    #[test]
    fn ratios_are_taken_per_pair() {
        let num = [10.0, 12.0, 9.0];
        let den = [8.0, 12.0, 10.0];
        let r = pair_ratios(&num, |x| *x, &den, |x| *x);
        assert_eq!(r, vec![1.25, 1.0, 0.9]);
        // The median of the per-pair ratios, not the ratio of the medians (10 / 10 = 1.0).
        assert_eq!(median(&r), 1.0);
        assert_eq!(fmt_ratios(&r), "**1.00x** median (pairs 1.25x, 1.00x, 0.90x)");
        assert_eq!(fmt_ratios(&[]), "–");
        // Fewer runs on one side: only whole pairs count.
        assert_eq!(pair_ratios(&num, |x| *x, &den[..1], |x| *x), vec![1.25]);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
