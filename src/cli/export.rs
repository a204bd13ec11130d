//! `facekit export`: a trained network as safetensors weights, a TorchScript module and/or ONNX
//! (`facekit export --model RUN -o DIR [--format ...]`, feature `torch`), or a dataset in another
//! format (`facekit export rec DATASET -o DIR`).

use anyhow::Result;
use facekit_pack::rec::{export_rec, ExportOptions};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `facekit export`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
#[cfg_attr(not(feature = "torch"), command(subcommand_required = true))]
pub struct ExportArgs {
    #[command(subcommand)]
    pub what: Option<ExportWhat>,
    #[cfg(feature = "torch")]
    #[command(flatten)]
    pub model: ModelExportArgs,
}

/// What else `facekit export` writes.
#[derive(Debug, clap::Subcommand)]
pub enum ExportWhat {
    /// A dataset as insightface's train.rec, train.idx and property (arcface_torch trains on it unchanged).
    Rec(RecExportArgs),
}

/// Arguments of `facekit export rec`.
#[derive(Debug, clap::Args)]
pub struct RecExportArgs {
    /// The dataset: a name in --data-dir, a base path (`training/celeb`) or a manifest.
    pub dataset: String,
    /// Output folder for train.rec, train.idx and property, replaced whole (it may hold only an earlier export's files).
    #[arg(short, long, alias = "out")]
    pub output: PathBuf,
    /// Folder where bare dataset names are looked up.
    #[arg(long, default_value = "training")]
    pub data_dir: PathBuf,
    /// Worker threads for re-encoding raw payloads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Print what was written as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `facekit export` for a network.
#[cfg(feature = "torch")]
#[derive(Debug, clap::Args)]
pub struct ModelExportArgs {
    /// A run folder (`Model/<run>`) or a `.safetensors` checkpoint with `net.json` nearby.
    #[arg(long, required = true)]
    pub model: Option<PathBuf>,
    /// Which checkpoint of a run folder [default: best, or last for a run without validation].
    #[arg(long, value_parser = [facekit_train::run::paths::BEST, facekit_train::run::paths::LAST])]
    pub checkpoint: Option<String>,
    /// Output folder: the requested formats' files (model.safetensors, model.torchscript.pt, model.onnx) and net.json, replaced whole (it may hold only an earlier export's files).
    #[arg(short, long, alias = "out", required = true)]
    pub output: Option<PathBuf>,
    /// Formats to write, repeatable or comma-separated [default: safetensors,torchscript].
    #[arg(long = "format", value_enum, value_delimiter = ',')]
    pub formats: Vec<facekit_train::infer::export::Format>,
    /// Python with torch and onnx that runs PyTorch's ONNX exporter [default: $FACEKIT_PYTHON, else python3].
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Seconds the ONNX exporter's Python may run before it is killed and the export fails.
    #[arg(long, value_name = "SECONDS", default_value_t = facekit_train::infer::export::DEFAULT_PYTHON_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub onnx_timeout: u64,
    /// Print what was written as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `facekit export`.
pub fn run(args: ExportArgs) -> Result<ExitCode> {
    match args.what {
        Some(ExportWhat::Rec(a)) => run_rec(a),
        #[cfg(feature = "torch")]
        None => run_model(args.model),
        #[cfg(not(feature = "torch"))]
        None => unreachable!("clap requires a subcommand in a build without torch"),
    }
}

fn run_rec(a: RecExportArgs) -> Result<ExitCode> {
    let dataset = facekit_shard::DatasetPaths::resolve(&a.dataset, Some(&a.data_dir))?;
    super::output_check().input(dataset.manifest()).folder(&a.output, &facekit_pack::rec::export::FILES)?;
    let opts = ExportOptions {
        dataset: a.dataset,
        data_dir: a.data_dir,
        out: a.output,
        threads: a.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        progress: !a.quiet,
    };
    let r = export_rec(&opts)?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        outln!(
            "Exported {} images of {} classes in {:.1} s to {} ({} bytes), {} and {}",
            r.images,
            r.identities,
            r.elapsed_s,
            r.rec.display(),
            r.rec_bytes,
            r.idx.display(),
            r.property.display()
        );
        if r.reencoded > 0 {
            outln!("  {} raw records were written as PNG (lossless)", r.reencoded);
        }
        if r.skipped > 0 {
            outln!(
                "  {} records without a class were not exported; listed in {}",
                r.skipped,
                opts.out.join("skipped.tsv").display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Exports on the CPU, so that the files load anywhere.
#[cfg(feature = "torch")]
fn run_model(args: ModelExportArgs) -> Result<ExitCode> {
    use facekit_train::infer::embed::EmbedModel;
    use facekit_train::infer::export::{self, ExportOptions};
    let (Some(model_path), Some(out)) = (args.model, args.output) else { anyhow::bail!("give --model and --output") };
    super::output_check().input(&model_path).folder(&out, &export::FILES)?;
    let device = facekit_train::trainer::parse_device("cpu")?;
    let model = EmbedModel::load(&model_path, args.checkpoint.as_deref(), device, &super::train_events::observer())?;
    let formats = if args.formats.is_empty() { export::DEFAULT_FORMATS.to_vec() } else { args.formats };
    // A stop request kills the ONNX exporter's Python and leaves the output as it was.
    let stop = facekit_io::StopFlag::from_signals()?;
    let opts = ExportOptions {
        formats,
        python: args.python,
        python_timeout: std::time::Duration::from_secs(args.onnx_timeout),
        stop: stop.clone(),
    };
    let r = match export::export_with(&model, &out, &opts) {
        Err(e) if stop.is_set() => {
            errln!("facekit export: {}", super::error_text(&e));
            return Ok(ExitCode::from(stop.exit_code()));
        }
        r => r?,
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        let (s, d) = (r.image_size, r.embedding_size);
        outln!("Exported {} ({} tensors) to {}", model.weights.display(), r.tensors, out.display());
        if let Some(p) = &r.weights {
            outln!("  weights:      {}", p.display());
        }
        if let Some(p) = &r.torchscript {
            outln!("  TorchScript:  {} (float NCHW {s}x{s} in [-1, 1] -> [N, {d}])", p.display());
        }
        if let Some(o) = &r.onnx {
            outln!(
                "  ONNX:         {} (opset {}, `{}` float [batch, 3, {s}, {s}] in [-1, 1] -> `{}` [batch, {d}]; {:.1} s)",
                o.path.display(),
                o.opset,
                o.input.name,
                o.output.name,
                o.seconds
            );
        }
        outln!("  config:       {}", r.net_json.display());
        for p in &r.removed {
            outln!("  removed {} (an earlier export's, of a format not requested now)", p.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
