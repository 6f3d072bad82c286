//! The second baseline of issue 16: `bench/bare-psql.sh ZIP DATABASE_URL WORKDIR`, the script a
//! data engineer would write instead of reelflow (unzip four CSVs, `\copy` them, the ratings
//! primary key). The bench runs it as a child process and reads the wall time of each step from
//! the script's own `bare-psql: STEP SECONDS [ROWS rows]` lines on stderr.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};

use super::sys::{self, MachineCpu, MachineTicks};

/// One run of the bare psql script.
#[derive(Debug, Default, Clone)]
pub struct BareRun {
    /// Process start to exit, as the bench saw it (unzip included).
    pub wall: f64,
    /// The script's `unzip` step.
    pub unzip: f64,
    /// The script's `load` step: everything after the unzip (tables, COPYs, primary key).
    pub load: f64,
    /// Every step the script timed, in its order (`load` and `total` left out).
    pub steps: Vec<(String, f64)>,
    /// Rows the script's `\copy` commands loaded, summed.
    pub rows: u64,
    /// The machine over the run (psql's server backend is where the work is).
    pub machine: MachineCpu,
    /// CPU seconds of the bench PostgreSQL over the run ([`sys::server_cpu_seconds`]).
    pub server_cpu_s: f64,
    /// CPU seconds of the script and its children (unzip, psql): `getrusage(RUSAGE_CHILDREN)`.
    pub client_cpu_s: f64,
}

/// One `bare-psql: STEP SECONDS [ROWS rows]` line: (step, seconds, rows).
pub fn parse_step(line: &str) -> Option<(String, f64, Option<u64>)> {
    let rest = line.strip_prefix("bare-psql: ")?;
    let (head, rows) = match rest.strip_suffix(" rows") {
        Some(r) => {
            let (head, n) = r.rsplit_once(' ')?;
            (head, Some(n.parse().ok()?))
        }
        None => (rest, None),
    };
    let (step, secs) = head.rsplit_once(' ')?;
    Some((step.to_string(), secs.parse().ok()?, rows))
}

/// The run's figures from the script's stderr; `wall` is the bench's own measure.
pub fn parse_output(stderr: &str, wall: f64) -> anyhow::Result<BareRun> {
    let mut run = BareRun {
        wall,
        unzip: f64::NAN,
        load: f64::NAN,
        ..BareRun::default()
    };
    for (step, secs, rows) in stderr.lines().filter_map(parse_step) {
        match step.as_str() {
            "unzip" => run.unzip = secs,
            "load" => run.load = secs,
            "total" => continue,
            _ => {}
        }
        run.rows += rows.unwrap_or(0);
        if step != "load" {
            run.steps.push((step, secs));
        }
    }
    if run.unzip.is_nan() || run.load.is_nan() {
        bail!("the bare psql script printed no unzip/load times:\n{stderr}");
    }
    Ok(run)
}

/// Where and how the bench runs the script.
pub struct Script<'a> {
    pub path: &'a Path,
    /// Where psql is, if not on PATH: put first on the script's PATH.
    pub psql_dir: Option<&'a Path>,
    /// The bench PostgreSQL's postmaster, for its CPU time.
    pub postmaster: u32,
}

/// Runs `script ZIP URL WORKDIR`.
pub fn run(script: &Script<'_>, zip: &Path, url: &str, work: &Path) -> anyhow::Result<BareRun> {
    let psql_dir = script.psql_dir;
    let script_path = script.path;
    let mut path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(dir) = psql_dir {
        let dirs = std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&path));
        path = std::env::join_paths(dirs)?;
    }
    let (ticks, server) = (MachineTicks::now(), sys::server_cpu_seconds(script.postmaster));
    let client = sys::children_cpu_seconds();
    let started = Instant::now();
    let out = Command::new("sh")
        .arg(script_path)
        .arg(zip)
        .arg(url)
        .arg(work)
        .env("PATH", path)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", script_path.display()))?;
    let wall = started.elapsed().as_secs_f64();
    let machine = MachineTicks::now().since(&ticks);
    let server_cpu_s = sys::server_cpu_seconds(script.postmaster) - server;
    let client_cpu_s = sys::children_cpu_seconds() - client;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("{} exited with {}:\n{stderr}", script_path.display(), out.status);
    }
    let mut run = parse_output(&stderr, wall)?;
    run.machine = machine;
    run.server_cpu_s = server_cpu_s;
    run.client_cpu_s = client_cpu_s;
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_lines() {
        assert_eq!(
            parse_step("bare-psql: unzip 1.202"),
            Some(("unzip".into(), 1.202, None))
        );
        assert_eq!(
            parse_step("bare-psql: copy ratings 3.830 6506072 rows"),
            Some(("copy ratings".into(), 3.830, Some(6_506_072)))
        );
        assert_eq!(
            parse_step("bare-psql: ratings primary key 3.125"),
            Some(("ratings primary key".into(), 3.125, None))
        );
        assert_eq!(parse_step("NOTICE:  table \"ratings\" does not exist"), None);
        assert_eq!(parse_step("bare-psql: unzip soon"), None);
    }

    #[test]
    fn output_of_a_run() {
        let err = "bare-psql: unzip 1.2\nbare-psql: create 0.04\n\
                   bare-psql: copy ratings 3.8 6506072 rows\nbare-psql: ratings primary key 3.1\n\
                   bare-psql: copy credits 1.2 11369 rows\nbare-psql: load 8.4\nbare-psql: total 9.6\n";
        let r = parse_output(err, 9.7).unwrap();
        assert_eq!((r.unzip, r.load, r.wall, r.rows), (1.2, 8.4, 9.7, 6_506_072 + 11_369));
        assert_eq!(r.steps.len(), 5);
        assert_eq!(r.steps[3], ("ratings primary key".to_string(), 3.1));
        assert!(parse_output("psql: error: connection refused\n", 0.1).is_err());
    }
}
