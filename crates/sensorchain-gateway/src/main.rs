//! `sensorchain`: the gateway node and its tools.

use std::process::ExitCode;

use clap::Parser;
use sensorchain_gateway::cli::{Cli, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
