//! `facekit eval ijb`: IJB-B / IJB-C template evaluation as insightface runs it (1:1 from
//! `eval_ijbc.py`, 1:N from `ijb_1n.py`, plus NIST's open-set figures), over
//! [`facekit_eval::ijb`] for the protocol and [`facekit_train::infer::ijb`] for the faces.

use super::embed::ModelArgs;
use anyhow::{Context, Result};
use facekit_eval::ijb::{self, Gallery, Identification, Layout, Target, Verification};
use facekit_train::infer::ijb::{self as faces_ijb, FeatureKey, FEATURES_JSON, FEATURES_NPY};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// Arguments of `facekit eval ijb`.
#[derive(Debug, clap::Args)]
pub struct IjbArgs {
    /// The set's root, holding `loose_crop/` and `meta/` (insightface's layout), e.g. `IJBC/`.
    #[arg(value_name = "ROOT", required_unless_present = "root")]
    pub root_arg: Option<PathBuf>,
    /// The set's root (the same as ROOT).
    #[arg(long, conflicts_with = "root_arg")]
    pub root: Option<PathBuf>,
    /// Which set: IJBC (meta files `ijbc_*`, galleries G1/G2) or IJBB (`ijbb_*`, S1/S2).
    #[arg(long, value_enum, default_value = "IJBC")]
    pub target: Target,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Embed each face alone, without adding its mirror's embedding (insightface flips by default).
    #[arg(long)]
    pub no_flip: bool,
    /// Folder for ijb.json, roc.png, pair_scores.npy and the cached face features (kept for a rerun with the same network and faces).
    #[arg(short, long, alias = "out", default_value = "ijb_out")]
    pub output: PathBuf,
    /// Print every figure as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The files `eval ijb` writes into its output folder.
const IJB_FILES: [&str; 5] = ["ijb.json", "roc.png", "pair_scores.npy", FEATURES_NPY, FEATURES_JSON];

/// Runs `facekit eval ijb`.
pub fn run(a: IjbArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let root = a.root.clone().or(a.root_arg.clone()).expect("clap requires ROOT or --root");
    let layout = Layout { root: root.clone(), target: a.target };
    super::output_check().input(&root).inputs(&a.model.model).folder(&a.output, &IJB_FILES)?;
    let held = facekit_io::output::hold(&a.output, &format!("IJB folder {}", a.output.display()), &[])?;

    let meta = ijb::Meta::read(&layout.landmarks(), &layout.templates())?;
    let (pairs, pair_issues) = ijb::read_pairs(&layout.pairs())?;
    let one_to_n = read_one_to_n(&layout)?;
    let mut issues = meta.issues.clone();
    issues.extend(pair_issues);
    if let Some((_, _, i)) = &one_to_n {
        issues.extend(i.iter().cloned());
    }
    for i in issues.iter().take(20) {
        errln!("facekit eval ijb: {i}");
    }
    if issues.len() > 20 {
        errln!("facekit eval ijb: ... and {} more unusable lines (all in ijb.json)", issues.len() - 20);
    }
    if meta.name_mismatches > 0 {
        errln!(
            "facekit eval ijb: {} lines of {} and {} name different images; they are paired by line, as insightface pairs them",
            meta.name_mismatches,
            layout.landmarks().display(),
            layout.templates().display()
        );
    }

    let events = super::train_events::observer();
    let model = a.model.load(&events)?;
    let flip = !a.no_flip;
    let key = FeatureKey {
        network_sha256: facekit_io::bounded::file_sha256(&model.weights)?,
        faces_sha256: facekit_io::bounded::file_sha256(&layout.landmarks())?,
        images: layout.images().display().to_string(),
        faces: meta.faces.len(),
        dim: model.dim(),
        chip_size: model.image_size(),
        flip,
    };
    let (features, reused) = match faces_ijb::cached(&a.output, &key) {
        Some(f) => {
            outln!("facekit eval ijb: reusing the face features in {}", a.output.display());
            (f, true)
        }
        None => {
            (faces_ijb::face_features(&model, &layout.images(), &meta.faces, a.model.batch_size, flip, &events)?, false)
        }
    };
    for f in features.failed.iter().take(20) {
        errln!("facekit eval ijb: face {} ({}, line {}): {}", f.name, layout.images().display(), f.index + 1, f.reason);
    }
    if features.failed.len() > 20 {
        errln!(
            "facekit eval ijb: ... and {} more faces without a feature (all in features.json)",
            features.failed.len() - 20
        );
    }

    let templates = ijb::pool_templates(&meta.faces, &features.rows(), features.dim)?;
    let (scores, verification) = ijb::verification(&templates, &pairs)?;
    let identification = match &one_to_n {
        Some((galleries, probes, _)) => Some(ijb::identification(&templates, galleries, probes)?),
        None => None,
    };
    let report = serde_json::json!({
        "target": a.target,
        "root": root.display().to_string(),
        "network": {
            "weights": model.weights.display().to_string(),
            "sha256": key.network_sha256,
            "config": model.config,
        },
        "settings": {
            "flip": flip,
            "use_norm_score": true,
            "use_detector_score": true,
            "chip_size": key.chip_size,
            "alignment": "arcface5 similarity onto insightface's template, black border",
            "batch_size": a.model.batch_size,
            "device": format!("{:?}", model.device),
            "tar_at_far_rule": "insightface: the ROC point (scikit-learn, intermediate points dropped) whose FPR is nearest the target",
        },
        "faces": {
            "total": meta.faces.len(),
            "with_feature": meta.faces.len() - features.failed.len(),
            "without_feature": features.failed.len(),
            "without_feature_examples": &features.failed[..features.failed.len().min(100)],
            "features_reused": reused,
        },
        "meta": {
            "unusable_lines": issues.len(),
            "unusable_line_examples": &issues[..issues.len().min(100)],
            "name_mismatches": meta.name_mismatches,
        },
        "templates": { "total": templates.index.len(), "without_feature": templates.empty.len() },
        "verification": &verification,
        "identification": &identification,
        "identification_note": one_to_n.is_none().then(|| format!(
            "1:N not run: {} are not all there", one_to_n_files(&layout).iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        )),
        "seconds": started.elapsed().as_secs_f64(),
    });
    let json = serde_json::to_string_pretty(&report)?;
    let title = format!("{} 1:1 verification, {} pairs", target_name(a.target), verification.pairs_scored);
    held.replace_dir(|dir| -> Result<()> {
        faces_ijb::save(dir, &key, &features)?;
        facekit_eval::npy::write_f64(&dir.join("pair_scores.npy"), scores.len(), 1, &scores)?;
        write_roc(&dir.join("roc.png"), &verification, &title)?;
        Ok(facekit_io::durable::write(dir.join("ijb.json"), json.as_bytes())?)
    })?;
    if a.json {
        outln!("{json}");
    } else {
        print_table(&a, &meta, &features.failed, issues.len(), &verification, identification.as_ref(), &layout);
    }
    Ok(ExitCode::SUCCESS)
}

fn target_name(t: Target) -> &'static str {
    match t {
        Target::Ijbb => "IJB-B",
        Target::Ijbc => "IJB-C",
    }
}

fn one_to_n_files(layout: &Layout) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = layout.galleries().into_iter().map(|(_, p)| p).collect();
    files.push(layout.probes());
    files
}

type OneToN = (Vec<Gallery>, Vec<ijb::TemplateSubject>, Vec<ijb::LineIssue>);

/// The galleries and probes, when all three files are there.
fn read_one_to_n(layout: &Layout) -> Result<Option<OneToN>> {
    if !one_to_n_files(layout).iter().all(|p| p.is_file()) {
        return Ok(None);
    }
    let mut issues = Vec::new();
    let mut galleries = Vec::new();
    for (name, path) in layout.galleries() {
        let (templates, i) = ijb::read_template_subjects(&path)?;
        issues.extend(i);
        galleries.push(Gallery { name: name.to_string(), templates });
    }
    let (probes, i) = ijb::read_template_subjects(&layout.probes())?;
    issues.extend(i);
    Ok(Some((galleries, probes, issues)))
}

fn write_roc(path: &Path, v: &Verification, title: &str) -> Result<()> {
    use facekit_eval::plot::{ChartSpec, Panel, Series};
    let points: Vec<(f64, f64)> = v.roc.iter().filter(|p| p.far > 0.0).map(|p| (p.far, p.tar)).collect();
    let spec = ChartSpec { title, x_label: "FAR (false accept rate)", y_label: "TAR (true accept rate)", log_x: true };
    let series = [Series { name: "ROC", points: &points, faint: false }];
    facekit_eval::plot::figure(path, &[Panel { spec, series: &series, markers: false, x_range: None }])
        .context("drawing the ROC")
}

fn print_table(
    a: &IjbArgs,
    meta: &ijb::Meta,
    failed: &[faces_ijb::FaceFailure],
    issues: usize,
    v: &Verification,
    n: Option<&Identification>,
    layout: &Layout,
) {
    outln!(
        "{} evaluation ({}flip test, detector and norm scores kept)",
        target_name(a.target),
        if a.no_flip { "no " } else { "" }
    );
    outln!(
        "  faces:             {} ({} without a feature), {} unusable meta lines",
        meta.faces.len(),
        failed.len(),
        issues
    );
    outln!(
        "  1:1 pairs:         {} scored ({} genuine, {} impostor), {} naming unknown templates, {} with an empty template",
        v.pairs_scored,
        v.genuine,
        v.impostor,
        v.pairs_unknown_template,
        v.pairs_empty_template
    );
    outln!("  AUC:               {:.4}", v.auc);
    let header: Vec<String> = v.tar_at_far.iter().map(|t| format!("{:>8.0e}", t.far_target)).collect();
    let values: Vec<String> = v
        .tar_at_far
        .iter()
        .map(|t| if t.measurable { format!("{:>8.4}", t.tar) } else { format!("{:>7.4}*", t.tar) })
        .collect();
    outln!("  TAR @ FAR          {}", header.join(" "));
    outln!("  (insightface)      {}", values.join(" "));
    if v.tar_at_far.iter().any(|t| !t.measurable) {
        outln!(
            "                     * fewer impostor pairs than 1/FAR: not measurable, shown as insightface reports it"
        );
    }
    match n {
        Some(n) => {
            let c = &n.insightface;
            outln!(
                "  1:N (insightface): {} probes, {} gallery templates, {} probes without a mate left out",
                c.probes,
                c.gallery_templates,
                c.probes_without_mate
            );
            outln!("    top-1 {:.4}  top-5 {:.4}  top-10 {:.4}", c.top1, c.top5, c.top10);
            for t in &c.tpir_at_far {
                outln!("    TPIR @ FAR {:.0e} (its rule): {:.4} (threshold {:.4})", t.target, t.tpir, t.threshold);
            }
            for g in &n.open_set {
                outln!(
                    "  1:N open set {}:   {} mated, {} non-mated searches; rank-1 {:.4}, rank-5 {:.4}",
                    g.gallery,
                    g.mated,
                    g.non_mated,
                    g.rank1,
                    g.rank5
                );
                for t in &g.tpir_at_fpir {
                    outln!(
                        "    TPIR @ FPIR {:.0e}: {:.4} (threshold {:.4}, FPIR {:.4}){}",
                        t.target,
                        t.tpir,
                        t.threshold,
                        t.fpir.unwrap_or(f64::NAN),
                        if t.note.is_some() { " *too few non-mated searches" } else { "" }
                    );
                }
            }
        }
        None => outln!(
            "  1:N:               not run ({} and the probe file are not all there)",
            layout.galleries()[0].1.display()
        ),
    }
    outln!("  report:            {}", a.output.join("ijb.json").display());
}
