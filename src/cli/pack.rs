//! `facekit pack`: photos in identity folders -> aligned faces in checksummed shards.
//! Flags are documented in `docs/PACK.md`; the work is in `facekit_pack`.

use anyhow::Result;
use facekit_io::StopFlag;
use facekit_pack::align::{Alignment, ChipSpec, DetectorKind};
use facekit_pack::encode::Chroma;
use facekit_pack::size::ByteSize;
use facekit_pack::{PackEnd, PackOptions};
use facekit_shard::Encoding;
use std::path::PathBuf;
use std::process::ExitCode;

/// The detection flags, which exist only in a build with dlib (feature `dlib`); without it
/// faces come from `--landmarks` alone, and the help says nothing of a detector.
#[cfg(feature = "dlib")]
#[derive(Debug, clap::Args)]
pub struct DetectArgs {
    /// Face detector.
    #[arg(long, value_enum, default_value = "hog")]
    pub detector: DetectorKind,
    /// How detected faces are aligned: dlib's get_face_chip (5 points) or insightface's ArcFace template (5 points from the 68-point model).
    #[arg(long, value_enum, default_value = "dlib")]
    pub align: Alignment,
    /// Folder of the dlib models (default: ./models).
    #[arg(long, env = "FACEKIT_MODELS")]
    pub models: Option<PathBuf>,
}

/// The detection flags, which exist only in a build with dlib (feature `dlib`).
#[cfg(not(feature = "dlib"))]
#[derive(Debug, clap::Args)]
pub struct DetectArgs {}

impl DetectArgs {
    fn into_parts(self) -> (DetectorKind, Alignment, Option<PathBuf>) {
        #[cfg(feature = "dlib")]
        return (self.detector, self.align, self.models);
        #[cfg(not(feature = "dlib"))]
        return (DetectorKind::Hog, Alignment::Dlib, None);
    }
}

/// Arguments of `facekit pack`.
#[derive(Debug, clap::Args)]
pub struct PackArgs {
    /// Input folders: `root/<identity>/*`, `root/<source>/<identity>/*`, or flat `root/*` (identity unknown).
    #[arg(required = true)]
    pub roots: Vec<PathBuf>,
    /// Output dataset, e.g. `training/celeb` (writes celeb.manifest.json, celeb-00000.shard, ...).
    #[arg(short, long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub detect: DetectArgs,
    /// File of 5-point landmarks (`path [label] x1 y1 ... x5 y5`, paths relative to the root); listed images skip detection, others are rejected.
    #[arg(long, value_name = "FILE")]
    pub landmarks: Option<PathBuf>,
    /// CSV of gender and age (`key,gender,age`; key = image path or identity folder relative to the root).
    #[arg(long, value_name = "FILE.csv")]
    pub attributes: Option<PathBuf>,
    /// Read gender and age from UTKFace file names (`AGE_GENDER_RACE_DATETIME.jpg.chip.jpg`).
    #[arg(long)]
    pub utkface_labels: bool,
    /// Side of the square face chip in pixels [default: 224, or 112 with --align arcface].
    #[arg(long)]
    pub size: Option<u32>,
    /// Margin around the face template, as a fraction of the face (dlib's meaning) [default: 0.25, or 0 with --align arcface].
    #[arg(long)]
    pub padding: Option<f64>,
    /// How face chips are stored in records.
    #[arg(long, value_enum, default_value = "jpeg")]
    pub encoding: Encoding,
    /// JPEG quality, 1-100.
    #[arg(long, default_value_t = 95)]
    pub quality: u8,
    /// JPEG chroma subsampling: 420 (as Pillow, OpenCV and insightface write) or 444.
    #[arg(long, value_enum, default_value = "420")]
    pub chroma: Chroma,
    /// Target shard size (`64M`, `1G`, bytes).
    #[arg(long, default_value = "1G")]
    pub shard_size: ByteSize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Fraction of files held out into `<output>.valid`, chosen by a hash of their path.
    #[arg(long, default_value_t = 0.0, value_name = "F")]
    pub valid_fraction: f64,
    /// Files per identity held out into `<output>.valid` (identities with more than N files only).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub valid_per_class: usize,
    /// Pack only part K of N of the input (whole identities, about 1/N of the files each), for `facekit merge` to join (docs/CURATE.md).
    #[arg(long, value_name = "K/N")]
    pub part: Option<facekit_pack::part::Part>,
    /// Continue an interrupted pack from its last complete shard (same settings required); never replaces a finished dataset.
    #[arg(long)]
    pub resume: bool,
    /// Replace a finished dataset of the same name; the old one stays until the new one is complete.
    #[arg(long)]
    pub overwrite: bool,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs the pack: exit 0 when done (even with rejects), 1 when nothing was packed, 2 on a usage or
/// I/O error, 128 + N when signal N stopped it (130 Ctrl-C, 143 SIGTERM; resumable with `--resume`).
pub fn run(args: PackArgs) -> Result<ExitCode> {
    let (detector, alignment, models) = args.detect.into_parts();
    let defaults = alignment.default_spec();
    let valid = facekit_shard::DatasetPaths::new(&args.output).with_suffix(facekit_pack::VALID_SUFFIX);
    let check = super::output_check().inputs(&args.roots).inputs(&args.landmarks).inputs(&args.attributes);
    check.owned(&args.output)?;
    check.owned(&valid.dir().join(valid.name()))?;
    // Finish the chunk in hand and keep the last checkpoint, instead of dying mid-write.
    let stop = StopFlag::from_signals()?;
    let asked = facekit_shard::DatasetPaths::new(&args.output);
    let asked = asked.dir().join(asked.name()).display().to_string();
    let opts = PackOptions {
        roots: args.roots,
        output: args.output,
        detector,
        alignment,
        models,
        landmarks: args.landmarks,
        attributes: args.attributes,
        utkface_labels: args.utkface_labels,
        spec: ChipSpec { size: args.size.unwrap_or(defaults.size), padding: args.padding.unwrap_or(defaults.padding) },
        encoding: args.encoding,
        quality: args.quality,
        chroma: args.chroma,
        shard_size: args.shard_size.0,
        threads: args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        valid_fraction: args.valid_fraction,
        valid_per_class: args.valid_per_class,
        part: args.part,
        resume: args.resume,
        overwrite: args.overwrite,
        progress: !args.quiet,
        stop: stop.clone(),
        events: super::pipeline_events::observer(super::pipeline_events::Tool::Pack),
    };
    match facekit_pack::pack(&opts)? {
        PackEnd::Done(report) => {
            outln!("{}", report.summary());
            if report.counters.packed == 0 {
                // A replacement that packed nothing replaced nothing: its report names where its
                // rejects list stayed, beside the dataset it left alone.
                let kept = if report.dataset != asked { "; the existing dataset was left as it was" } else { "" };
                errln!("facekit pack: nothing was packed; see {}.rejects.tsv{kept}", report.dataset);
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        PackEnd::Interrupted { shards } => {
            errln!(
                "facekit pack: stopped by {} after {shards} complete shard(s); run the same command with --resume to continue",
                stop.describe()
            );
            Ok(ExitCode::from(stop.exit_code()))
        }
    }
}
