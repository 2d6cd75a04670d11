//! Just enough of `/proc` to find a host's worker processes and tell whether a
//! process burns CPU.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// What the tests need from `/proc/PID/stat`.
#[derive(Debug, Clone, Copy)]
struct Stat {
    ppid: i32,
    zombie: bool,
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
}

/// Reads `/proc/PID/stat`; `None` when the process is gone.
fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after it.
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    Some(Stat {
        zombie: fields.first() == Some(&"Z"),
        ppid: fields.get(1)?.parse().ok()?,
        cpu_ticks: field(11)? + field(12)?,
    })
}

/// Every live (non-zombie) process with its parent.
fn live_processes() -> BTreeMap<i32, Stat> {
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, stat(pid)?)))
        .filter(|(_, s)| !s.zombie)
        .collect()
}

/// Live descendants of `root` (children, grandchildren, ...), `root` excluded.
pub fn descendants(root: i32) -> Vec<i32> {
    let procs = live_processes();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            procs
                .iter()
                .filter(|(_, s)| s.ppid == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// The argv of `pid` (empty when gone).
fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Live descendants of `host` whose command line has a `worker` argument
/// (the `mimhost worker` processes of SPEC 10).
pub fn worker_pids(host: i32) -> BTreeSet<i32> {
    descendants(host)
        .into_iter()
        .filter(|pid| cmdline(*pid).iter().skip(1).any(|a| a.contains("worker")))
        .collect()
}

/// CPU use of each still-live process in `pids` over `window`, in cores
/// (1.0 = one core busy the whole time).
pub async fn cpu_load(pids: &BTreeSet<i32>, window: Duration) -> BTreeMap<i32, f64> {
    let sample = || -> BTreeMap<i32, u64> {
        pids.iter()
            .filter_map(|pid| {
                stat(*pid)
                    .filter(|s| !s.zombie)
                    .map(|s| (*pid, s.cpu_ticks))
            })
            .collect()
    };
    let before = sample();
    tokio::time::sleep(window).await;
    let after = sample();
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    after
        .into_iter()
        .filter_map(|(pid, end)| {
            let start = before.get(&pid)?;
            let busy = end.saturating_sub(*start) as f64 / ticks_per_second;
            Some((pid, busy / window.as_secs_f64()))
        })
        .collect()
}
