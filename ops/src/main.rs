//! `hcctl`: the hc-bridge admin CLI. It talks to the allocators' REST API (plain HTTP, JSON)
//! and prints aligned tables for people or the server's JSON (`-o json`) for scripts.
//!
//! Exit codes: 0 done, 1 refused by the server (the error's kind is printed), 2 bad usage,
//! 3 no allocator could be reached.
//!
//! Layout:
//! - `cli.rs`: clap types, and arguments → request bodies (pure);
//! - `client.rs`: the REST API as typed calls, with failover across `--server`s and the
//!   `not_leader` redirect of membership changes;
//! - `commands.rs`: one command → one call → the text to print;
//! - `output.rs`: tables, `Label: value` blocks and JSON;
//! - `cluster_status.rs`: the shape of `GET /v1/cluster`;
//! - `failure.rs`: errors and their exit codes.

mod cli;
mod client;
mod cluster_status;
mod commands;
mod failure;
mod output;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::failure::Failure;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match client::Client::new(cli.server, Duration::from_secs(cli.timeout)) {
        Ok(client) => commands::run(&client, cli.output, cli.command).await,
        Err(e) => Err(Failure::Client(e)),
    };
    match result {
        Ok(text) => {
            // A closed pipe (`hcctl … | head`) is not an error worth reporting.
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("error: {failure} ({})", failure.kind());
            ExitCode::from(failure.exit_code())
        }
    }
}
