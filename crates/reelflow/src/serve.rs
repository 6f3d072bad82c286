//! `reelflow serve`: the scheduler loop, the executor and the HTTP server in one process.
//! SIGTERM (or Ctrl-C) stops claiming, lets running tasks finish within the grace period,
//! cancels what is left so its lease passes cleanly to the next start, and exits 0.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use reelflow_dag::{Period, Schedule};
use reelflow_store::runs;
use sqlx::PgPool;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::engine::Engine;
use crate::pipeline;

/// Periods the schedule says should exist by `now`.
pub fn due_periods(cfg: &Config, schedule: &Schedule, now: chrono::DateTime<chrono::Utc>) -> Vec<Period> {
    let start = if cfg.schedule.start_period.is_empty() {
        // No start: the latest period whose fire has passed, so a new deployment loads the
        // most recent complete period at once.
        match schedule.last_at_or_before(now).and_then(|f| schedule.period_of_fire(f)) {
            Some(p) => p,
            None => return vec![],
        }
    } else {
        cfg.schedule
            .start_period
            .parse()
            .expect("validated with the configuration")
    };
    let limit = if cfg.schedule.catchup {
        cfg.schedule.max_catchup_runs.max(1) as usize
    } else {
        1
    };
    schedule.due_periods(start, now, limit)
}

/// Creates the scheduled runs that are due (idempotent). Returns the periods created.
pub async fn schedule_tick(
    cfg: &Config,
    pool: &PgPool,
    dag: &reelflow_dag::DagSpec,
    schedule: &Schedule,
) -> anyhow::Result<Vec<Period>> {
    create_due_runs(pool, dag, &due_periods(cfg, schedule, chrono::Utc::now())).await
}

/// Creates the runs of `due` that do not exist: one query when they all do. Returns the
/// periods created.
async fn create_due_runs(pool: &PgPool, dag: &reelflow_dag::DagSpec, due: &[Period]) -> anyhow::Result<Vec<Period>> {
    let wanted: Vec<String> = due.iter().map(|p| p.to_string()).collect();
    // Only insert when missing: every INSERT ... ON CONFLICT takes a run id from the sequence.
    let existing: Vec<String> =
        sqlx::query_scalar("SELECT period FROM reelflow.dag_runs WHERE dag_id = $1 AND period = ANY($2)")
            .bind(&dag.id)
            .bind(&wanted)
            .fetch_all(pool)
            .await?;
    let mut created = Vec::new();
    for p in due.iter().filter(|p| !existing.contains(&p.to_string())) {
        let (_, new) = runs::ensure_run(pool, dag, &p.to_string(), "scheduled", false).await?;
        if new {
            tracing::info!(dag = %dag.id, period = %p, "scheduled run created");
            created.push(*p);
        }
    }
    Ok(created)
}

/// How often the scheduler loop turns: the liveness probe's heartbeat. A turn reads the
/// database only when something is due.
pub const SCHEDULER_TURN: Duration = Duration::from_secs(15);
/// The due periods are checked against the store when they change (a fire passed) and this
/// often anyway (a run deleted by hand).
const RECHECK_DUE: Duration = Duration::from_secs(600);
/// Orphaned snapshots are swept this often; loads, publishes, marks and cancels sweep too.
const SWEEP_EVERY: Duration = Duration::from_secs(300);
/// The worker registry's `heartbeat_at` is refreshed this often (it is informational: fast
/// takeover goes by process identity, lease expiry by leases).
const WORKER_REFRESH: Duration = Duration::from_secs(300);

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub async fn serve(cfg: Config, pool: PgPool, listen_override: Option<String>) -> anyhow::Result<()> {
    let listen = listen_override.unwrap_or_else(|| cfg.engine.listen.clone());
    let addr: std::net::SocketAddr = crate::config::resolve_listen(&listen)
        .map_err(|e| crate::config::ConfigError(vec![format!("listen address {e}")]))?;
    let token = cfg.engine.token()?;
    if token.is_none() {
        tracing::warn!("no admin token configured: mutating API endpoints are disabled");
    }
    let schedule = Schedule::new(&cfg.schedule.cron, &cfg.schedule.timezone)?;
    let dag = pipeline::dag(&cfg, &pool)?;
    let engine = Arc::new(Engine::new(
        pool.clone(),
        vec![dag.clone()],
        pipeline::engine_config(&cfg)?,
    ));
    let worker = engine.config.worker_id.clone();
    let version = env!("CARGO_PKG_VERSION");
    runs::worker_heartbeat(&pool, &worker, &worker, version).await?;

    api::declare_series(&dag.spec);
    let state = Arc::new(AppState {
        pool: pool.clone(),
        dag: dag.spec.clone(),
        token,
        heartbeat: AtomicI64::new(chrono::Utc::now().timestamp()),
        // A few turns of the scheduler loop, and a minute of slack.
        liveness_secs: SCHEDULER_TURN.as_secs() as i64 * 2 + 60,
        shutting_down: AtomicBool::new(false),
        migrations_applied: AtomicBool::new(false),
        engine: Some(engine.clone()),
        ops: crate::ops::OpsConfig::from_config(&cfg),
    });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(listen = %listener.local_addr()?, worker = %worker, schedule = %schedule.describe(), "reelflow serve started");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // The scheduler loop: due runs, orphan sweeps, worker registry, liveness. Idle, it reads
    // the database a few times an hour.
    let scheduler = {
        let (cfg, pool, state, spec, mut stop) = (
            cfg.clone(),
            pool.clone(),
            state.clone(),
            dag.spec.clone(),
            stop_rx.clone(),
        );
        let engine = engine.clone();
        let worker = worker.clone();
        tokio::spawn(async move {
            let retry_after = Duration::from_millis(cfg.engine.poll_ms).min(SCHEDULER_TURN);
            let start = std::time::Instant::now();
            let (mut last_sweep, mut last_refresh) = (start, start);
            // The due periods last found to have their runs, and when.
            let mut confirmed: Option<(Vec<Period>, std::time::Instant)> = None;
            loop {
                let mut wait = SCHEDULER_TURN;
                // Snapshots that no run will publish (cancelled loads, load-only retries).
                if last_sweep.elapsed() >= SWEEP_EVERY {
                    last_sweep = std::time::Instant::now();
                    if let Err(e) = reelflow_load::sweep_orphans(&pool).await {
                        tracing::warn!(error = %e, "sweeping orphaned snapshots failed; will try again");
                    }
                }
                if cfg.schedule.enabled {
                    let now = chrono::Utc::now();
                    let due = due_periods(&cfg, &schedule, now);
                    let stale = match &confirmed {
                        Some((periods, at)) => *periods != due || at.elapsed() >= RECHECK_DUE,
                        None => true,
                    };
                    if stale {
                        match create_due_runs(&pool, &spec, &due).await {
                            Ok(created) => {
                                if !created.is_empty() {
                                    engine.wake();
                                }
                                confirmed = Some((due, std::time::Instant::now()));
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "scheduling failed; will try again");
                                wait = retry_after;
                            }
                        }
                    }
                    // Wake for the next fire on time.
                    if let Some(next) = schedule.next_after(now) {
                        let until = (next - now).to_std().unwrap_or_default() + Duration::from_millis(10);
                        wait = wait.min(until);
                    }
                }
                if last_refresh.elapsed() >= WORKER_REFRESH {
                    last_refresh = std::time::Instant::now();
                    if let Err(e) = runs::worker_heartbeat(&pool, &worker, &worker, version).await {
                        tracing::warn!(error = %e, "worker heartbeat failed");
                    }
                }
                state.heartbeat.store(chrono::Utc::now().timestamp(), Ordering::Relaxed);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return,
                }
            }
        })
    };
    let executor = {
        let engine = engine.clone();
        let stop = stop_rx.clone();
        let grace = Duration::from_secs(cfg.engine.shutdown_grace_secs);
        tokio::spawn(async move { engine.run(None, stop, grace).await })
    };
    // The HTTP server outlives the drain: /readyz answers 503 from the first moment of the
    // shutdown, while /livez and /metrics keep answering until the process exits.
    let (http_stop_tx, http_stop_rx) = tokio::sync::watch::channel(false);
    let http = {
        let app = api::router_with_ui(state.clone(), crate::ui::UiSettings::from_config(&cfg.ui))
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        let mut stop = http_stop_rx;
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.changed().await;
                })
                .await
        })
    };

    shutdown_signal().await;
    tracing::info!("shutdown requested: no new tasks will be claimed");
    state.shutting_down.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    scheduler.await.ok();
    match executor.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "executor stopped with an error"),
        Err(e) => tracing::warn!(error = %e, "executor task failed"),
    }
    runs::worker_stopped(&pool, &worker).await.ok();
    let _ = http_stop_tx.send(true);
    http.await.ok();
    tracing::info!("reelflow serve stopped");
    Ok(())
}
