//! Per-attempt logs: a tracing [`Layer`] that captures the lines emitted inside a task
//! attempt's span and stores them in PostgreSQL (`reelflow.attempt_logs` and
//! `attempt_log_lines`, migration 0006), so the operators' page can show each try's log.
//!
//! The engine opens a `task` span per attempt and calls [`attach`] on it; from then on every
//! event inside that span (or a span below it) is formatted as one text line and handed to a
//! writer task of that attempt. The writer keeps only the newest [`MAX_LINES`] lines and
//! [`MAX_BYTES`] bytes (counting the ones it cut), inserts new lines in batches (every
//! [`FLUSH_LINES`] lines or [`FLUSH_EVERY`]), and flushes a last time when the span closes.
//! Other layers (stdout JSON) are not affected.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// At most this many lines are kept per attempt.
pub const MAX_LINES: usize = 5_000;
/// At most this many bytes of lines are kept per attempt.
pub const MAX_BYTES: usize = 2 * 1024 * 1024;
/// A single line longer than this is cut.
pub const MAX_LINE: usize = 16 * 1024;
/// A batch is written once it has this many lines...
pub const FLUSH_LINES: usize = 500;
/// ...or this long after the last write.
pub const FLUSH_EVERY: Duration = Duration::from_millis(700);
/// Lines waiting for the writer; past this (a very slow database) new lines are dropped and
/// counted as cut.
pub const QUEUE: usize = 20_000;

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// The capturing layer; add it to the subscriber next to the stdout layer.
pub struct AttemptLogLayer(());

impl AttemptLogLayer {
    #[allow(clippy::new_without_default)]
    pub fn new() -> AttemptLogLayer {
        INSTALLED.store(true, Ordering::Relaxed);
        AttemptLogLayer(())
    }
}

/// Installs a global subscriber that only captures attempt logs (for tests and tools that
/// have no subscriber of their own). Does nothing when one is already set.
pub fn init_capture_only() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let _ = tracing_subscriber::registry().with(AttemptLogLayer::new()).try_init();
}

/// Stored in the attempt span's extensions; dropping it (span close) ends the writer.
struct Capture {
    tx: mpsc::Sender<String>,
    dropped: Arc<AtomicI64>,
}

/// Starts capturing the events of `span` into the log of `attempt_id`. A no-op unless an
/// [`AttemptLogLayer`] is installed in the current subscriber.
pub fn attach(span: &tracing::Span, pool: &PgPool, attempt_id: i64) {
    if !INSTALLED.load(Ordering::Relaxed) {
        return;
    }
    span.with_subscriber(|(id, dispatch)| {
        let Some(registry) = dispatch.downcast_ref::<tracing_subscriber::Registry>() else {
            return;
        };
        let Some(data) = registry.span(id) else {
            return;
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicI64::new(0));
        tokio::spawn(writer(pool.clone(), attempt_id, rx, dropped.clone()));
        data.extensions_mut().insert(Capture { tx, dropped });
    });
}

impl<S> Layer<S> for AttemptLogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        for span in scope {
            if let Some(c) = span.extensions().get::<Capture>() {
                if c.tx.try_send(format_line(event)).is_err() {
                    c.dropped.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
        }
    }
}

struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={:?}", field.name(), value);
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={:?}", field.name(), value);
        }
    }
}

/// `2026-12-01T14:00:00.123Z  INFO reelflow_fetch: message key=value`.
fn format_line(event: &Event<'_>) -> String {
    let mut f = Fields {
        message: String::new(),
        rest: String::new(),
    };
    event.record(&mut f);
    let meta = event.metadata();
    let mut line = format!(
        "{} {:>5} {}: {}{}",
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        meta.level(),
        meta.target(),
        f.message,
        f.rest
    );
    if line.len() > MAX_LINE {
        let mut cut = MAX_LINE;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str(" [line cut]");
    }
    line
}

/// The bounded window of one attempt's lines.
struct Window {
    seq: i64,
    kept: VecDeque<(i64, usize)>,
    bytes: usize,
    cut: i64,
    pending: Vec<(i64, String)>,
    dropped: Arc<AtomicI64>,
}

impl Window {
    fn push(&mut self, line: String) {
        self.seq += 1;
        self.kept.push_back((self.seq, line.len()));
        self.bytes += line.len();
        self.pending.push((self.seq, line));
        while self.kept.len() > MAX_LINES || self.bytes > MAX_BYTES {
            let (_, n) = self.kept.pop_front().expect("not empty");
            self.bytes -= n;
            self.cut += 1;
        }
    }
    fn first_kept(&self) -> i64 {
        self.kept.front().map(|k| k.0).unwrap_or(self.seq + 1)
    }
}

async fn flush(pool: &PgPool, attempt_id: i64, w: &mut Window, finished: bool) -> Result<(), sqlx::Error> {
    let first = w.first_kept();
    // Lines the queue dropped count as cut (and as logged).
    let lost = w.dropped.swap(0, Ordering::Relaxed);
    w.cut += lost;
    w.seq += lost;
    w.pending.retain(|(s, _)| *s >= first);
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO reelflow.attempt_logs (attempt_id, lines_total, lines_cut, finished) VALUES ($1, $2, $3, $4)
         ON CONFLICT (attempt_id) DO UPDATE SET lines_total = $2, lines_cut = $3, finished = $4, updated_at = now()",
    )
    .bind(attempt_id)
    .bind(w.seq)
    .bind(w.cut)
    .bind(finished)
    .execute(&mut *tx)
    .await?;
    if !w.pending.is_empty() {
        let (seqs, lines): (Vec<i64>, Vec<String>) = w.pending.iter().cloned().unzip();
        sqlx::query(
            "INSERT INTO reelflow.attempt_log_lines (attempt_id, seq, line)
             SELECT $1, s, l FROM unnest($2::bigint[], $3::text[]) AS t (s, l) ON CONFLICT DO NOTHING",
        )
        .bind(attempt_id)
        .bind(&seqs)
        .bind(&lines)
        .execute(&mut *tx)
        .await?;
    }
    if w.cut > 0 {
        sqlx::query("DELETE FROM reelflow.attempt_log_lines WHERE attempt_id = $1 AND seq < $2")
            .bind(attempt_id)
            .bind(first)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    w.pending.clear();
    Ok(())
}

async fn writer(pool: PgPool, attempt_id: i64, mut rx: mpsc::Receiver<String>, dropped: Arc<AtomicI64>) {
    let mut w = Window {
        seq: 0,
        kept: VecDeque::new(),
        bytes: 0,
        cut: 0,
        pending: Vec::new(),
        dropped,
    };
    let mut last = Instant::now();
    loop {
        let wait = FLUSH_EVERY.saturating_sub(last.elapsed());
        let closed = match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Some(line)) => {
                w.push(line);
                false
            }
            Ok(None) => true,
            Err(_) => false,
        };
        if closed {
            for i in 0..5u32 {
                match flush(&pool, attempt_id, &mut w, true).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(attempt_id, error = %e, "storing the attempt log failed; retrying");
                        tokio::time::sleep(Duration::from_millis(200 << i)).await;
                    }
                }
            }
            return;
        }
        if w.pending.len() >= FLUSH_LINES || (last.elapsed() >= FLUSH_EVERY && !w.pending.is_empty()) {
            if let Err(e) = flush(&pool, attempt_id, &mut w, false).await {
                tracing::warn!(attempt_id, error = %e, "storing the attempt log failed; will retry");
            }
            last = Instant::now();
        } else if last.elapsed() >= FLUSH_EVERY {
            last = Instant::now();
        }
    }
}

/// An attempt's stored log: its lines (oldest first) and how many earlier lines were cut.
#[derive(Debug, Clone, Default)]
pub struct StoredLog {
    pub lines: Vec<String>,
    pub lines_total: i64,
    pub lines_cut: i64,
    pub finished: bool,
    pub found: bool,
}

pub async fn read(pool: &PgPool, attempt_id: i64) -> Result<StoredLog, sqlx::Error> {
    let head: Option<(i64, i64, bool)> =
        sqlx::query_as("SELECT lines_total, lines_cut, finished FROM reelflow.attempt_logs WHERE attempt_id = $1")
            .bind(attempt_id)
            .fetch_optional(pool)
            .await?;
    let Some((lines_total, lines_cut, finished)) = head else {
        return Ok(StoredLog::default());
    };
    let lines: Vec<String> =
        sqlx::query_scalar("SELECT line FROM reelflow.attempt_log_lines WHERE attempt_id = $1 ORDER BY seq")
            .bind(attempt_id)
            .fetch_all(pool)
            .await?;
    Ok(StoredLog {
        lines,
        lines_total,
        lines_cut,
        finished,
        found: true,
    })
}

impl StoredLog {
    /// The note shown above a log whose oldest lines were cut.
    pub fn cut_note(&self) -> Option<String> {
        (self.lines_cut > 0).then(|| {
            format!(
                "[reelflow: the first {} of {} lines were cut; the last {} lines (at most {} lines or {} MiB) are kept]",
                self.lines_cut,
                self.lines_total,
                self.lines.len(),
                MAX_LINES,
                MAX_BYTES / (1024 * 1024)
            )
        })
    }

    /// The whole log as text, with the cut note first.
    pub fn text(&self) -> String {
        let mut out = String::new();
        if let Some(n) = self.cut_note() {
            out.push_str(&n);
            out.push('\n');
        }
        for l in &self.lines {
            out.push_str(l);
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_keeps_the_newest_lines_within_both_bounds() {
        let mut w = Window {
            seq: 0,
            kept: VecDeque::new(),
            bytes: 0,
            cut: 0,
            pending: Vec::new(),
            dropped: Arc::default(),
        };
        for i in 0..(MAX_LINES + 10) {
            w.push(format!("line {i}"));
        }
        assert_eq!(w.kept.len(), MAX_LINES);
        assert_eq!(w.cut, 10);
        assert_eq!(w.first_kept(), 11);
        let big = "x".repeat(MAX_LINE);
        for _ in 0..(MAX_BYTES / MAX_LINE + 5) {
            w.push(big.clone());
        }
        assert!(w.bytes <= MAX_BYTES, "{}", w.bytes);
        assert!(w.kept.iter().all(|(_, n)| *n == MAX_LINE));
    }
}
