//! The engine's dedicated LISTEN connection: the store announces work on
//! [`runs::WORK_CHANNEL`] inside the transactions that make it, and this task passes each
//! notification on to the engine's loop at once. A lost connection is logged once, reported
//! (the engine polls meanwhile) and reconnected with backoff; after a reconnect the engine
//! looks for work once, as notifications sent in between are lost.

use std::time::Duration;

use reelflow_store::runs::{self, Notice};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::{mpsc, watch};

/// What the listener tells the engine's loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Listening (first time or again): notifications from now on arrive; any sent before
    /// may have been missed.
    Listening,
    /// The connection is gone: poll until [`Signal::Listening`].
    Lost,
    Notice(Notice),
}

/// The `application_name` of the listener's connection (how an operator, or a test, finds it
/// in `pg_stat_activity`).
pub const APPLICATION_NAME: &str = "reelflow listener";

const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Starts the listener task on the server and database of `opts`; it ends when `stop` is set
/// or the engine's loop is gone.
pub fn spawn(
    opts: &PgConnectOptions,
    worker: &str,
    signals: mpsc::UnboundedSender<Signal>,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let opts = opts.clone().application_name(APPLICATION_NAME);
    let worker = worker.to_string();
    tokio::spawn(async move { listen(opts, worker, signals, stop).await })
}

async fn connect(opts: &PgConnectOptions) -> Result<PgListener, sqlx::Error> {
    // A pool of one connection without idle or lifetime limits: the listener holds it for as
    // long as it lives.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(opts.clone())
        .await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    // Reconnecting is ours to do (with backoff, and telling the engine).
    listener.eager_reconnect(false);
    listener.listen(runs::WORK_CHANNEL).await?;
    Ok(listener)
}

async fn listen(
    opts: PgConnectOptions,
    worker: String,
    signals: mpsc::UnboundedSender<Signal>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = FIRST_BACKOFF;
    // Whether the current outage has been logged: once per outage, not once per try.
    let mut down_logged = false;
    let mut ever_listened = false;
    loop {
        if *stop.borrow() {
            return;
        }
        let attempt = tokio::select! {
            r = connect(&opts) => r,
            _ = stop.changed() => return,
        };
        match attempt {
            Ok(mut listener) => {
                if down_logged {
                    tracing::info!(worker = %worker, "listening for work notifications again");
                } else if !ever_listened {
                    tracing::debug!(worker = %worker, channel = runs::WORK_CHANNEL, "listening for work notifications");
                }
                ever_listened = true;
                backoff = FIRST_BACKOFF;
                if signals.send(Signal::Listening).is_err() {
                    return;
                }
                let why = loop {
                    let next = tokio::select! {
                        n = listener.try_recv() => n,
                        _ = stop.changed() => return,
                    };
                    match next {
                        Ok(Some(n)) => match Notice::parse(n.payload()) {
                            Some(notice) => {
                                if signals.send(Signal::Notice(notice)).is_err() {
                                    return;
                                }
                            }
                            None => tracing::debug!(payload = n.payload(), "ignoring an unknown work notification"),
                        },
                        Ok(None) => break "the connection was closed".to_string(),
                        Err(e) => break e.to_string(),
                    }
                };
                drop(listener);
                if signals.send(Signal::Lost).is_err() {
                    return;
                }
                // Logged once per outage: failed reconnects are not logged again.
                tracing::warn!(worker = %worker, reason = %why,
                    "lost the LISTEN connection for work notifications: polling meanwhile, reconnecting");
                down_logged = true;
            }
            Err(e) => {
                if !down_logged {
                    tracing::warn!(worker = %worker, error = %reelflow_store::connect_reason(&e),
                        "cannot LISTEN for work notifications: polling meanwhile, reconnecting");
                    down_logged = true;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
