//! Progress of a long stage, as a typed event: a stage calls [`report_progress`]; whoever
//! shows progress (the terminal bar of `reelflow run`, the operators' page) reads it back with
//! [`ProgressEvent::from_event`] from a tracing layer, inside the attempt's span. The event is
//! also an ordinary log line with the stage's own message, so logs keep saying what happens.

use tracing::field::{Field, Visit};

/// What a count counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Records,
    /// A step without a count (`building keys and indexes`): `done` and `total` are 0.
    Step,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Bytes => "bytes",
            Unit::Records => "records",
            Unit::Step => "step",
        }
    }
}

/// The target of progress events; [`ProgressEvent::from_event`] reads only these.
pub const PROGRESS_TARGET: &str = "reelflow::progress";

/// A stage's progress at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgressEvent {
    /// What is being worked on: a file or entry name, or the step.
    pub item: String,
    pub done: u64,
    /// Known total, when there is one (a download's size).
    pub total: Option<u64>,
    pub unit: Unit,
    /// Average rate since the item started, in `unit`s per second.
    pub per_sec: f64,
}

/// Reports progress: one INFO event with target [`PROGRESS_TARGET`], the stage's `message`
/// (`downloading`, `cleaning`, `copying`, ...) and the fields of `p`.
pub fn report_progress(message: &str, p: &ProgressEvent) {
    tracing::info!(
        target: "reelflow::progress",
        item = %p.item,
        done = p.done,
        total = p.total,
        unit = p.unit.as_str(),
        per_sec = p.per_sec.round() as u64,
        "{message}"
    );
}

#[derive(Default)]
struct Fields {
    item: Option<String>,
    done: u64,
    total: Option<u64>,
    unit: Option<Unit>,
    per_sec: f64,
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "done" => self.done = value,
            "total" => self.total = Some(value),
            "per_sec" => self.per_sec = value as f64,
            _ => {}
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "unit" {
            self.unit = match value {
                "bytes" => Some(Unit::Bytes),
                "records" => Some(Unit::Records),
                "step" => Some(Unit::Step),
                _ => None,
            };
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "item" {
            self.item = Some(format!("{value:?}"));
        }
    }
}

impl ProgressEvent {
    /// The progress an event carries, if it is a progress event.
    pub fn from_event(event: &tracing::Event<'_>) -> Option<ProgressEvent> {
        if event.metadata().target() != PROGRESS_TARGET {
            return None;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        Some(ProgressEvent {
            item: f.item?,
            done: f.done,
            total: f.total,
            unit: f.unit?,
            per_sec: f.per_sec,
        })
    }

    /// A step without a count.
    pub fn step(item: impl Into<String>) -> ProgressEvent {
        ProgressEvent {
            item: item.into(),
            done: 0,
            total: None,
            unit: Unit::Step,
            per_sec: 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::{Context, SubscriberExt};

    use super::*;

    struct Keep(Arc<Mutex<Vec<ProgressEvent>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Keep {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            if let Some(p) = ProgressEvent::from_event(event) {
                self.0.lock().unwrap().push(p);
            }
        }
    }

    #[test]
    fn a_reported_event_reads_back_as_the_same_progress_and_other_events_do_not() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Keep(seen.clone()));
        let sent = ProgressEvent {
            item: "ratings.csv".into(),
            done: 65536,
            total: Some(1 << 20),
            unit: Unit::Records,
            per_sec: 900000.0,
        };
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(done = 5u64, unit = "bytes", item = "x", "not progress: another target");
            report_progress("cleaning", &sent);
            report_progress("building", &ProgressEvent::step("building reports"));
        });
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0], sent);
        assert_eq!(seen[1], ProgressEvent::step("building reports"));
    }
}
