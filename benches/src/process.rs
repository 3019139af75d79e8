//! CPU time and memory of a process, from `/proc`: what each process of a variant (client,
//! server, sidecars) spends per request.
//!
//! CPU time is `utime + stime` of `/proc/<pid>/stat`, summed over all the process's threads by
//! the kernel, in clock ticks (`getconf CLK_TCK`, 100 on Linux). Memory is `VmRSS` and `VmHWM`
//! (the peak) of `/proc/<pid>/status`.

use std::{fs, io, process::Command, sync::OnceLock, time::Duration};

/// Resident memory of a process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Memory {
    /// Resident set size now, KiB.
    pub rss_kib: u64,
    /// Peak resident set size, KiB.
    pub peak_rss_kib: u64,
}

/// An error reading `/proc`.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The file could not be read (the process is gone, or this is not Linux).
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// The file did not have the expected shape.
    #[error("{path}: unexpected format ({what})")]
    Format {
        /// The file.
        path: String,
        /// What was missing.
        what: &'static str,
    },
}

/// CPU time (user + system, all threads) `pid` has used so far.
pub fn cpu_time(pid: u32) -> Result<Duration, ProcError> {
    let path = format!("/proc/{pid}/stat");
    let fields = stat_fields(&path)?;
    // After the `(comm)` field: state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
    // cmajflt utime stime — utime and stime are the 12th and 13th.
    let tick = |i: usize| -> Result<u64, ProcError> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or(ProcError::Format {
                path: path.clone(),
                what: "utime/stime",
            })
    };
    let ticks = tick(11)? + tick(12)?;
    Ok(Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64))
}

/// CPU time summed over several processes (e.g. an nginx master and its workers).
pub fn cpu_time_sum(pids: &[u32]) -> Result<Duration, ProcError> {
    pids.iter().map(|pid| cpu_time(*pid)).sum()
}

/// Resident memory of `pid`.
pub fn memory(pid: u32) -> Result<Memory, ProcError> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).map_err(|source| ProcError::Read {
        path: path.clone(),
        source,
    })?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
    };
    match (field("VmRSS:"), field("VmHWM:")) {
        (Some(rss_kib), Some(peak_rss_kib)) => Ok(Memory {
            rss_kib,
            peak_rss_kib,
        }),
        _ => Err(ProcError::Format {
            path,
            what: "VmRSS/VmHWM",
        }),
    }
}

/// Memory summed over several processes.
pub fn memory_sum(pids: &[u32]) -> Result<Memory, ProcError> {
    pids.iter().try_fold(Memory::default(), |acc, pid| {
        let m = memory(*pid)?;
        Ok(Memory {
            rss_kib: acc.rss_kib + m.rss_kib,
            peak_rss_kib: acc.peak_rss_kib + m.peak_rss_kib,
        })
    })
}

/// The processes whose parent is `pid` (an nginx master's workers).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            stat_fields(&format!("/proc/{child}/stat"))
                .ok()
                .and_then(|f| f.get(1).and_then(|p| p.parse::<u32>().ok()))
                == Some(pid)
        })
        .collect()
}

/// The fields of a `/proc/<pid>/stat` line after `(comm)`, which may itself hold spaces.
fn stat_fields(path: &str) -> Result<Vec<String>, ProcError> {
    let text = fs::read_to_string(path).map_err(|source| ProcError::Read {
        path: path.to_owned(),
        source,
    })?;
    let rest = text
        .rfind(')')
        .map(|i| &text[i + 1..])
        .ok_or(ProcError::Format {
            path: path.to_owned(),
            what: "(comm)",
        })?;
    Ok(rest.split_whitespace().map(str::to_owned).collect())
}

/// `sysconf(_SC_CLK_TCK)` without `libc` (the crate forbids `unsafe`): asked of `getconf` once;
/// 100 (what Linux reports on every mainstream architecture) if that fails.
fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let me = std::process::id();
        // Burn a little CPU so at least one tick is charged.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(cpu_time(me).unwrap() > Duration::ZERO);
        let m = memory(me).unwrap();
        assert!(m.rss_kib > 0 && m.peak_rss_kib >= m.rss_kib, "{m:?}");
    }

    #[test]
    fn a_missing_process_is_an_error_naming_the_file() {
        let e = cpu_time(u32::MAX).unwrap_err();
        assert!(e.to_string().contains(&format!("/proc/{}/stat", u32::MAX)));
    }
}
