//! Who this process is, in terms another process on the same machine can check: host name,
//! boot id, pid and the pid's start time. A lease held by a process of this host and boot that
//! no longer exists (or whose pid now belongs to a newer process) is provably dead, and its
//! task is taken over at once instead of after the lease expires.

/// This process's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub hostname: String,
    /// `/proc/sys/kernel/random/boot_id`: pids are only comparable within one boot.
    pub boot_id: String,
    pub pid: u32,
    /// Start time of the process in clock ticks since boot (`/proc/<pid>/stat`, field 22).
    pub start_ticks: u64,
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// The start time (clock ticks since boot) of `pid`, or `None` when no such process exists
/// (or this is not Linux).
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl Identity {
    /// This process; `None` where `/proc` does not tell (then nothing is taken over early).
    pub fn current() -> Option<Identity> {
        let pid = std::process::id();
        Some(Identity {
            hostname: read_trim("/proc/sys/kernel/hostname")?,
            boot_id: read_trim("/proc/sys/kernel/random/boot_id")?,
            pid,
            start_ticks: start_ticks(pid)?,
        })
    }

    /// Whether the process `pid` that started at `ticks`, on this host and boot, is gone.
    pub fn is_dead_here(&self, hostname: &str, boot_id: &str, pid: u32, ticks: u64) -> bool {
        hostname == self.hostname && boot_id == self.boot_id && start_ticks(pid) != Some(ticks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_process_is_not_dead_and_an_exited_one_is() {
        let me = Identity::current().expect("Linux /proc");
        assert!(!me.is_dead_here(&me.hostname, &me.boot_id, me.pid, me.start_ticks));
        assert!(
            me.is_dead_here(&me.hostname, &me.boot_id, me.pid, me.start_ticks + 1),
            "pid reused"
        );
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let ticks = start_ticks(pid);
        child.wait().unwrap();
        if let Some(ticks) = ticks {
            assert!(me.is_dead_here(&me.hostname, &me.boot_id, pid, ticks));
        }
        // Another host or boot is never judged from here.
        assert!(!me.is_dead_here("elsewhere", &me.boot_id, pid, 0));
        assert!(!me.is_dead_here(&me.hostname, "another-boot", pid, 0));
    }
}
