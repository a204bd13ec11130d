//! `facekit embed`: embeddings of every record of a dataset, or of every image of a folder, as
//! `embeddings.npy` (float32 `[N, dim]`, L2-normalised) plus `labels.tsv`.

use anyhow::{bail, Context, Result};
use facekit_eval::embeddings::{self, Row};
use facekit_train::events::Observer;
use facekit_train::infer::embed::{self, EmbedModel};
use facekit_train::infer::faces;
use facekit_train::run::paths::{BEST, LAST};
use std::path::PathBuf;
use std::process::ExitCode;

/// How folder images become network inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrepArg {
    /// Detect and align as `facekit pack` does (feature `pack`); centre crop where no face is found.
    Align,
    /// The images are aligned chips already: only resize.
    Resize,
    /// insightface's centre crop of every image.
    CentreCrop,
}

/// Model selection and inference flags shared by `embed` and `eval`.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// A run folder (`Model/<run>`), an export folder, or a `.safetensors` file with `net.json` nearby.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Which checkpoint of a run folder [default: best, or last for a run without validation].
    #[arg(long, value_parser = [BEST, LAST])]
    pub checkpoint: Option<String>,
    /// `auto` (CUDA when available), `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Images per forward pass.
    #[arg(long, default_value_t = 64, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=65536))]
    pub batch_size: usize,
}

impl ModelArgs {
    /// Loads the model named by `--model`, telling `events` when a run's `last` stands in for `best`.
    pub fn load(&self, events: &Observer) -> Result<EmbedModel> {
        let Some(model) = &self.model else { bail!("--model is required") };
        let device = facekit_train::trainer::parse_device(&self.device)?;
        EmbedModel::load(model, self.checkpoint.as_deref(), device, events)
    }
}

/// How photos from a folder are turned into network inputs (shared by `embed` and `eval verify`).
#[derive(Debug, clap::Args)]
pub struct PrepArgs {
    /// How folder photos are prepared (align: the pack pipeline, centre crop where no face is found).
    #[arg(long, value_enum, default_value = "align")]
    pub prep: PrepArg,
    /// Alignment for `--prep align`: dlib's get_face_chip or insightface's ArcFace template (as the training set was packed).
    #[arg(long, value_enum, default_value = "dlib")]
    pub align: facekit_pack::align::Alignment,
    /// Chip padding for `--prep align` (dlib's meaning; the training set's) [default: 0.25 with --align dlib, 0 with arcface].
    #[arg(long)]
    pub padding: Option<f64>,
    /// Folder of the dlib models for `--prep align` (default: ./models).
    #[arg(long, env = "FACEKIT_MODELS")]
    pub models: Option<PathBuf>,
}

impl PrepArgs {
    /// Converts the command-line choice into the library's preparation.
    pub fn preparation(&self) -> Result<faces::Preparation> {
        Ok(match self.prep {
            PrepArg::Align => faces::Preparation::Align {
                models: self.models.clone(),
                padding: self.padding.unwrap_or(self.align.default_spec().padding),
                alignment: self.align,
            },
            PrepArg::Resize => faces::Preparation::Resize,
            PrepArg::CentreCrop => faces::Preparation::CentreCrop,
        })
    }
}

/// Arguments of `facekit embed`.
#[derive(Debug, clap::Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Packed dataset to embed, record by record (`training/celeb` or a name under --data-dir).
    #[arg(long, conflicts_with = "images")]
    pub dataset: Option<String>,
    /// Folder of images to embed (every image file below it, sorted by path).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Folder where bare dataset names are looked up.
    #[arg(long, default_value = "training")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub prep: PrepArgs,
    /// Flip test: sum the embeddings of each image and its mirror, then normalise (as insightface).
    #[arg(long)]
    pub flip: bool,
    /// Output folder for `embeddings.npy` and `labels.tsv`, replaced whole (it may hold only an earlier embedding's files).
    #[arg(short, long, alias = "out")]
    pub output: PathBuf,
}

/// The files `facekit embed` writes into its output folder.
const FILES: [&str; 2] = ["embeddings.npy", "labels.tsv"];

/// Embeds the dataset or folder and writes the output files.
pub fn run(args: EmbedArgs) -> Result<ExitCode> {
    let mut check = super::output_check().inputs(&args.model.model).inputs(&args.images);
    if let Some(d) =
        args.dataset.as_deref().and_then(|name| facekit_shard::DatasetPaths::resolve(name, Some(&args.data_dir)).ok())
    {
        check = check.input(d.manifest());
    }
    check.folder(&args.output, &FILES)?;
    let held = facekit_io::output::hold(&args.output, &format!("embedding folder {}", args.output.display()), &[])?;
    let events = super::train_events::observer();
    let model = args.model.load(&events)?;
    let (emb, rows) = match (&args.dataset, &args.images) {
        (Some(name), None) => {
            let ds = facekit_shard::Dataset::open_name(name, Some(&args.data_dir))?;
            let emb = embed::embed_dataset(&model, &ds, args.model.batch_size, args.flip, &events)?;
            let mut rows = Vec::with_capacity(ds.len());
            for i in 0..ds.len() {
                let rec = ds.record(i)?;
                let class = rec.labels().class_id;
                let identity = class.and_then(|c| ds.labels().identity(c)).unwrap_or("").to_string();
                rows.push(Row {
                    class,
                    identity,
                    path: String::from_utf8_lossy(rec.path).into_owned(),
                    prepared: "record".into(),
                });
            }
            (emb, rows)
        }
        (None, Some(root)) => {
            let found = facekit_pack::photo::find_images(root)?;
            if !found.skipped.is_empty() {
                errln!(
                    "facekit embed: {} file(s) under {} are not images and were skipped, e.g. {}",
                    found.skipped.len(),
                    root.display(),
                    found.skipped[0].display()
                );
            }
            let files = found.images;
            if files.is_empty() {
                bail!("no image files found under {}", root.display());
            }
            let prep = args.prep.preparation()?;
            let (chips, how, stats) = faces::prepare_files(&files, model.image_size(), &prep, &events)?;
            if stats.fallback > 0 {
                errln!(
                    "facekit embed: {} image(s) had no usable face and were centre-cropped, e.g. {}",
                    stats.fallback,
                    stats.fallback_examples.join("; ")
                );
            }
            let emb = embed::embed_images(&model, &chips, args.model.batch_size, args.flip, &events)
                .with_context(|| format!("images under {}", root.display()))?;
            let rows = files
                .iter()
                .zip(how)
                .map(|(f, h)| {
                    let rel = f.strip_prefix(root).unwrap_or(f);
                    let identity = rel.parent().map(|p| p.display().to_string()).unwrap_or_default();
                    let prepared =
                        serde_json::to_value(h).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
                    Row { class: None, identity, path: rel.display().to_string(), prepared }
                })
                .collect();
            (emb, rows)
        }
        _ => bail!("give exactly one of --dataset or --images"),
    };
    // The embeddings and their labels are committed together, never one beside the other's predecessor.
    held.replace_dir(|dir| embeddings::write(dir, &emb, model.dim(), &rows))?;
    outln!(
        "Embedded {} face(s) of {} dimensions{} into {}",
        rows.len(),
        model.dim(),
        if args.flip { " (flip test)" } else { "" },
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
}
