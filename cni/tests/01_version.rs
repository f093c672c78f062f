//! VERSION, exec'd as a runtime does: the answer, and that a plugin starts fast.

mod common;

use std::time::{Duration, Instant};

use common::{BRIDGE, IPAM, exec, network_env};

const VERSION_INFO: &str = r#"{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}"#;

#[test]
fn both_plugins_report_their_versions() {
    for binary in [BRIDGE, IPAM] {
        for stdin in ["", r#"{"cniVersion":"0.4.0"}"#, r#"{"cniVersion":"9.9.9"}"#] {
            let out = exec(binary, &network_env("VERSION"), stdin);
            assert_eq!(out.status, 0, "{out:?}");
            assert_eq!(out.stdout.trim_end(), VERSION_INFO, "{binary} with stdin {stdin:?}");
        }
    }
}

/// The runtime execs the plugin for every call: it must not do heavy work before answering.
/// The bound is loose (shared 2-core machines); the median is printed for comparison.
#[test]
fn version_answers_quickly() {
    let mut times: Vec<Duration> = (0..15)
        .map(|_| {
            let start = Instant::now();
            let out = exec(BRIDGE, &network_env("VERSION"), "");
            assert_eq!(out.status, 0);
            start.elapsed()
        })
        .collect();
    times.sort();
    let median = times[times.len() / 2];
    println!("hc-bridge VERSION exec: median {median:?}, max {:?}", times[times.len() - 1]);
    assert!(median < Duration::from_millis(500), "median exec time {median:?}");
}
