//! Fingerprints the code that decides what a load builds (this crate and the cleaner) so that
//! `build_id()` changes whenever that code does: a rerun of an unchanged source reuses its
//! snapshot only when the same code would build it again.

use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn main() {
    let roots = ["src", "../clean/src"];
    let mut all = Vec::new();
    for r in roots {
        println!("cargo:rerun-if-changed={r}");
        files(Path::new(r), &mut all);
    }
    all.sort();
    // FNV-1a, 64 bits: no dependency, stable across toolchains.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in &all {
        let name = p.to_string_lossy().replace('\\', "/");
        for b in name.bytes().chain(std::fs::read(p).unwrap_or_default()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    println!("cargo:rustc-env=REELFLOW_LOAD_SOURCE_HASH={h:016x}");
}
