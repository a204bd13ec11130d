//! The numerics guard: short `facekit train` runs of the tiny network on real faces, whose
//! per-step learning rate, losses and gradient norm are compared with golden curves committed as
//! text in `tests/assets/losses/` (as torchtitan keeps its `tests/assets/losses/`). A change that
//! moves training's numbers (the optimiser, the schedule, the margin, a loss, autocast, the data
//! order or augmentation, how a flag reaches the configuration) fails here, naming the run, the
//! step, the value, what was expected and what came.
//!
//! Regenerating the files is for a change that is meant to change the numbers, said so in its
//! commit (docs/ARCHITECTURE.md, "Rules the tree keeps"):
//! `FACEKIT_BLESS_LOSSES=1 cargo test -p facekit --test cli -- golden` rewrites every file of the
//! runs the filter selects and passes.

use crate::train_loop::{ok, train_command};
use std::path::{Path, PathBuf};

/// The environment variable that makes the tests write the golden files instead of comparing.
const BLESS: &str = "FACEKIT_BLESS_LOSSES";

/// Relative tolerance of the values computed by the network (losses, gradient norm).
///
/// Two runs on one machine are bitwise identical (one compute thread, fixed seed, a loader that is
/// a pure function of seed, epoch and batch), so on the machine that wrote the files any
/// difference is a change. Another CPU can take other SIMD kernels (oneDNN and ATen's dispatch pick
/// AVX2 or AVX-512 at run time), which round differently; the difference starts at one ulp and
/// grows with the steps. Forcing the AVX2 kernels on the AVX-512 machine that wrote the files
/// (`ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`) moves them by at most 2e-5 over these
/// runs (measured: see docs/ARCHITECTURE.md). The smallest deliberate changes tried (the ArcFace
/// margin 0.5 to 0.49, the learning rate 0.1 to 0.099, AdamW's ε 1e-7 to 1e-8) move them by
/// 1e-4 or more within a few steps.
const REL_TOL: f64 = 1e-4;

/// Relative tolerance of what the host computes in f64 from the step number alone: the learning
/// rate and the fp16 loss scale. These do not depend on SIMD kernels; only rounding order may.
const HOST_REL_TOL: f64 = 1e-12;

/// Columns of a golden file taken from `train_log.jsonl`, with their tolerance. A column the run
/// never fills (no gender loss in FR, no gradient norm without `--clip-grad-norm`) is left out.
const COLUMNS: [(&str, f64); 7] = [
    ("lr", HOST_REL_TOL),
    ("loss", REL_TOL),
    ("fr_loss", REL_TOL),
    ("gender_loss", REL_TOL),
    ("age_loss", REL_TOL),
    ("grad_norm", REL_TOL),
    ("loss_scale", HOST_REL_TOL),
];

/// Flags every golden run takes besides [`train_command`]'s (`--arch tiny --image-size 48
/// --batch-size 16 --workers 2 --device cpu`): one compute thread (a reduction split over threads
/// rounds differently), a log line every step, no checkpoint before the end.
const COMMON: [&str; 6] = ["--threads", "1", "--log-every", "1", "--checkpoint-every", "0"];

/// `facekit train` with the flags of run `name` (its golden file is `tests/assets/losses/NAME.txt`);
/// checks that the run finishes and that its curve is the golden one.
fn golden_run(name: &str, args: &[&str]) {
    let models = tempfile::tempdir().unwrap();
    let args: Vec<&str> = args.iter().chain(&COMMON).copied().chain(["--run-name", name]).collect();
    let cmd = train_command(models.path(), &args);
    let command = command_line(&cmd);
    let t0 = std::time::Instant::now();
    let out = crate::train_loop::output_within(cmd, 300);
    ok(&out);
    eprintln!("{name}: {:.1} s", t0.elapsed().as_secs_f64());
    let got = Curve::of_run(&models.path().join(name));
    let file = golden_file(name);
    if std::env::var_os(BLESS).is_some_and(|v| !v.is_empty() && v != "0") {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, got.to_text(name, &command)).unwrap();
        eprintln!("{BLESS}: wrote {} ({} steps)", file.display(), got.rows.len());
        return;
    }
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "golden run `{name}`: cannot read {}: {e}\nWrite it with {BLESS}=1 cargo test -p facekit --test cli -- golden",
            file.display()
        )
    });
    let expected = Curve::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let worst = expected.matches(&got).unwrap_or_else(|why| {
        let made_by = text.lines().find_map(|l| l.strip_prefix("# command: ")).unwrap_or("?");
        let command_note = if made_by == command {
            String::new()
        } else {
            format!("\nThe file was written by another command:\n  {made_by}")
        };
        panic!(
            "golden run `{name}` does not follow {}:\n{why}\ncommand:\n  {command}{command_note}\n\
             If the change is meant to change training's numbers, regenerate the files with\n  \
             {BLESS}=1 cargo test -p facekit --test cli -- golden\nand say so in the commit \
             (docs/ARCHITECTURE.md); otherwise the change moved the numbers by mistake.",
            file.display()
        )
    });
    eprintln!("{name}: {} steps as in {}, largest relative difference {worst:.1e}", got.rows.len(), file.display());
}

// The runs. Together they cover what a change to the configuration or the trainer touches: both
// optimisers, every schedule and both warm-ups, the three margins, the three tasks' losses and
// their weights, clipping, accumulation, Partial FC, dropout, augmentation, both precisions the
// CPU offers and both memory formats; both a run on the defaults (so that a changed default
// fails) and runs on values other than the defaults (so that a flag that stops reaching the
// configuration fails). On the 240 LFW images (15 batches of 16 an epoch) and the 640 UTKFace
// images of `train_loop::data`, each run crosses an epoch.

#[test]
fn fr_sgd_arcface_on_the_defaults_follows_its_golden_curve() {
    // The defaults: SGD (momentum 0.9, weight decay 5e-4), ArcFace s = 64, m = 0.5, flip, seed 1,
    // `--precision auto` (fp32 on the CPU); a step schedule after a linear warm-up.
    golden_run("fr_sgd_arcface_fp32", &FR_SGD);
}

#[test]
fn fr_sgd_arcface_in_bf16_channels_last_follows_its_golden_curve() {
    // The same run under bf16 autocast with channels-last weights: what differs from the run
    // above is autocast and the layout alone.
    let args = [&FR_SGD[..], &["--precision", "bf16", "--memory-format", "channels-last"]].concat();
    golden_run("fr_sgd_arcface_bf16", &args);
}

/// FR on the defaults, 30 steps, lr 0.05 after a 4-step warm-up, shrunk tenfold (`--lr-shrink`'s
/// default) every 10 steps.
const FR_SGD: [&str; 13] = [
    "FR",
    "--train-sets",
    "lfw",
    "--max-steps",
    "30",
    "--lr",
    "0.05",
    "--warmup-steps",
    "4",
    "--schedule",
    "step",
    "--plateau-steps",
    "10",
];

#[test]
fn fr_adamw_cosine_combined_margin_follows_its_golden_curve() {
    // Every optimisation flag off its default: AdamW's betas, eps and decoupled weight decay, a
    // cosine to --min-lr after an epoch of warm-up, the run's length in epochs, two micro-batches
    // a step, clipping (the gradient norm is a column), the combined margin and scale, dropout,
    // crop, colour and grey augmentation, a zero-initialised residual, a smaller embedding,
    // another seed; fp32 with channels-last weights.
    golden_run(
        "fr_adamw_cosine_combined_fp32",
        &[
            "FR",
            "--train-sets",
            "lfw",
            "--epochs",
            "3",
            "--accumulate",
            "2",
            "--optimizer",
            "adamw",
            "--lr",
            "0.002",
            "--adam-betas",
            "0.85,0.99",
            "--adam-eps",
            "1e-7",
            "--weight-decay",
            "0.05",
            "--schedule",
            "cosine",
            "--min-lr",
            "0.0001",
            "--warmup-epochs",
            "1",
            "--clip-grad-norm",
            "5",
            "--margin",
            "combined",
            "--margin-values",
            "1,0.3,0.2",
            "--arcface-scale",
            "32",
            "--dropout",
            "0.2",
            "--random-crop",
            "0.1",
            "--color-jitter",
            "0.2",
            "--grey-prob",
            "0.2",
            "--zero-init-residual",
            "--embedding-size",
            "64",
            "--seed",
            "7",
            "--precision",
            "fp32",
            "--memory-format",
            "channels-last",
        ],
    );
}

#[test]
fn multi_task_sgd_poly_cosface_partial_fc_follows_its_golden_curve() {
    // Identity, gender and age on two sets with partial labels and task weights: SGD with its
    // momentum and weight decay off their defaults, a square poly decay after a warm-up, CosFace
    // with its own m3, Partial FC sampling half the centres, no flip; bf16, contiguous.
    golden_run(
        "multi_sgd_poly_cosface_bf16",
        &[
            "Multi",
            "--train-sets",
            "lfw",
            "utk",
            "--max-steps",
            "24",
            "--multi-weights",
            "1,0.5,0.25",
            "--lr",
            "0.03",
            "--momentum",
            "0.8",
            "--weight-decay",
            "0.001",
            "--schedule",
            "poly",
            "--poly-power",
            "2",
            "--warmup-steps",
            "3",
            "--margin",
            "cosface",
            "--margin-values",
            "1,0,0.35",
            "--arcface-scale",
            "48",
            "--partial-fc",
            "0.5",
            "--no-flip",
            "--seed",
            "5",
            "--precision",
            "bf16",
            "--memory-format",
            "contiguous",
        ],
    );
}

/// `tests/assets/losses/NAME.txt` in the workspace.
fn golden_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/assets/losses").join(format!("{name}.txt"))
}

/// The command line as a user would type it, with the test's temporary folders as `DATA` and
/// `MODELS` so that it does not change from one run of the test to the next.
fn command_line(cmd: &std::process::Command) -> String {
    let mut words = vec!["facekit".to_string()];
    let mut args = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).peekable();
    while let Some(a) = args.next() {
        let placeholder = match a.as_str() {
            "--data-dir" => Some("DATA"),
            "--model-dir" => Some("MODELS"),
            _ => None,
        };
        words.push(a);
        if let Some(p) = placeholder {
            args.next();
            words.push(p.into());
        }
    }
    words.join(" ")
}

/// Per-step values of one run: `columns` (of [`COLUMNS`]) and one row per step.
#[derive(Debug)]
struct Curve {
    columns: Vec<&'static str>,
    rows: Vec<(u64, Vec<f64>)>,
}

impl Curve {
    /// The per-step records of `run/train_log.jsonl` (every step, with `--log-every 1`).
    fn of_run(run: &Path) -> Curve {
        let records: Vec<serde_json::Value> = std::fs::read_to_string(run.join("train_log.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v.get("loss").is_some())
            .collect();
        let columns: Vec<&'static str> =
            COLUMNS.iter().map(|(c, _)| *c).filter(|c| records.iter().any(|r| r[*c].is_number())).collect();
        let rows = records
            .iter()
            .map(|r| {
                let values = columns
                    .iter()
                    .map(|c| r[*c].as_f64().unwrap_or_else(|| panic!("step {}: no {c} in {r}", r["step"])))
                    .collect();
                (r["step"].as_u64().unwrap(), values)
            })
            .collect();
        Curve { columns, rows }
    }

    /// The golden file's text: a comment naming the run and its command, the column names, one
    /// line per step. Values are printed as Rust prints an f64, the shortest decimal that reads
    /// back as the same number, so the file holds exactly what the run logged.
    fn to_text(&self, name: &str, command: &str) -> String {
        let mut text = format!(
            "# Golden curve of the run `{name}` (tests/cli/golden_losses.rs): learning rate, losses and gradient\n\
             # norm of every step, from its train_log.jsonl.\n\
             # command: {command}\n\
             # Regenerate only with a change that is meant to change the numbers, saying so in its commit:\n\
             #   {BLESS}=1 cargo test -p facekit --test cli -- golden\n"
        );
        text += &format!("step\t{}\n", self.columns.join("\t"));
        for (step, values) in &self.rows {
            let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
            text += &format!("{step}\t{}\n", values.join("\t"));
        }
        text
    }

    /// Reads a golden file written by [`Curve::to_text`].
    fn parse(text: &str) -> Result<Curve, String> {
        let mut lines = text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty());
        let header: Vec<&str> = lines.next().ok_or("no column header")?.split('\t').collect();
        if header.first() != Some(&"step") {
            return Err(format!("the column header must start with `step`: {header:?}"));
        }
        let columns = header[1..]
            .iter()
            .map(|h| COLUMNS.iter().map(|(c, _)| *c).find(|c| c == h).ok_or(format!("unknown column `{h}`")))
            .collect::<Result<Vec<_>, _>>()?;
        let rows = lines
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                if f.len() != header.len() {
                    return Err(format!("{} fields where the header has {}: {l}", f.len(), header.len()));
                }
                let step = f[0].parse().map_err(|e| format!("step `{}`: {e}", f[0]))?;
                let values: Result<Vec<f64>, String> =
                    f[1..].iter().map(|v| v.parse().map_err(|e| format!("`{v}`: {e}"))).collect();
                Ok((step, values?))
            })
            .collect::<Result<_, String>>()?;
        Ok(Curve { columns, rows })
    }

    /// The largest relative difference when `got` has the same steps and columns and every value
    /// is within its column's tolerance of this curve's; otherwise what differs: the first value
    /// out of tolerance with its step, the count of such values and the largest difference.
    fn matches(&self, got: &Curve) -> Result<f64, String> {
        if self.columns != got.columns {
            return Err(format!("columns: expected {:?}, got {:?}", self.columns, got.columns));
        }
        let steps = |c: &Curve| c.rows.iter().map(|r| r.0).collect::<Vec<_>>();
        if steps(self) != steps(got) {
            return Err(format!("steps: expected {:?}, got {:?}", steps(self), steps(got)));
        }
        let (mut first, mut count, mut worst) = (None, 0, (0.0f64, 0, ""));
        for ((step, want), (_, have)) in self.rows.iter().zip(&got.rows) {
            for ((column, e), g) in self.columns.iter().zip(want).zip(have) {
                let tol = COLUMNS.iter().find(|(c, _)| c == column).unwrap().1;
                let rel = if e == g { 0.0 } else { (g - e).abs() / e.abs().max(g.abs()) };
                if rel > worst.0 || rel.is_nan() {
                    worst = (rel, *step, *column);
                }
                if rel > tol || rel.is_nan() {
                    count += 1;
                    first.get_or_insert(format!(
                        "step {step}, {column}: expected {e}, got {g} (relative difference {rel:.2e}, tolerance {tol:.0e})"
                    ));
                }
            }
        }
        match first {
            None => Ok(worst.0),
            Some(first) => Err(format!(
                "  {first}\n  {count} of {} values out of tolerance; the largest relative difference is {:.2e}, \
                 {} at step {}",
                self.rows.len() * self.columns.len(),
                worst.0,
                worst.2,
                worst.1
            )),
        }
    }
}

#[test]
fn golden_curve_parses_back_exactly_and_names_the_first_step_that_differs() {
    let curve =
        Curve { columns: vec!["lr", "loss"], rows: vec![(1, vec![0.1, 23.456789012345678]), (2, vec![0.1, 0.3])] };
    let back = Curve::parse(&curve.to_text("x", "facekit train FR")).unwrap();
    assert_eq!((back.columns.clone(), back.rows.clone()), (curve.columns.clone(), curve.rows.clone()));
    assert!(back.matches(&curve).is_ok());
    let moved =
        Curve { columns: vec!["lr", "loss"], rows: vec![(1, vec![0.1, 23.456789012345678]), (2, vec![0.1, 0.31])] };
    let why = back.matches(&moved).unwrap_err();
    assert!(why.contains("step 2, loss: expected 0.3, got 0.31"), "{why}");
    let within = Curve { columns: vec!["lr", "loss"], rows: vec![(1, vec![0.1, 23.4568]), (2, vec![0.1, 0.3])] };
    assert!(back.matches(&within).is_ok(), "a difference below the tolerance passes");
    let lr = Curve {
        columns: vec!["lr", "loss"],
        rows: vec![(1, vec![0.1000001, 23.456789012345678]), (2, vec![0.1, 0.3])],
    };
    assert!(back.matches(&lr).unwrap_err().contains("step 1, lr"), "the learning rate is held to the host's tolerance");
}
