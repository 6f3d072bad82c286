//! Times `clean_zip` on one archive (a benchmark, not a test):
//!
//! ```text
//! cargo run --release -p reelflow-clean --example clean_bench -- <zip> <out-dir>
//! ```
//!
//! Prints the wall time and the throughput in MB of decompressed CSV per second.

use std::path::Path;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, zip, out] = args.as_slice() else {
        eprintln!("usage: clean_bench <zip> <out-dir>");
        std::process::exit(2);
    };
    let (zip, out) = (Path::new(zip), Path::new(out));
    let started = Instant::now();
    let manifest = match reelflow_clean::clean_zip(zip, out, &reelflow_clean::CleanConfig::default()) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("clean failed: {e}");
            std::process::exit(1);
        }
    };
    let secs = started.elapsed().as_secs_f64();
    let mut archive = zip::ZipArchive::new(std::fs::File::open(zip).expect("open zip")).expect("read zip");
    let bytes: u64 = (0..archive.len())
        .filter_map(|i| archive.by_index_raw(i).ok().map(|f| f.size()))
        .sum();
    println!(
        "{secs:.3}s, {} MB of CSV, {:.0} MB/s, {} rows, {} rejected",
        bytes / 1_000_000,
        bytes as f64 / 1e6 / secs,
        manifest.total_rows(),
        manifest.total_rejected()
    );
}
