//! `facekit merge` and `facekit filter`: finished datasets joined, or cleaned, without
//! re-encoding an image. The work is in `facekit_pack::curate`; docs/CURATE.md has the workflow.

use anyhow::Result;
use facekit_pack::curate::{filter, merge, FilterOptions, MergeOptions};
use facekit_pack::size::ByteSize;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `facekit merge`.
#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// The datasets to join: the parts of one `pack --part K/N` (any order), or separate datasets (in this order).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output dataset, e.g. `training/celeb` (must not exist).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Separate datasets with a source of the same name: identities of the same name in it are the same people (one class).
    #[arg(long)]
    pub same_identities: bool,
    /// Target shard size (`64M`, `1G`, bytes); the parts' pack's size gives a one-machine pack's shards.
    #[arg(long, default_value = "1G")]
    pub shard_size: ByteSize,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Arguments of `facekit filter`.
#[derive(Debug, clap::Args)]
pub struct FilterArgs {
    /// The dataset to clean, e.g. `training/celeb`.
    pub input: PathBuf,
    /// TSV of records to drop: a header with a `record` column holding each record's key (its stored path).
    #[arg(long, value_name = "LIST.tsv")]
    pub drop: Option<PathBuf>,
    /// TSV of identities to drop: a header with an `identity` column (and optionally `source`).
    #[arg(long, value_name = "LIST.tsv")]
    pub drop_identities: Option<PathBuf>,
    /// Output dataset, e.g. `training/celeb.clean` (must not exist).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Keep class ids and the label map as they are (default: renumbered without the dropped identities).
    #[arg(long)]
    pub keep_ids: bool,
    /// Target shard size (`64M`, `1G`, bytes).
    #[arg(long, default_value = "1G")]
    pub shard_size: ByteSize,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Checks `output` (and its `.valid`) against the inputs before any work, as every command does.
fn check_output(output: &std::path::Path, inputs: &[&PathBuf]) -> Result<()> {
    let check = super::output_check().inputs(inputs.iter().copied());
    check.owned(output)?;
    let valid = facekit_shard::DatasetPaths::new(output).with_suffix(facekit_pack::VALID_SUFFIX);
    check.owned(&valid.dir().join(valid.name()))?;
    Ok(())
}

/// Runs the merge: exit 0 when done, 2 on a refused input or output or an I/O error.
pub fn run_merge(args: MergeArgs) -> Result<ExitCode> {
    check_output(&args.output, &args.inputs.iter().collect::<Vec<_>>())?;
    let opts = MergeOptions {
        inputs: args.inputs,
        output: args.output,
        same_identities: args.same_identities,
        shard_size: args.shard_size.0,
        progress: !args.quiet,
        events: super::pipeline_events::notices("merge"),
    };
    let report = merge(&opts)?;
    outln!("{}", report.summary());
    Ok(ExitCode::SUCCESS)
}

/// Runs the filter: exit 0 when done, 2 on a bad list, a refused output or an I/O error.
pub fn run_filter(args: FilterArgs) -> Result<ExitCode> {
    let inputs: Vec<&PathBuf> = std::iter::once(&args.input).chain(&args.drop).chain(&args.drop_identities).collect();
    check_output(&args.output, &inputs)?;
    let opts = FilterOptions {
        input: args.input,
        output: args.output,
        drop: args.drop,
        drop_identities: args.drop_identities,
        keep_ids: args.keep_ids,
        shard_size: args.shard_size.0,
        progress: !args.quiet,
        events: super::pipeline_events::notices("filter"),
    };
    let report = filter(&opts)?;
    outln!("{}", report.summary());
    Ok(ExitCode::SUCCESS)
}
