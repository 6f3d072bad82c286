//! The live progress display of `reelflow run` in an interactive terminal: a bar over the DAG's
//! tasks with the running task's latest progress (bytes or rows and rate), redrawn in place on
//! stderr. It reads the task states from the store and the progress from the stages' own
//! progress log events, so the stages need no terminal code.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reelflow_dag::TaskState;
use sqlx::PgPool;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// The latest progress message of a stage, shared between the layer and the renderer.
#[derive(Clone, Default)]
pub struct Latest(Arc<Mutex<String>>);

/// A tracing layer that keeps the latest progress event (`downloading`, `cleaning`, `copying`).
pub struct ProgressLayer(pub Latest);

#[derive(Default)]
struct Fields {
    message: String,
    rest: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.rest.push((field.name().to_string(), value.to_string()));
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let v = format!("{value:?}").trim_matches('"').to_string();
        if field.name() == "message" {
            self.message = v;
        } else {
            self.rest.push((field.name().to_string(), v));
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for ProgressLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        let get = |k: &str| {
            f.rest
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        let text = match f.message.as_str() {
            "downloading" if !get("percent").is_empty() => {
                format!(
                    "{} MiB, {}% at {} MiB/s",
                    mib(get("bytes")),
                    get("percent"),
                    get("mib_per_s")
                )
            }
            "downloading" => format!("{} MiB at {} MiB/s", mib(get("bytes")), get("mib_per_s")),
            "cleaning" => format!(
                "{}: {} records, {} records/s",
                get("entry"),
                get("records"),
                get("records_per_sec")
            ),
            "cleaned entry" => format!("{}: {} records done", get("entry"), get("records")),
            "copying" => {
                let file = get("file").rsplit('/').next().unwrap_or("").to_string();
                format!("{file}: {} MB at {} MB/s", get("mb_sent"), get("mb_per_sec"))
            }
            "COPY done" => "building keys and indexes".to_string(),
            "keys and indexes built" => "building reports".to_string(),
            _ => return,
        };
        *self.0 .0.lock().unwrap() = text;
    }
}

fn mib(bytes: &str) -> String {
    bytes
        .parse::<f64>()
        .map(|b| format!("{:.1}", b / 1048576.0))
        .unwrap_or_default()
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
