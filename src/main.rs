//! The `camstream` command line. Errors are printed once, on one line, with a non-zero exit.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("camstream: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
