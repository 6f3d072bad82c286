//! What the bench reads from the operating system: CPU time (`/proc/stat`, `/proc/<pid>/stat`,
//! `getrusage`), memory (`/proc/<pid>/status`) and free disk space (`statvfs`). The parsers are
//! pure functions of the files' text, tested below; the readers around them are a few lines each.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Clock ticks of the whole machine, summed over its CPUs, from the `cpu` line of `/proc/stat`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MachineTicks {
    /// user + nice + system + irq + softirq + steal (guest time is already inside user/nice).
    pub busy: u64,
    pub idle: u64,
    pub iowait: u64,
    /// The `cpuN` lines: CPUs online.
    pub cpus: u32,
}

/// Machine CPU use between two [`MachineTicks`] readings, in cores (of `cpus`).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct MachineCpu {
    pub busy_cores: f64,
    pub iowait_cores: f64,
    pub cpus: u32,
}

/// Parses `/proc/stat`: the aggregate `cpu` line and the number of `cpuN` lines.
pub fn parse_proc_stat(text: &str) -> Option<MachineTicks> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    let cpus = text
        .lines()
        .filter(|l| {
            l.strip_prefix("cpu")
                .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count() as u32;
    Some(MachineTicks {
        // Fields: user nice system idle iowait irq softirq steal guest guest_nice.
        busy: at(0) + at(1) + at(2) + at(5) + at(6) + at(7),
        idle: at(3),
        iowait: at(4),
        cpus: cpus.max(1),
    })
}

impl MachineTicks {
    /// Now, from `/proc/stat` (all zeros where it cannot be read).
    pub fn now() -> MachineTicks {
        std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|t| parse_proc_stat(&t))
            .unwrap_or_default()
    }

    /// The share of the machine that was busy (and waiting for I/O) since `earlier`, as a
    /// number of cores.
    pub fn since(&self, earlier: &MachineTicks) -> MachineCpu {
        let busy = self.busy.saturating_sub(earlier.busy) as f64;
        let idle = self.idle.saturating_sub(earlier.idle) as f64;
        let iowait = self.iowait.saturating_sub(earlier.iowait) as f64;
        let total = busy + idle + iowait;
        let cpus = self.cpus.max(1);
        if total == 0.0 {
            return MachineCpu {
                cpus,
                ..MachineCpu::default()
            };
        }
        MachineCpu {
            busy_cores: busy / total * cpus as f64,
            iowait_cores: iowait / total * cpus as f64,
            cpus,
        }
    }
}

/// The CPU fields of one `/proc/<pid>/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidStat {
    pub ppid: u32,
    /// utime + stime: the process itself.
    pub ticks: u64,
    /// cutime + cstime: its children that have ended and been waited for (and theirs).
    pub child_ticks: u64,
}

/// Parses `/proc/<pid>/stat`: fields 4 (ppid) and 14 to 17 (utime, stime, cutime, cstime),
/// counted after the parenthesised command name, which may itself hold spaces.
pub fn parse_pid_stat(text: &str) -> Option<PidStat> {
    let rest = text.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Some(PidStat {
        ppid: n(1)? as u32,
        ticks: n(11)? + n(12)?,
        child_ticks: n(13)? + n(14)?,
    })
}

fn pid_stat(pid: &str) -> Option<PidStat> {
    parse_pid_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `sysconf(_SC_CLK_TCK)`: the unit of the times in `/proc/<pid>/stat` (100 where unknown).
pub fn clock_ticks_per_second() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// CPU seconds (user + system) process `pid` has used so far, from `/proc/<pid>/stat`.
pub fn process_cpu_seconds(pid: &str) -> Option<f64> {
    Some(pid_stat(pid)?.ticks as f64 / clock_ticks_per_second())
}

/// CPU seconds used so far by a server that forks a process per task, as PostgreSQL does:
/// the postmaster `pid` itself, its ended children (cutime + cstime: every backend and parallel
/// worker that has exited) and its live children (the backends now connected, the checkpointer,
/// the WAL writer, ...). Unlike the machine's busy time, other processes on the machine do not
/// count. A child that exits between the two readings of /proc may be missed once (a few ticks).
pub fn server_cpu_seconds(postmaster: u32) -> f64 {
    let Some(me) = pid_stat(&postmaster.to_string()) else {
        return f64::NAN;
    };
    let live: u64 = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(pid_stat)
        })
        .filter(|p| p.ppid == postmaster)
        .map(|p| p.ticks)
        .sum();
    (me.ticks + me.child_ticks + live) as f64 / clock_ticks_per_second()
}

/// CPU seconds (user + system) this process has used so far.
pub fn self_cpu_seconds() -> f64 {
    process_cpu_seconds("self").unwrap_or(0.0)
}

/// CPU seconds (user + system) of this process's children that have ended and been waited
/// for (`getrusage(RUSAGE_CHILDREN)`, microsecond resolution). The difference around one
/// child's wait is that child's CPU time, with nothing else running as a child meanwhile.
pub fn children_cpu_seconds() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    use nix::sys::time::TimeValLike;
    match getrusage(UsageWho::RUSAGE_CHILDREN) {
        Ok(u) => (u.user_time().num_microseconds() + u.system_time().num_microseconds()) as f64 / 1e6,
        Err(_) => f64::NAN,
    }
}

/// (VmHWM, VmRSS) in KiB from the text of `/proc/<pid>/status`.
pub fn parse_status_memory(status: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// (VmHWM, VmRSS) in KiB of a live process.
pub fn proc_memory(pid: u32) -> Option<(u64, u64)> {
    parse_status_memory(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// Bytes an unprivileged user may still write on the filesystem holding `path` (`statvfs`:
/// available blocks times the fragment size).
pub fn free_bytes(path: &Path) -> anyhow::Result<u64> {
    let s = nix::sys::statvfs::statvfs(path).map_err(|e| anyhow::anyhow!("statvfs {}: {e}", path.display()))?;
    Ok(s.blocks_available() as u64 * s.fragment_size() as u64)
}

/// Bytes allocated on disk to the files under `path` (blocks of 512 bytes), not following
/// symbolic links and counting a file with several hard links once (the artifact store links
/// an unchanged download into each new attempt): `seen` holds the (device, inode) pairs already
/// counted. Files that vanish while it walks are skipped.
fn disk_bytes(path: &Path, seen: &mut HashSet<(u64, u64)>) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !seen.insert((meta.dev(), meta.ino())) {
        return 0;
    }
    let own = meta.blocks() * 512;
    if !meta.is_dir() {
        return own;
    }
    let children: u64 = std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| disk_bytes(&e.path(), seen))
        .sum();
    own + children
}

/// Samples the disk space the bench's own folders take (the bench PostgreSQL's data folder, the
/// scale's working files) every 500 ms on a thread of its own and keeps the largest total, and
/// the largest of each folder. The free space of the filesystem would also move with whatever
/// else runs on the machine.
pub struct DiskWatch {
    stop: Arc<AtomicBool>,
    /// The largest total, then the largest of each root.
    largest: Arc<Vec<AtomicU64>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DiskWatch {
    pub fn start(roots: Vec<PathBuf>) -> DiskWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let largest: Arc<Vec<AtomicU64>> = Arc::new((0..=roots.len()).map(|_| AtomicU64::new(0)).collect());
        let thread = {
            let (stop, largest) = (stop.clone(), largest.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // One set for all roots: a file linked into two of them counts once.
                    let mut seen = HashSet::new();
                    let sizes: Vec<u64> = roots.iter().map(|r| disk_bytes(r, &mut seen)).collect();
                    largest[0].fetch_max(sizes.iter().sum(), Ordering::Relaxed);
                    for (l, n) in largest[1..].iter().zip(sizes) {
                        l.fetch_max(n, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            })
        };
        DiskWatch {
            stop,
            largest,
            thread: Some(thread),
        }
    }

    /// Stops the sampling: the largest total seen, and the largest of each root, in bytes.
    pub fn stop(mut self) -> (u64, Vec<u64>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let l: Vec<u64> = self.largest.iter().map(|a| a.load(Ordering::Relaxed)).collect();
        (l[0], l[1..].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  4705 150 1120 16250 520 5 30 7 100 0\n\
                        cpu0 2000 100 500 8000 300 3 20 4 50 0\n\
                        cpu1 2705 50 620 8250 220 2 10 3 50 0\n\
                        intr 123 0 0\nctxt 456\nbtime 1700000000\n";

    #[test]
    fn proc_stat_sums_busy_fields_and_counts_cpus() {
        let t = parse_proc_stat(STAT).unwrap();
        // guest (100) is already counted in user: not added again.
        assert_eq!(t.busy, 4705 + 150 + 1120 + 5 + 30 + 7);
        assert_eq!((t.idle, t.iowait, t.cpus), (16250, 520, 2));
        assert_eq!(parse_proc_stat("intr 1 2\n"), None);
    }

    #[test]
    fn machine_cpu_is_in_cores() {
        let a = MachineTicks {
            busy: 1000,
            idle: 5000,
            iowait: 100,
            cpus: 2,
        };
        // 150 busy, 30 idle, 20 iowait ticks over 200: 1.5 of 2 cores busy, 0.2 waiting.
        let b = MachineTicks {
            busy: 1150,
            idle: 5030,
            iowait: 120,
            cpus: 2,
        };
        let c = b.since(&a);
        assert!((c.busy_cores - 1.5).abs() < 1e-9, "{c:?}");
        assert!((c.iowait_cores - 0.2).abs() < 1e-9, "{c:?}");
        assert_eq!(a.since(&a).busy_cores, 0.0);
    }

    #[test]
    fn pid_stat_ticks_survive_a_command_name_with_spaces_and_parentheses() {
        let text = "4242 (tokio (rt) worker) S 1 4242 4242 0 -1 4194560 2000 0 0 0 \
                    731 269 5 7 20 0 6 0 12345 1000000 2000 18446744073709551615";
        let p = parse_pid_stat(text).unwrap();
        assert_eq!(p.ppid, 1);
        assert_eq!(p.ticks, 731 + 269);
        assert_eq!(p.child_ticks, 5 + 7);
        assert_eq!(parse_pid_stat("4242 (x) S 1"), None);
        assert!(self_cpu_seconds() >= 0.0);
    }

    #[test]
    fn status_memory() {
        let s = "Name:\treelflow\nVmPeak:\t  900 kB\nVmHWM:\t   51200 kB\nVmRSS:\t   13400 kB\n";
        assert_eq!(parse_status_memory(s), Some((51200, 13400)));
        assert_eq!(parse_status_memory("Name:\tx\n"), None);
    }

    fn dir_bytes(path: &Path) -> u64 {
        disk_bytes(path, &mut HashSet::new())
    }

    #[test]
    fn folder_sizes_and_the_watch() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a"), vec![1u8; 100_000]).unwrap();
        std::fs::write(dir.path().join("b"), vec![2u8; 50_000]).unwrap();
        let n = dir_bytes(dir.path());
        assert!((150_000..200_000).contains(&n), "{n}");
        // A second hard link takes no more space.
        std::fs::hard_link(dir.path().join("b"), dir.path().join("sub/b")).unwrap();
        assert_eq!(dir_bytes(dir.path()), n);
        assert_eq!(dir_bytes(&dir.path().join("missing")), 0);
        let watch = DiskWatch::start(vec![dir.path().join("sub"), dir.path().join("b")]);
        std::thread::sleep(Duration::from_millis(50));
        let (total, each) = watch.stop();
        assert_eq!(each.len(), 2);
        assert_eq!(total, each[0] + each[1]);
        assert!((150_000..=n).contains(&total), "{total} {n}");
    }

    #[test]
    fn the_readers_answer_on_linux() {
        assert!(MachineTicks::now().cpus >= 1);
        assert!(free_bytes(Path::new(".")).unwrap() > 0);
        assert!(children_cpu_seconds() >= 0.0);
        // This process as a "server": its own time at least.
        assert!(server_cpu_seconds(std::process::id()) >= 0.0);
    }
}
