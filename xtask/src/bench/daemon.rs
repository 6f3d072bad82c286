//! The idle daemon and start-up figures of issue 16, on the bench database after the runs.
//!
//! **Transactions per second of an idle `reelflow serve`** (scheduler enabled, its period
//! already loaded, so there is nothing to do). PostgreSQL 15 counts transactions per database in
//! `pg_stat_database` (`xact_commit + xact_rollback`), but a backend publishes its counts lazily:
//! at most once a second while busy and, once idle, only after up to 10 s
//! (`PGSTAT_IDLE_INTERVAL`), and `pg_stat_force_next_flush()` acts on the calling backend only.
//! A backend does publish everything when it exits, before it leaves `pg_stat_activity`. So the
//! counts are read only while *no* backend is connected to the bench database, and the daemon's
//! transactions are counted over whole lifetimes:
//!
//! 1. autovacuum is switched off for the measurement (`ALTER SYSTEM SET autovacuum = off`, reset
//!    afterwards) and any autovacuum worker on the database is cancelled: its transactions would
//!    be counted in the same row and are not the daemon's;
//! 2. the measuring connection is opened once, on the `postgres` database, so that its own
//!    queries land in another row of `pg_stat_database` and need no subtracting;
//! 3. `reelflow serve` runs twice: until ready plus 5 s, then until ready plus 5 s plus the
//!    30 s window; each time it is stopped with SIGTERM, the bench waits until the database has no
//!    backend left (and one more second), then reads the count;
//! 4. start-up and shutdown cost the same in both lifetimes, so the idle rate is the difference
//!    of the two counts over the difference of the two lifetimes.
//!
//! **CPU % of one core**: utime + stime of the daemon (`/proc/<pid>/stat`) over the 30 s window
//! of the second lifetime. **Idle RSS**: VmRSS 5 s after it is ready, as before.
//!
//! **Start-up**: wall time from spawn to exit of `reelflow --version` and of `reelflow runs list`
//! against the bench database (PostgreSQL running, no daemon), after one unmeasured run of each.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use reelflow_store::EmbeddedPg;
use sqlx::{Connection, PgConnection};

use super::sys::{self, proc_memory};
use super::{reelflow_command, RunEnv};

/// How long the daemon is held before the window: the readiness settles, the RSS is read.
const SETTLE: Duration = Duration::from_secs(5);
/// The idle window of the second lifetime.
const WINDOW: Duration = Duration::from_secs(30);
/// Runs of each start-up command.
const STARTUPS: usize = 20;

/// The idle daemon's figures.
#[derive(Debug, Default, Clone)]
pub struct DaemonFigures {
    /// Transactions counted in the bench database over the short and the long lifetime, and
    /// the lifetimes (spawn to exit) in seconds.
    pub tx_short: u64,
    pub tx_long: u64,
    pub life_short: f64,
    pub life_long: f64,
    /// CPU seconds of the daemon over the window, and the window in seconds.
    pub cpu_s: f64,
    pub window: f64,
    /// VmRSS 5 s after it was ready, and at the end of the window, KiB.
    pub rss_kib: Option<u64>,
    pub rss_end_kib: Option<u64>,
    /// Runs the scheduler created meanwhile (0 when the daemon really had nothing to do).
    pub runs_created: i64,
}

impl DaemonFigures {
    pub fn tx_per_s(&self) -> f64 {
        idle_rate(self.tx_short, self.life_short, self.tx_long, self.life_long)
    }

    /// CPU over the window, in % of one core.
    pub fn cpu_percent(&self) -> f64 {
        self.cpu_s / self.window * 100.0
    }
}

/// The steady rate from two lifetimes that differ only in their idle time: start-up and shutdown
/// cancel out.
pub fn idle_rate(count_short: u64, life_short: f64, count_long: u64, life_long: f64) -> f64 {
    (count_long as f64 - count_short as f64) / (life_long - life_short)
}

/// Start-up wall times in ms of the runs that succeeded, and the errors of those that did not.
#[derive(Debug, Default, Clone)]
pub struct StartupFigures {
    pub version_ms: Vec<f64>,
    pub runs_list_ms: Vec<f64>,
    pub failures: Vec<String>,
}

async fn exec(c: &mut PgConnection, sql: &str) -> anyhow::Result<()> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(c)
        .await
        .with_context(|| format!("running {sql}"))?;
    Ok(())
}

/// `xact_commit + xact_rollback` of database `db`.
async fn transactions(c: &mut PgConnection, db: &str) -> anyhow::Result<u64> {
    let n: i64 =
        sqlx::query_scalar("SELECT (xact_commit + xact_rollback)::int8 FROM pg_stat_database WHERE datname = $1")
            .bind(db)
            .fetch_one(c)
            .await?;
    Ok(n as u64)
}

/// Waits until no backend is connected to `db` (their counts are then all published), then one
/// more second; cancels autovacuum workers there on the way.
async fn wait_until_quiet(c: &mut PgConnection, db: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        sqlx::query(
            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity
              WHERE datname = $1 AND backend_type = 'autovacuum worker'",
        )
        .bind(db)
        .execute(&mut *c)
        .await?;
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
            .bind(db)
            .fetch_one(&mut *c)
            .await?;
        if n == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("{n} backends still connected to {db} after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

async fn runs_in(url: &str) -> anyhow::Result<i64> {
    let mut c = PgConnection::connect(url).await?;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM reelflow.dag_runs")
        .fetch_one(&mut c)
        .await?;
    c.close().await?;
    Ok(n)
}

/// The idle daemon's transactions, CPU and RSS on database `db` (see the module's doc).
pub async fn idle_daemon(env: &RunEnv<'_>, pg: &EmbeddedPg, db: &str, dir: &Path) -> anyhow::Result<DaemonFigures> {
    let url = pg.url(db);
    let runs_before = runs_in(&url).await?;
    let mut admin = PgConnection::connect(&pg.url("postgres")).await?;
    exec(&mut admin, "ALTER SYSTEM SET autovacuum = off").await?;
    exec(&mut admin, "SELECT pg_reload_conf()").await?;
    let measured = async {
        wait_until_quiet(&mut admin, db).await?;
        let t0 = transactions(&mut admin, db).await?;
        let short = serve(env, &url, dir, false).await?;
        wait_until_quiet(&mut admin, db).await?;
        let t1 = transactions(&mut admin, db).await?;
        let long = serve(env, &url, dir, true).await?;
        wait_until_quiet(&mut admin, db).await?;
        let t2 = transactions(&mut admin, db).await?;
        Ok::<_, anyhow::Error>(DaemonFigures {
            tx_short: t1 - t0,
            tx_long: t2 - t1,
            life_short: short.life,
            life_long: long.life,
            cpu_s: long.cpu_s,
            window: long.window,
            rss_kib: long.rss_kib,
            rss_end_kib: long.rss_end_kib,
            runs_created: 0,
        })
    }
    .await;
    exec(&mut admin, "ALTER SYSTEM RESET autovacuum").await?;
    exec(&mut admin, "SELECT pg_reload_conf()").await?;
    admin.close().await?;
    let mut figures = measured?;
    figures.runs_created = runs_in(&url).await? - runs_before;
    Ok(figures)
}

/// One lifetime of `reelflow serve`.
#[derive(Debug, Default)]
struct Lifetime {
    life: f64,
    cpu_s: f64,
    window: f64,
    rss_kib: Option<u64>,
    rss_end_kib: Option<u64>,
}

/// Starts `reelflow serve` (scheduler enabled), waits for `/readyz`, holds it [`SETTLE`] (and
/// the [`WINDOW`], measuring its CPU, when `window`), stops it with SIGTERM.
async fn serve(env: &RunEnv<'_>, url: &str, dir: &Path, window: bool) -> anyhow::Result<Lifetime> {
    let artifacts = dir.join("artifacts");
    std::fs::create_dir_all(&artifacts)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let tag = if window { "long" } else { "short" };
    let mut cmd = reelflow_command(env, url, &artifacts);
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("REELFLOW_SCHEDULE_ENABLED", "true")
        .stdout(std::fs::File::create(dir.join(format!("serve-{tag}.stdout.log")))?)
        .stderr(std::fs::File::create(dir.join(format!("serve-{tag}.stderr.log")))?)
        .stdin(Stdio::null());
    let logs = || {
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        format!(
            "\nstdout (tail):\n{}\nstderr (tail):\n{}",
            super::tail(&read(&format!("serve-{tag}.stdout.log")), 20),
            super::tail(&read(&format!("serve-{tag}.stderr.log")), 20)
        )
    };
    let started = Instant::now();
    let mut child = cmd.spawn()?;
    let pid = child.id();
    let mut out = Lifetime::default();
    let held = async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_status(port, "/readyz") != Some(200) {
            if let Some(status) = child.try_wait()? {
                bail!("reelflow serve exited early ({status}){}", logs());
            }
            if Instant::now() > deadline {
                bail!("reelflow serve was not ready after 30 s{}", logs());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(SETTLE).await;
        out.rss_kib = proc_memory(pid).map(|(_, rss)| rss);
        if window {
            let (cpu0, t0) = (sys::process_cpu_seconds(&pid.to_string()), Instant::now());
            tokio::time::sleep(WINDOW).await;
            let cpu1 = sys::process_cpu_seconds(&pid.to_string());
            out.window = t0.elapsed().as_secs_f64();
            out.cpu_s = cpu1.zip(cpu0).map(|(b, a)| b - a).unwrap_or(f64::NAN);
            out.rss_end_kib = proc_memory(pid).map(|(_, rss)| rss);
        }
        Ok(())
    }
    .await;
    // SIGTERM the daemon we started (by its pid), then give it its grace period.
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    out.life = started.elapsed().as_secs_f64();
    held?;
    Ok(out)
}

/// The status code of `GET path` on 127.0.0.1:`port`, or None if nothing answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head).ok()?;
    parse_status_line(&head[..n])
}

/// `HTTP/1.1 200 OK` -> 200.
fn parse_status_line(head: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(head).ok()?.lines().next()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}

/// [`STARTUPS`] timed runs each of `reelflow --version` and `reelflow runs list`; a run that
/// fails is recorded (and not timed), up to [`STARTUPS`] failures per command.
pub fn startup(env: &RunEnv<'_>, url: &str, dir: &Path) -> anyhow::Result<StartupFigures> {
    let artifacts = dir.join("artifacts");
    let time = |args: &[&str]| -> anyhow::Result<f64> {
        let mut cmd = reelflow_command(env, url, &artifacts);
        cmd.args(args).stdin(Stdio::null());
        let t = Instant::now();
        let out = cmd.output()?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if !out.status.success() {
            bail!(
                "reelflow {} exited with {}: {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(ms)
    };
    let mut f = StartupFigures::default();
    for (args, into) in [
        (&["--version"][..], &mut f.version_ms),
        (&["runs", "list"][..], &mut f.runs_list_ms),
    ] {
        let mut warm = false;
        let mut failed = 0;
        while into.len() < STARTUPS && failed < STARTUPS {
            match time(args) {
                Ok(ms) if warm => into.push(ms),
                Ok(_) => warm = true,
                Err(e) => {
                    failed += 1;
                    f.failures.push(format!("{e:#}"));
                }
            }
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idle_rate_leaves_start_up_and_shutdown_out() {
        // 40 transactions to start and stop, then 2 per second: 5 s idle vs 35 s idle.
        let (short, long) = (40 + 2 * 5, 40 + 2 * 35);
        assert!((idle_rate(short, 6.5, long, 36.5) - 2.0).abs() < 1e-9);
        assert_eq!(idle_rate(10, 6.0, 10, 36.0), 0.0);
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r\ncontent-type: x\r\n"), Some(200));
        assert_eq!(parse_status_line(b"HTTP/1.0 503 Service Unavailable\r\n"), Some(503));
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status_line(b""), None);
    }

    #[test]
    fn daemon_percent_of_a_core() {
        let d = DaemonFigures {
            cpu_s: 0.06,
            window: 30.0,
            ..DaemonFigures::default()
        };
        assert!((d.cpu_percent() - 0.2).abs() < 1e-9);
    }
}
