//! `facekit audit training/NAME`: every record embedded with a face network (dlib's face encoder
//! by default, or a facekit run or export with `--model`), then lists of exact and near
//! duplicates, probable mislabels, identities that are probably one person, and faces shared
//! with evaluation sets (`--against`), with contact sheets and `audit.json` (docs/CURATE.md).

use super::embed::ModelArgs;
use anyhow::{bail, Context, Result};
use facekit_train::audit::{self, Faces, Findings, Network, Row, Thresholds};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `facekit audit`.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// The dataset to audit (`training/celeb`, or a name under --data-dir).
    pub dataset: String,
    /// Folder where bare dataset names are looked up.
    #[arg(long, default_value = "training")]
    pub data_dir: PathBuf,
    /// Output folder, replaced whole (it may hold only an earlier audit's files) [default: audit/NAME].
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Folder of dlib's models, for the default network (dlib's face encoder).
    #[arg(long, env = "FACEKIT_MODELS")]
    pub models: Option<PathBuf>,
    /// insightface verification `.bin` files, or other datasets (`training/OTHER`, or a name under --data-dir), whose faces are looked for in the dataset (repeatable).
    #[arg(long, num_args = 1..)]
    pub against: Vec<PathBuf>,
    /// LFW `pairs.txt`-format file whose photos (in --against-images) are looked for in the dataset, cut as its records were.
    #[arg(long, requires = "against_images")]
    pub against_pairs: Option<PathBuf>,
    /// Image root in LFW layout (`DIR/Name/Name_0001.jpg`) of --against-pairs.
    #[arg(long, requires = "against_pairs")]
    pub against_images: Option<PathBuf>,
    /// Cosine similarity from which two faces are near duplicates [default: 0.97 with dlib, 0.90 with --model].
    #[arg(long)]
    pub near: Option<f32>,
    /// Similarity to its identity's centre below which a record is a probable mislabel [default: 0.85 with dlib, 0.30 with --model].
    #[arg(long)]
    pub mislabel: Option<f32>,
    /// Similarity of two identities' centres from which they are probably one person [default: 0.92 with dlib, 0.60 with --model].
    #[arg(long)]
    pub same_person: Option<f32>,
    /// Similarity of an evaluation face to an identity's centre from which that person is in the training set [default: 0.75 with dlib, 0.45 with --model].
    #[arg(long)]
    pub member: Option<f32>,
    /// Worst cases drawn on each contact sheet.
    #[arg(long, default_value_t = 16)]
    pub sheet_rows: usize,
    /// Records embedded between saves of the embeddings (a killed audit, rerun, continues after the last save).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub save_every: u64,
}

/// Test-only: ends the process with exit 137, as `kill -9` would, as soon as the embeddings of at
/// least this many records are saved (tests of resuming).
const KILL_AFTER_ENV: &str = "FACEKIT_TEST_AUDIT_KILL_AFTER";

/// The observer the audit runs with: the inference commands' lines and bar, and the tests' kill.
fn observer() -> facekit_train::events::Observer {
    use facekit_train::events::{Event, Observer};
    let shown = super::train_events::observer();
    let kill_after: Option<u64> = std::env::var(KILL_AFTER_ENV).ok().and_then(|v| v.parse().ok());
    Observer::new(move |event| {
        shown.emit(*event);
        if let Event::EmbeddingsSaved { done, .. } = *event {
            if kill_after.is_some_and(|k| done >= k) {
                std::process::exit(137);
            }
        }
    })
}

const FIXED: [&str; 12] = [
    "audit.json",
    "embeddings.npy",
    "embeddings.json",
    "embeddings.partial",
    "exact_duplicates.tsv",
    "near_duplicates.tsv",
    "mislabels.tsv",
    "same_person.tsv",
    "exact_duplicates.png",
    "near_duplicates.png",
    "mislabels.png",
    "same_person.png",
];

/// The files an audit folder may hold: the fixed ones, every `overlap_*` list and sheet, and
/// every `against_*` cache of another dataset's embeddings.
fn own_files(out: &Path, sets: &[String]) -> Vec<String> {
    let mut own: Vec<String> = FIXED.iter().map(|s| s.to_string()).collect();
    for s in sets {
        own.push(format!("overlap_{s}.tsv"));
        own.push(format!("overlap_{s}.png"));
    }
    let cache = |name: &str| [".npy", ".json", ".partial"].iter().any(|x| name.ends_with(x));
    if let Ok(entries) = std::fs::read_dir(out) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if (name.starts_with("overlap_") && (name.ends_with(".tsv") || name.ends_with(".png")))
                || (name.starts_with("against_") && cache(&name))
            {
                own.push(name);
            }
        }
    }
    own
}

/// What `--against` names: an insightface `.bin`, or another dataset.
enum Against {
    Bin(PathBuf),
    Dataset(facekit_shard::DatasetPaths),
}

impl Against {
    /// A `.bin` file as it is; anything else is a dataset, looked up as the audited one is.
    fn of(p: &Path, data_dir: &Path) -> Result<Against> {
        if p.is_file() && p.extension().is_some_and(|x| x == "bin") {
            return Ok(Against::Bin(p.to_path_buf()));
        }
        let paths = facekit_shard::DatasetPaths::resolve(&p.to_string_lossy(), Some(data_dir))
            .with_context(|| format!("--against {} is neither a .bin file nor a dataset", p.display()))?;
        Ok(Against::Dataset(paths))
    }

    fn name(&self) -> String {
        match self {
            Against::Bin(p) => facekit_train::embedding::bins::bin_name(p),
            Against::Dataset(d) => d.name(),
        }
    }

    /// The file read: the `.bin`, or the dataset's manifest.
    fn input(&self) -> PathBuf {
        match self {
            Against::Bin(p) => p.clone(),
            Against::Dataset(d) => d.manifest(),
        }
    }
}

/// Runs the audit and writes its folder.
pub fn run(args: AuditArgs) -> Result<ExitCode> {
    let paths = facekit_shard::DatasetPaths::resolve(&args.dataset, Some(&args.data_dir))?;
    let output = args.output.clone().unwrap_or_else(|| PathBuf::from("audit").join(paths.name()));
    let against: Vec<Against> = args.against.iter().map(|p| Against::of(p, &args.data_dir)).collect::<Result<_>>()?;
    let mut set_names: Vec<String> = against.iter().map(Against::name).collect();
    set_names.extend(args.against_pairs.iter().map(|p| facekit_train::embedding::bins::bin_name(p)));
    for (k, n) in set_names.iter().enumerate() {
        if set_names[..k].contains(n) {
            bail!("--against names two sets called {n}: their lists would be one file (overlap_{n}.tsv)");
        }
    }
    let own = own_files(&output, &set_names);
    let own_refs: Vec<&str> = own.iter().map(String::as_str).collect();
    super::output_check()
        .input(paths.manifest())
        .inputs(&args.model.model)
        .inputs(against.iter().map(Against::input))
        .inputs(&args.against_pairs)
        .inputs(&args.against_images)
        .folder(&output, &own_refs)?;
    let held = facekit_io::output::hold(&output, &format!("audit folder {}", output.display()), &[])?;
    let events = observer();
    let network = match &args.model.model {
        Some(_) => Network::Model(Box::new(args.model.load(&events)?)),
        None => Network::Dlib { models: args.models.clone() },
    };
    let defaults = network.default_thresholds();
    let t = Thresholds {
        near: args.near.unwrap_or(defaults.near),
        mislabel: args.mislabel.unwrap_or(defaults.mislabel),
        same_person: args.same_person.unwrap_or(defaults.same_person),
        member: args.member.unwrap_or(defaults.member),
    };
    let ds = facekit_shard::Dataset::open(paths.clone())?;
    let faces = Faces::read(&ds)?;
    let dim = network.dim();
    let key = audit::CacheKey {
        manifest_sha256: facekit_io::bounded::file_sha256(&paths.manifest())?,
        network_sha256: facekit_io::bounded::file_sha256(&network.weights())?,
        records: faces.len(),
        dim,
    };
    let emb = match audit::cache::complete(&output, "embeddings", &key) {
        Some(e) => {
            outln!("facekit audit: reusing the embeddings in {}", output.display());
            e
        }
        None => audit::cache::embed_resumable(
            &network,
            audit::cache::Store { folder: &output, stem: "embeddings", key: &key, every: args.save_every as usize },
            args.model.batch_size,
            &events,
            |i| audit::record_image(&ds, i),
        )?,
    };
    let network_sha256 = key.network_sha256.clone();
    let mut sets = Vec::new();
    let mut caches = Vec::new();
    for a in &against {
        match a {
            Against::Bin(p) => sets.push(audit::EvalSet::load(p, &network, args.model.batch_size, &events)?),
            Against::Dataset(other) => {
                let other_ds = facekit_shard::Dataset::open(other.clone())?;
                let stem = format!("against_{}", other.name());
                let other_key = audit::CacheKey {
                    manifest_sha256: facekit_io::bounded::file_sha256(&other.manifest())?,
                    network_sha256: network_sha256.clone(),
                    records: other_ds.len(),
                    dim,
                };
                let e = match audit::cache::complete(&output, &stem, &other_key) {
                    Some(e) => {
                        outln!("facekit audit: reusing the embeddings of {} in {}", other.name(), output.display());
                        e
                    }
                    None => audit::cache::embed_resumable(
                        &network,
                        audit::cache::Store {
                            folder: &output,
                            stem: &stem,
                            key: &other_key,
                            every: args.save_every as usize,
                        },
                        args.model.batch_size,
                        &events,
                        |i| audit::record_image(&other_ds, i),
                    )?,
                };
                caches.push((stem, other_key, e.clone()));
                sets.push(audit::EvalSet::dataset(other_ds, e)?);
            }
        }
    }
    if let (Some(pairs), Some(root)) = (&args.against_pairs, &args.against_images) {
        sets.push(photo_set(pairs, root, ds.manifest(), &args, &network, &events)?);
    }
    // The cache keeps the embeddings as the network gave them; centring is the analysis's.
    let mut centred = emb.clone();
    if network.centred() {
        let mean = audit::mean(&emb, dim);
        audit::centre(&mut centred, &mean);
        for s in &mut sets {
            audit::centre(&mut s.embeddings, &mean);
        }
    }
    let device = match &network {
        Network::Model(m) => m.device,
        Network::Dlib { .. } => facekit_train::trainer::parse_device(&args.model.device)?,
    };
    let found = audit::analyse(&faces, &centred, dim, &sets, &t, device)?;
    let lists = lists(&found, &sets);
    let summary = serde_json::json!({
        "dataset": paths.name(),
        "manifest_sha256": key.manifest_sha256,
        "network": network.describe(),
        "network_sha256": key.network_sha256,
        "records": faces.len(),
        "identities": audit::identities(&faces).len(),
        "embedding_dim": dim,
        // f32 thresholds as the user wrote them, not as their nearest f64 (0.44999998...).
        "thresholds": {
            "near": round4(t.near),
            "mislabel": round4(t.mislabel),
            "same_person": round4(t.same_person),
            "member": round4(t.member),
        },
        "centred": network.centred(),
        "against": against.iter().map(Against::input).chain(args.against_pairs.clone()).map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "counts": lists.iter().map(|(n, r)| (n.clone(), serde_json::Value::from(r.len()))).collect::<serde_json::Map<_, _>>(),
    });
    let rows = args.sheet_rows;
    held.replace_dir(|dir| -> Result<()> {
        facekit_eval::npy::write_f32(&dir.join("embeddings.npy"), faces.len(), dim, &emb)?;
        std::fs::write(dir.join("embeddings.json"), serde_json::to_vec_pretty(&key)?)?;
        for (stem, k, e) in &caches {
            facekit_eval::npy::write_f32(&dir.join(format!("{stem}.npy")), k.records, dim, e)?;
            std::fs::write(dir.join(format!("{stem}.json")), serde_json::to_vec_pretty(k)?)?;
        }
        std::fs::write(dir.join("audit.json"), serde_json::to_vec_pretty(&summary)?)?;
        for (name, list) in &lists {
            std::fs::write(dir.join(format!("{name}.tsv")), audit::tsv(list, &faces, &sets))?;
            if !list.is_empty() {
                audit::sheet::write(
                    &dir.join(format!("{name}.png")),
                    &list[..list.len().min(rows)],
                    &ds,
                    &faces,
                    &sets,
                )
                .with_context(|| format!("writing the contact sheet of {name}"))?;
            }
        }
        Ok(())
    })?;
    for (name, list) in &lists {
        outln!("{name}: {}", list.len());
    }
    outln!("Audited {} record(s) with {} into {}", faces.len(), network.describe(), output.display());
    Ok(ExitCode::SUCCESS)
}

/// The photos a pairs file names under `root`, each once, cut as the audited dataset's records
/// were (`facekit_pack::chips`, as `eval make-bin --like`); a photo missing or without a usable
/// face is left out, and counted on stderr.
fn photo_set(
    pairs: &Path,
    root: &Path,
    manifest: &facekit_shard::Manifest,
    args: &AuditArgs,
    network: &Network,
    events: &facekit_train::events::Observer,
) -> Result<audit::EvalSet> {
    use facekit_pack::chips::{self, ChipRecipe};
    let list = facekit_eval::pairs::PairList::read(pairs)?;
    let mut seen = std::collections::HashSet::new();
    let faces: Vec<&facekit_eval::pairs::FaceRef> =
        list.pairs.iter().flat_map(|p| [&p.left, &p.right]).filter(|f| seen.insert(*f)).collect();
    let (present, missing): (Vec<_>, Vec<_>) = faces.into_iter().partition(|f| f.path(root).is_file());
    let recipe = ChipRecipe::like(manifest.alignment.as_ref(), &manifest.encoding).context(
        "--against-pairs: the dataset's chips cannot be cut from photos; pack the photos and give --against DATASET",
    )?;
    let files: Vec<PathBuf> = present.iter().map(|f| f.path(root)).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let made = chips::make_chips(&recipe, args.models.as_deref(), &files, threads, false)?;
    let (mut images, mut names, mut identities, mut faceless) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for (f, chip) in present.iter().zip(made) {
        let Ok(bytes) = chip else {
            faceless += 1;
            continue;
        };
        let img = facekit_pack::photo::decode_image(&bytes).with_context(|| format!("the chip of {}", f.relative()))?;
        images.push(img);
        names.push(f.relative());
        identities.push(f.name.clone());
    }
    if !missing.is_empty() || faceless > 0 {
        errln!(
            "facekit audit: --against-pairs {}: {} photo(s) missing from {} and {} without a usable face are left out",
            pairs.display(),
            missing.len(),
            root.display(),
            faceless
        );
    }
    audit::EvalSet::photos(pairs, images, names, identities, network, args.model.batch_size, events)
}

/// Every finding's list under its file name (without `.tsv`).
fn lists(f: &Findings, sets: &[audit::EvalSet]) -> Vec<(String, Vec<Row>)> {
    let mut out = vec![
        ("exact_duplicates".to_string(), f.exact.clone()),
        ("near_duplicates".to_string(), f.near.clone()),
        ("mislabels".to_string(), f.mislabels.clone()),
        ("same_person".to_string(), f.same_person.clone()),
    ];
    for (s, rows) in sets.iter().zip(&f.overlap) {
        out.push((format!("overlap_{}", s.name), rows.clone()));
    }
    out
}

/// `v` to 4 decimals, as f64.
fn round4(v: f32) -> f64 {
    (f64::from(v) * 1e4).round() / 1e4
}
