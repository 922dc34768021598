//! CPU time of this process, for the benchmark binaries (not a binary of its own).

/// User + system CPU time of this process, all threads (from /proc/self/stat; 0 if absent).
pub(crate) fn process_cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name in parentheses: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // USER_HZ is 100 on every Linux the benchmark targets.
    (ticks(11) + ticks(12)) as f64 / 100.0
}
