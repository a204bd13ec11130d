//! The numerics guard: short `facekit train` runs of the tiny network on real faces whose
//! per-step learning rate, losses, gradient norm and fp16 loss scale must equal golden curves
//! committed as text, as torchtitan keeps its `tests/assets/losses/`. A change that moves
//! training's numbers (the optimiser, the schedule, a margin, a loss, autocast, the loss scaler,
//! the data order or augmentation, a flag that no longer reaches the configuration, a changed
//! default) fails here, naming the run, the step, the value, what was expected and what came.
//!
//! **Exact, on every x86_64 CPU.** Two runs on one machine are bitwise identical (one compute
//! thread, fixed seeds, a loader that is a pure function of seed, epoch and batch), so the values
//! are compared exactly. Left to themselves, ATen, oneDNN and MKL pick AVX2, AVX-512, AVX-512 BF16
//! or AMX code at run time (and MKL other paths on AMD than on Intel): forcing the AVX2 or SSE4
//! kernels on the AVX-512 machine that wrote the files moved the losses by 1e-4 to 2e-3 within 4
//! steps and by 10 to 70 % by step 20, so no tolerance would tell another CPU's rounding from a
//! real change. The runs therefore [`PIN`] the kernels, through the child's environment alone, to
//! paths every x86_64 CPU has and takes alike: ATen's non-vectorised kernels, MKL's conditional
//! numerical reproducibility (`MKL_CBWR=COMPATIBLE`) and oneDNN's SSE4.1 code. With the pins,
//! what else could pick another path on the machine that wrote the files moves no value of any
//! run (`MKL_ENABLE_INSTRUCTIONS=AVX2` or `SSE4_2`, `DNNL_MAX_CPU_ISA=AVX2`, glibc's libm held to
//! its non-FMA variants by `GLIBC_TUNABLES`), so one set of curves,
//! `tests/assets/losses/x86_64/`, serves every x86_64 CPU. Another architecture runs other kernels
//! (the MKL and oneDNN pins are x86 ones); it has no set, skips the comparison, saying so, or fails
//! under `FACEKIT_REQUIRE_REFERENCES` (as CI runs), so that CI there does not go green without its
//! guard.
//!
//! Regenerating is for a change that is meant to change the numbers (or a new libtorch, or a new
//! architecture), said so in its commit (docs/ARCHITECTURE.md, "Rules the tree keeps"):
//! `FACEKIT_BLESS_LOSSES=1 cargo test -p facekit --test cli -- golden` rewrites this
//! architecture's file of every run the filter selects, and passes.

use crate::train_loop::{ok, train_command};
use facekit_train::run::paths::RunPaths;
use std::path::{Path, PathBuf};

/// The environment variable that makes the tests write the golden files instead of comparing.
const BLESS: &str = "FACEKIT_BLESS_LOSSES";

/// The columns of a golden file, taken from `train_log.jsonl`. A column the run never fills (no
/// gender loss in FR, no gradient norm without `--clip-grad-norm`, no loss scale outside fp16) is
/// left out.
const COLUMNS: [&str; 8] =
    ["lr", "loss", "fr_loss", "gender_loss", "age_loss", "grad_norm", "loss_scale", "skipped_steps"];

/// Flags every golden run takes besides [`train_command`]'s (`--arch tiny --image-size 48
/// --batch-size 16 --workers 2 --device cpu`): one compute thread (a reduction split over threads
/// rounds differently), a log line every step, no checkpoint before the end.
const COMMON: [&str; 6] = ["--threads", "1", "--log-every", "1", "--checkpoint-every", "0"];

/// The environment of every golden run's `facekit train`, which makes its numbers the same on
/// every x86_64 CPU (checked on an AMD AVX-512 machine: without any one of them most values move;
/// with them, nothing else that picks a code path there moves one, see docs/ARCHITECTURE.md; that
/// MKL gives Intel CPUs the same numbers rests on `MKL_CBWR`'s documented promise, as MKL takes one
/// path on AMD). Set in the child alone: `facekit` itself keeps the fast kernels.
const PIN: [(&str, &str); 4] = [
    // ATen's kernels compiled for the x86_64 baseline instead of its AVX2 or AVX-512 ones.
    ("ATEN_CPU_CAPABILITY", "default"),
    // MKL's conditional numerical reproducibility: the same results on every Intel or AMD CPU
    // (at a fixed thread count, which `--threads 1` is).
    ("MKL_CBWR", "COMPATIBLE"),
    // oneDNN's SSE4.1 code, the lowest it has and one every x86_64 CPU it runs on has; under both
    // names (`DNNL_` is the older one). It also sends bf16 convolutions and matrix products,
    // which oneDNN runs only from AVX-512 (or AVX2 with VNNI-2) on, to ATen's kernels.
    ("ONEDNN_MAX_CPU_ISA", "SSE41"),
    ("DNNL_MAX_CPU_ISA", "SSE41"),
];

/// `facekit train` with the flags of run `name` and the kernels [`PIN`]ned; checks that the run
/// finishes and that its curve is the golden one of this architecture
/// (`tests/assets/losses/<arch>/NAME.txt`), or writes that file under [`BLESS`].
fn golden_run(name: &str, args: &[&str]) {
    let set = std::env::consts::ARCH;
    let file = golden_file(set, name);
    let bless = std::env::var_os(BLESS).is_some_and(|v| !v.is_empty() && v != "0");
    if !bless && !file.exists() {
        let others = match golden_cpus() {
            kinds if kinds.is_empty() => "none for any".to_string(),
            kinds => format!("only for {}", kinds.join(", ")),
        };
        let why = format!(
            "golden run `{name}`: {} has no golden curves for this architecture, {set} ({others}); another \
             architecture runs other kernels, whose numbers differ. Check that the runs are bitwise the same \
             whatever vector code this machine could pick (see PIN in tests/cli/golden_losses.rs: the pins \
             there are x86 ones), then write this architecture's set, on a commit known to be good, with \
             {BLESS}=1 cargo test -p facekit --test cli -- golden",
            losses_dir().display()
        );
        if facekit_testkit::references_required() {
            panic!("{why}, and {} is set: the numerics guard may not be skipped", facekit_testkit::REQUIRE_REFERENCES);
        }
        eprintln!("SKIPPED: {why}");
        return;
    }
    let models = tempfile::tempdir().unwrap();
    let args: Vec<&str> = args.iter().chain(&COMMON).copied().chain(["--run-name", name]).collect();
    let mut cmd = train_command(models.path(), &args);
    cmd.envs(PIN);
    let command = command_line(&cmd);
    let t0 = std::time::Instant::now();
    let out = crate::train_loop::output_within(cmd, 300);
    ok(&out);
    let seconds = t0.elapsed().as_secs_f64();
    let got = Curve::of_run(&models.path().join(name));
    let libtorch = libtorch_version();
    if bless {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, got.to_text(name, &command, set, &cpu_kind(), &libtorch)).unwrap();
        eprintln!("{BLESS}: wrote {} ({} steps, {seconds:.1} s)", file.display(), got.rows.len());
        return;
    }
    let text = std::fs::read_to_string(&file).unwrap();
    let expected = Curve::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    if let Err(why) = expected.matches(&got) {
        let header = |key: &str| text.lines().find_map(|l| l.strip_prefix(key)).unwrap_or("?").to_string();
        let mut notes = String::new();
        if header("# command: ") != command {
            notes += &format!("\nThe file was written by another command:\n  {}", header("# command: "));
        }
        let pins: Vec<String> = PIN.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let written = text.lines().find(|l| l.starts_with("# environment")).and_then(|l| l.split_once("): "));
        if written.map(|(_, e)| e) != Some(pins.join(" ").as_str()) {
            notes += &format!(
                "\nThe file was written with other pinned kernels ({}), this run has {}.",
                written.map_or("none", |(_, e)| e),
                pins.join(" ")
            );
        }
        if header("# libtorch: ") != libtorch {
            notes += &format!(
                "\nThe file was written with libtorch {}, this is {libtorch}: a new libtorch runs other kernels.",
                header("# libtorch: ")
            );
        }
        panic!(
            "golden run `{name}` does not follow {}:\n{why}\ncommand:\n  {command}{notes}\n\
             If the change is meant to change training's numbers, regenerate the files with\n  \
             {BLESS}=1 cargo test -p facekit --test cli -- golden\nand say so in the commit \
             (docs/ARCHITECTURE.md); otherwise the change moved the numbers by mistake.",
            file.display()
        );
    }
    eprintln!("{name}: {} steps equal to {} ({seconds:.1} s)", got.rows.len(), file.display());
}

// The runs. Together they cover what a change to the configuration or the trainer touches: both
// optimisers, every schedule and both warm-ups, the three margins, the three tasks' losses and
// their weights, clipping, accumulation, Partial FC, dropout, augmentation, fp32, bf16 and (with
// the tests' opt-in) fp16, both memory formats; both runs on the defaults (so that a changed
// default fails) and runs on values other than the defaults (so that a flag that stops reaching
// the configuration fails). They train on the 240 LFW and 640 UTKFace images of
// `train_loop::data` (15 batches of 16 an epoch for LFW alone: the FR runs cross an epoch) and on
// [`packed_lfw`].

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

#[test]
fn fr_sgd_plateau_in_fp16_with_loss_scaling_follows_its_golden_curve() {
    // fp16 autocast with the loss scaler (the scale and the skipped steps are columns: the first
    // steps overflow and halve it), which the CPU runs only with the tests' opt-in, on slow
    // reference kernels: 12 steps. dlib's plateau rule, shrinking the rate when the loss has not
    // fallen for 4 steps, with --lr-shrink off its default.
    golden_run(
        "fr_sgd_plateau_fp16",
        &[
            "FR",
            "--train-sets",
            "lfw",
            "--max-steps",
            "12",
            "--lr",
            "0.05",
            "--schedule",
            "plateau",
            "--plateau-steps",
            "4",
            "--lr-shrink",
            "0.5",
            "--precision",
            "fp16",
            "--memory-format",
            "channels-last",
            "--allow-cpu-fp16",
        ],
    );
}

#[test]
fn fr_on_photos_packed_by_facekit_pack_follows_its_golden_curve() {
    // The whole way from photos: `facekit pack` detects, aligns and encodes the faces (see
    // [`packed_lfw`]), so a change to the pack pipeline's output moves this curve too. FR on the
    // defaults otherwise (the plateau schedule), 16 steps: about three epochs of its 89 faces.
    golden_run("fr_packed_lfw_fp32", &["FR", "--train-sets", packed_lfw(), "--max-steps", "16", "--lr", "0.05"]);
}

/// `golden_lfw` beside the sets of `train_loop::data`: 12 photos (or all, when fewer) of each of 8
/// LFW identities, packed by `facekit pack` with dlib's detector into 48-pixel chips, once per test
/// binary. Its name, which the golden file's command holds.
fn packed_lfw() -> &'static str {
    static PACKED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    PACKED.get_or_init(|| {
        let training = crate::train_loop::data().join("training");
        let photos = tempfile::tempdir().unwrap();
        let lfw = facekit_testkit::shared_data().join("lfw100");
        let mut people: Vec<PathBuf> = std::fs::read_dir(&lfw).unwrap().map(|e| e.unwrap().path()).collect();
        people.sort();
        for person in people.iter().skip(32).take(8) {
            let dir = photos.path().join(person.file_name().unwrap());
            std::fs::create_dir(&dir).unwrap();
            let mut files: Vec<PathBuf> = std::fs::read_dir(person).unwrap().map(|e| e.unwrap().path()).collect();
            files.sort();
            for f in files.iter().take(12) {
                std::os::unix::fs::symlink(f, dir.join(f.file_name().unwrap())).unwrap();
            }
        }
        let out = crate::facekit()
            .arg("pack")
            .arg(photos.path())
            .arg("-o")
            .arg(training.join("golden_lfw"))
            .args(["--size", "48", "--quiet"])
            .env("FACEKIT_MODELS", facekit_testkit::models_dir())
            .output()
            .unwrap();
        assert!(out.status.success(), "facekit pack failed: {}", String::from_utf8_lossy(&out.stderr));
    });
    "golden_lfw"
}

/// The folder of the golden curves, one sub-folder per architecture.
fn losses_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/assets/losses")
}

/// `tests/assets/losses/ARCH/NAME.txt` in the workspace.
fn golden_file(arch: &str, name: &str) -> PathBuf {
    losses_dir().join(arch).join(format!("{name}.txt"))
}

/// The architectures that have golden curves.
fn golden_cpus() -> Vec<String> {
    let mut kinds: Vec<String> = std::fs::read_dir(losses_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    kinds.sort();
    kinds
}

/// This CPU as the golden files' header names the machine that wrote them: the architecture, the
/// vendor (MKL takes other paths on AMD than on Intel unpinned) and the widest vector instructions
/// that ATen's and oneDNN's dispatch would use unpinned (`x86_64-amd-avx512bf16`). Information
/// only: the pinned runs do not depend on it.
fn cpu_kind() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines().find_map(|l| l.split_once(':').filter(|(k, _)| k.trim() == name).map(|(_, v)| v.trim()))
    };
    let vendor = match field("vendor_id") {
        Some("GenuineIntel") => "intel".to_string(),
        Some("AuthenticAMD") => "amd".to_string(),
        Some(v) => v.to_lowercase(),
        None => "unknown".to_string(),
    };
    let flags: Vec<&str> = field("flags").or(field("Features")).unwrap_or("").split_whitespace().collect();
    let has = |f: &str| flags.contains(&f);
    let isa = if has("amx_bf16") {
        "amx"
    } else if has("avx512_fp16") {
        "avx512fp16"
    } else if has("avx512_bf16") {
        "avx512bf16"
    } else if ["avx512f", "avx512bw", "avx512vl", "avx512dq"].iter().all(|f| has(f)) {
        "avx512"
    } else if has("avx2") && has("fma") {
        "avx2"
    } else if has("sve") {
        "sve"
    } else {
        "base"
    };
    format!("{}-{vendor}-{isa}", std::env::consts::ARCH)
}

/// The version of the libtorch the binary runs (`torch/version.py` beside `$LIBTORCH`'s
/// libraries), for the golden files' header and a mismatch's explanation.
fn libtorch_version() -> String {
    std::env::var_os("LIBTORCH")
        .and_then(|t| std::fs::read_to_string(Path::new(&t).join("version.py")).ok())
        .and_then(|v| {
            v.lines().find_map(|l| l.strip_prefix("__version__ = ").map(|v| v.trim_matches(['\'', '"']).to_string()))
        })
        .unwrap_or_else(|| "unknown".into())
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
        Curve::of_log(&RunPaths::new(run).log())
    }

    /// The per-step records of a `train_log.jsonl`.
    fn of_log(log: &Path) -> Curve {
        let records: Vec<serde_json::Value> = std::fs::read_to_string(log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v.get("loss").is_some())
            .collect();
        let columns: Vec<&'static str> =
            COLUMNS.iter().copied().filter(|c| records.iter().any(|r| r[*c].is_number())).collect();
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

    /// The golden file's text: a comment naming the run, its command and pinned environment, the
    /// architecture, the CPU that wrote it and the libtorch, then the column names and one line per
    /// step. Values are printed as Rust prints an f64, the shortest decimal that reads back as the
    /// same number, so the file holds exactly what the run logged.
    fn to_text(&self, name: &str, command: &str, arch: &str, cpu: &str, libtorch: &str) -> String {
        let pins: Vec<String> = PIN.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut text = format!(
            "# Golden curve of the run `{name}` (tests/cli/golden_losses.rs): the values of every step in its\n\
             # train_log.jsonl, which a run of this command must reproduce exactly on every {arch} CPU.\n\
             # command: {command}\n\
             # environment (kernels pinned to paths every {arch} CPU takes alike): {}\n\
             # architecture: {arch} (written on {cpu})\n\
             # libtorch: {libtorch}\n\
             # Regenerate only with a change that is meant to change the numbers, saying so in its commit:\n\
             #   {BLESS}=1 cargo test -p facekit --test cli -- golden\n",
            pins.join(" ")
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
            .map(|h| COLUMNS.iter().copied().find(|c| c == h).ok_or(format!("unknown column `{h}`")))
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

    /// `Ok` when `got` has the same steps and columns and every value equals this curve's;
    /// otherwise what differs: the first value that does, with its step, the count of such values
    /// and the largest relative difference.
    fn matches(&self, got: &Curve) -> Result<(), String> {
        if self.columns != got.columns {
            return Err(format!("  columns: expected {:?}, got {:?}", self.columns, got.columns));
        }
        let steps = |c: &Curve| c.rows.iter().map(|r| r.0).collect::<Vec<_>>();
        if steps(self) != steps(got) {
            return Err(format!("  steps: expected {:?}, got {:?}", steps(self), steps(got)));
        }
        let (mut first, mut count, mut worst) = (None, 0, (0.0f64, 0, ""));
        for ((step, want), (_, have)) in self.rows.iter().zip(&got.rows) {
            for ((column, e), g) in self.columns.iter().zip(want).zip(have) {
                if e.to_bits() == g.to_bits() {
                    continue;
                }
                let rel = (g - e).abs() / e.abs().max(g.abs());
                count += 1;
                first.get_or_insert(format!(
                    "step {step}, {column}: expected {e}, got {g} (relative difference {rel:.2e})"
                ));
                if !(rel <= worst.0) {
                    worst = (rel, *step, *column);
                }
            }
        }
        match first {
            None => Ok(()),
            Some(first) => Err(format!(
                "  {first}\n  {count} of {} values differ; the largest relative difference is {:.2e}, {} at step {}",
                self.rows.len() * self.columns.len(),
                worst.0,
                worst.2,
                worst.1
            )),
        }
    }
}

#[test]
fn golden_curve_reads_back_exactly_and_a_mismatch_names_run_step_and_values() {
    let curve = |loss: f64, lr: f64| Curve {
        columns: vec!["lr", "loss"],
        rows: vec![(1, vec![0.1, 23.456789012345678]), (2, vec![lr, loss])],
    };
    let text = curve(0.3, 0.1).to_text("x", "facekit train FR", "x86_64", "x86_64-amd-avx512bf16", "2.11.0");
    assert!(text.contains("every x86_64 CPU takes alike): ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE"), "{text}");
    let back = Curve::parse(&text).unwrap();
    assert_eq!((&back.columns, &back.rows), (&curve(0.3, 0.1).columns, &curve(0.3, 0.1).rows));
    assert!(back.matches(&curve(0.3, 0.1)).is_ok());
    let why = back.matches(&curve(0.31, 0.1)).unwrap_err();
    assert!(why.contains("step 2, loss: expected 0.3, got 0.31 (relative difference 3.23e-2)"), "{why}");
    assert!(why.contains("1 of 4 values differ"), "{why}");
    let why = back.matches(&curve(0.3, f64::from_bits(0.1f64.to_bits() + 1))).unwrap_err();
    assert!(why.contains("step 2, lr: expected 0.1, got 0.10000000000000002"), "the last bit counts: {why}");
    assert!(Curve::parse("# no header\n").is_err());
    assert!(cpu_kind().starts_with(std::env::consts::ARCH));
}

// Run folders written before a change must still resume, and resume exactly. Each folder of
// `tests/assets/runs/x86_64/` is a run stopped after 8 steps by facekit at d621157 (the last commit
// with the flat configuration: `config.json`, `net.json` and `state.json` as that version wrote
// them, which is what users' run folders hold), with the `train_log.jsonl` that version wrote when
// it resumed the run to step 16 under the pins. A resume today must log the same values: the
// configuration, the network, the optimiser state, the schedule's state and the data order all
// come back from the old files. These folders are never regenerated: they stand for runs users
// already have.

/// Resumes the old run folder `name` to step 16 and compares its log with the one the version
/// that wrote the folder logged.
fn old_run_resumes_exactly(name: &str, task: &str) {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/assets/runs").join(std::env::consts::ARCH).join(name);
    if !fixture.exists() {
        let why = format!("no old run folders for this architecture ({})", fixture.display());
        if facekit_testkit::references_required() {
            panic!("{why}, and {} is set: the resume guard may not be skipped", facekit_testkit::REQUIRE_REFERENCES);
        }
        eprintln!("SKIPPED: {why}");
        return;
    }
    let models = tempfile::tempdir().unwrap();
    let run = models.path().join(name);
    copy_dir(&fixture.join("run"), &run);
    // The test data is written again by every test process, and a manifest records when it was
    // written: the same records, but another manifest than the one the run saw.
    let resume = [task, "--resume", name, "--max-steps", "16", "--allow-changed-data"];
    let args: Vec<&str> = resume.into_iter().chain(COMMON).collect();
    let mut cmd = train_command(models.path(), &args);
    cmd.envs(PIN);
    let out = crate::train_loop::output_within(cmd, 300);
    ok(&out);
    let expected = Curve::of_log(&fixture.join("resumed_train_log.jsonl"));
    if let Err(why) = expected.matches(&Curve::of_run(&run)) {
        panic!("the old run folder {} did not resume as it did when it was written:\n{why}", fixture.display());
    }
}

/// Copies a folder tree (the old run folder, which the resume writes into).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn an_old_sgd_plateau_run_folder_resumes_exactly() {
    // The plateau rule's state (its loss history and shrink count) comes back from state.json.
    old_run_resumes_exactly("fr_sgd_plateau_fp32", "FR");
}

#[test]
fn an_old_adamw_cosine_combined_margin_run_folder_resumes_exactly() {
    // AdamW's moments, the cosine's length, the combined margin, accumulation and clipping.
    old_run_resumes_exactly("fr_adamw_cosine_combined_fp32", "FR");
}

#[test]
fn an_old_multi_task_poly_cosface_partial_fc_run_folder_resumes_exactly() {
    // The three tasks' weights, CosFace with Partial FC, the poly schedule, bf16.
    old_run_resumes_exactly("multi_sgd_poly_cosface_pfc_bf16", "Multi");
}
