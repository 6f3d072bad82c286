//! The live progress display of `reelflow run` in an interactive terminal: a bar over the DAG's
//! tasks with the running task's latest progress (bytes or rows and rate), redrawn in place on
//! stderr. It reads the task states from the store and the progress from the stages' typed
//! progress events ([`reelflow_dag::report_progress`]), so the stages need no terminal code.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reelflow_dag::{ProgressEvent, TaskState, Unit};
use sqlx::PgPool;
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// The latest progress of a stage, shared between the layer and the renderer.
#[derive(Clone, Default)]
pub struct Latest(Arc<Mutex<String>>);

/// A tracing layer that keeps the latest progress event ([`ProgressEvent`]) of the stages.
pub struct ProgressLayer(pub Latest);

impl<S: tracing::Subscriber> Layer<S> for ProgressLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if let Some(p) = ProgressEvent::from_event(event) {
            *self.0 .0.lock().unwrap() = describe(&p);
        }
    }
}

/// One line for a progress event: `ratings.csv: 65536 records, 900000 records/s`.
pub fn describe(p: &ProgressEvent) -> String {
    let mib = |b: u64| format!("{:.1}", b as f64 / 1048576.0);
    match p.unit {
        Unit::Bytes => match p.total {
            Some(total) if total > 0 => format!(
                "{}: {} MiB, {:.1}% at {} MiB/s",
                p.item,
                mib(p.done),
                p.done as f64 * 100.0 / total as f64,
                mib(p.per_sec as u64)
            ),
            _ => format!("{}: {} MiB at {} MiB/s", p.item, mib(p.done), mib(p.per_sec as u64)),
        },
        Unit::Records => format!("{}: {} records, {} records/s", p.item, p.done, p.per_sec as u64),
        Unit::Step => p.item.clone(),
    }
}

/// Redraws the status line every 200 ms until dropped; clears it at the end.
pub struct Renderer {
    stop: tokio::sync::watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

impl Renderer {
    pub fn start(pool: PgPool, run_id: i64, latest: Latest) -> Renderer {
        let (stop, mut rx) = tokio::sync::watch::channel(false);
        let handle = tokio::spawn(async move {
            let started = Instant::now();
            let mut tasks: Vec<(String, TaskState)> = Vec::new();
            let mut tick = 0u32;
            loop {
                if tick.is_multiple_of(5) {
                    if let Ok(t) = reelflow_store::runs::task_instances(&pool, run_id).await {
                        tasks = t.into_iter().map(|t| (t.task_id, t.state)).collect();
                    }
                }
                tick += 1;
                let line = {
                    let detail = latest.0.lock().unwrap();
                    render(&tasks, &detail, started.elapsed())
                };
                {
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "\r\x1b[2K{line}");
                    let _ = err.flush();
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = rx.changed() => break,
                }
            }
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        });
        Renderer { stop, handle }
    }

    pub async fn finish(self) {
        let _ = self.stop.send(true);
        let _ = self.handle.await;
    }
}

fn render(tasks: &[(String, TaskState)], detail: &str, elapsed: Duration) -> String {
    let done = tasks.iter().filter(|(_, s)| *s == TaskState::Success).count();
    let width = 24;
    let filled = if tasks.is_empty() {
        0
    } else {
        done * width / tasks.len()
    };
    let mut s = format!(
        "[{}{}] {done}/{} ",
        "#".repeat(filled),
        "-".repeat(width - filled),
        tasks.len()
    );
    if let Some((id, state)) = tasks
        .iter()
        .find(|(_, s)| matches!(s, TaskState::Running | TaskState::UpForRetry))
    {
        let _ = write!(s, "{id} {state}");
        if *state == TaskState::Running && !detail.is_empty() {
            let _ = write!(s, ": {detail}");
        }
    }
    let secs = elapsed.as_secs();
    let _ = write!(s, "  {:02}:{:02}", secs / 60, secs % 60);
    s.chars().take(terminal_width()).collect()
}

fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_each_kind_of_progress() {
        let p = |done, total, unit, per_sec| ProgressEvent {
            item: "x".into(),
            done,
            total,
            unit,
            per_sec,
        };
        assert_eq!(
            describe(&p(3 << 20, Some(12 << 20), Unit::Bytes, 1048576.0)),
            "x: 3.0 MiB, 25.0% at 1.0 MiB/s"
        );
        assert_eq!(describe(&p(3 << 20, None, Unit::Bytes, 0.0)), "x: 3.0 MiB at 0.0 MiB/s");
        assert_eq!(
            describe(&p(65536, None, Unit::Records, 9e5)),
            "x: 65536 records, 900000 records/s"
        );
        assert_eq!(describe(&ProgressEvent::step("building reports")), "building reports");
    }

    #[test]
    fn renders_a_bar_with_the_running_task() {
        let tasks: Vec<(String, TaskState)> = [
            ("fetch", TaskState::Success),
            ("clean", TaskState::Running),
            ("load", TaskState::None),
            ("publish", TaskState::None),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), *b))
        .collect();
        let line = render(
            &tasks,
            "ratings.csv: 65536 records, 900000 records/s",
            Duration::from_secs(75),
        );
        assert_eq!(
            line,
            "[######------------------] 1/4 clean running: ratings.csv: 65536 records, 900000 records/s  01:15"
        );
    }
}
