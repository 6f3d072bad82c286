//! The `reelflow` binary: command line and exit codes, in one place ([`main`]):
//! 0 success, 1 failure, 2 usage, 78 bad configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use reelflow::config::{Config, ConfigError};
use reelflow::{db, ops, pipeline};
use reelflow_dag::Period;

#[derive(Parser)]
#[command(
    name = "reelflow",
    version,
    about = "Monthly Movies Dataset pipeline: fetch, clean, load, publish"
)]
struct Cli {
    /// A TOML file overriding config/default.toml.
    #[arg(long, global = true, env = "REELFLOW_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one period in the foreground through the engine and print a summary.
    Run {
        /// The logical period, YYYY-MM.
        #[arg(long)]
        period: Period,
        /// s3://bucket/key, https://..., file://... or a plain path (default: the configured source).
        #[arg(long)]
        source: Option<String>,
        /// Run the period again even if it already succeeded (replaces its snapshot).
        #[arg(long)]
        rerun: bool,
    },
    /// The daemon: scheduler, executor and HTTP API.
    Serve {
        /// Listen address, HOST:PORT such as 0.0.0.0:8080 or localhost:8080 (default
        /// engine.listen, or REELFLOW_LISTEN).
        #[arg(long, value_parser = parse_listen)]
        listen: Option<String>,
    },
    /// DAG runs.
    Runs {
        #[command(subcommand)]
        action: RunsAction,
    },
    /// Task instances.
    Tasks {
        #[command(subcommand)]
        action: TasksAction,
    },
    /// Create runs for every period from --from to --to (inclusive); prints how many first.
    Backfill {
        /// The first period, YYYY-MM.
        #[arg(long)]
        from: Period,
        /// The last period, YYYY-MM; it must have ended.
        #[arg(long)]
        to: Period,
        /// Run periods that already have a finished run again.
        #[arg(long)]
        rerun: bool,
        /// Create more runs than engine.max_backfill_runs.
        #[arg(long)]
        yes: bool,
    },
    /// The audit trail of operator actions (trigger, retry, mark, cancel, rollback, ...).
    Actions {
        #[command(subcommand)]
        action: ActionsAction,
    },
    /// Published snapshots.
    Snapshots {
        #[command(subcommand)]
        action: SnapshotAction,
    },
    /// The private PostgreSQL server used when no DATABASE_URL is set.
    Db {
        #[command(subcommand)]
        action: DbAction,
    },
}

#[derive(Subcommand)]
enum ActionsAction {
    /// Operator actions, newest first, with their time and origin (`cli`, `http <address>`).
    List {
        /// How many to show.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=1000))]
        limit: i64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum RunsAction {
    /// List runs, newest period first.
    List {
        /// Only runs in this state.
        #[arg(long, value_parser = ["queued", "running", "success", "failed"])]
        state: Option<String>,
        /// How many to show.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=1000))]
        limit: i64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A run with its task instances and every attempt with its error.
    Show {
        /// The run's id (`runs list` shows them).
        run_id: i64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Create the run of a period (a no-op if it exists, unless --rerun).
    Trigger {
        /// The logical period, YYYY-MM; its month must have ended.
        #[arg(long)]
        period: Period,
        /// Run a finished period again.
        #[arg(long)]
        rerun: bool,
        /// Fetch this source for this run only (s3://, https://, file:// or a path); recorded
        /// with the run. Default: the configured source.
        #[arg(long)]
        source: Option<String>,
    },
    /// Cancel a run that has not finished (it ends failed; a running task stops), or with
    /// --backfill every backfill run that is still queued.
    Cancel {
        /// The run to cancel.
        #[arg(required_unless_present = "backfill", conflicts_with = "backfill")]
        run_id: Option<i64>,
        /// Cancel every queued backfill run.
        #[arg(long)]
        backfill: bool,
    },
}

#[derive(Subcommand)]
enum TasksAction {
    /// Run a task again (Airflow's "clear"); --downstream also re-runs the tasks after it.
    Retry {
        /// The run's id.
        run_id: i64,
        /// fetch, clean, load, validate or publish.
        task: String,
        /// Also re-run every task after it.
        #[arg(long)]
        downstream: bool,
    },
    /// Set a task's state by hand.
    Mark {
        /// The run's id.
        run_id: i64,
        /// fetch, clean, load, validate or publish.
        task: String,
        /// success or failed.
        #[arg(value_parser = ["success", "failed"])]
        state: String,
        /// Why (recorded with the action; e.g. publishing a snapshot whose quality gate failed).
        #[arg(long)]
        note: Option<String>,
    },
}

#[derive(Subcommand)]
enum SnapshotAction {
    /// List snapshots, newest first; marks the one `rollback` (and `rollforward`) would publish.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Publish again what `movies` showed before the current snapshot (the publish history,
    /// not the newest other snapshot); the current one becomes rolled_back.
    Rollback {
        /// Publish this kept (retired or rolled-back) snapshot instead.
        #[arg(long, value_name = "ID")]
        to: Option<i64>,
    },
    /// Undo the last rollback: publish again the snapshot it rolled back away from.
    Rollforward,
    /// What a snapshot changed against the one `movies` showed when it was loaded: movies
    /// added, removed and changed (the published snapshot when no ID is given).
    Diff {
        /// The snapshot (default: the published one).
        id: Option<i64>,
        /// Only `added`, `removed` or `changed`.
        #[arg(long)]
        change: Option<String>,
        /// Movies listed (1 to 1000).
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Continue after a previous page.
        #[arg(long)]
        cursor: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DbAction {
    /// Print the connection URL (starting the private server if needed).
    Url,
    /// Stop the private server.
    Stop,
}

/// Logging: JSON lines on stdout for the daemon, compact lines on stderr otherwise; for `run`
/// in an interactive terminal, a live progress bar with only warnings and errors as lines.
/// `REELFLOW_LOG` sets the level, `REELFLOW_LOG_FORMAT=json|pretty` the format.
fn init_logging(json_default: bool, progress: Option<reelflow::progress::Latest>) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let filter = || EnvFilter::try_from_env("REELFLOW_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match std::env::var("REELFLOW_LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("pretty") => false,
        _ => json_default,
    };
    // Colour only for a terminal: not in files and pipes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // Every mode also captures each task attempt's lines for the operators' page.
    use reelflow::attempt_log::AttemptLogLayer;
    if json {
        let lines = tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_filter(filter());
        tracing_subscriber::registry()
            .with(lines)
            .with(AttemptLogLayer::new().with_filter(filter()))
            .init();
    } else if let Some(latest) = progress {
        let lines = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .compact()
            .with_filter(EnvFilter::new("warn"));
        let bar = reelflow::progress::ProgressLayer(latest).with_filter(tracing_subscriber::filter::LevelFilter::INFO);
        tracing_subscriber::registry()
            .with(lines)
            .with(bar)
            .with(AttemptLogLayer::new().with_filter(filter()))
            .init();
    } else {
        let lines = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .compact()
            .with_filter(filter());
        tracing_subscriber::registry()
            .with(lines)
            .with(AttemptLogLayer::new().with_filter(filter()))
            .init();
    }
}

fn main() -> ExitCode {
    // Arguments first: `--help`, `--version` and usage errors exit before any runtime exists.
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("reelflow: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    use std::io::IsTerminal;
    // The daemon logs JSON lines to stdout; interactive commands log compactly to stderr.
    let progress = (matches!(cli.command, Command::Run { .. })
        && std::io::stderr().is_terminal()
        && std::env::var_os("REELFLOW_LOG").is_none()
        && std::env::var_os("REELFLOW_LOG_FORMAT").is_none())
    .then(reelflow::progress::Latest::default);
    init_logging(matches!(cli.command, Command::Serve { .. }), progress.clone());
    for w in reelflow::config::unknown_env_vars(std::env::vars_os().filter_map(|(k, _)| k.into_string().ok())) {
        eprintln!("reelflow: warning: {w}");
    }
    let cfg = match Config::load(cli.config.as_deref(), &|k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("reelflow: {e}");
            return ExitCode::from(78);
        }
    };
    match dispatch(cli.command, cfg, progress).await {
        Ok(code) => code,
        Err(e) => {
            if let Some(ce) = e.downcast_ref::<ConfigError>() {
                eprintln!("reelflow: {ce}");
                return ExitCode::from(78);
            }
            eprintln!("reelflow: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `retryable error` (a retry may pass) or `fatal error` (the same input fails the same way).
fn error_kind(retryable: bool) -> &'static str {
    if retryable {
        "retryable error"
    } else {
        "fatal error"
    }
}

/// `published snapshot 4 (period 2026-11) again; snapshot 6 was rolled back`.
fn describe_roll(out: &reelflow_load::PublishOutput, what: &str) -> String {
    let mut s = format!("published snapshot {} (period {}) again", out.snapshot_id, out.period);
    if let Some(r) = out.replaced {
        s += &format!("; snapshot {r} was {what}");
    }
    if !out.dropped.is_empty() {
        let d: Vec<String> = out.dropped.iter().map(|i| i.to_string()).collect();
        s += &format!("; retention dropped {}", d.join(", "));
    }
    s
}

fn parse_listen(s: &str) -> Result<String, String> {
    reelflow::config::resolve_listen(s).map(|_| s.to_string())
}

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).expect("JSON output"));
}

async fn dispatch(
    command: Command,
    mut cfg: Config,
    progress: Option<reelflow::progress::Latest>,
) -> anyhow::Result<ExitCode> {
    const ORIGIN: &str = "cli";
    match command {
        Command::Run { period, source, rerun } => {
            ops::check_period_ended(period, chrono::Utc::now())?;
            if let Some(s) = source {
                reelflow_fetch::Source::parse(&s).map_err(|e| ConfigError(vec![format!("--source: {e}")]))?;
                cfg.source = s;
            }
            let pool = db::connect(&cfg).await?;
            let report = pipeline::run_period_with(&cfg, &pool, period, rerun, progress).await?;
            print!("{}", report.render());
            if report.succeeded() {
                Ok(ExitCode::SUCCESS)
            } else {
                Err(report.failure())
            }
        }
        Command::Serve { listen } => {
            let pool = db::connect_for_serve(&cfg).await?;
            reelflow::serve::serve(cfg, pool, listen).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Runs { action } => {
            let pool = db::connect(&cfg).await?;
            let dag = pipeline::dag_spec(&cfg);
            match action {
                RunsAction::List { state, limit, json } => {
                    let runs = reelflow_store::runs::list_runs(&pool, Some(&dag.id), state.as_deref(), limit).await?;
                    if json {
                        print_json(&runs);
                    } else {
                        let time =
                            |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                        println!(
                            "{:>6}  {:<8}  {:<8}  {:<9}  {:>3}  {:<20}  ended",
                            "run", "period", "state", "trigger", "gen", "created"
                        );
                        for r in runs {
                            println!(
                                "{:>6}  {:<8}  {:<8}  {:<9}  {:>3}  {:<20}  {}",
                                r.id,
                                r.period,
                                r.state,
                                r.trigger,
                                r.generation,
                                time(r.created_at),
                                r.ended_at.map(time).unwrap_or_default()
                            );
                        }
                    }
                }
                RunsAction::Show { run_id, json } => {
                    let d = ops::show_run(&pool, run_id).await?;
                    if json {
                        print_json(&d);
                    } else {
                        println!(
                            "run {} of {} for {}: {} ({}, generation {}, DAG version {})",
                            d.run.id,
                            d.run.dag_id,
                            d.run.period,
                            d.run.state,
                            d.run.trigger,
                            d.run.generation,
                            d.run.dag_version
                        );
                        if let Some(s) = &d.source {
                            println!("source: {s} (recorded with the run)");
                        }
                        println!("tasks:");
                        for t in &d.tasks {
                            // Whether the task's last error can pass with a retry.
                            let kind = d
                                .attempts
                                .iter()
                                .rev()
                                .find(|a| a.task_id == t.task_id && a.error.is_some())
                                .and_then(|a| a.retryable)
                                .map(error_kind)
                                .unwrap_or("error");
                            println!(
                                "  {:<8} {:<16} try {}/{}{}{}{}",
                                t.task_id,
                                t.state,
                                t.try_number - t.interruptions,
                                t.max_tries,
                                // Interrupted tries (shutdown, a dead worker) use up no tries.
                                if t.interruptions > 0 {
                                    format!(" (+{} interrupted)", t.interruptions)
                                } else {
                                    String::new()
                                },
                                t.next_attempt_at
                                    .map(|n| format!("  next try at {}", n.to_rfc3339()))
                                    .unwrap_or_default(),
                                t.last_error
                                    .as_ref()
                                    .map(|e| format!("  {kind}: {e}"))
                                    .unwrap_or_default()
                            );
                            if t.state == "failed" {
                                let hint = ops::retry_hint(d.run.id, &t.task_id, t.last_error.as_deref());
                                println!("           then: {hint}");
                            }
                        }
                        println!("attempts:");
                        for a in &d.attempts {
                            println!(
                                "  #{:<5} gen {} {:<8} try {} on {:<20} {:<13} {} -> {}{}",
                                a.id,
                                a.generation,
                                a.task_id,
                                a.try_number,
                                a.worker,
                                a.outcome,
                                a.started_at.to_rfc3339(),
                                a.ended_at.map(|t| t.to_rfc3339()).unwrap_or_else(|| "…".into()),
                                a.error
                                    .as_ref()
                                    .map(|e| format!("  {}: {e}", a.retryable.map(error_kind).unwrap_or("error")))
                                    .unwrap_or_default()
                            );
                        }
                    }
                }
                RunsAction::Cancel { run_id, backfill } => {
                    let cancelled = match run_id {
                        Some(id) if !backfill => vec![ops::cancel(&pool, &dag, id, ORIGIN).await?],
                        _ => ops::cancel_backfill(&pool, &dag, ORIGIN).await?,
                    };
                    if backfill {
                        println!("cancelled {} queued backfill run(s)", cancelled.len());
                    }
                    for c in &cancelled {
                        let stopped = if c.stopped.is_empty() {
                            String::new()
                        } else {
                            format!("; stopping {} (its worker is fenced out)", c.stopped.join(", "))
                        };
                        println!("run {} ({}) cancelled: failed{stopped}", c.run_id, c.period);
                    }
                }
                RunsAction::Trigger { period, rerun, source } => {
                    let t = ops::trigger_with_source(&pool, &dag, period, rerun, "manual", ORIGIN, source.as_deref())
                        .await?;
                    if t.created {
                        let from = source
                            .as_deref()
                            .and_then(|s| reelflow_fetch::Source::parse(s).ok())
                            .map(|s| format!(" (source {s})"))
                            .unwrap_or_default();
                        println!("run {} for {} is queued{from}", t.run.id, t.run.period);
                    } else {
                        println!(
                            "run {} for {} already exists ({}); nothing changed (use --rerun to run it again)",
                            t.run.id, t.run.period, t.run.state
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Tasks { action } => {
            let pool = db::connect(&cfg).await?;
            let dag = pipeline::dag_spec(&cfg);
            match action {
                TasksAction::Retry {
                    run_id,
                    task,
                    downstream,
                } => {
                    let cleared = ops::retry(&pool, &dag, run_id, &task, downstream, ORIGIN).await?;
                    println!(
                        "run {run_id}: cleared {} (a running `reelflow serve` picks them up)",
                        cleared.join(", ")
                    );
                    if let Some(note) = ops::retry_note(&cleared) {
                        println!("note: {note}");
                    }
                }
                TasksAction::Mark {
                    run_id,
                    task,
                    state,
                    note,
                } => {
                    ops::with_note(note, ops::mark(&pool, &dag, run_id, &task, &state, ORIGIN)).await?;
                    println!("run {run_id}: task {task} marked {state}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Backfill { from, to, rerun, yes } => {
            let ocfg = ops::OpsConfig::from_config(&cfg);
            let n = ops::backfill_plan(from, to, yes, ocfg.max_backfill_runs, chrono::Utc::now())?;
            println!("backfill {from}..{to}: {n} period(s)");
            let pool = db::connect(&cfg).await?;
            let dag = pipeline::dag_spec(&cfg);
            for t in ops::backfill(&pool, &dag, from, to, rerun, yes, &ocfg, ORIGIN).await? {
                println!(
                    "{} run {} ({})",
                    t.run.period,
                    t.run.id,
                    if t.created { "queued" } else { "exists" }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Actions {
            action: ActionsAction::List { limit, json },
        } => {
            let pool = db::connect(&cfg).await?;
            let actions = ops::list_actions(&pool, limit).await?;
            if json {
                print_json(&actions);
            } else {
                println!(
                    "{:>5}  {:<20}  {:<16}  {:<11}  {:>5}  {:<8}  {:<7}  detail",
                    "id", "at", "origin", "action", "run", "period", "task"
                );
                for a in actions {
                    println!(
                        "{:>5}  {:<20}  {:<16}  {:<11}  {:>5}  {:<8}  {:<7}  {}",
                        a.id,
                        a.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        a.origin,
                        a.action,
                        a.run_id.map(|r| r.to_string()).unwrap_or_default(),
                        a.period.unwrap_or_default(),
                        a.task_id.unwrap_or_default(),
                        a.detail.map(|d| d.to_string()).unwrap_or_default()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Snapshots { action } => {
            let pool = db::connect(&cfg).await?;
            match action {
                SnapshotAction::List { json } => {
                    let snaps = reelflow_load::list_snapshots(&pool).await?;
                    if json {
                        print_json(&snaps);
                    } else {
                        println!(
                            "{:>5}  {:<8}  {:<11}  {:<22}  {:>12}  {:>8}  {:<25}  note",
                            "id", "period", "state", "schema", "rows", "rejects", "published"
                        );
                        for s in snaps {
                            let note = match (s.rollback_target, s.rollforward_target) {
                                (true, _) => "rollback target",
                                (_, true) => "rollforward target",
                                _ => "",
                            };
                            println!(
                                "{:>5}  {:<8}  {:<11}  {:<22}  {:>12}  {:>8}  {:<25}  {}",
                                s.id,
                                s.period,
                                s.state,
                                s.schema_name,
                                s.rows_total.map(|n| n.to_string()).unwrap_or_default(),
                                s.rejects_total.map(|n| n.to_string()).unwrap_or_default(),
                                s.published_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                                note
                            );
                        }
                    }
                }
                SnapshotAction::Rollback { to } => {
                    let target = to.map_or(reelflow_load::RollTarget::Previous, reelflow_load::RollTarget::Id);
                    let out = ops::rollback(&pool, target, &ops::OpsConfig::from_config(&cfg), ORIGIN).await?;
                    println!("{}", describe_roll(&out, "rolled back"));
                }
                SnapshotAction::Diff {
                    id,
                    change,
                    limit,
                    cursor,
                    json,
                } => {
                    let id = match id {
                        Some(id) => id,
                        None => sqlx::query_scalar("SELECT id FROM reelflow.snapshots WHERE state = 'published'")
                            .fetch_optional(&pool)
                            .await?
                            .ok_or_else(|| anyhow::anyhow!("no snapshot is published; give a snapshot id"))?,
                    };
                    let q = reelflow::ui::diff::DiffQuery {
                        change,
                        cursor,
                        limit: Some(limit),
                    };
                    let page = reelflow::ui::diff::diff(&pool, id, &q)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    if json {
                        print_json(&page);
                    } else {
                        print!("{}", reelflow::ui::diff::render(&page));
                    }
                }
                SnapshotAction::Rollforward => {
                    let target = reelflow_load::RollTarget::Forward;
                    let out = ops::rollback(&pool, target, &ops::OpsConfig::from_config(&cfg), ORIGIN).await?;
                    println!("{}", describe_roll(&out, "retired"));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Db { action } => match action {
            DbAction::Url => {
                println!("{}", db::url(&cfg).await?);
                Ok(ExitCode::SUCCESS)
            }
            DbAction::Stop => {
                db::stop_embedded(&cfg)?;
                Ok(ExitCode::SUCCESS)
            }
        },
    }
}
