//! `sensorchain`: the gateway node and its tools.

use std::process::ExitCode;

mod cli;

use clap::Parser;
use cli::{Cli, init_tracing, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_tracing(&cli) {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
