//! `hc-chaos-agent`: one workload agent of a chaos run, as its own process. Started, steered
//! and killed by `hc-chaos`; see `hc_chaos::agent`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = hc_chaos::agent::AgentArgs::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hc-chaos-agent: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(hc_chaos::agent::run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hc-chaos-agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
