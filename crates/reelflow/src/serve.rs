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
    let mut created = Vec::new();
    for p in due_periods(cfg, schedule, chrono::Utc::now()) {
        // Only insert when missing: every INSERT ... ON CONFLICT takes a run id from the sequence.
        if runs::find_run(pool, &dag.id, &p.to_string()).await?.is_some() {
            continue;
        }
        let (_, new) = runs::ensure_run(pool, dag, &p.to_string(), "scheduled", false).await?;
        if new {
            tracing::info!(dag = %dag.id, period = %p, "scheduled run created");
            created.push(p);
        }
    }
    Ok(created)
}

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
        liveness_secs: (cfg.engine.poll_ms / 1000).max(1) as i64 * 10 + 60,
        shutting_down: AtomicBool::new(false),
        engine: Some(engine.clone()),
        ops: crate::ops::OpsConfig::from_config(&cfg),
    });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(listen = %listener.local_addr()?, worker = %worker, schedule = %schedule.describe(), "reelflow serve started");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // The scheduler loop: due runs, worker heartbeat, liveness.
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
            let poll = Duration::from_millis(cfg.engine.poll_ms);
            let mut last_sweep = std::time::Instant::now();
            loop {
                // Snapshots that no run will publish (cancelled loads, load-only retries).
                if last_sweep.elapsed() >= Duration::from_secs(60) {
                    last_sweep = std::time::Instant::now();
                    if let Err(e) = reelflow_load::sweep_orphans(&pool).await {
                        tracing::warn!(error = %e, "sweeping orphaned snapshots failed; will try again");
                    }
                }
                if cfg.schedule.enabled {
                    match schedule_tick(&cfg, &pool, &spec, &schedule).await {
                        Ok(created) if !created.is_empty() => engine.wake(),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "scheduling failed; will try again"),
                    }
                }
                if let Err(e) = runs::worker_heartbeat(&pool, &worker, &worker, version).await {
                    tracing::warn!(error = %e, "worker heartbeat failed");
                }
                state.heartbeat.store(chrono::Utc::now().timestamp(), Ordering::Relaxed);
                tokio::select! {
                    _ = tokio::time::sleep(poll) => {}
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
