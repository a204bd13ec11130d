//! What this machine can give a job: memory still available and cores, so that budgets come from
//! the machine a job runs on, never from a number read in one of its input files.
//!
//! Memory is `MemAvailable` of /proc/meminfo, lowered to what the process's cgroups still allow
//! (the limit less the use, v2 or v1, on its cgroup and every cgroup above it): inside a
//! container /proc/meminfo shows the host's memory, and a job sized by that would be killed by the
//! container's limit instead of refused with a message.

use std::path::Path;

/// Bytes of memory this process can still use, if the system says (Linux); `None` elsewhere.
pub fn available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| mem_available(&t));
    let cgroup = cgroup_rooms().into_iter().min();
    match (meminfo, cgroup) {
        (Some(m), Some(c)) => Some(m.min(c)),
        (m, c) => m.or(c),
    }
}

/// Cores this process may run on (at least 1).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `bytes` in GiB with one decimal, for messages (`8.6 GiB`).
pub fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

/// `MemAvailable` of a /proc/meminfo text, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// A cgroup version's memory files: the controller's root, the limit and the usage.
struct Controller {
    root: &'static str,
    limit: &'static str,
    usage: &'static str,
}

/// cgroup v2 (the unified hierarchy) and v1 (a `memory` hierarchy of its own).
const CONTROLLERS: [(&str, Controller); 2] = [
    ("0::", Controller { root: "/sys/fs/cgroup", limit: "memory.max", usage: "memory.current" }),
    (
        ":memory:",
        Controller { root: "/sys/fs/cgroup/memory", limit: "memory.limit_in_bytes", usage: "memory.usage_in_bytes" },
    ),
];

/// Room left in every memory cgroup of this process: its own and each one above it.
fn cgroup_rooms() -> Vec<u64> {
    let Ok(text) = std::fs::read_to_string("/proc/self/cgroup") else { return Vec::new() };
    let mut out = Vec::new();
    for (tag, c) in &CONTROLLERS {
        let Some(rel) = text.lines().find_map(|l| l.split_once(tag).map(|(_, r)| r)) else { continue };
        let mut dir = Path::new(c.root).join(rel.trim_start_matches('/'));
        loop {
            out.extend(cgroup_room(&dir, c));
            if dir == Path::new(c.root) || !dir.pop() {
                break;
            }
        }
    }
    out
}

/// What the cgroup at `dir` still allows: its limit less its use; `None` without a limit (v2
/// writes `max`, and a missing folder is one a container does not show).
fn cgroup_room(dir: &Path, c: &Controller) -> Option<u64> {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok()?.trim().parse::<u64>().ok();
    let max = read(c.limit)?;
    Some(max.saturating_sub(read(c.usage).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_available_is_read_in_bytes() {
        let text = "MemTotal:       32000000 kB\nMemFree:         1000 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(mem_available(text), Some(2048 * 1024));
        assert_eq!(mem_available("MemTotal: 5 kB\n"), None);
    }

    #[test]
    fn this_machine_reports_some_memory_and_a_core() {
        assert!(cores() >= 1);
        if cfg!(target_os = "linux") {
            assert!(available().is_some_and(|b| b > 0));
        }
    }
}
