//! The `facekit` command line: parses arguments, runs one subcommand, maps the outcome to an exit code.
//!
//! Exit codes, for every subcommand: 0 success, 1 the data is bad (corrupt shard, nothing packed),
//! 2 usage or I/O error.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = facekit::cli::Cli::parse_from(facekit::cli::normalize_legacy_args(std::env::args_os()));
    match facekit::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("facekit: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// A closed pipe (`facekit ... | head`) is the reader's choice, not an error worth reporting.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
