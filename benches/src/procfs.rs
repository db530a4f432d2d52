//! Per-process CPU time and memory from Linux `/proc`, and the open-files limit.
//!
//! CPU time is `utime + stime` from `/proc/<pid>/stat` (all threads of the process, in clock
//! ticks of `sysconf(_SC_CLK_TCK)`, usually 100 Hz: a 10 ms resolution, fine over runs of
//! seconds). Memory is `VmRSS` (now) and `VmHWM` (peak resident set) from `/proc/<pid>/status`.

use std::io;

/// Which process to read: a child's pid, or this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pid {
    /// `/proc/self`.
    This,
    /// `/proc/<pid>`.
    Other(u32),
}

impl Pid {
    fn dir(self) -> String {
        match self {
            Pid::This => "/proc/self".to_owned(),
            Pid::Other(pid) => format!("/proc/{pid}"),
        }
    }
}

/// Clock ticks per second for `/proc/<pid>/stat` times (`sysconf(_SC_CLK_TCK)`; 100 if
/// unavailable).
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf only reads a system constant; it has no memory-safety preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// CPU time the process has used so far (user + system, all threads), in clock ticks.
pub fn cpu_ticks(pid: Pid) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("{}/stat", pid.dir()))?;
    parse_stat_cpu_ticks(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected /proc/<pid>/stat format",
        )
    })
}

/// `utime + stime` from the text of `/proc/<pid>/stat`.
///
/// The command name (field 2) is in parentheses and may contain spaces or parentheses, so
/// fields are counted from the last `)`: after it come field 3 (state) onwards, making utime
/// and stime (fields 14 and 15) the 12th and 13th.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Resident-set figures of a process, in KiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss_kib: u64,
    /// `VmHWM`: peak resident since start (or since [`reset_peak_rss`]).
    pub hwm_kib: u64,
}

/// Reads `VmRSS` and `VmHWM` from `/proc/<pid>/status`.
pub fn memory(pid: Pid) -> io::Result<Memory> {
    let status = std::fs::read_to_string(format!("{}/status", pid.dir()))?;
    let field = |key| {
        parse_status_kib(&status, key).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("no {key} in /proc/<pid>/status"),
            )
        })
    };
    Ok(Memory {
        rss_kib: field("VmRSS")?,
        hwm_kib: field("VmHWM")?,
    })
}

/// The value in KiB of a `Key:   123 kB` line of `/proc/<pid>/status`.
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        value.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// Resets the process's peak resident set (`VmHWM`) to its current size, by writing `5` to
/// `/proc/<pid>/clear_refs` (Linux ≥ 4.0; needs the same rights as ptrace).
pub fn reset_peak_rss(pid: Pid) -> io::Result<()> {
    std::fs::write(format!("{}/clear_refs", pid.dir()), b"5")
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (children inherit it). Returns the
/// `(soft, hard)` limits now in force.
pub fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit that outlives the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// `/proc/loadavg`'s 1/5/15-minute averages, to show how busy the shared machine was.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "unknown".to_owned(),
        |text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_ticks_even_with_odd_command_names() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    150 37 0 0 20 0 3 0 12345 1000000 2000 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(187));
        assert_eq!(parse_stat_cpu_ticks("1 (x) S 1 2"), None);
        assert_eq!(parse_stat_cpu_ticks("no parens"), None);
    }

    #[test]
    fn parses_status_kib() {
        let status = "Name:\taigw\nVmPeak:\t  999 kB\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(20480));
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(10240));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn reads_this_process() {
        let before = cpu_ticks(Pid::This).expect("stat readable");
        let mem = memory(Pid::This).expect("status readable");
        assert!(mem.rss_kib > 0 && mem.hwm_kib >= mem.rss_kib);
        assert!(cpu_ticks(Pid::This).expect("stat readable") >= before);
        assert!(clock_ticks_per_sec() > 0);
        let (soft, hard) = raise_nofile_limit().expect("getrlimit works");
        assert_eq!(soft, hard);
    }
}
