//! `facekit export`: a trained network as safetensors weights and a TorchScript module.

use facekit_train::infer::embed::EmbedModel;
use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `facekit export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// A run folder (`Model/<run>`) or a `.safetensors` checkpoint with `net.json` nearby.
    #[arg(long)]
    pub model: PathBuf,
    /// Which checkpoint of a run folder [default: best, or last for a run without validation].
    #[arg(long, value_parser = ["best", "last"])]
    pub checkpoint: Option<String>,
    /// Output folder: model.safetensors, model.torchscript.pt and net.json are written there.
    #[arg(short, long)]
    pub out: PathBuf,
    /// Print what was written as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Exports on the CPU, so that the files load anywhere.
pub fn run(args: ExportArgs) -> Result<ExitCode> {
    let model = EmbedModel::load(&args.model, args.checkpoint.as_deref(), facekit_train::trainer::parse_device("cpu")?)?;
    let r = facekit_train::infer::export::export(&model, &args.out)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!("Exported {} ({} tensors) to {}", model.weights.display(), r.tensors, args.out.display());
        println!("  weights:      {}", r.weights.display());
        println!("  TorchScript:  {} (float NCHW {}x{} in [-1, 1] -> [N, {}])", r.torchscript.display(), r.image_size, r.image_size, r.embedding_size);
        println!("  config:       {}", r.net_json.display());
    }
    Ok(ExitCode::SUCCESS)
}
