//! The `facekit` command line: parses arguments, runs one subcommand, maps the outcome to an exit
//! code. Glue only: the work is in the workspace's crates (docs/ARCHITECTURE.md).
//!
//! Exit codes, for every subcommand: 0 success, 1 the data is bad (corrupt shard, nothing packed,
//! a diverged or corrupt training run), 2 usage or I/O error, 128 + N stopped by signal N after
//! saving (130 Ctrl-C, 143 SIGTERM; docs/RELIABILITY.md).

/// `println!` that never panics: a closed stdout (`facekit eval verify ... | head -1`) after a
/// command's files are written must not turn its success into a panic (exit 101). What a command
/// prints is a summary; its results are in its files ([`facekit_io::console`]).
macro_rules! outln {
    ($($arg:tt)*) => { facekit_io::console::out(&format!($($arg)*)) };
}

/// `eprintln!` that never panics (see [`outln!`]).
macro_rules! errln {
    ($($arg:tt)*) => { facekit_io::console::line(&format!($($arg)*)) };
}

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = match cli::args() {
        Ok(args) => args,
        Err(err) => {
            errln!("facekit: error: {}", cli::error_text(&err));
            return ExitCode::from(2);
        }
    };
    let cli = cli::Cli::parse_from(args);
    if cli.command.uses_torch() {
        passive_openmp();
    }
    match cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            errln!("facekit: error: {}", cli::error_text(&err));
            ExitCode::from(2)
        }
    }
}

/// libtorch's OpenMP threads busy-wait for work by default: as soon as another process wants a
/// core, each CPU step becomes 10-15 times slower. GNU OpenMP reads `OMP_WAIT_POLICY` once, when
/// libtorch is loaded (before `main`), so when the user has not chosen, the program starts itself
/// again with `PASSIVE` (idle threads sleep). Same PID, arguments and environment otherwise.
fn passive_openmp() {
    if std::env::var_os("OMP_WAIT_POLICY").is_some() {
        return;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let Ok(exe) = std::env::current_exe() else { return };
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_default();
        let err = std::process::Command::new(exe).arg0(arg0).args(args).env("OMP_WAIT_POLICY", "PASSIVE").exec();
        errln!("facekit: warning: cannot restart with OMP_WAIT_POLICY=PASSIVE ({err}); idle OpenMP threads will spin");
    }
}

/// A closed pipe (`facekit ... | head`) is the reader's choice, not an error worth reporting.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
