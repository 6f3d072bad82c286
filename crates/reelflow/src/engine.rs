//! The executor: claims ready task instances from the store, runs them with a heartbeat-renewed
//! lease and a timeout, and records their outcome. Several engines (threads, processes or
//! replicas) can share one database; the store guarantees each attempt runs on one of them.
//!
//! An engine does not poll while it can listen: the store announces every change that makes
//! work claimable on `reelflow_work` ([`runs::Notice`]), and a dedicated LISTEN connection per
//! engine ([`crate::listener`]) wakes the loop at once. The loop also wakes when a task ends,
//! at the earliest time the store knows something becomes due (a retry's backoff ends, a
//! lease may expire: [`runs::Due`]), and every `backstop` for what no notification announces.
//! Without its listener it polls every `poll`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use reelflow_dag::{AttemptOutcome, Cancel, DagSpec, ErrorKind, Period, Task, TaskContext, TaskState, TryEnd};
use reelflow_store::runs::{self, Claim, Claimed, Due, NoticeKind, Outcome, Recorded};
use sqlx::PgPool;
use tokio::sync::{broadcast, mpsc, watch, Notify};
use tokio::time::Instant;
use tracing::Instrument;

use crate::metrics::METRICS;

/// A DAG the engine can run: its spec (stored shape, retry policies) and the task code.
pub struct Dag {
    pub spec: DagSpec,
    pub tasks: HashMap<String, Arc<dyn Task>>,
}

impl Dag {
    pub fn new(spec: DagSpec, tasks: Vec<Arc<dyn Task>>) -> Dag {
        let tasks = tasks
            .into_iter()
            .map(|t| (t.id().to_string(), t))
            .collect::<HashMap<_, _>>();
        for t in &spec.tasks {
            assert!(
                tasks.contains_key(&t.id),
                "DAG {} has no code for task {}",
                spec.id,
                t.id
            );
        }
        Dag { spec, tasks }
    }
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub worker_id: String,
    pub lease: Duration,
    pub heartbeat: Duration,
    /// How often to look for work while no notification can arrive (the listener is down, or
    /// `notifications` is off).
    pub poll: Duration,
    /// How often to look for work anyway while listening: for what no notification announces.
    pub backstop: Duration,
    /// LISTEN for the store's work notifications (off: poll every `poll`, e.g. behind a
    /// connection pooler in transaction mode, which does not pass LISTEN on).
    pub notifications: bool,
    pub slots: usize,
    pub max_active_runs: u32,
    /// This process's scratch folder; a task gets `<scratch>/<dag>/<period>/`.
    pub scratch_dir: PathBuf,
    /// Where tasks keep what they hand to each other.
    pub artifacts: reelflow_artifacts::Artifacts,
}

pub struct Engine {
    pub pool: PgPool,
    pub dags: Vec<Arc<Dag>>,
    pub config: EngineConfig,
    wake: Arc<Notify>,
    /// Runs whose state changed by another hand (a notification): the heartbeats of their
    /// running attempts renew at once, so a cancel or mark stops the task without waiting for
    /// the next heartbeat.
    changed_runs: broadcast::Sender<i64>,
    /// Set when `run` stops: no new attempt starts, not even a hand-off.
    stopping: std::sync::atomic::AtomicBool,
    /// This process, for taking over the tasks of dead processes on the same machine at once.
    identity: Option<crate::process::Identity>,
}

/// How long a worker keeps a task without renewing its lease before it stops the task itself:
/// the lease minus a margin of two heartbeats (at least a fifth of the lease), so it stops
/// before the lease can expire and another worker take the task over, as long as the clocks
/// of the worker and the database advance at about the same rate.
pub fn self_fence_after(lease: Duration, heartbeat: Duration) -> Duration {
    let margin = (heartbeat * 2).max(lease / 5);
    lease.saturating_sub(margin).max(heartbeat)
}

/// When the loop must look again without being told: a retry's backoff ends, a lease may
/// have expired.
#[derive(Debug, Default, Clone, Copy)]
struct Deadlines {
    retry: Option<Instant>,
    lease: Option<Instant>,
}

impl Deadlines {
    /// Work due now but not claimed is being claimed by another worker (its row was locked),
    /// and a lease that has just ended is being expired by one: look again a little later
    /// rather than at once, so the loop never spins.
    const MIN_WAIT: Duration = Duration::from_millis(250);
    /// A lease is expired by the database's clock once it has passed its end.
    const LEASE_SLACK: Duration = Duration::from_millis(20);

    fn from(d: Due) -> Deadlines {
        let now = Instant::now();
        Deadlines {
            retry: d.retry_in.map(|t| now + t.max(Self::MIN_WAIT)),
            lease: d
                .lease_ends_in
                .map(|t| now + (t + Self::LEASE_SLACK).max(Self::MIN_WAIT)),
        }
    }
}

fn random_unit() -> f64 {
    rand::random::<f64>()
}

impl Engine {
    pub fn new(pool: PgPool, dags: Vec<Arc<Dag>>, config: EngineConfig) -> Engine {
        Engine {
            pool,
            dags,
            config,
            wake: Arc::new(Notify::new()),
            changed_runs: broadcast::channel(64).0,
            stopping: Default::default(),
            identity: crate::process::Identity::current(),
        }
    }

    /// Wakes the claim loop at once (after a trigger or a finished task): it starts queued runs
    /// and claims. With notifications this is only a shortcut within the process.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    fn dag(&self, id: &str) -> Option<&Arc<Dag>> {
        self.dags.iter().find(|d| d.spec.id == id)
    }

    /// The task ids this engine has code for: it claims no other.
    fn known_tasks(&self) -> Vec<String> {
        self.dags.iter().flat_map(|d| d.tasks.keys().cloned()).collect()
    }

    /// Records this worker and the process it runs in (so others on this machine can tell
    /// when it died).
    pub async fn register(&self) -> Result<(), runs::RunError> {
        let Some(me) = &self.identity else {
            return Ok(());
        };
        let process = runs::WorkerProcess {
            hostname: me.hostname.clone(),
            boot_id: me.boot_id.clone(),
            pid: me.pid as i32,
            start_ticks: me.start_ticks as i64,
        };
        runs::register_worker(&self.pool, &self.config.worker_id, env!("CARGO_PKG_VERSION"), &process).await
    }

    /// Ends at once the leases held by processes of this machine that no longer exist, so
    /// their tasks are taken over without waiting for the lease to run out.
    async fn take_over_dead_local_workers(&self) -> Result<(), runs::RunError> {
        let Some(me) = &self.identity else {
            return Ok(());
        };
        for lease in runs::local_leases(&self.pool, &self.config.worker_id, &me.hostname, &me.boot_id).await? {
            let p = &lease.process;
            if me.is_dead_here(&p.hostname, &p.boot_id, p.pid as u32, p.start_ticks as u64)
                && runs::end_lease_now(&self.pool, lease.ti_id, &lease.worker).await?
            {
                tracing::warn!(task_instance = lease.ti_id, worker = %lease.worker, pid = p.pid,
                    "the worker holding this task died on this machine: taking the task over now");
            }
        }
        Ok(())
    }

    /// One round of housekeeping: take over the tasks of dead local workers, expire dead
    /// leases, start queued runs within the cap.
    pub async fn housekeeping(&self) -> Result<(), runs::RunError> {
        self.expire_leases().await?;
        self.start_queued_runs().await
    }

    /// Takes over the tasks of dead local workers and expires dead leases.
    async fn expire_leases(&self) -> Result<(), runs::RunError> {
        self.take_over_dead_local_workers().await?;
        let expired = runs::expire_leases(&self.pool).await?;
        for e in &expired {
            tracing::warn!(run_id = e.run_id, period = %e.period, task_instance = e.ti_id, dag = %e.dag_id,
                task = %e.task_id, worker = %e.worker, requeued = e.retried,
                "lease expired: the try counts as interrupted and goes back to the queue");
            let labels = [("dag", e.dag_id.as_str()), ("task", e.task_id.as_str())];
            METRICS.lease_expirations.inc(&[]);
            METRICS
                .task_attempts
                .inc(&[labels[0], labels[1], ("outcome", AttemptOutcome::LeaseExpired.as_str())]);
            if e.retried {
                METRICS.task_retries.inc(&labels);
            }
            if let Some(end) = &e.run_end {
                crate::metrics::record_run_end(end);
            }
        }
        Ok(())
    }

    async fn start_queued_runs(&self) -> Result<(), runs::RunError> {
        for d in &self.dags {
            runs::start_queued_runs(&self.pool, &d.spec.id, self.config.max_active_runs).await?;
        }
        Ok(())
    }

    /// Claims and runs tasks until `stop` is set (then lets running tasks finish within
    /// `grace`, cancels the rest and returns) or, with `only_run`, until that run is finished.
    pub async fn run(
        self: &Arc<Self>,
        only_run: Option<i64>,
        stop: watch::Receiver<bool>,
        grace: Duration,
    ) -> Result<(), runs::RunError> {
        let (cancel_tx, cancel) = Cancel::new();
        let mut tasks = tokio::task::JoinSet::new();
        let dag_ids: Vec<String> = self.dags.iter().map(|d| d.spec.id.clone()).collect();
        let known = self.known_tasks();
        let mut stop_rx = stop.clone();
        if let Err(e) = self.register().await {
            tracing::warn!(error = %e, "registering the worker failed; dead local workers will not be detected");
        }
        let (signal_tx, mut signals) = mpsc::unbounded_channel();
        let listener = self.config.notifications.then(|| {
            crate::listener::spawn(
                &self.pool.connect_options(),
                &self.config.worker_id,
                signal_tx.clone(),
                stop.clone(),
            )
        });
        // Kept so the channel stays open when notifications are off.
        let _signal_tx = signal_tx;
        let mut listening = false;
        // What the next turn does besides claiming: everything (at start, every backstop or
        // poll, after the listener (re)connects), expire leases (one may have ended), start
        // queued runs (a run was queued, or one ended and made room).
        let mut scan = true;
        let mut check_leases = false;
        let mut start_runs = false;
        let mut next_scan = Instant::now();
        let mut due = Deadlines::default();
        let mut skip_turn = false;
        loop {
            if *stop.borrow() {
                self.stopping.store(true, Ordering::Relaxed);
                break;
            }
            // A turn woken by a notification about another run than `only_run` does nothing.
            if !skip_turn {
                let now = Instant::now();
                if now >= next_scan {
                    scan = true;
                }
                if due.lease.is_some_and(|d| now >= d) {
                    due.lease = None;
                    check_leases = true;
                }
                if due.retry.is_some_and(|d| now >= d) {
                    due.retry = None;
                }
                if scan || check_leases {
                    if let Err(e) = self.expire_leases().await {
                        tracing::warn!(error = %e, "housekeeping failed; will try again");
                    }
                }
                if scan || start_runs {
                    if let Err(e) = self.start_queued_runs().await {
                        tracing::warn!(error = %e, "starting queued runs failed; will try again");
                    }
                }
                if scan {
                    next_scan = Instant::now()
                        + if listening {
                            self.config.backstop
                        } else {
                            self.config.poll
                        };
                }
                (scan, check_leases, start_runs) = (false, false, false);
                if let Some(run_id) = only_run {
                    // The database may be restarting: the next turn (polling while the
                    // listener is down) looks again, as claiming does.
                    match runs::get_run(&self.pool, run_id).await {
                        Ok(run) if run.state.is_finished() && tasks.is_empty() => break,
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, run_id, "reading the run failed; will try again"),
                    }
                }
                // Fill free slots; when nothing is left to claim, learn when something is due.
                while tasks.len() < self.config.slots {
                    match runs::claim_next(
                        &self.pool,
                        &self.config.worker_id,
                        self.config.lease,
                        &dag_ids,
                        Some(&known),
                        only_run,
                    )
                    .await
                    {
                        Ok(Claim::Claimed(claimed)) => {
                            let me = self.clone();
                            let cancel = cancel.clone();
                            tasks.spawn(async move { me.execute(claimed, cancel).await });
                        }
                        Ok(Claim::Idle(d)) => {
                            due = Deadlines::from(d);
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "claiming failed; will try again");
                            next_scan = next_scan.min(Instant::now() + self.config.poll);
                            break;
                        }
                    }
                }
            }
            skip_turn = false;
            let wake_at = [Some(next_scan), due.retry, due.lease]
                .into_iter()
                .flatten()
                .min()
                .expect("next_scan");
            tokio::select! {
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = self.wake.notified() => start_runs = true,
                Some(signal) = signals.recv() => match signal {
                    crate::listener::Signal::Listening => {
                        // Notifications sent while not listening are lost: look once.
                        listening = true;
                        scan = true;
                    }
                    crate::listener::Signal::Lost => {
                        listening = false;
                        next_scan = next_scan.min(Instant::now() + self.config.poll);
                    }
                    // `reelflow run` waits for its own run only: others' tasks are not its
                    // business (but a run that ended may make room for it, and a lease may
                    // need expiring).
                    crate::listener::Signal::Notice(n)
                        if only_run.is_some_and(|r| r != n.run_id)
                            && matches!(n.kind, NoticeKind::Ready | NoticeKind::Queued) =>
                    {
                        skip_turn = true;
                    }
                    crate::listener::Signal::Notice(n) => {
                        if matches!(n.kind, NoticeKind::Ready | NoticeKind::Ended) {
                            let _ = self.changed_runs.send(n.run_id);
                        }
                        match n.kind {
                            NoticeKind::Queued | NoticeKind::Ended => start_runs = true,
                            // All slots busy: no claim this turn, so learn the new lease's
                            // end here (to expire it on time if its worker dies).
                            NoticeKind::Claimed if tasks.len() >= self.config.slots => {
                                match runs::next_due(&self.pool, &dag_ids, Some(&known), only_run).await {
                                    Ok(d) => due = Deadlines::from(d),
                                    Err(e) => tracing::warn!(error = %e, "reading when work is due failed"),
                                }
                            }
                            NoticeKind::Ready | NoticeKind::Claimed => {}
                        }
                    }
                },
                _ = tokio::time::sleep_until(wake_at) => {}
                _ = stop_rx.changed() => {}
            }
        }
        if !tasks.is_empty() {
            tracing::info!(
                running = tasks.len(),
                grace_secs = grace.as_secs(),
                "stopping: waiting for running tasks"
            );
            let drained = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
            if drained.is_err() {
                tracing::warn!("grace period over: cancelling running tasks");
                let _ = cancel_tx.send(true);
                while tasks.join_next().await.is_some() {}
            }
        }
        if let Some(l) = listener {
            l.abort();
        }
        Ok(())
    }

    /// Runs one claimed attempt, then hands off: when it succeeded, the next ready task of the
    /// same run is claimed and run at once in the same slot, without waiting for the
    /// scheduler loop (as Airflow's "mini scheduler" does after a task).
    async fn execute(self: Arc<Self>, claimed: Claimed, shutdown: Cancel) {
        let mut next = Some(claimed);
        while let Some(claimed) = next.take() {
            let (run_id, dag_id) = (claimed.run_id, claimed.dag_id.clone());
            let span = tracing::info_span!("task", run_id = claimed.run_id, dag = %claimed.dag_id, period = %claimed.period,
                task = %claimed.task_id, try_number = claimed.try_number, attempt_id = claimed.attempt_id);
            crate::attempt_log::attach(&span, &self.pool, claimed.attempt_id);
            let succeeded = self.execute_inner(claimed, shutdown.clone()).instrument(span).await;
            if !succeeded || self.stopping.load(Ordering::Relaxed) || shutdown.is_cancelled() {
                break;
            }
            let dags = [dag_id];
            let known = self.known_tasks();
            match runs::claim_in(
                &self.pool,
                &self.config.worker_id,
                self.config.lease,
                &dags,
                Some(&known),
                Some(run_id),
            )
            .await
            {
                Ok(c) => next = c,
                // The scheduler loop will claim it.
                Err(e) => tracing::warn!(error = %e, "claiming the downstream task failed; the scheduler will"),
            }
        }
        self.wake();
    }

    /// Returns whether the attempt succeeded and its result was recorded.
    async fn execute_inner(&self, claimed: Claimed, shutdown: Cancel) -> bool {
        let Some(dag) = self.dag(&claimed.dag_id).cloned() else {
            return false;
        };
        let spec = dag.spec.task(&claimed.task_id).cloned();
        let fatal = |error: String| Outcome::Failed {
            error,
            outcome: AttemptOutcome::Failed,
            end: TryEnd::Fatal,
            retry_in: Duration::ZERO,
        };
        let (Some(spec), Some(task)) = (spec, dag.tasks.get(&claimed.task_id).cloned()) else {
            let outcome = fatal(format!("no code for task {}", claimed.task_id));
            let _ = runs::finish(&self.pool, &claimed, outcome).await;
            return false;
        };
        let period: Period = match claimed.period.parse() {
            Ok(p) => p,
            Err(e) => {
                let _ = runs::finish(&self.pool, &claimed, fatal(e.to_string())).await;
                return false;
            }
        };
        METRICS.running_tasks.inc_by(&[], 1.0);
        tracing::info!("task started");
        let started = std::time::Instant::now();

        // The task's own cancel token: set on shutdown (after the grace), on timeout, or when
        // the lease is lost.
        let (cancel_tx, cancel) = Cancel::new();
        let lost_lease = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let heartbeat = {
            let pool = self.pool.clone();
            let lost = lost_lease.clone();
            let cancel_tx = cancel_tx.clone();
            let (ti, attempt, lease, every) = (
                claimed.ti_id,
                claimed.attempt_id,
                self.config.lease,
                self.config.heartbeat,
            );
            // Self-fencing: without a renewal for `lease - margin`, this worker must assume
            // another one may take the task over, and stops it before that can happen.
            let fence_after = self_fence_after(lease, every);
            let run_id = claimed.run_id;
            let mut changed = self.changed_runs.subscribe();
            tokio::spawn(async move {
                let mut renewed = std::time::Instant::now();
                loop {
                    // Every `every`, and at once when the run changed by another hand (an
                    // operator's cancel or mark fences this attempt out: stop now).
                    let next = tokio::time::Instant::now() + every;
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep_until(next) => break,
                            r = changed.recv() => match r {
                                Ok(id) if id != run_id => continue,
                                Err(broadcast::error::RecvError::Closed) => {
                                    tokio::time::sleep_until(next).await;
                                    break;
                                }
                                _ => break,
                            },
                        }
                    }
                    // The lease is renewed from the database's `now()` at the update, which is
                    // no earlier than this instant: counting from here never overestimates it.
                    let sent = std::time::Instant::now();
                    let beat = tokio::time::timeout(
                        every.max(Duration::from_secs(1)),
                        runs::heartbeat(&pool, ti, attempt, lease),
                    );
                    match beat.await {
                        Ok(Ok(true)) => renewed = sent,
                        Ok(Ok(false)) => {
                            tracing::warn!("lease lost (another worker took the task over, or an operator marked or cancelled it); stopping");
                            lost.store(true, Ordering::Relaxed);
                            let _ = cancel_tx.send(true);
                            return;
                        }
                        Ok(Err(e)) => tracing::warn!(error = %e, "heartbeat failed; will retry"),
                        Err(_) => tracing::warn!("heartbeat timed out; will retry"),
                    }
                    if renewed.elapsed() >= fence_after {
                        tracing::error!(
                            unrenewed_secs = renewed.elapsed().as_secs(),
                            lease_secs = lease.as_secs(),
                            "lease not renewed for too long: stopping the task before another worker can take it over"
                        );
                        lost.store(true, Ordering::Relaxed);
                        let _ = cancel_tx.send(true);
                        return;
                    }
                }
            })
        };
        let forward = {
            let cancel_tx = cancel_tx.clone();
            tokio::spawn(async move {
                shutdown.cancelled().await;
                let _ = cancel_tx.send(true);
            })
        };
        let ctx = TaskContext {
            dag_id: claimed.dag_id.clone(),
            run_id: claimed.run_id,
            period,
            try_number: claimed.try_number as u32,
            attempt_id: claimed.attempt_id,
            scratch_dir: self.config.scratch_dir.join(&claimed.dag_id).join(&claimed.period),
            artifacts: self.config.artifacts.clone(),
            cancel: cancel.clone(),
        };
        let mut timed_out = false;
        let result = match std::fs::create_dir_all(&ctx.scratch_dir) {
            Err(e) => Err(reelflow_dag::TaskError::retryable(format!(
                "cannot create the scratch folder {}: {e}",
                ctx.scratch_dir.display()
            ))),
            Ok(()) => {
                let run = task.run(&ctx, &claimed.inputs);
                match tokio::time::timeout(spec.retry.timeout(), run).await {
                    Ok(r) => r,
                    Err(_) => {
                        let _ = cancel_tx.send(true);
                        timed_out = true;
                        Err(reelflow_dag::TaskError::retryable(format!(
                            "timed out after {} s",
                            spec.retry.timeout_secs
                        )))
                    }
                }
            }
        };
        heartbeat.abort();
        forward.abort();
        let outcome = match result {
            Ok(out) => Outcome::Success(out),
            Err(e) => {
                let (outcome, end) = if timed_out {
                    (AttemptOutcome::Timeout, TryEnd::Retryable)
                } else {
                    match e.kind {
                        // A try stopped by a shutdown (or by self-fencing) goes back to the queue at
                        // once and does not use up the task's tries.
                        ErrorKind::Cancelled => (AttemptOutcome::Cancelled, TryEnd::Interrupted),
                        ErrorKind::Retryable => (AttemptOutcome::Failed, TryEnd::Retryable),
                        ErrorKind::Fatal => (AttemptOutcome::Failed, TryEnd::Fatal),
                    }
                };
                let retry_in = match end {
                    TryEnd::Retryable => spec.retry.delay_after(claimed.try_number.max(1) as u32, random_unit()),
                    TryEnd::Interrupted | TryEnd::Fatal => Duration::ZERO,
                };
                tracing::warn!(error = %e.message, retryable = end != TryEnd::Fatal, outcome = %outcome, "task failed");
                Outcome::Failed {
                    error: e.message,
                    outcome,
                    end,
                    retry_in,
                }
            }
        };
        reelflow_dag::failpoint("engine.before_record");
        let ok = matches!(outcome, Outcome::Success(_));
        let outcome_label = match &outcome {
            Outcome::Success(out) => {
                crate::metrics::observe(&claimed.task_id, &task.measures(out));
                AttemptOutcome::Success.as_str()
            }
            Outcome::Failed { outcome, .. } => outcome.as_str(),
        };
        let mut recorded = None;
        for i in 0..5 {
            match runs::finish(&self.pool, &claimed, outcome.clone()).await {
                Ok(r) => {
                    recorded = Some(r);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "recording the result failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 << i)).await;
                }
            }
        }
        METRICS.running_tasks.inc_by(&[], -1.0);
        let secs = started.elapsed().as_secs_f64();
        let labels = [("dag", claimed.dag_id.as_str()), ("task", claimed.task_id.as_str())];
        METRICS.task_duration.observe(&labels, secs);
        match recorded {
            Some(Recorded::Accepted(state, run_end)) => {
                METRICS
                    .task_attempts
                    .inc(&[labels[0], labels[1], ("outcome", outcome_label)]);
                if state == TaskState::UpForRetry {
                    METRICS.task_retries.inc(&labels);
                }
                if let Some(end) = &run_end {
                    crate::metrics::record_run_end(end);
                }
                tracing::info!(state = %state, seconds = secs, success = ok, "task finished");
                ok && run_end.is_none()
            }
            Some(Recorded::Fenced) => {
                METRICS.fenced_results.inc(&[]);
                tracing::warn!(
                    seconds = secs,
                    lost_lease = lost_lease.load(Ordering::Relaxed),
                    "result refused: this attempt no longer holds the lease"
                );
                false
            }
            None => {
                tracing::error!("could not record the result; the lease will expire and the task will be retried");
                false
            }
        }
    }
}
