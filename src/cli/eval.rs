//! `facekit eval verify`: LFW-style pairs (folder or packed dataset), insightface `.bin` files, and
//! all-pairs 1:1 verification of a packed dataset or of saved embeddings. `facekit eval make-bin`:
//! an insightface `.bin` from a pairs list, its chips cut from photos exactly as a training set's
//! were (`--like`, feature `dlib`) or taken from a packed dataset's records. `facekit eval ijb`:
//! IJB-B / IJB-C (`eval_ijb`).

use super::embed::{ModelArgs, PrepArgs};
use anyhow::{bail, Context, Result};
use facekit_eval::allpairs::{self, AllPairsOptions, AllPairsReport};
use facekit_eval::embeddings::read_labels;
#[cfg(feature = "dlib")]
use facekit_eval::make_bin::PhotoPlan;
use facekit_eval::make_bin::{self, BinPairs};
use facekit_eval::metrics::KFoldReport;
use facekit_eval::npy::{self, Matrix};
use facekit_eval::pairs::{self, MissingPolicy, PairList};
use facekit_train::infer::verify::{self, PairsOptions, PairsReport};
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
    /// Write an insightface verification .bin from a pairs list: chips aligned like a training set, or a dataset's records.
    MakeBin(MakeBinArgs),
    /// IJB-B / IJB-C template evaluation as insightface runs it: 1:1 TAR at FAR, 1:N identification.
    Ijb(super::eval_ijb::IjbArgs),
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
    /// Flip test (the default, as insightface's verification): each embedding is the normalised sum of the image's and its mirror's.
    #[arg(long, overrides_with = "no_flip")]
    pub flip: bool,
    /// Score plain embeddings, without the flip test.
    #[arg(long, overrides_with = "flip")]
    pub no_flip: bool,
    /// Number of cross-validation folds for pairs protocols (a pairs file with as many keeps its own, with --missing skip too).
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
    /// Folder for report.json, and for all-pairs roc.csv and roc.png; replaced whole (it may hold only an earlier evaluation's files).
    #[arg(short, long, alias = "out", default_value = "eval_out")]
    pub output: PathBuf,
    /// Print every figure as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `facekit eval make-bin`.
#[derive(Debug, clap::Args)]
pub struct MakeBinArgs {
    /// LFW `pairs.txt`-format file: the pairs to store, in its order.
    #[arg(long, required_unless_present = "draw_pairs")]
    pub pairs: Option<PathBuf>,
    /// With --dataset and no --pairs: draw N same-identity and N different-identity pairs from its identities.
    #[arg(long, value_name = "N", requires = "dataset", conflicts_with = "pairs", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000_000))]
    pub draw_pairs: Option<usize>,
    /// Seed of --draw-pairs.
    #[arg(long, default_value_t = 0, requires = "draw_pairs")]
    pub seed: u64,
    #[command(flatten)]
    pub photos: PhotoArgs,
    /// Packed dataset whose records are the chips, looked up by their recorded paths (`Name/Name_0001.jpg`).
    #[arg(long)]
    pub dataset: Option<String>,
    /// The `.bin` to write (e.g. `lfw.bin`); photos that gave no chip are listed in `<output>.rejects.tsv`.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Folder where bare dataset names are looked up.
    #[arg(long, default_value = "training")]
    pub data_dir: PathBuf,
    /// Pairs naming missing people or photos, or a photo with no usable face: `skip` leaves them out (listed, the pairs file's folds kept), `error` stops.
    #[arg(long, value_enum, default_value = "skip")]
    pub missing: MissingPolicy,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// The flags of `make-bin` from photos, which exist only in a build with face detection (feature
/// `dlib`); without it only `--dataset` works, and the help says nothing of photos.
#[cfg(feature = "dlib")]
#[derive(Debug, clap::Args)]
pub struct PhotoArgs {
    /// Photos in LFW layout (`DIR/Name/Name_0001.jpg`), aligned and encoded as the --like dataset's records.
    #[arg(long, requires = "like", conflicts_with = "dataset")]
    pub images: Option<PathBuf>,
    /// Packed dataset (`training/NAME`, or NAME under --data-dir) whose alignment and encoding the chips copy.
    #[arg(long, requires = "images")]
    pub like: Option<String>,
    /// Folder of the dlib models (default: ./models).
    #[arg(long, env = "FACEKIT_MODELS")]
    pub models: Option<PathBuf>,
    /// Alignment threads (default: all cores).
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=4096))]
    pub threads: Option<usize>,
}

/// The flags of `make-bin` from photos, which exist only in a build with dlib (feature `dlib`).
#[cfg(not(feature = "dlib"))]
#[derive(Debug, clap::Args)]
pub struct PhotoArgs {}

/// What a `.bin` is made of, and what was left out.
struct BinContent {
    images: Vec<Vec<u8>>,
    issame: Vec<bool>,
    /// How the chips were made, for the summary.
    chips: String,
    resolved: pairs::Resolved,
    /// Photos that gave no chip, and the pairs left out for them.
    rejected_photos: usize,
    rejected_pairs: usize,
    /// What each fold of the pairs file kept.
    folds: pairs::KeptFolds,
    rejects_file: Option<PathBuf>,
}

impl BinContent {
    fn new(made: BinPairs, chips: String, resolved: pairs::Resolved) -> Self {
        BinContent {
            images: made.images,
            issame: made.issame,
            chips,
            resolved,
            rejected_photos: 0,
            rejected_pairs: made.unusable,
            folds: made.folds,
            rejects_file: None,
        }
    }
}

/// The files `eval verify` writes into its output folder.
const VERIFY_FILES: [&str; 3] = ["report.json", "roc.csv", "roc.png"];
/// What `eval make-bin` writes beside its `.bin`: the photos that gave no chip.
const REJECTS_SUFFIX: &str = ".rejects.tsv";

/// `make-bin`'s outputs, checked against its inputs, then held (which clears what an interrupted
/// make-bin left beside them).
fn hold_make_bin_outputs(a: &MakeBinArgs) -> Result<facekit_io::output::Held> {
    let mut check = super::output_check().inputs(&a.pairs);
    #[cfg(feature = "dlib")]
    {
        check = check.inputs(&a.photos.images);
    }
    for name in a.dataset.iter().chain(like_name(a)) {
        if let Ok(d) = facekit_shard::DatasetPaths::resolve(name, Some(&a.data_dir)) {
            check = check.input(d.manifest());
        }
    }
    check.file(&a.output)?;
    check.file(&rejects_path(&a.output))?;
    Ok(facekit_io::output::hold(&a.output, &format!("verification file {}", a.output.display()), &[REJECTS_SUFFIX])?)
}

/// The `--like` dataset's name, in a build that has the flag.
fn like_name(a: &MakeBinArgs) -> Option<&String> {
    #[cfg(feature = "dlib")]
    return a.photos.like.as_ref();
    #[cfg(not(feature = "dlib"))]
    {
        let _ = a;
        None
    }
}

/// `OUTPUT.rejects.tsv`.
fn rejects_path(output: &std::path::Path) -> PathBuf {
    let mut p = output.as_os_str().to_owned();
    p.push(REJECTS_SUFFIX);
    PathBuf::from(p)
}

/// Writes the `.bin` and prints what went in and what was left out.
fn run_make_bin(a: MakeBinArgs) -> Result<ExitCode> {
    let _held = hold_make_bin_outputs(&a)?;
    if let (Some(n), Some(name)) = (a.draw_pairs, &a.dataset) {
        let content = bin_from_drawn_pairs(&a, name, n)?;
        facekit_eval::bin_write::write_verification_bin(&a.output, &content.images, &content.issame)?;
        outln!("Wrote {}", a.output.display());
        outln!(
            "  pairs:             {} ({n} same, {n} different, drawn with seed {}), {} images",
            content.issame.len(),
            a.seed,
            content.images.len()
        );
        outln!("  chips:             {}", content.chips);
        return Ok(ExitCode::SUCCESS);
    }
    let pairs_file = a.pairs.clone().expect("clap requires --pairs without --draw-pairs");
    let list = PairList::read(&pairs_file)?;
    #[cfg(feature = "dlib")]
    let from_photos = a.photos.images.as_ref().zip(a.photos.like.as_ref());
    #[cfg(not(feature = "dlib"))]
    let from_photos: Option<(&PathBuf, &String)> = None;
    let content = match (from_photos, &a.dataset) {
        #[cfg(feature = "dlib")]
        (Some((images, like)), None) => bin_from_photos(&a, &list, images, like)?,
        (None, Some(name)) => bin_from_dataset(&a, &list, name)?,
        _ if cfg!(feature = "dlib") => bail!(
            "give --images DIR --like DATASET (photos aligned like a training set) or --dataset NAME (its records)"
        ),
        _ => bail!("give --dataset NAME (this facekit was built without face detection, so it cannot align photos)"),
    };
    facekit_eval::bin_write::write_verification_bin(&a.output, &content.images, &content.issame)?;
    print_made_bin(&a, &list, &content);
    Ok(ExitCode::SUCCESS)
}

/// The summary of a `.bin` made from a pairs list: what went in, what was left out and from
/// which fold.
fn print_made_bin(a: &MakeBinArgs, list: &PairList, content: &BinContent) {
    let same = content.issame.iter().filter(|&&s| s).count();
    let r = &content.resolved;
    outln!("Wrote {}", a.output.display());
    outln!(
        "  pairs:             {} ({same} same, {} different), {} images",
        content.issame.len(),
        content.issame.len() - same,
        content.images.len()
    );
    outln!("  chips:             {}", content.chips);
    outln!(
        "  left out:          {} of {} listed pairs: {} with missing people, {} with missing photos, {} with a photo that gave no chip, \
         {} to keep the {} folds equal",
        list.pairs.len() - content.issame.len(),
        list.pairs.len(),
        r.missing_people,
        r.missing_images,
        content.rejected_pairs,
        content.folds.balanced(),
        list.folds
    );
    for line in content.folds.describe() {
        outln!("    {line}");
    }
    if let Some(f) = &content.rejects_file {
        outln!(
            "  photos rejected:   {} without a chip, {} missing (listed in {})",
            content.rejected_photos,
            r.missing.len(),
            f.display()
        );
    }
}

/// The chips of the pairs' photos, cut as `like`'s records were (`facekit_pack::chips`), the
/// photos without one listed in `OUTPUT.rejects.tsv` (the first 20 also here), the pairs kept
/// with the file's folds (`facekit_eval::make_bin`).
#[cfg(feature = "dlib")]
fn bin_from_photos(a: &MakeBinArgs, list: &PairList, root: &std::path::Path, like: &str) -> Result<BinContent> {
    use facekit_pack::chips::{self, ChipRecipe};
    if !root.is_dir() {
        bail!("image root {} is not a folder", root.display());
    }
    let paths =
        facekit_shard::DatasetPaths::resolve(like, Some(&a.data_dir)).with_context(|| format!("--like {like}"))?;
    let manifest = facekit_shard::Manifest::read(&paths.manifest()).with_context(|| format!("--like {like}"))?;
    let recipe = ChipRecipe::like(manifest.alignment.as_ref(), &manifest.encoding).with_context(|| {
        format!(
            "--like {like}: its chips cannot be reproduced from photos; use --dataset with a dataset packed from them"
        )
    })?;
    let plan = PhotoPlan::new(list, root, a.missing)
        .with_context(|| format!("pairs file {} against {}", pairs_path(a).display(), root.display()))?;
    let threads = a.photos.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let made = chips::make_chips(&recipe, a.photos.models.as_deref(), &plan.files, threads, !a.quiet)?;
    // Every photo that gave no chip or is missing is listed, whatever the policy, before anything is decided.
    let rejects_file = rejects_path(&a.output);
    let missing = plan.missing(root).into_iter().map(|m| (m.path, m.reason, m.detail));
    let listed = chips::list_rejects(&rejects_file, &plan.files, &made, missing)?;
    for l in listed.iter().take(20) {
        errln!("facekit eval make-bin: {}: {} ({})", l.path, l.reason, l.detail);
    }
    if listed.len() > 20 {
        errln!("facekit eval make-bin: ... and {} more photos without a chip or missing", listed.len() - 20);
    }
    let chips_made: Vec<Option<&Vec<u8>>> = made.iter().map(|c| c.as_ref().ok()).collect();
    let pairs = plan.bin(list, &chips_made, a.missing, &rejects_file)?;
    let rejected_photos = made.iter().filter(|c| c.is_err()).count();
    let encoding = match recipe.encoding {
        facekit_shard::Encoding::Jpeg => format!("jpeg q{} {}", recipe.quality, recipe.chroma.name()),
        other => format!("{other:?}").to_lowercase(),
    };
    let chips = format!(
        "{} photos aligned like {like} ({} alignment, dlib {}, {} px, padding {}, {encoding}), {rejected_photos} gave none",
        plan.files.len() - rejected_photos,
        recipe.alignment.name(),
        recipe.detector.name(),
        recipe.spec.size,
        recipe.spec.padding
    );
    Ok(BinContent { rejected_photos, rejects_file: Some(rejects_file), ..BinContent::new(pairs, chips, plan.resolved) })
}

/// The records of `name` that the pairs name, looked up by their recorded paths as
/// `eval verify --dataset --pairs` does. JPEG and PNG records are stored as they are; raw ones
/// as PNG (lossless, so with the records' pixels).
fn bin_from_dataset(a: &MakeBinArgs, list: &PairList, name: &str) -> Result<BinContent> {
    use facekit_shard::Encoding;
    let ds = facekit_shard::Dataset::open_name(name, Some(&a.data_dir))?;
    let found = verify::record_faces(&ds)?;
    let resolved = pairs::resolve(list, a.missing, |f| found.presence(f))
        .with_context(|| format!("pairs file {} against dataset {name}", pairs_path(a).display()))?;
    let (faces, index) = pairs::unique_faces(&resolved.pairs);
    let format = ds.manifest().encoding.format;
    let records = faces
        .iter()
        .map(|f| record_image(&ds, found.record(f).expect("resolved faces are in the dataset"), name))
        .collect::<Result<Vec<_>>>()?;
    let made = make_bin::assemble(list, &resolved, &index, &vec![true; index.len()], |k| &records[k])?;
    let stored = if matches!(format, Encoding::Jpeg | Encoding::Png) { "as stored" } else { "as PNG" };
    let chips = format!("{} records of {name}, {stored}", faces.len());
    Ok(BinContent::new(made, chips, resolved))
}

fn pairs_path(a: &MakeBinArgs) -> PathBuf {
    a.pairs.clone().unwrap_or_default()
}

/// Record `i` of `ds` as an image file's bytes (raw pixels as PNG), as `export rec` writes it.
fn record_image(ds: &facekit_shard::Dataset, i: usize, name: &str) -> Result<Vec<u8>> {
    let rec = ds.record(i)?;
    let (bytes, _) =
        facekit_pack::rec::export::image_file_bytes(&rec).with_context(|| format!("record {i} of {name}"))?;
    Ok(bytes)
}

/// A `.bin` of pairs drawn from the identities of dataset `name` (`--draw-pairs`).
fn bin_from_drawn_pairs(a: &MakeBinArgs, name: &str, per_kind: usize) -> Result<BinContent> {
    let ds = facekit_shard::Dataset::open_name(name, Some(&a.data_dir))?;
    let drawn = facekit_eval::draw::draw_pairs(&ds.class_ids(), per_kind, a.seed)
        .with_context(|| format!("--draw-pairs {per_kind} from {name}"))?;
    let (mut images, mut issame) = (Vec::with_capacity(2 * drawn.len()), Vec::with_capacity(drawn.len()));
    for &(l, r, same) in &drawn {
        images.push(record_image(&ds, l, name)?);
        images.push(record_image(&ds, r, name)?);
        issame.push(same);
    }
    let chips = format!("records of {name}, pairs drawn from its {} identities", ds.manifest().classes);
    Ok(BinContent {
        images,
        issame,
        chips,
        resolved: pairs::Resolved::empty(),
        rejected_photos: 0,
        rejected_pairs: 0,
        folds: Default::default(),
        rejects_file: None,
    })
}

/// Runs `facekit eval`.
pub fn run(args: EvalArgs) -> Result<ExitCode> {
    match args.command {
        EvalCommand::Verify(v) => run_verify(v),
        EvalCommand::MakeBin(m) => run_make_bin(m),
        EvalCommand::Ijb(i) => super::eval_ijb::run(i),
    }
}

fn run_verify(a: VerifyArgs) -> Result<ExitCode> {
    let mut check = super::output_check()
        .inputs(&a.model.model)
        .inputs(&a.pairs)
        .inputs(&a.images)
        .inputs(&a.bin)
        .inputs(&a.embeddings);
    if let Some(d) =
        a.dataset.as_deref().and_then(|name| facekit_shard::DatasetPaths::resolve(name, Some(&a.data_dir)).ok())
    {
        check = check.input(d.manifest());
    }
    check.folder(&a.output, &VERIFY_FILES)?;
    let held = facekit_io::output::hold(&a.output, &format!("evaluation folder {}", a.output.display()), &[])?;
    // The flip test is insightface's protocol, and what `train --eval-bin` scores: the default.
    let flip = a.flip || !a.no_flip;
    let opts = PairsOptions { folds: a.folds, flip, batch_size: a.model.batch_size, missing: a.missing };
    if let Some(dir) = &a.embeddings {
        let npy = dir.join("embeddings.npy");
        let m = npy::read_f32(&npy)?;
        let labels = read_labels(&dir.join("labels.tsv"))?;
        return all_pairs(&a, &held, &m, &labels, &dir.display().to_string())
            .with_context(|| format!("--embeddings {}", npy.display()));
    }
    let events = super::train_events::observer();
    let model = a.model.load(&events)?;
    let report = match (&a.pairs, &a.images, &a.dataset, &a.bin) {
        (Some(p), Some(root), None, None) => {
            let prep = a.prep.preparation()?;
            verify::pairs_from_folder(&model, p, root, &prep, opts, &events)?
        }
        (Some(p), None, Some(name), None) => {
            let ds = facekit_shard::Dataset::open_name(name, Some(&a.data_dir))?;
            verify::pairs_from_dataset(&model, p, &ds, opts, &events)?
        }
        (None, None, None, Some(bin)) => verify::pairs_from_bin(&model, bin, opts)?,
        (None, None, Some(name), None) => {
            let ds = facekit_shard::Dataset::open_name(name, Some(&a.data_dir))?;
            let emb = facekit_train::infer::embed::embed_dataset(&model, &ds, a.model.batch_size, flip, &events)?;
            let m = Matrix { rows: ds.len(), cols: model.dim(), data: emb };
            return all_pairs(&a, &held, &m, &ds.class_ids(), name);
        }
        (Some(_), None, None, None) => bail!("--pairs needs --images ROOT or --dataset NAME"),
        _ => bail!("give --pairs with --images or --dataset, or --bin, or --dataset alone, or --embeddings"),
    };
    let json = serde_json::to_string_pretty(&report)?;
    held.replace_dir(|dir| facekit_io::durable::write(dir.join("report.json"), json.as_bytes()))?;
    if a.json {
        outln!("{json}");
    } else {
        print_pairs(&report);
        outln!("  report:            {}", a.output.join("report.json").display());
    }
    Ok(ExitCode::SUCCESS)
}

fn all_pairs(
    a: &VerifyArgs,
    held: &facekit_io::output::Held,
    m: &Matrix,
    labels: &[Option<u32>],
    name: &str,
) -> Result<ExitCode> {
    let report = allpairs::all_pairs(m, labels, AllPairsOptions { max_pairs: a.max_pairs, seed: a.seed })?;
    let json = serde_json::to_string_pretty(&report)?;
    held.replace_dir(|dir| -> Result<()> {
        allpairs::write_roc(&report, &dir.join("roc.csv"), &dir.join("roc.png"), &format!("ROC, all pairs of {name}"))?;
        Ok(facekit_io::durable::write(dir.join("report.json"), json.as_bytes())?)
    })?;
    let (csv, png) = (a.output.join("roc.csv"), a.output.join("roc.png"));
    if a.json {
        outln!("{json}");
    } else {
        print_all_pairs(&report, name);
        outln!("  ROC:               {}, {}", csv.display(), png.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn print_pairs(r: &PairsReport) {
    let k: &KFoldReport = &r.kfold;
    outln!("Verification on {} ({} folds{})", r.source, k.folds, if r.flip { ", flip test" } else { "" });
    outln!("  accuracy:          {:.4} +- {:.4}", k.accuracy_mean, k.accuracy_std);
    outln!("  best threshold:    {:.3} squared L2 (cosine {:.4})", k.best_threshold, k.best_threshold_cosine);
    outln!("  pairs:             {} of {} listed, {} images", r.pairs_used, r.pairs_listed, r.images);
    if r.missing_people + r.missing_images > 0 {
        outln!(
            "  skipped pairs:     {} with missing people, {} with missing photos (e.g. {})",
            r.missing_people,
            r.missing_images,
            r.missing_examples.join("; ")
        );
    }
    if r.preparation.aligned + r.preparation.fallback > 0 {
        outln!(
            "  alignment:         {} aligned, {} centre-crop fallbacks (no usable face)",
            r.preparation.aligned,
            r.preparation.fallback
        );
    }
}

fn print_all_pairs(r: &AllPairsReport, name: &str) {
    outln!("All-pairs verification of {name}");
    outln!("  faces:             {} in {} identities", r.pairs.faces, r.pairs.identities);
    outln!("  pairs:             {} genuine, {} impostor ({})", r.pairs.genuine, r.pairs.impostor, r.pairs.selection);
    outln!("  mean cosine:       genuine {:.4}, impostor {:.4}", r.genuine_mean, r.impostor_mean);
    outln!("  AUC:               {:.4}", r.auc);
    for t in &r.tar_at_far {
        match (t.tar, &t.note) {
            (Some(tar), _) => outln!(
                "  TAR @ FAR {:.0e}:   {:.4} (threshold {:.4})",
                t.far_target,
                tar,
                t.threshold.unwrap_or(f64::NAN)
            ),
            (None, Some(note)) => outln!("  TAR @ FAR {:.0e}:   n/a: {note}", t.far_target),
            (None, None) => outln!("  TAR @ FAR {:.0e}:   n/a", t.far_target),
        }
    }
}
