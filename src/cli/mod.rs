//! Argument definitions and dispatch. Each subcommand lives in its own module with its flags, the
//! mapping of those flags onto its library's options, and a small entry function; the work is in
//! the library crates. Subcommands that need libtorch exist only in a build with feature `torch`.

use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::process::ExitCode;

#[cfg(feature = "torch")]
mod audit;
#[cfg(feature = "torch")]
mod config_file;
mod curate;
#[cfg(feature = "torch")]
mod embed;
#[cfg(feature = "torch")]
mod eval;
#[cfg(feature = "torch")]
mod eval_ijb;
mod export;
mod import;
mod pack;
mod pipeline_events;
#[cfg(feature = "torch")]
mod train;
#[cfg(feature = "torch")]
mod train_config;
#[cfg(feature = "torch")]
mod train_dist;
#[cfg(feature = "torch")]
mod train_events;
mod verify;

/// Pack raw face photos into checksummed shards, verify them, and train face-recognition networks.
#[derive(Debug, Parser)]
#[command(name = "facekit", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Prove that shards are intact, record by record.
    VerifyShard(verify::VerifyArgs),
    /// Detect, align and pack face photos from identity folders into shards.
    Pack(pack::PackArgs),
    /// Train a face network (FR, Gender, Age or Multi) on packed shards.
    #[cfg(feature = "torch")]
    Train(train::TrainArgs),
    /// Compute L2-normalised embeddings of a dataset or an image folder (embeddings.npy + labels.tsv).
    #[cfg(feature = "torch")]
    Embed(embed::EmbedArgs),
    /// Evaluate a trained network (verification: LFW pairs, insightface .bin, all pairs; IJB-B/IJB-C).
    #[cfg(feature = "torch")]
    Eval(eval::EvalArgs),
    /// Join datasets: the parts of a `pack --part K/N`, or datasets packed separately (docs/CURATE.md).
    Merge(curate::MergeArgs),
    /// Copy a dataset without listed records or identities (docs/CURATE.md).
    Filter(curate::FilterArgs),
    /// Find duplicates, probable mislabels, identities that are one person, and overlap with evaluation sets.
    #[cfg(feature = "torch")]
    Audit(audit::AuditArgs),
    /// Bring in datasets in other formats (MXNet RecordIO `.rec`, as insightface distributes them).
    Import(import::ImportArgs),
    /// Export a trained network (safetensors, TorchScript, ONNX), or a dataset as MXNet RecordIO (`export rec`).
    Export(export::ExportArgs),
}

impl Command {
    /// True for the subcommands that run libtorch (and so its OpenMP thread pool).
    pub fn uses_torch(&self) -> bool {
        match self {
            Command::VerifyShard(_)
            | Command::Pack(_)
            | Command::Import(_)
            | Command::Merge(_)
            | Command::Filter(_) => false,
            Command::Export(a) => a.what.is_none(),
            #[cfg(feature = "torch")]
            Command::Train(_) | Command::Embed(_) | Command::Eval(_) | Command::Audit(_) => true,
        }
    }
}

/// Runs the chosen subcommand and returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::VerifyShard(args) => verify::run(args),
        Command::Pack(args) => pack::run(args),
        #[cfg(feature = "torch")]
        Command::Train(args) => train::run(args),
        #[cfg(feature = "torch")]
        Command::Embed(args) => embed::run(args),
        #[cfg(feature = "torch")]
        Command::Eval(args) => eval::run(args),
        Command::Merge(args) => curate::run_merge(args),
        Command::Filter(args) => curate::run_filter(args),
        #[cfg(feature = "torch")]
        Command::Audit(args) => audit::run(args),
        Command::Import(args) => import::run(args),
        Command::Export(args) => export::run(args),
    }
}

/// The check every command runs on its outputs before any work ([`facekit_io::output`]): it knows
/// the files of datasets and, in a build with torch, run folders, so that no command writes into
/// one it did not create. Each command adds its inputs.
pub(crate) fn output_check() -> facekit_io::OutputCheck {
    facekit_io::OutputCheck::new(&[
        facekit_shard::DatasetPaths::owner_of,
        #[cfg(feature = "torch")]
        facekit_train::run::paths::RunPaths::owner_of,
    ])
}

/// An error as the binary prints it ([`facekit_io::errors::describe`]): every cause once,
/// outermost first, without libtorch's C++ backtraces.
pub(crate) fn error_text(err: &anyhow::Error) -> String {
    facekit_io::errors::describe(err.as_ref())
}

/// The process's arguments as the command line reads them: the original tool's spellings
/// rewritten ([`normalize_legacy_args`]) and the settings of `train --config FILE` in place
/// (`config_file`).
pub fn args() -> anyhow::Result<Vec<OsString>> {
    let args = normalize_legacy_args(std::env::args_os());
    #[cfg(feature = "torch")]
    let args = config_file::expand(args)?;
    Ok(args)
}

/// Rewrites the original tool's single-dash long options (`-train_sets`) into clap's `--train_sets`,
/// so that users' existing scripts keep working.
pub fn normalize_legacy_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    const LEGACY: &[&str] = &["-train_sets", "-valid_sets"];
    args.into_iter()
        .map(|arg| match arg.to_str() {
            Some(s) if LEGACY.iter().any(|l| s == *l || s.starts_with(&format!("{l}="))) => {
                OsString::from(format!("-{s}"))
            }
            _ => arg,
        })
        .collect()
}
