//! `facekit eval verify`: LFW-style pairs (folder or packed dataset), insightface `.bin` files, and
//! all-pairs 1:1 verification of a packed dataset or of saved embeddings.

use super::embed::{ModelArgs, PrepArgs};
use facekit_eval::allpairs::{self, AllPairsOptions, AllPairsReport};
use facekit_eval::embeddings::read_labels;
use facekit_eval::metrics::KFoldReport;
use facekit_eval::npy::{self, Matrix};
use facekit_eval::pairs::MissingPolicy;
use facekit_train::infer::verify::{self, PairsOptions, PairsReport};
use anyhow::{bail, Result};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `facekit eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    #[command(subcommand)]
    pub command: EvalCommand,
}

/// The evaluation protocols.
#[derive(Debug, clap::Subcommand)]
pub enum EvalCommand {
    /// Face verification: LFW pairs, insightface .bin files, or all pairs of a dataset.
    Verify(VerifyArgs),
}

/// Arguments of `facekit eval verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// LFW `pairs.txt`-format file; the images come from --images or --dataset.
    #[arg(long)]
    pub pairs: Option<PathBuf>,
    /// Image root in LFW layout (`root/Name/Name_0001.jpg`), with --pairs.
    #[arg(long, requires = "pairs")]
    pub images: Option<PathBuf>,
    /// Packed dataset: with --pairs, the images are looked up by their recorded paths; alone, all-pairs verification.
    #[arg(long, conflicts_with = "images")]
    pub dataset: Option<String>,
    /// insightface verification file (`lfw.bin`, `cfp_fp.bin`, `agedb_30.bin`).
    #[arg(long, conflicts_with_all = ["pairs", "dataset"])]
    pub bin: Option<PathBuf>,
    /// Output folder of `facekit embed` (embeddings.npy + labels.tsv): all-pairs verification without a model.
    #[arg(long, conflicts_with_all = ["pairs", "dataset", "bin"])]
    pub embeddings: Option<PathBuf>,
    /// Folder where bare dataset names are looked up.
    #[arg(long, default_value = "training")]
    pub data_dir: PathBuf,
    /// Number of cross-validation folds for pairs protocols.
    #[arg(long, default_value_t = 10, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(2..=1000))]
    pub folds: usize,
    /// Pairs naming missing people or photos: `error` stops, `skip` leaves them out (counted).
    #[arg(long, value_enum, default_value = "error")]
    pub missing: MissingPolicy,
    #[command(flatten)]
    pub prep: PrepArgs,
    /// All-pairs: most pairs scored; beyond it impostor pairs are a deterministic sample.
    #[arg(long, default_value_t = 50_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_pairs: u64,
    /// All-pairs: seed of that sample.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Folder for report.json, and for all-pairs roc.csv and roc.png.
    #[arg(long, default_value = "eval_out")]
    pub out: PathBuf,
    /// Print every figure as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs `facekit eval`.
pub fn run(args: EvalArgs) -> Result<ExitCode> {
    match args.command {
        EvalCommand::Verify(v) => run_verify(v),
    }
}

fn run_verify(a: VerifyArgs) -> Result<ExitCode> {
    let opts = PairsOptions { folds: a.folds, flip: a.model.flip, batch_size: a.model.batch_size, missing: a.missing };
    if let Some(dir) = &a.embeddings {
        let m = npy::read_f32(&dir.join("embeddings.npy"))?;
        let labels = read_labels(&dir.join("labels.tsv"))?;
        return all_pairs(&a, &m, &labels, &dir.display().to_string());
    }
    let model = a.model.load()?;
    let report = match (&a.pairs, &a.images, &a.dataset, &a.bin) {
        (Some(p), Some(root), None, None) => {
            let prep = a.prep.preparation()?;
            verify::pairs_from_folder(&model, p, root, &prep, opts)?
        }
        (Some(p), None, Some(name), None) => {
            let ds = facekit_shard::Dataset::open_name(name, Some(&a.data_dir))?;
            verify::pairs_from_dataset(&model, p, &ds, opts)?
        }
        (None, None, None, Some(bin)) => verify::pairs_from_bin(&model, bin, opts)?,
        (None, None, Some(name), None) => {
            let ds = facekit_shard::Dataset::open_name(name, Some(&a.data_dir))?;
            let emb = facekit_train::infer::embed::embed_dataset(&model, &ds, a.model.batch_size, a.model.flip)?;
            let m = Matrix { rows: ds.len(), cols: model.dim(), data: emb };
            return all_pairs(&a, &m, &ds.class_ids(), name);
        }
        (Some(_), None, None, None) => bail!("--pairs needs --images ROOT or --dataset NAME"),
        _ => bail!("give --pairs with --images or --dataset, or --bin, or --dataset alone, or --embeddings"),
    };
    let json = serde_json::to_string_pretty(&report)?;
    facekit_io::durable::write(a.out.join("report.json"), json.as_bytes())?;
    if a.json {
        println!("{json}");
    } else {
        print_pairs(&report);
        println!("  report:            {}", a.out.join("report.json").display());
    }
    Ok(ExitCode::SUCCESS)
}

fn all_pairs(a: &VerifyArgs, m: &Matrix, labels: &[Option<u32>], name: &str) -> Result<ExitCode> {
    let report = allpairs::all_pairs(m, labels, AllPairsOptions { max_pairs: a.max_pairs, seed: a.seed })?;
    let (csv, png) = (a.out.join("roc.csv"), a.out.join("roc.png"));
    allpairs::write_roc(&report, &csv, &png, &format!("ROC, all pairs of {name}"))?;
    let json = serde_json::to_string_pretty(&report)?;
    facekit_io::durable::write(a.out.join("report.json"), json.as_bytes())?;
    if a.json {
        println!("{json}");
    } else {
        print_all_pairs(&report, name);
        println!("  ROC:               {}, {}", csv.display(), png.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn print_pairs(r: &PairsReport) {
    let k: &KFoldReport = &r.kfold;
    println!("Verification on {} ({} folds{})", r.source, k.folds, if r.flip { ", flip test" } else { "" });
    println!("  accuracy:          {:.4} +- {:.4}", k.accuracy_mean, k.accuracy_std);
    println!("  best threshold:    {:.3} squared L2 (cosine {:.4})", k.best_threshold, k.best_threshold_cosine);
    println!("  pairs:             {} of {} listed, {} images", r.pairs_used, r.pairs_listed, r.images);
    if r.missing_people + r.missing_images > 0 {
        println!("  skipped pairs:     {} with missing people, {} with missing photos (e.g. {})", r.missing_people, r.missing_images, r.missing_examples.join("; "));
    }
    if r.preparation.aligned + r.preparation.fallback > 0 {
        println!("  alignment:         {} aligned, {} centre-crop fallbacks (no usable face)", r.preparation.aligned, r.preparation.fallback);
    }
}

fn print_all_pairs(r: &AllPairsReport, name: &str) {
    println!("All-pairs verification of {name}");
    println!("  faces:             {} in {} identities", r.pairs.faces, r.pairs.identities);
    println!("  pairs:             {} genuine, {} impostor ({})", r.pairs.genuine, r.pairs.impostor, r.pairs.selection);
    println!("  mean cosine:       genuine {:.4}, impostor {:.4}", r.genuine_mean, r.impostor_mean);
    println!("  AUC:               {:.4}", r.auc);
    for t in &r.tar_at_far {
        match (t.tar, &t.note) {
            (Some(tar), _) => println!("  TAR @ FAR {:.0e}:   {:.4} (threshold {:.4})", t.far_target, tar, t.threshold.unwrap_or(f64::NAN)),
            (None, Some(note)) => println!("  TAR @ FAR {:.0e}:   n/a: {note}", t.far_target),
            (None, None) => println!("  TAR @ FAR {:.0e}:   n/a", t.far_target),
        }
    }
}
