//! What the run ran on: cores, memory, kernel, CPU, the etcd version, and the date — read from
//! `/proc` so that the report needs no extra tools.

use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    pub date_utc: String,
    pub nproc: usize,
    pub mem_total_gib: f64,
    pub kernel: String,
    pub cpu: String,
    pub etcd_version: String,
    /// `/proc/loadavg` when the run started: other work on the machine skews every figure.
    pub loadavg_at_start: String,
}

impl Machine {
    pub fn probe(etcd_version: String) -> Machine {
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Machine {
            date_utc: utc_timestamp(secs),
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            mem_total_gib: mem_total_kib(&meminfo).map_or(0.0, |kib| kib as f64 / (1024.0 * 1024.0)),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned(),
            cpu: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
                .unwrap_or_default(),
            etcd_version,
            loadavg_at_start: std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_owned(),
        }
    }
}

fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the Unix epoch (days to civil date after Howard
/// Hinnant's `civil_from_days`).
pub fn utc_timestamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_timestamp(1_767_225_599), "2025-12-31T23:59:59Z");
    }

    #[test]
    fn meminfo() {
        assert_eq!(mem_total_kib("MemTotal:       24570000 kB\nMemFree: 1 kB\n"), Some(24_570_000));
        assert_eq!(mem_total_kib(""), None);
    }
}
