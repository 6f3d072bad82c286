//! Every metric reelflow exports, declared in one place, rendered in the Prometheus text
//! format (0.0.4). Labels are bounded: DAG and task ids, outcomes, table and file names of the
//! dataset and reject reason codes — never run ids, periods or paths.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Buckets for stages that last from a second to hours.
pub const DURATION_BUCKETS: &[f64] = &[
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0, 21600.0,
];

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

enum Kind {
    Counter,
    Gauge,
    Histogram(&'static [f64]),
}

/// One metric family: its name, help, type and series.
pub struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    values: Mutex<BTreeMap<Labels, f64>>,
    histograms: Mutex<BTreeMap<Labels, Histogram>>,
}

impl Family {
    const fn new(name: &'static str, help: &'static str, kind: Kind) -> Family {
        Family {
            name,
            help,
            kind,
            values: Mutex::new(BTreeMap::new()),
            histograms: Mutex::new(BTreeMap::new()),
        }
    }

    fn labels(pairs: &[(&'static str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    /// Adds to a counter (or gauge).
    pub fn inc_by(&self, pairs: &[(&'static str, &str)], v: f64) {
        *self.values.lock().unwrap().entry(Self::labels(pairs)).or_insert(0.0) += v;
    }

    pub fn inc(&self, pairs: &[(&'static str, &str)]) {
        self.inc_by(pairs, 1.0)
    }

    pub fn set(&self, pairs: &[(&'static str, &str)], v: f64) {
        self.values.lock().unwrap().insert(Self::labels(pairs), v);
    }

    /// Declares a series at zero so it exists before its first event.
    pub fn touch(&self, pairs: &[(&'static str, &str)]) {
        match self.kind {
            Kind::Histogram(b) => {
                self.histograms
                    .lock()
                    .unwrap()
                    .entry(Self::labels(pairs))
                    .or_insert_with(|| Histogram {
                        counts: vec![0; b.len()],
                        ..Default::default()
                    });
            }
            _ => {
                self.values.lock().unwrap().entry(Self::labels(pairs)).or_insert(0.0);
            }
        }
    }

    pub fn observe(&self, pairs: &[(&'static str, &str)], v: f64) {
        let Kind::Histogram(buckets) = self.kind else { return };
        let mut h = self.histograms.lock().unwrap();
        let e = h.entry(Self::labels(pairs)).or_insert_with(|| Histogram {
            counts: vec![0; buckets.len()],
            ..Default::default()
        });
        for (i, b) in buckets.iter().enumerate() {
            if v <= *b {
                e.counts[i] += 1;
            }
        }
        e.sum += v;
        e.count += 1;
    }

    fn render(&self, out: &mut String) {
        let kind = match self.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram(_) => "histogram",
        };
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {kind}", self.name);
        match self.kind {
            Kind::Histogram(buckets) => {
                for (labels, h) in self.histograms.lock().unwrap().iter() {
                    for (i, b) in buckets.iter().enumerate() {
                        let le = format_value(*b);
                        let _ = writeln!(
                            out,
                            "{}_bucket{} {}",
                            self.name,
                            fmt_labels(labels, Some(&le)),
                            h.counts[i]
                        );
                    }
                    let _ = writeln!(
                        out,
                        "{}_bucket{} {}",
                        self.name,
                        fmt_labels(labels, Some("+Inf")),
                        h.count
                    );
                    let _ = writeln!(
                        out,
                        "{}_sum{} {}",
                        self.name,
                        fmt_labels(labels, None),
                        format_value(h.sum)
                    );
                    let _ = writeln!(out, "{}_count{} {}", self.name, fmt_labels(labels, None), h.count);
                }
            }
            _ => {
                for (labels, v) in self.values.lock().unwrap().iter() {
                    let _ = writeln!(out, "{}{} {}", self.name, fmt_labels(labels, None), format_value(*v));
                }
            }
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn fmt_labels(labels: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn format_value(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

macro_rules! families {
    ($($field:ident: $kind:expr, $name:literal, $help:literal;)*) => {
        /// All of reelflow's metrics.
        pub struct Metrics { $(pub $field: Family,)* }
        impl Metrics {
            const fn new() -> Metrics { Metrics { $($field: Family::new($name, $help, $kind),)* } }
            /// The metrics in the Prometheus text format, process metrics included.
            pub fn render(&self) -> String {
                let mut out = String::new();
                $(self.$field.render(&mut out);)*
                process_metrics(&mut out);
                out
            }
        }
    };
}

families! {
    task_attempts: Kind::Counter, "reelflow_task_attempts_total", "Task attempts finished, by outcome (success, failed, timeout, cancelled, lease_expired).";
    task_duration: Kind::Histogram(DURATION_BUCKETS), "reelflow_task_duration_seconds", "Duration of task attempts.";
    task_retries: Kind::Counter, "reelflow_task_retries_total", "Failed attempts that were scheduled for another try.";
    dag_runs: Kind::Counter, "reelflow_dag_runs_total", "DAG runs that finished in this process, by final state (alert on the store's series below).";
    runs_in_state: Kind::Gauge, "reelflow_dag_runs_in_state", "DAG runs by their current state, queued, running, success or failed (from the store).";
    runs_failed_last_hour: Kind::Gauge, "reelflow_dag_runs_failed_last_hour", "DAG runs that are failed and ended within the last hour, by any process or operator (from the store).";
    latest_run_state: Kind::Gauge, "reelflow_dag_latest_run_state", "1 for the state of the DAG's most recently changed run, 0 for the other states (from the store).";
    task_instances_in_state: Kind::Gauge, "reelflow_task_instances_in_state", "Task instances of all runs by task and state, up_for_retry and queued included (from the store).";
    dag_run_duration: Kind::Histogram(DURATION_BUCKETS), "reelflow_dag_run_duration_seconds", "Duration of DAG runs from start to their final state.";
    last_success: Kind::Gauge, "reelflow_last_success_timestamp_seconds", "Unix time of the end of the DAG's last successful run (from the store).";
    running_tasks: Kind::Gauge, "reelflow_running_tasks", "Task attempts running in this process.";
    oldest_running: Kind::Gauge, "reelflow_task_oldest_running_seconds", "Age of the oldest running attempt of the task across all workers (0 when none).";
    task_timeout: Kind::Gauge, "reelflow_task_timeout_seconds", "The task's configured timeout.";
    lease_expirations: Kind::Counter, "reelflow_lease_expirations_total", "Attempts whose lease expired and were taken away from their worker (seen by this process).";
    fenced_results: Kind::Counter, "reelflow_fenced_results_total", "Results refused because the attempt no longer held its lease.";
    fetch_bytes: Kind::Counter, "reelflow_fetch_bytes_total", "Bytes downloaded by the fetch stage.";
    rows: Kind::Counter, "reelflow_rows_total", "Rows processed, by stage, table and outcome.";
    rejected_rows: Kind::Counter, "reelflow_rejected_rows_total", "Rows rejected by the clean stage, by source file and reason.";
    gate_check_passed: Kind::Gauge, "reelflow_gate_check_passed", "1 when the quality gate's check passed for the newest judged snapshot, 0 when it failed (from the store), by check name.";
    gate_check_value: Kind::Gauge, "reelflow_gate_check_value", "What the quality gate's check measured for the newest judged snapshot (from the store), by check name.";
    scheduler_heartbeat: Kind::Gauge, "reelflow_scheduler_heartbeat_timestamp_seconds", "Unix time of the scheduler loop's last turn.";
    build_info: Kind::Gauge, "reelflow_build_info", "Build information; always 1.";
}

/// The process-wide registry.
pub static METRICS: Metrics = Metrics::new();

/// The quality gate's checks of the newest judged snapshot, one series per check name.
pub fn observe_gate(dag: &str, checks: &[reelflow_load::Check]) {
    let m = &METRICS;
    for c in checks {
        m.gate_check_passed
            .set(&[("dag", dag), ("check", &c.name)], if c.passed { 1.0 } else { 0.0 });
        m.gate_check_value.set(&[("dag", dag), ("check", &c.name)], c.value);
    }
}

/// Counts a run that reached its final state, and its duration.
pub fn record_run_end(end: &reelflow_store::runs::RunEnd) {
    METRICS
        .dag_runs
        .inc(&[("dag", end.dag_id.as_str()), ("state", end.state.as_str())]);
    METRICS
        .dag_run_duration
        .observe(&[("dag", end.dag_id.as_str())], end.seconds);
}

/// Records what a task's output measured ([`reelflow_dag::Stage::measures`]).
pub fn observe(task: &str, measures: &[reelflow_dag::Measure]) {
    use reelflow_dag::Measure;
    let m = &METRICS;
    for measure in measures {
        match measure {
            Measure::Downloaded(n) => m.fetch_bytes.inc_by(&[], *n as f64),
            Measure::Rows { table, outcome, n } => m
                .rows
                .inc_by(&[("stage", task), ("table", table), ("outcome", outcome)], *n as f64),
            Measure::Rejected { file, reason, n } => {
                m.rejected_rows.inc_by(&[("file", file), ("reason", reason)], *n as f64)
            }
        }
    }
}

/// `process_*` metrics from /proc (Linux); nothing elsewhere.
fn process_metrics(out: &mut String) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let ticks = 100.0; // USER_HZ is 100 on Linux for every supported architecture.
    let page = 4096.0;
    let (utime, stime, start, vsize, rss) = (num(11), num(12), num(19), num(20), num(21));
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("btime"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    let fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0) as f64;
    let mut emit = |name: &str, kind: &str, help: &str, v: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
            format_value(v)
        );
    };
    emit(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        (utime + stime) / ticks,
    );
    emit(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        rss * page,
    );
    emit(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        vsize,
    );
    emit(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        boot + start / ticks,
    );
    emit("process_open_fds", "gauge", "Number of open file descriptors.", fds);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_text_format() {
        let m = Metrics::new();
        m.task_attempts
            .inc(&[("dag", "d"), ("task", "t"), ("outcome", "success")]);
        m.task_duration.observe(&[("dag", "d"), ("task", "t")], 3.0);
        m.build_info.set(&[("version", "1.2.3")], 1.0);
        let text = m.render();
        assert!(text.contains("# TYPE reelflow_task_attempts_total counter\nreelflow_task_attempts_total{dag=\"d\",task=\"t\",outcome=\"success\"} 1\n"), "{text}");
        assert!(text.contains("reelflow_task_duration_seconds_bucket{dag=\"d\",task=\"t\",le=\"2.5\"} 0\n"));
        assert!(text.contains("reelflow_task_duration_seconds_bucket{dag=\"d\",task=\"t\",le=\"5\"} 1\n"));
        assert!(text.contains("reelflow_task_duration_seconds_bucket{dag=\"d\",task=\"t\",le=\"+Inf\"} 1\n"));
        assert!(text.contains("reelflow_task_duration_seconds_sum{dag=\"d\",task=\"t\"} 3\n"));
        assert!(text.contains("reelflow_build_info{version=\"1.2.3\"} 1\n"));
        assert!(text.contains("process_resident_memory_bytes "));
    }
}
