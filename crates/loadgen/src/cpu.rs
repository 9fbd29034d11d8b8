//! CPU use of processes during a measurement, from `/proc` (Linux; elsewhere nothing is
//! reported). Times are in clock ticks of `USER_HZ`, which Linux fixes at 100 per second
//! for user space on every architecture we run on.

use std::collections::HashMap;

/// Clock ticks per second in `/proc` (`USER_HZ`).
const TICKS_PER_SECOND: f64 = 100.0;

/// `utime + stime` of a process, from the text of `/proc/PID/stat`. The command name may
/// hold spaces and parentheses, so fields are counted after its last `)`.
pub fn ticks_from_stat(stat: &str) -> Option<u64> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of the line, utime 14 and stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The command name of a process, from `/proc/PID/stat`.
fn comm_from_stat(stat: &str) -> Option<&str> {
    let start = stat.find('(')? + 1;
    let end = stat.rfind(')')?;
    stat.get(start..end)
}

fn process_ticks(pid: u32) -> Option<u64> {
    ticks_from_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Ticks of every process named `comm`, by pid.
fn ticks_by_comm(comm: &str) -> HashMap<u32, u64> {
    let mut found = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if comm_from_stat(&stat) == Some(comm)
            && let Some(ticks) = ticks_from_stat(&stat)
        {
            found.insert(pid, ticks);
        }
    }
    found
}

/// The whole machine's counters of the `cpu` line of `/proc/stat`.
#[derive(Debug, Clone, Copy)]
struct MachineTicks {
    /// Idle and iowait.
    idle: u64,
    /// Steal: time the hypervisor ran something else while a core of this VM had work.
    steal: u64,
    /// The number of cores (its `cpuN` lines; not the affinity mask, which taskset narrows).
    cores: usize,
}

/// Reads [`MachineTicks`].
///
/// Busy time is derived from idle time and the wall clock, not read: with a tickless kernel
/// the idle time is measured exactly, while the busy fields are sampled at timer ticks, which
/// miss (or over-count) short bursts of work such as a load test's calls.
fn machine_ticks() -> Option<MachineTicks> {
    machine_ticks_from(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// [`MachineTicks`] from the text of `/proc/stat`.
fn machine_ticks_from(stat: &str) -> Option<MachineTicks> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let cores = stat
        .lines()
        .filter(|l| {
            l.strip_prefix("cpu")
                .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count();
    let values: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // idle and iowait are fields 4 and 5; steal is field 8.
    let idle = values.get(3).copied()? + values.get(4).copied().unwrap_or(0);
    let steal = values.get(7).copied().unwrap_or(0);
    Some(MachineTicks {
        idle,
        steal,
        cores: cores.max(1),
    })
}

/// A snapshot at the start of a measurement.
#[derive(Debug, Clone)]
pub struct Snapshot {
    server: Option<(u32, u64)>,
    generator: Option<u64>,
    comms: Vec<(String, HashMap<u32, u64>)>,
    machine: Option<MachineTicks>,
}

/// CPU use over a measurement, in percent of one core (200 = both cores of two).
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// The server process.
    pub server: Option<f64>,
    /// This generator.
    pub generator: Option<f64>,
    /// Each watched command name, summed over its processes.
    pub comms: Vec<(String, f64)>,
    /// The whole machine (every process, ours and others').
    pub machine: Option<f64>,
    /// Milliseconds, summed over the cores, that the hypervisor took the machine's cores
    /// away while they had work (steal): pauses no process here can see or avoid, which
    /// show in the latency tail (counted at timer ticks: a coarse total).
    pub steal_ms: Option<f64>,
}

impl Snapshot {
    /// Reads the counters now.
    pub fn take(server_pid: Option<u32>, comms: &[String]) -> Snapshot {
        Snapshot {
            server: server_pid.and_then(|pid| Some((pid, process_ticks(pid)?))),
            generator: process_ticks(std::process::id()),
            comms: comms.iter().map(|c| (c.clone(), ticks_by_comm(c))).collect(),
            machine: machine_ticks(),
        }
    }

    /// Usage since this snapshot, over `seconds` of wall time.
    pub fn usage_since(&self, seconds: f64) -> Usage {
        let percent = |ticks: u64| (ticks as f64 / TICKS_PER_SECOND) / seconds * 100.0;
        let server = self
            .server
            .and_then(|(pid, before)| Some(percent(process_ticks(pid)?.saturating_sub(before))));
        let generator = self
            .generator
            .and_then(|before| Some(percent(process_ticks(std::process::id())?.saturating_sub(before))));
        let comms = self
            .comms
            .iter()
            .map(|(comm, before)| {
                // A process started during the window (a new pooled connection's backend)
                // counts whole; one that ended during it is missed (approximate).
                let after = ticks_by_comm(comm);
                let used: u64 = after
                    .iter()
                    .map(|(pid, now)| now.saturating_sub(before.get(pid).copied().unwrap_or(0)))
                    .sum();
                (comm.clone(), percent(used))
            })
            .collect();
        let now = machine_ticks();
        let machine = self.machine.zip(now).and_then(|(before, after)| {
            // Every core's time minus the idle time, in percent of one core.
            let all = before.cores as f64 * 100.0;
            (seconds > 0.0).then(|| (all - percent(after.idle.saturating_sub(before.idle))).clamp(0.0, all))
        });
        let steal_ms = self
            .machine
            .zip(now)
            .map(|(before, after)| after.steal.saturating_sub(before.steal) as f64 / TICKS_PER_SECOND * 1000.0);
        Usage {
            server,
            generator,
            comms,
            machine,
            steal_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "4242 (tokio (worker) 1) S 1 4242 4242 0 -1 4194560 120 0 0 0 1500 250 0 0 20 0 3 0 99 0 0";
        assert_eq!(ticks_from_stat(stat), Some(1750));
        assert_eq!(comm_from_stat(stat), Some("tokio (worker) 1"));
        assert_eq!(ticks_from_stat("4242 (short) S 1"), None);
    }

    #[test]
    fn machine_counters_are_read_from_proc_stat() {
        let stat = "cpu  396965 0 75868 184066 1186 0 24184 679 0 0\n\
                    cpu0 200623 0 29739 100143 307 0 11790 346 0 0\n\
                    cpu1 196341 0 46128 83922 878 0 12393 332 0 0\n\
                    intr 1 2 3\n";
        let ticks = machine_ticks_from(stat).unwrap();
        assert_eq!((ticks.idle, ticks.steal, ticks.cores), (184_066 + 1186, 679, 2));
        // An old kernel's line without steal reads as none.
        let ticks = machine_ticks_from("cpu  1 2 3 4 5\ncpu0 1 2 3 4 5\n").unwrap();
        assert_eq!((ticks.idle, ticks.steal, ticks.cores), (9, 0, 1));
        assert!(machine_ticks_from("intr 1 2 3\n").is_none());
    }

    #[test]
    fn this_process_has_cpu_ticks() {
        assert!(process_ticks(std::process::id()).is_some());
    }

    #[test]
    fn machine_use_is_within_the_cores() {
        let snapshot = Snapshot::take(Some(std::process::id()), &[]);
        let mut x = 0_u64;
        for i in 0..2_000_000_u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        let usage = snapshot.usage_since(0.05);
        let cores = machine_ticks().unwrap().cores;
        let machine = usage.machine.unwrap();
        assert!((0.0..=cores as f64 * 100.0).contains(&machine), "{machine}");
        assert!(usage.server.is_some() && usage.generator.is_some());
    }
}
