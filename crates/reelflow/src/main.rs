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
        /// Listen address (default engine.listen, or REELFLOW_LISTEN).
        #[arg(long)]
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
    /// Create runs for every period from --from to --to (inclusive).
    Backfill {
        #[arg(long)]
        from: Period,
        #[arg(long)]
        to: Period,
        #[arg(long)]
        rerun: bool,
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
enum RunsAction {
    /// List runs, newest period first.
    List {
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A run with its task instances and every attempt with its error.
    Show {
        run_id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Create the run of a period (a no-op if it exists, unless --rerun).
    Trigger {
        #[arg(long)]
        period: Period,
        #[arg(long)]
        rerun: bool,
    },
}

#[derive(Subcommand)]
enum TasksAction {
    /// Run a task again (Airflow's "clear"); --downstream also re-runs the tasks after it.
    Retry {
        run_id: i64,
        task: String,
        #[arg(long)]
        downstream: bool,
    },
    /// Set a task's state by hand.
    Mark {
        run_id: i64,
        task: String,
        #[arg(value_parser = ["success", "failed"])]
        state: String,
    },
}

#[derive(Subcommand)]
enum SnapshotAction {
    /// List snapshots, newest first.
    List,
    /// Publish the previous snapshot again.
    Rollback,
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
            .compact()
            .with_filter(filter());
        tracing_subscriber::registry()
            .with(lines)
            .with(AttemptLogLayer::new().with_filter(filter()))
            .init();
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    use std::io::IsTerminal;
    // The daemon logs JSON lines to stdout; interactive commands log compactly to stderr.
    let progress = (matches!(cli.command, Command::Run { .. })
        && std::io::stderr().is_terminal()
        && std::env::var_os("REELFLOW_LOG").is_none()
        && std::env::var_os("REELFLOW_LOG_FORMAT").is_none())
    .then(reelflow::progress::Latest::default);
    init_logging(matches!(cli.command, Command::Serve { .. }), progress.clone());
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
            let pool = db::connect(&cfg).await?;
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
                        println!(
                            "{:>6}  {:<8}  {:<8}  {:<9}  {:>3}  {:<25}  ended",
                            "run", "period", "state", "trigger", "gen", "created"
                        );
                        for r in runs {
                            println!(
                                "{:>6}  {:<8}  {:<8}  {:<9}  {:>3}  {:<25}  {}",
                                r.id,
                                r.period,
                                r.state,
                                r.trigger,
                                r.generation,
                                r.created_at.to_rfc3339(),
                                r.ended_at.map(|t| t.to_rfc3339()).unwrap_or_default()
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
                            "run {} of {} for {}: {} ({}, generation {})",
                            d.run.id, d.run.dag_id, d.run.period, d.run.state, d.run.trigger, d.run.generation
                        );
                        println!("tasks:");
                        for t in &d.tasks {
                            println!(
                                "  {:<8} {:<16} try {}/{}{}{}",
                                t.task_id,
                                t.state,
                                t.try_number,
                                t.max_tries,
                                t.next_attempt_at
                                    .map(|n| format!("  next try at {}", n.to_rfc3339()))
                                    .unwrap_or_default(),
                                t.last_error
                                    .as_ref()
                                    .map(|e| format!("  error: {e}"))
                                    .unwrap_or_default()
                            );
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
                                a.error.as_ref().map(|e| format!("  error: {e}")).unwrap_or_default()
                            );
                        }
                    }
                }
                RunsAction::Trigger { period, rerun } => {
                    let t = ops::trigger(&pool, &dag, period, rerun, "manual", ORIGIN).await?;
                    if t.created {
                        println!("run {} for {} is queued", t.run.id, t.run.period);
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
                }
                TasksAction::Mark { run_id, task, state } => {
                    ops::mark(&pool, &dag, run_id, &task, &state, ORIGIN).await?;
                    println!("run {run_id}: task {task} marked {state}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Backfill { from, to, rerun } => {
            let pool = db::connect(&cfg).await?;
            let dag = pipeline::dag_spec(&cfg);
            for t in ops::backfill(&pool, &dag, from, to, rerun, ORIGIN).await? {
                println!(
                    "{} run {} ({})",
                    t.run.period,
                    t.run.id,
                    if t.created { "queued" } else { "exists" }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Snapshots { action } => {
            let pool = db::connect(&cfg).await?;
            match action {
                SnapshotAction::List => {
                    let snaps = reelflow_load::list_snapshots(&pool).await?;
                    println!(
                        "{:>5}  {:<8}  {:<11}  {:<22}  {:>12}  {:>8}  published",
                        "id", "period", "state", "schema", "rows", "rejects"
                    );
                    for s in snaps {
                        println!(
                            "{:>5}  {:<8}  {:<11}  {:<22}  {:>12}  {:>8}  {}",
                            s.id,
                            s.period,
                            s.state,
                            s.schema_name,
                            s.rows_total.map(|n| n.to_string()).unwrap_or_default(),
                            s.rejects_total.map(|n| n.to_string()).unwrap_or_default(),
                            s.published_at.map(|t| t.to_rfc3339()).unwrap_or_default()
                        );
                    }
                }
                SnapshotAction::Rollback => {
                    let out = ops::rollback(&pool, ORIGIN).await?;
                    println!(
                        "published snapshot {} (period {}) again; snapshot {:?} was rolled back",
                        out.snapshot_id, out.period, out.replaced
                    );
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
