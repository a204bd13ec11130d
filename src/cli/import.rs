//! `facekit import rec`: datasets people already have, as facekit datasets. The work is in
//! `facekit_pack::rec`; docs/INSIGHTFACE.md says what goes where.

use anyhow::Result;
use facekit_io::StopFlag;
use facekit_pack::rec::{import_rec, ImportEnd, ImportOptions};
use facekit_pack::size::ByteSize;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `facekit import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    #[command(subcommand)]
    pub format: ImportFormat,
}

/// The formats `facekit import` reads.
#[derive(Debug, clap::Subcommand)]
pub enum ImportFormat {
    /// MXNet RecordIO: an insightface folder (train.rec, train.idx, property) or a .rec from im2rec.
    Rec(RecArgs),
}

/// Arguments of `facekit import rec`.
#[derive(Debug, clap::Args)]
pub struct RecArgs {
    /// An insightface folder (`faces_emore/`) or a `.rec` file (its `.idx` beside it is used; without one the file is scanned).
    pub input: PathBuf,
    /// Output dataset, e.g. `training/emore`.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Target shard size (`64M`, `1G`, bytes).
    #[arg(long, default_value = "1G")]
    pub shard_size: ByteSize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Fraction of records held out into `<output>.valid`, chosen by a hash of their path (`train.rec#KEY`), as `pack` does.
    #[arg(long, default_value_t = 0.0, value_name = "F")]
    pub valid_fraction: f64,
    /// Identity names for the label map: one name per line (line k names class k-1), or a facekit `NAME.labels.tsv`.
    #[arg(long, value_name = "FILE")]
    pub names: Option<PathBuf>,
    /// Continue an interrupted import from its last complete shard; never replaces a finished dataset.
    #[arg(long)]
    pub resume: bool,
    /// Replace a finished dataset of the same name; the old one stays until the new one is complete.
    #[arg(long)]
    pub overwrite: bool,
    /// Import only part K of N of the records (whole identities, about 1/N of the records each), for `facekit merge` to join (docs/CURATE.md).
    #[arg(long, value_name = "K/N")]
    pub part: Option<facekit_pack::part::Part>,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs the import: exit 0 when done (even with rejects), 1 when no record was imported, 2 on a
/// usage or I/O error, 128 + N when signal N stopped it (resumable with `--resume`).
pub fn run(args: ImportArgs) -> Result<ExitCode> {
    let ImportFormat::Rec(args) = args.format;
    // The files read, not their folder: a dataset may well be written beside insightface's files.
    let read = facekit_pack::rec::input::RecFiles::locate(&args.input)
        .map(|f| [Some(f.rec), f.idx, f.property])
        .unwrap_or_default();
    let valid = facekit_shard::DatasetPaths::new(&args.output).with_suffix(facekit_pack::VALID_SUFFIX);
    let check = super::output_check().inputs(read.iter().flatten()).inputs(&args.names);
    check.owned(&args.output)?;
    check.owned(&valid.dir().join(valid.name()))?;
    let asked = facekit_shard::DatasetPaths::new(&args.output);
    let asked = asked.dir().join(asked.name()).display().to_string();
    let stop = StopFlag::from_signals()?;
    let opts = ImportOptions {
        input: args.input,
        output: args.output,
        shard_size: args.shard_size.0,
        threads: args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        valid_fraction: args.valid_fraction,
        names: args.names,
        resume: args.resume,
        overwrite: args.overwrite,
        part: args.part,
        progress: !args.quiet,
        stop: stop.clone(),
        events: super::pipeline_events::observer(super::pipeline_events::Tool::Import),
    };
    match import_rec(&opts)? {
        ImportEnd::Done(report) => {
            outln!("{}", report.summary());
            if report.counters.imported == 0 {
                // A replacement that imported nothing replaced nothing: its report names where its
                // rejects list stayed, beside the dataset it left alone.
                let kept = if report.dataset != asked { "; the existing dataset was left as it was" } else { "" };
                errln!("facekit import: no record was imported; see {}.rejects.tsv{kept}", report.dataset);
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        ImportEnd::Interrupted { shards } => {
            errln!(
                "facekit import: stopped by {} after {shards} complete shard(s); run the same command with --resume to continue",
                stop.describe()
            );
            Ok(ExitCode::from(stop.exit_code()))
        }
    }
}
