//! Numbers read from Linux's `/proc` tables (`None` where there are none).

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
