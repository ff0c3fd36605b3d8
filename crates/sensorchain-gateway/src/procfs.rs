//! Numbers read from Linux's `/proc` tables (`None` or nothing where there
//! are none).

/// The whitespace-separated field `column` (counted from 0) of the first
/// line of the file at `path` that starts with `label`, as a number.
pub fn proc_number(path: &str, label: &str, column: usize) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find(|l| l.starts_with(label))
        .and_then(|l| l.split_whitespace().nth(column))
        .and_then(|v| v.parse().ok())
}

/// This process's soft limit of open files (`/proc/self/limits`); `None`
/// where it is unlimited or unknown.
pub fn open_files_limit() -> Option<usize> {
    proc_number("/proc/self/limits", "Max open files", 3).and_then(|v| usize::try_from(v).ok())
}

/// The command (thread) name and the CPU seconds (user + system) of one
/// `/proc/…/stat` line.
pub fn stat_cpu(stat: &str) -> Option<(&str, f64)> {
    // the command name is in parentheses and may hold spaces
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let f: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let tick = 100.0; // USER_HZ on Linux
    Some((stat.get(open + 1..close)?, (field(11) + field(12)) / tick))
}

/// One thread's CPU so far ([`threads_cpu`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadCpu {
    /// Its thread id.
    pub tid: u32,
    /// Its name (Linux keeps 15 bytes of it).
    pub name: String,
    /// CPU seconds (user + system) it has used so far.
    pub seconds: f64,
}

/// Each live thread of process `pid` (`"self"`: this one) and the CPU it
/// has used so far, from `/proc/PID/task/*/stat`; empty if the process is
/// gone. Threads that have exited are not listed: to measure an interval,
/// subtract by thread id ([`ThreadCpu::tid`]) and count the process's whole
/// CPU (`/proc/PID/stat`) for what exited meanwhile.
pub fn threads_cpu(pid: &str) -> Vec<ThreadCpu> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|t| {
            let tid = t.file_name().to_str()?.parse().ok()?;
            let s = std::fs::read_to_string(t.path().join("stat")).ok()?;
            stat_cpu(&s).map(|(name, seconds)| ThreadCpu {
                tid,
                name: name.to_string(),
                seconds,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_its_name_and_cpu_seconds() {
        // pid (comm) state ppid … utime stime: a name with a space and a parenthesis
        let line = "42 (sc-verify) 0) S 1 42 42 0 -1 4194368 10 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(stat_cpu(line), Some(("sc-verify) 0", 3.0)));
        assert_eq!(stat_cpu("garbage"), None);
    }

    #[test]
    fn this_process_has_threads_with_cpu_time() {
        let t = threads_cpu("self");
        if std::path::Path::new("/proc/self/task").exists() {
            assert!(!t.is_empty());
            assert!(t.iter().all(|c| c.seconds >= 0.0 && c.tid > 0));
        }
    }
}
