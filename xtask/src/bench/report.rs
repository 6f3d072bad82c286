//! The Markdown report of `cargo xtask bench`: a section per scale, then the summary across
//! scales and the table of issue 16's targets. Pure functions of the measured runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use reelflow_clean::TABLES;

use super::bare::BareRun;
use super::daemon::DaemonFigures;
use super::sys::MachineCpu;
use super::{RawRun, RfRun, ScaleResult, PERIOD};

/// The CPU of one run of one side: its client, the bench PostgreSQL, and the whole machine.
#[derive(Debug, Clone, Copy)]
struct RunCpu {
    client: f64,
    server: f64,
    wall: f64,
    machine: MachineCpu,
}

impl RunCpu {
    /// Cores the run kept busy on average: its client and the server.
    fn own_cores(&self) -> f64 {
        (self.client + self.server) / self.wall
    }

    /// Cores busy with anything else on the machine meanwhile.
    fn other_cores(&self) -> f64 {
        (self.machine.busy_cores - self.own_cores()).max(0.0)
    }
}

impl ScaleResult {
    /// The runs' CPU per side: the bare script, raw COPY, reelflow.
    fn cpu_by_side(&self) -> [Vec<RunCpu>; 3] {
        let cpu = |client, server, wall, machine| RunCpu {
            client,
            server,
            wall,
            machine,
        };
        [
            self.bares
                .iter()
                .map(|x| cpu(x.client_cpu_s, x.server_cpu_s, x.wall, x.machine))
                .collect(),
            self.raws
                .iter()
                .map(|x| cpu(x.client_cpu_s, x.server_cpu_s, x.total, x.machine))
                .collect(),
            self.rfs
                .iter()
                .map(|x| cpu(x.cpu_s, x.server_cpu_s, x.wall, x.machine))
                .collect(),
        ]
    }

    /// reelflow's wall / raw COPY's, per alternated pair.
    fn vs_raw(&self) -> Vec<f64> {
        pair_ratios(&self.rfs, |x| x.wall, &self.raws, |x| x.total)
    }

    /// reelflow's wall / the bare script's load (COPYs and primary key, without its unzip).
    fn vs_bare(&self) -> Vec<f64> {
        pair_ratios(&self.rfs, |x| x.wall, &self.bares, |x| x.load)
    }

    /// reelflow's wall / the bare script's whole wall, unzip included.
    fn vs_bare_with_unzip(&self) -> Vec<f64> {
        pair_ratios(&self.rfs, |x| x.wall, &self.bares, |x| x.wall)
    }

    fn peak_rss_mib(&self) -> Vec<f64> {
        self.rfs.iter().map(|x| x.peak_rss_kib as f64 / 1024.0).collect()
    }

    /// The hand-offs in groups of reelflow invocations, in ms: the measured runs, then the
    /// unchanged-source reruns in [`HANDOFF_GROUPS`] consecutive groups.
    fn handoff_groups(&self) -> Vec<(String, Vec<f64>)> {
        let ms = |runs: &[&RfRun]| -> Vec<f64> {
            runs.iter()
                .flat_map(|x| x.handoffs.iter().map(|h| h * 1000.0))
                .collect()
        };
        let mut groups = vec![("full runs".to_string(), ms(&self.rfs.iter().collect::<Vec<_>>()))];
        let reruns: Vec<&RfRun> = std::iter::once(&self.rerun).chain(&self.handoff_runs).collect();
        let size = reruns.len().div_ceil(HANDOFF_GROUPS).max(1);
        for (i, chunk) in reruns.chunks(size).enumerate() {
            let first = i * size + 1;
            groups.push((format!("reruns {first}-{}", first + chunk.len() - 1), ms(chunk)));
        }
        groups
    }

    /// The worst group's p99, in ms.
    fn handoff_worst_p99(&self) -> f64 {
        self.handoff_groups()
            .iter()
            .map(|(_, v)| percentile(v, 0.99))
            .fold(f64::NAN, f64::max)
    }

    /// Every hand-off of the scale's reelflow invocations, in ms.
    fn handoffs_ms(&self) -> Vec<f64> {
        self.rfs
            .iter()
            .chain(std::iter::once(&self.rerun))
            .chain(&self.handoff_runs)
            .flat_map(|x| x.handoffs.iter().map(|h| h * 1000.0))
            .collect()
    }

    /// Nanoseconds per loaded row of each side's median time: (reelflow, raw COPY, bare load,
    /// bare with unzip).
    fn ns_per_row(&self) -> (f64, f64, f64, f64) {
        let per = |v: Vec<f64>, rows: u64| median(&v) * 1e9 / rows as f64;
        let bare_rows = self.bares.first().map(|b| b.rows).unwrap_or(0);
        (
            per(self.rfs.iter().map(|x| x.wall).collect(), self.rows_loaded),
            per(self.raws.iter().map(|x| x.total).collect(), self.rows_loaded),
            per(self.bares.iter().map(|x| x.load).collect(), bare_rows),
            per(self.bares.iter().map(|x| x.wall).collect(), bare_rows),
        )
    }

    /// MB of CSV per CPU-second of the clean stage alone (median).
    fn clean_mb_per_cpu_s(&self) -> f64 {
        self.data.csv_bytes as f64 / 1e6 / median(&self.clean_cpus)
    }
}

/// The section of one scale: every side's steps, CPU, memory and the ratios, then the
/// reruns, the clean stage alone, the hand-offs and the slowest steps.
pub(super) fn section(r: &ScaleResult, runs: usize, seed: u64) -> String {
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
    let ratios = r.vs_raw();
    let vs_bare = r.vs_bare();
    let vs_bare_unzip = r.vs_bare_with_unzip();
    let rss = r.peak_rss_mib();
    let handoffs = r.handoffs_ms();
    let handoff_p99 = percentile(&handoffs, 0.99);
    let clean_stage_mbps = median(
        &stage("clean")
            .iter()
            .map(|t| mb(r.data.csv_bytes) / t)
            .collect::<Vec<_>>(),
    );

    let _ = writeln!(
        s,
        "### Scale {} (seed {}), {} run{} of each side alternated: medians [min–max]\n",
        r.data.scale,
        seed,
        runs,
        if runs == 1 { "" } else { "s" }
    );
    let _ = writeln!(
        s,
        "Dataset: {} zip, {:.1} MB of CSV ({}); {} rows loaded into the {} snapshot tables.\n",
        format_args!("{:.1} MB", mb(r.data.zip_bytes)),
        mb(r.data.csv_bytes),
        r.data
            .entries
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
        fmt_int(r.data.plan.movie_records),
        r.data.plan.ids_twice + r.data.plan.ids_thrice,
        r.data.plan.broken,
        fmt_int(r.data.plan.ratings)
    );
    let gb = |i: usize| {
        r.disk_parts
            .get(i)
            .map(|b| format!("{:.1} GB", *b as f64 / 1e9))
            .unwrap_or_else(|| "–".into())
    };
    let _ = writeln!(
        s,
        "ratings.csv holds {} repeated (userId, movieId) pairs (the clean stage's `duplicate_rating` rejects){}. \
         Disk: {:.1} GB free at the start of the scale; the bench's files took {:.1} GB at the peak, {:.1}x the zip \
         (at their largest: databases {}, WAL {}, work files {}, and the zip).\n",
        fmt_int(r.duplicate_ratings),
        if r.duplicate_ratings == 0 {
            ", so the bare script's primary key holds"
        } else {
            ": the bare script's primary key cannot be built on them"
        },
        r.disk_free_bytes as f64 / 1e9,
        r.disk_peak_bytes as f64 / 1e9,
        r.disk_peak_bytes as f64 / r.data.zip_bytes as f64,
        gb(0),
        gb(1),
        gb(2)
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
    let sides = r.cpu_by_side();
    let cpus = r.rfs.first().map(|x| x.machine.cpus).unwrap_or(0);
    let row = |label: &str, cell: &dyn Fn(&[RunCpu]) -> String| {
        format!(
            "| {label} | {} | {} | {} |",
            cell(&sides[0]),
            cell(&sides[1]),
            cell(&sides[2])
        )
    };
    let cpu_cell = |pick: fn(&RunCpu) -> f64| {
        move |v: &[RunCpu]| {
            let secs: Vec<f64> = v.iter().map(pick).collect();
            let cores: Vec<f64> = v.iter().map(|x| pick(x) / x.wall).collect();
            format!(
                "{} CPU s = {:.2} cores",
                fmt_range(&secs).replace(" s", ""),
                median(&cores)
            )
        }
    };
    let med = |v: &[RunCpu], f: fn(&RunCpu) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
    let _ = writeln!(
        s,
        "{}",
        row(
            "CPU of the client (getrusage: the script with unzip and psql / psql and the bench / the reelflow process)",
            &cpu_cell(|x| x.client)
        )
    );
    let _ = writeln!(
        s,
        "{}",
        row(
            "CPU of the bench PostgreSQL (its process tree)",
            &cpu_cell(|x| x.server)
        )
    );
    let _ = writeln!(
        s,
        "{}",
        row(&format!("client + PostgreSQL, cores of {cpus} on average"), &|v| {
            format!("**{:.2}**", med(v, RunCpu::own_cores))
        })
    );
    let _ = writeln!(
        s,
        "{}",
        row("machine over the run (/proc/stat): busy cores, in iowait", &|v| {
            format!(
                "{:.2} busy, {:.2} iowait",
                med(v, |x| x.machine.busy_cores),
                med(v, |x| x.machine.iowait_cores)
            )
        })
    );
    let _ = writeln!(
        s,
        "{}",
        row(
            "other processes on the machine (busy − client − PostgreSQL), cores",
            &|v| { format!("{:.2}", med(v, RunCpu::other_cores)) }
        )
    );
    let others: Vec<f64> = sides.iter().flatten().map(RunCpu::other_cores).collect();
    let shared = (median(&others) > SHARED_CORES).then(|| {
        format!(
            "\n**The machine was shared**: other processes kept {:.2} of its {cpus} cores busy during the runs \
             (median over all sides; max {:.2}), so the times and ratios here are less steady than on an idle machine.\n",
            median(&others),
            min_max(&others).1
        )
    });
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
    let _ = writeln!(s, "{}", shared.unwrap_or_default());

    let rr = &r.rerun;
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
    let clean_wall = median(&r.clean_walls);
    let clean_cpu = median(&r.clean_cpus);
    let _ = writeln!(
        s,
        "Clean stage alone (in-process `clean_zip`, before each raw run): {} wall, {:.1} CPU s (median): \
         {:.0} MB/s of CSV wall, {:.0} MB/s per CPU-second; inside the runs the clean task ran at {:.0} MB/s wall.",
        fmt_s(clean_wall),
        clean_cpu,
        mb(r.data.csv_bytes) / clean_wall,
        mb(r.data.csv_bytes) / clean_cpu,
        clean_stage_mbps
    );
    let per_file: Vec<String> = r
        .data
        .entries
        .iter()
        .filter(|(_, b)| *b >= r.data.csv_bytes / 50)
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
    let groups: Vec<String> = r
        .handoff_groups()
        .iter()
        .map(|(name, v)| format!("{name}: p99 {:.1} ms over {}", percentile(v, 0.99), v.len()))
        .collect();
    let _ = writeln!(
        s,
        "Task hand-off (a task's end -> the next task's start, from `reelflow.attempts`): median {:.1} ms, \
         p99 {:.1} ms, max {:.1} ms over {} hand-offs. By group of invocations: {}.\n",
        median(&handoffs),
        handoff_p99,
        min_max(&handoffs).1,
        handoffs.len(),
        groups.join("; ")
    );
    let _ = writeln!(s, "{}", daemon_paragraph(&r.daemon));
    let st = &r.startup;
    let _ = writeln!(
        s,
        "Start-up, spawn to exit, {} runs each after one unmeasured: `reelflow --version` median {:.1} ms, p90 {:.1} ms; \
         `reelflow runs list` against the bench database median {:.1} ms, p90 {:.1} ms{}.\n",
        st.version_ms.len().max(st.runs_list_ms.len()),
        median(&st.version_ms),
        percentile(&st.version_ms, 0.9),
        median(&st.runs_list_ms),
        percentile(&st.runs_list_ms, 0.9),
        match st.failures.first() {
            None => String::new(),
            Some(e) => format!("; **{} runs failed**, the first with: {}", st.failures.len(), e.trim()),
        }
    );

    let mut jobs: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for run in &r.rfs {
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
    for run in &r.raws {
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
    s
}

/// The idle daemon's figures as a sentence, or why they are missing.
fn daemon_paragraph(d: &Result<DaemonFigures, String>) -> String {
    let d = match d {
        Ok(d) => d,
        Err(e) => {
            return format!(
                "Idle `reelflow serve`: **not measured**: {e}
"
            )
        }
    };
    let mib = |k: Option<u64>| {
        k.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
            .unwrap_or_else(|| "n/a".into())
    };
    format!(
        "Idle `reelflow serve` (scheduler enabled, period {PERIOD} already loaded{}): **{:.2} transactions/s** in its \
         database ({} transactions over a {:.1} s lifetime, {} over {:.1} s: the difference over the difference, counted \
         from `pg_stat_database` with no backend left on the database, autovacuum off), **{:.2} % of one core** \
         ({:.2} CPU s over {:.1} s, /proc/<pid>/stat); RSS {} when ready + 5 s, {} at the end.\n",
        if d.runs_created == 0 {
            String::new()
        } else {
            format!("; **it created {} runs meanwhile: not idle**", d.runs_created)
        },
        d.tx_per_s(),
        d.tx_short,
        d.life_short,
        d.tx_long,
        d.life_long,
        d.cpu_percent(),
        d.cpu_s,
        d.window,
        mib(d.rss_kib),
        mib(d.rss_end_kib)
    )
}

/// One row per scale: the growth of time per row, memory and the ratios.
pub(super) fn summary(results: &[ScaleResult]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "### Across scales (medians)\n");
    let _ = writeln!(
        s,
        "| scale | ratings rows | reelflow wall | ns/row reelflow | ns/row raw COPY | ns/row bare script (load; with unzip) \
         | peak RSS | reelflow / bare script | reelflow / raw COPY | reelflow + PostgreSQL CPU | disk at peak |"
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let (rf, raw, bare, bare_unzip) = r.ns_per_row();
        let cores: Vec<f64> = r.rfs.iter().map(|x| (x.cpu_s + x.server_cpu_s) / x.wall).collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {rf:.0} | {raw:.0} | {bare:.0}; {bare_unzip:.0} | {:.0} MiB | {:.2}x | {:.2}x | {:.2} cores | {:.1} GB ({:.1}x the zip) |",
            r.data.scale,
            fmt_int(r.data.plan.ratings),
            fmt_s(median(&r.rfs.iter().map(|x| x.wall).collect::<Vec<_>>())),
            min_max(&r.peak_rss_mib()).1,
            median(&r.vs_bare()),
            median(&r.vs_raw()),
            median(&cores),
            r.disk_peak_bytes as f64 / 1e9,
            r.disk_peak_bytes as f64 / r.data.zip_bytes as f64
        );
    }
    let _ = writeln!(
        s,
        "\nns/row: each side's median time over the rows it loaded (reelflow and raw COPY: the rows of the \
         {} snapshot tables; the bare script: ratings, credits, keywords, links). Disk at peak: the most the \
         bench's files took during the scale (the PostgreSQL databases and WAL and the work files, sampled every \
         500 ms, plus the zip).\n",
        TABLES.len()
    );
    s
}

/// Issue 16's targets, each with its goal, what was measured at every scale, and whether it
/// was met at all of them.
pub(super) fn targets(results: &[ScaleResult]) -> String {
    let mut s = String::new();
    let yes = |b: bool| if b { "yes" } else { "**no**" };
    let at = |f: &dyn Fn(&ScaleResult) -> String| {
        results
            .iter()
            .map(|r| format!("s{}: {}", r.data.scale, f(r)))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let all = |f: &dyn Fn(&ScaleResult) -> bool| results.iter().all(f);
    let mut row = |target: &str, goal: &str, measured: String, met: &str| {
        let _ = writeln!(s, "| {target} | {goal} | {measured} | {met} |");
    };
    row("target", "goal", "measured".into(), "met");
    row("---", "---", "---".into(), "---");
    let scales: Vec<String> = results.iter().map(|r| r.data.scale.to_string()).collect();
    let wanted = ["0.25", "1", "4"];
    row(
        "the figures at scale 0.25, 1 and 4",
        "all three in one invocation",
        format!("scales {}", scales.join(", ")),
        yes(wanted.iter().all(|w| scales.iter().any(|s| s == w))),
    );
    row(
        "full run / bare psql script (its COPYs and primary key, without the unzip)",
        "≤ 1.0x at every scale",
        at(&|r| {
            format!(
                "{:.2}x (with its unzip {:.2}x)",
                median(&r.vs_bare()),
                median(&r.vs_bare_with_unzip())
            )
        }),
        yes(all(&|r| median(&r.vs_bare()) <= 1.0)),
    );
    row(
        "full run / raw COPY of the clean outputs with the same keys",
        "≤ 0.8x at every scale",
        at(&|r| format!("{:.2}x", median(&r.vs_raw()))),
        yes(all(&|r| median(&r.vs_raw()) <= 0.8)),
    );
    let peaks: Vec<f64> = results.iter().map(|r| min_max(&r.peak_rss_mib()).1).collect();
    let (lo, hi) = min_max(&peaks);
    let flat = if results.len() > 1 {
        format!("; largest {:.2}x the smallest", hi / lo)
    } else {
        "; one scale: flatness not shown".into()
    };
    row(
        "peak RSS of the run, flat in the data size",
        &format!("≤ 200 MiB at every scale, largest ≤ {PEAK_RSS_FLAT:.1}x smallest"),
        format!("{}{flat}", at(&|r| format!("{:.0} MiB", min_max(&r.peak_rss_mib()).1))),
        yes(hi <= 200.0 && results.len() > 1 && hi / lo <= PEAK_RSS_FLAT),
    );
    row(
        "clean alone (in-process `clean_zip`)",
        "≥ 150 MB/s of CSV per CPU-second",
        at(&|r| format!("{:.0} MB/s", r.clean_mb_per_cpu_s())),
        yes(all(&|r| r.clean_mb_per_cpu_s() >= 150.0)),
    );
    row(
        "task hand-off p99",
        "< 10 ms in each group of invocations",
        at(&|r| {
            format!(
                "worst group {:.1} ms (all {:.1} ms over {})",
                r.handoff_worst_p99(),
                percentile(&r.handoffs_ms(), 0.99),
                r.handoffs_ms().len()
            )
        }),
        yes(all(&|r| r.handoff_worst_p99() < 10.0)),
    );
    // A daemon figure: measured at every scale, the daemon idle (no run created) and below `goal`.
    let daemon_row = |f: fn(&DaemonFigures) -> f64| {
        move |r: &ScaleResult| r.daemon.as_ref().ok().filter(|d| d.runs_created == 0).map(f)
    };
    let shown = |v: Option<f64>, unit: &str, decimals: usize| {
        v.map(|x| format!("{x:.decimals$}{unit}"))
            .unwrap_or_else(|| "not measured".into())
    };
    let tx = daemon_row(|d| d.tx_per_s());
    row(
        "idle daemon: database transactions",
        "< 1 per second",
        at(&|r| shown(tx(r), "/s", 2)),
        yes(all(&|r| tx(r).is_some_and(|x| x < 1.0))),
    );
    let cpu = daemon_row(|d| d.cpu_percent());
    row(
        "idle daemon: CPU",
        "< 0.5 % of one core",
        at(&|r| shown(cpu(r), " %", 2)),
        yes(all(&|r| cpu(r).is_some_and(|x| x < 0.5))),
    );
    let rss = daemon_row(|d| d.rss_kib.map(|k| k as f64 / 1024.0).unwrap_or(f64::NAN));
    row(
        "idle daemon: RSS (issue 6)",
        "< 30 MiB",
        at(&|r| shown(rss(r), " MiB", 1)),
        yes(all(&|r| rss(r).is_some_and(|x| x < 30.0))),
    );
    // (times, failed runs) of one start-up command.
    let starts = |r: &ScaleResult, cmd: &str| -> (Vec<f64>, usize) {
        let times = if cmd == "--version" {
            &r.startup.version_ms
        } else {
            &r.startup.runs_list_ms
        };
        let prefix = format!("reelflow {cmd} ");
        (
            times.clone(),
            r.startup.failures.iter().filter(|e| e.starts_with(&prefix)).count(),
        )
    };
    for (cmd, label) in [
        ("--version", "`reelflow --version` start-up"),
        (
            "runs list",
            "`reelflow runs list` start-up, against the running PostgreSQL",
        ),
    ] {
        row(
            label,
            "< 20 ms (p90 of 20 runs)",
            at(&|r| {
                let (t, failed) = starts(r, cmd);
                let failed = if failed == 0 {
                    String::new()
                } else {
                    format!(", {failed} runs failed")
                };
                format!("median {:.1} ms, p90 {:.1} ms{failed}", median(&t), percentile(&t, 0.9))
            }),
            yes(all(&|r| {
                let (t, failed) = starts(r, cmd);
                failed == 0 && percentile(&t, 0.9) < 20.0
            })),
        );
    }
    let rerun_ok = |r: &ScaleResult| r.rerun.wall < 2.0 && r.rerun.snapshot_reused;
    row(
        "`--rerun` of an unchanged source",
        "< 2 s, nothing reloaded",
        at(&|r| {
            format!(
                "{}{}",
                fmt_s(r.rerun.wall),
                if r.rerun.snapshot_reused {
                    ""
                } else {
                    " (re-cleaned and re-loaded)"
                }
            )
        }),
        yes(all(&rerun_ok)),
    );
    format!("### Issue 16 targets\n\n{s}")
}

/// Cores other processes may keep busy before the section says the machine was shared.
const SHARED_CORES: f64 = 0.25;

/// Groups the unchanged-source reruns' hand-offs are reported in, so that a reader sees the p99
/// hold in each, not only over all of them.
const HANDOFF_GROUPS: usize = 3;

/// "The same at all scales": the largest scale's peak RSS at most this many times the smallest's.
const PEAK_RSS_FLAT: f64 = 1.2;

pub(super) fn median(v: &[f64]) -> f64 {
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

pub(super) fn fmt_s(x: f64) -> String {
    if x.is_nan() {
        "–".into()
    } else if x < 10.0 {
        format!("{x:.2} s")
    } else {
        format!("{x:.1} s")
    }
}

fn fmt_int(n: u64) -> String {
    reelflow_load::thousands(n as i64)
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

#[cfg(test)]
mod tests {
    use super::*;

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
