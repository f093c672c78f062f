//! `hc-check [--recovery-bound-ms N] [--max-steps N] [--json REPORT] HISTORY.jsonl|-`
//!
//! Prints the markdown report; writes the JSON report too when asked. Exits 0 when no
//! violation was found, 1 when one was, 2 when the history or the arguments are unusable.

use std::io::{BufReader, Write};
use std::process::ExitCode;

use hc_checker::{CheckConfig, History, check};

const USAGE: &str = "usage: hc-check [--recovery-bound-ms N] [--max-steps N] [--json REPORT] HISTORY.jsonl|-";

struct Args {
    config: CheckConfig,
    json: Option<String>,
    history: String,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut config = CheckConfig::default();
    let (mut json, mut history) = (None, None);
    let number = |v: Option<String>, flag: &str| -> Result<u64, String> {
        v.and_then(|v| v.parse().ok()).ok_or_else(|| format!("{flag} needs a number"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--recovery-bound-ms" => {
                config.recovery_bound_ns = number(args.next(), &arg)?.saturating_mul(1_000_000);
            }
            "--max-steps" => config.max_search_steps = number(args.next(), &arg)?,
            "--json" => json = Some(args.next().ok_or("--json needs a path")?),
            "-h" | "--help" => return Err(USAGE.into()),
            _ if history.is_none() && (arg == "-" || !arg.starts_with('-')) => history = Some(arg),
            _ => return Err(format!("unexpected argument {arg:?}\n{USAGE}")),
        }
    }
    Ok(Args { config, json, history: history.ok_or(USAGE)? })
}

fn run(args: Args) -> Result<bool, String> {
    let history = if args.history == "-" {
        History::read_jsonl(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(&args.history).map_err(|e| format!("{}: {e}", args.history))?;
        History::read_jsonl(BufReader::new(file))
    }
    .map_err(|e| format!("{}: {e}", args.history))?;
    let report = check(&history, &args.config).map_err(|e| format!("{}: {e}", args.history))?;
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, json + "\n").map_err(|e| format!("{path}: {e}"))?;
    }
    let mut out = std::io::stdout().lock();
    out.write_all(report.to_markdown().as_bytes()).map_err(|e| e.to_string())?;
    Ok(report.is_ok())
}

fn main() -> ExitCode {
    match parse_args(std::env::args().skip(1)).and_then(run) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(message) => {
            eprintln!("hc-check: {message}");
            ExitCode::from(2)
        }
    }
}
