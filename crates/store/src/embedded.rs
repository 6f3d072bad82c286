//! A private PostgreSQL server for local use and tests, run from the machine's own server
//! binaries (`initdb`, `pg_ctl`, `postgres` on PATH or under `/usr/lib/postgresql/*/bin`).
//!
//! The cluster lives in a data folder of its own, listens on 127.0.0.1 only with `trust`
//! authentication, and keeps running after the process exits so the published snapshot stays
//! readable; [`EmbeddedPg::stop`] stops it. When the process runs as root, the server runs as
//! the `postgres` user (PostgreSQL refuses to run as root).

use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddedPgError {
    #[error("no PostgreSQL server binaries found (looked for initdb and pg_ctl on PATH and under /usr/lib/postgresql/*/bin); install the `postgresql` package or set DATABASE_URL")]
    BinariesNotFound,
    #[error("{what} failed for the private PostgreSQL in {dir}: {detail}")]
    Command {
        what: &'static str,
        dir: PathBuf,
        detail: String,
    },
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// A running private cluster.
#[derive(Debug, Clone)]
pub struct EmbeddedPg {
    pub data_dir: PathBuf,
    pub port: u16,
    bin_dir: PathBuf,
    run_as: Option<String>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> EmbeddedPgError + '_ {
    move |source| EmbeddedPgError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The folder holding `initdb` and `pg_ctl`: PATH first, then the newest `/usr/lib/postgresql/N/bin`.
pub fn find_bin_dir() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                return Some(dir);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    // Avoids a libc dependency: the effective uid is in /proc/self/status.
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl EmbeddedPg {
    /// Starts the cluster in `data_dir` (creating it on first use), or attaches to it when it is
    /// already running. Safe to call from several processes at once: a lock file serialises them.
    pub fn start(data_dir: &Path, fast_unsafe: bool) -> Result<EmbeddedPg, EmbeddedPgError> {
        let bin_dir = find_bin_dir().ok_or(EmbeddedPgError::BinariesNotFound)?;
        let run_as = is_root().then(|| "postgres".to_string());
        let parent = data_dir.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(parent).map_err(io_err(parent))?;
        let lock_path = data_dir.with_extension("lock");
        let lock = File::create(&lock_path).map_err(io_err(&lock_path))?;
        lock.lock().map_err(io_err(&lock_path))?;

        let data_dir = std::path::absolute(data_dir).map_err(io_err(data_dir))?;
        let mut pg = EmbeddedPg {
            data_dir,
            port: 0,
            bin_dir,
            run_as,
        };
        if !pg.data_dir.join("PG_VERSION").is_file() {
            pg.initdb(fast_unsafe)?;
        }
        let port_file = pg.data_dir.join("reelflow.port");
        pg.port = fs::read_to_string(&port_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if pg.port != 0 && pg.is_running() {
            return Ok(pg);
        }
        // Not running: pick a port (the recorded one when it is free) and start.
        let mut last = None;
        for _ in 0..3 {
            if pg.port == 0 || TcpListener::bind(("127.0.0.1", pg.port)).is_err() {
                pg.port = free_port().map_err(io_err(&pg.data_dir))?;
            }
            fs::write(&port_file, pg.port.to_string()).map_err(io_err(&port_file))?;
            match pg.pg_ctl_start() {
                Ok(()) => return Ok(pg),
                Err(e) => {
                    last = Some(e);
                    pg.port = 0;
                }
            }
        }
        Err(last.expect("at least one start attempt"))
    }

    /// `postgres://postgres@127.0.0.1:PORT/DB`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Stops the server (fast shutdown).
    pub fn stop(&self) -> Result<(), EmbeddedPgError> {
        let dir = self.data_dir.display().to_string();
        self.run("pg_ctl stop", "pg_ctl", &["stop", "-D", &dir, "-m", "fast", "-w"])
    }

    /// Whether the server of this data folder runs and accepts connections on its port: the
    /// postmaster's pid file names a live process (what `pg_ctl status` checks, without
    /// starting `pg_ctl`, which as root goes through `runuser`), and the port answers.
    pub fn is_running(&self) -> bool {
        let pid = fs::read_to_string(self.data_dir.join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u32>().ok()));
        let alive = |pid: u32| {
            if Path::new("/proc/self").exists() {
                Path::new(&format!("/proc/{pid}")).exists()
            } else {
                let dir = self.data_dir.display().to_string();
                self.command("pg_ctl", &["status", "-D", &dir])
                    .output()
                    .is_ok_and(|o| o.status.success())
            }
        };
        pid.is_some_and(alive) && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
    }

    fn initdb(&self, fast_unsafe: bool) -> Result<(), EmbeddedPgError> {
        let tmp = self.data_dir.with_extension("initdb-tmp");
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        self.chown(&tmp)?;
        let dir = tmp.display().to_string();
        self.run(
            "initdb",
            "initdb",
            &[
                "-D",
                &dir,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )?;
        let mut conf = String::from(
            "\n# reelflow private cluster\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n\
             wal_level = minimal\nmax_wal_senders = 0\nmax_wal_size = '4GB'\nshared_buffers = '256MB'\n\
             maintenance_work_mem = '512MB'\nwork_mem = '64MB'\nmax_parallel_maintenance_workers = 2\n",
        );
        if fast_unsafe {
            conf.push_str("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n");
        }
        let conf_path = tmp.join("postgresql.conf");
        let mut existing = fs::read_to_string(&conf_path).map_err(io_err(&conf_path))?;
        existing.push_str(&conf);
        fs::write(&conf_path, existing).map_err(io_err(&conf_path))?;
        fs::rename(&tmp, &self.data_dir).map_err(io_err(&self.data_dir))?;
        Ok(())
    }

    fn pg_ctl_start(&self) -> Result<(), EmbeddedPgError> {
        let dir = self.data_dir.display().to_string();
        let log = self.data_dir.join("server.log").display().to_string();
        let opts = format!("-p {}", self.port);
        self.run(
            "pg_ctl start",
            "pg_ctl",
            &["start", "-D", &dir, "-l", &log, "-w", "-t", "60", "-o", &opts],
        )
    }

    fn chown(&self, path: &Path) -> Result<(), EmbeddedPgError> {
        if let Some(user) = &self.run_as {
            let status = Command::new("chown")
                .args(["-R", user, &path.display().to_string()])
                .status()
                .map_err(io_err(path))?;
            if !status.success() {
                return Err(EmbeddedPgError::Command {
                    what: "chown",
                    dir: path.to_path_buf(),
                    detail: format!("chown -R {user} exited with {status}"),
                });
            }
        }
        Ok(())
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let exe = self.bin_dir.join(program);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(exe).args(args);
                c
            }
            None => {
                let mut c = Command::new(exe);
                c.args(args);
                c
            }
        }
    }

    fn run(&self, what: &'static str, program: &str, args: &[&str]) -> Result<(), EmbeddedPgError> {
        let out = self.command(program, args).output().map_err(io_err(&self.data_dir))?;
        if out.status.success() {
            return Ok(());
        }
        let mut detail = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if detail.is_empty() {
            detail = String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        let log = self.data_dir.join("server.log");
        if let Ok(text) = fs::read_to_string(&log) {
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            detail.push_str(&format!(
                " (server log {}: {})",
                log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ));
        }
        Err(EmbeddedPgError::Command {
            what,
            dir: self.data_dir.clone(),
            detail,
        })
    }
}
