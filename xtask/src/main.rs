//! Repository tasks, run as `cargo xtask <task>` (an alias in `.cargo/config.toml` for
//! `cargo run --release -p xtask --`):
//!
//! - `gen-dataset`: writes a deterministic stand-in for The Movies Dataset zip ([`gen`]).
//! - `bench`: the full-scale benchmark of issues 6 and 16 ([`bench`]): a full `reelflow run`
//!   from a local S3 server against two baselines, the raw `psql \copy` of the clean output with
//!   the same keys and the bare psql script of `bench/bare-psql.sh`, alternated, at one or more
//!   scales; also the idle daemon, start-up and hand-off figures.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod gen;
mod rng;
mod text;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "reelflow repository tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a deterministic Movies Dataset zip (same seed and scale => same bytes).
    GenDataset {
        /// Row counts relative to the real dataset (1 = 45,466 movies, 26,024,289 ratings).
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// The zip to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Benchmark: a full `reelflow run` vs raw `psql \copy` of the clean output and vs the bare
    /// psql script, alternated, at one or more scales (`--scale 0.25,1,4`).
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::GenDataset { scale, seed, out } => gen_dataset(scale, seed, &out),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn gen_dataset(scale: f64, seed: u64, out: &std::path::Path) -> anyhow::Result<()> {
    let plan = gen::Plan::new(scale, seed)?;
    let files = gen::generate(&plan, out)?;
    let zip_bytes = std::fs::metadata(out)?.len();
    println!("{} (scale {scale}, seed {seed}): {zip_bytes} bytes", out.display());
    for f in &files {
        println!("  {:<20} {:>11} records {:>13} bytes", f.name, f.records, f.bytes);
    }
    Ok(())
}
