//! `facekit train --eval-bin`: insightface `.bin` verification during training, on a `.bin` the
//! tests write themselves from the chips of the packed LFW validation set (tiny ResNet, CPU).

use crate::train_loop::{data, doctored_weights, ok, output_within, state, train, train_command, two_step_run};
use facekit_train::run::paths::{RunPaths, BEST, LAST, MODEL_FILE};
use std::path::{Path, PathBuf};
use std::process::Output;

/// Side of the `.bin` images: not the network's 48, so both the trainer and `eval verify` resize.
const BIN_SIDE: u32 = 64;

/// A protocol-3 pickle of `(images, issame)` as insightface's `build_eval_pack.py` writes it:
/// `BINBYTES` images and `True`/`False` flags, appended to two lists, made a 2-tuple.
fn pickle_bin(images: &[Vec<u8>], issame: &[bool]) -> Vec<u8> {
    let mut p = vec![0x80, 3, b']', b'('];
    for img in images {
        p.push(b'B');
        p.extend((img.len() as u32).to_le_bytes());
        p.extend(img);
    }
    p.extend([b'e', b']', b'(']);
    p.extend(issame.iter().map(|&s| if s { 0x88 } else { 0x89 }));
    p.extend([b'e', 0x86, b'.']);
    p
}

/// `dir/NAME.bin`: 60 pairs of `lfw.valid` chips (10 identities x 6 photos), same and different
/// alternating, each image a PNG of BIN_SIDE pixels.
pub(crate) fn write_bin(dir: &Path, name: &str) -> PathBuf {
    write_bin_repeated(dir, name, 1)
}

/// [`write_bin`]'s 60 pairs `repeat` times over: a set that takes a while to score.
fn write_bin_repeated(dir: &Path, name: &str, repeat: usize) -> PathBuf {
    let ds = facekit_shard::Dataset::open_name("lfw.valid", Some(&data().join("training"))).unwrap();
    assert_eq!(ds.len(), 60);
    let png = |i: usize| {
        let rec = ds.record(i).unwrap();
        let img = image::load_from_memory(rec.payload).unwrap().into_rgb8();
        let img = image::imageops::resize(&img, BIN_SIDE, BIN_SIDE, image::imageops::FilterType::Triangle);
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    };
    let (mut images, mut issame) = (Vec::new(), Vec::new());
    for k in 0..30 {
        let (id, a) = (k % 10, k / 10);
        images.extend([png(6 * id + a), png(6 * id + a + 3)]);
        issame.push(true);
        images.extend([png(6 * id + a), png(6 * ((id + 1) % 10) + a)]);
        issame.push(false);
    }
    let images: Vec<Vec<u8>> = (0..repeat).flat_map(|_| images.iter().cloned()).collect();
    let issame = issame.repeat(repeat);
    let path = dir.join(format!("{name}.bin"));
    std::fs::write(&path, pickle_bin(&images, &issame)).unwrap();
    path
}

/// The `eval_bin` objects of `train_log.jsonl`, in order.
fn bin_records(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(RunPaths::new(run).log())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("eval_bin").is_some())
        .collect()
}

/// `facekit eval verify --bin` of a run's checkpoint (flip test by default) and `extra` flags, as JSON.
fn eval_verify(run: &Path, checkpoint: &str, bin: &Path, batch: &str, extra: &[&str]) -> serde_json::Value {
    let out_dir = tempfile::tempdir().unwrap();
    let out = crate::facekit()
        .args(["eval", "verify", "--checkpoint", checkpoint, "--json", "--device", "cpu", "--batch-size", batch])
        .args(extra)
        .arg("--model")
        .arg(run)
        .arg("--bin")
        .arg(bin)
        .arg("--out")
        .arg(out_dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "eval verify failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn eval_bin_is_logged_at_its_steps_and_equals_eval_verify_on_the_checkpoint() {
    let bins = tempfile::tempdir().unwrap();
    let (a, b) = (write_bin(bins.path(), "pairs_a"), write_bin(bins.path(), "pairs_b"));
    let models = tempfile::tempdir().unwrap();
    let out = train(
        models.path(),
        &[
            "FR",
            "--train-sets",
            "lfw",
            "--valid-sets",
            "lfw.valid",
            "--max-steps",
            "12",
            "--lr",
            "0.05",
            "--valid-every",
            "6",
            "--eval-every",
            "5",
            "--eval-batch",
            "7",
            "--checkpoint-every",
            "0",
            "--run-name",
            "r",
            "--eval-bin",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
        ],
    );
    ok(&out);
    let run = models.path().join("r");
    let recs = bin_records(&run);
    let at: Vec<(u64, &str)> =
        recs.iter().map(|r| (r["step"].as_u64().unwrap(), r["eval_bin"]["set"].as_str().unwrap())).collect();
    // Every 5 steps and at the end, each set in the order given.
    assert_eq!(
        at,
        [(5, "pairs_a"), (5, "pairs_b"), (10, "pairs_a"), (10, "pairs_b"), (12, "pairs_a"), (12, "pairs_b")]
    );
    for r in &recs {
        let e = &r["eval_bin"];
        assert_eq!(
            (e["pairs"].as_u64(), e["folds"].as_u64(), e["flip"].as_bool()),
            (Some(60), Some(10), Some(true)),
            "{r}"
        );
        for k in ["accuracy", "std", "threshold", "threshold_cosine", "seconds"] {
            assert!(e[k].as_f64().is_some_and(f64::is_finite), "{k} in {r}");
        }
    }
    assert!(stderr(&out).contains("step 5 pairs_a: accuracy "), "printed: {}", stderr(&out));

    // The last record is what `eval verify --bin --flip` reports on the last checkpoint (step 12).
    assert_eq!(state(&run, LAST)["step"], 12);
    let report = eval_verify(&run, "last", &a, "7", &["--flip"]);
    let last = &recs[4]["eval_bin"];
    assert_eq!(report["pairs_used"], 60);
    assert_eq!(
        last["accuracy"].as_f64(),
        report["kfold"]["accuracy_mean"].as_f64(),
        "trainer {last} vs eval verify {report}"
    );
    assert_eq!(last["std"].as_f64(), report["kfold"]["accuracy_std"].as_f64());
    assert_eq!(last["threshold"].as_f64(), report["kfold"]["best_threshold"].as_f64());

    // Without --best-on, validation still picks the best checkpoint.
    assert_eq!(state(&run, BEST)["best"]["name"], "verification_accuracy");
    // Loss and learning rate above; validation and .bin accuracies share the panel below.
    assert_eq!(image::image_dimensions(RunPaths::new(&run).curves()).unwrap(), (1000, 1200));
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(RunPaths::new(run).config()).unwrap()).unwrap();
    assert_eq!(cfg["config"]["eval_every"], 5);
    assert_eq!(cfg["config"]["eval_bin"].as_array().unwrap().len(), 2);
}

#[test]
fn best_on_picks_the_best_checkpoint_by_the_bin_accuracy() {
    let bins = tempfile::tempdir().unwrap();
    let bin = write_bin(bins.path(), "lfwmini");
    let models = tempfile::tempdir().unwrap();
    let out = train(
        models.path(),
        &[
            "FR",
            "--train-sets",
            "lfw",
            "--valid-sets",
            "lfw.valid",
            "--max-steps",
            "30",
            "--lr",
            "0.05",
            "--valid-every",
            "3",
            "--eval-every",
            "3",
            "--checkpoint-every",
            "0",
            "--run-name",
            "b",
            "--best-on",
            "lfwmini",
            "--eval-bin",
            bin.to_str().unwrap(),
        ],
    );
    ok(&out);
    let run = models.path().join("b");
    let recs = bin_records(&run);
    assert_eq!(recs.len(), 10);
    let acc: Vec<f64> = recs.iter().map(|r| r["eval_bin"]["accuracy"].as_f64().unwrap()).collect();
    let max = acc.iter().copied().fold(f64::MIN, f64::max);
    let first_max = recs[acc.iter().position(|&a| a == max).unwrap()]["step"].as_u64().unwrap();
    let best = state(&run, BEST);
    assert_eq!(best["best"]["name"], "lfwmini_accuracy");
    assert_eq!(best["best"]["value"].as_f64(), Some(max));
    assert_eq!(best["best"]["step"].as_u64(), Some(first_max), "accuracies {acc:?}");
    assert_eq!(best["step"].as_u64(), Some(first_max), "best/ holds the weights of that step");
    // The weights in best/ score that accuracy again (eval-batch default: twice --batch-size 16).
    let report = eval_verify(&run, "best", &bin, "32", &["--flip"]);
    assert_eq!(report["kfold"]["accuracy_mean"].as_f64(), Some(max));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("best lfwmini_accuracy:"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_resumed_run_logs_the_same_bin_results_as_an_uninterrupted_one() {
    let bins = tempfile::tempdir().unwrap();
    let bin = write_bin(bins.path(), "v");
    let models = tempfile::tempdir().unwrap();
    let common = [
        "FR",
        "--train-sets",
        "lfw",
        "--lr",
        "0.05",
        "--checkpoint-every",
        "0",
        "--eval-every",
        "4",
        "--best-on",
        "v",
        "--eval-bin",
        bin.to_str().unwrap(),
    ];
    ok(&train(models.path(), &[&common[..], &["--max-steps", "12", "--run-name", "full"]].concat()));
    ok(&train(models.path(), &[&common[..], &["--max-steps", "8", "--run-name", "split"]].concat()));
    // The resumed run takes --eval-bin, --eval-every and --best-on from its config.json.
    ok(&train(models.path(), &["FR", "--resume", "split", "--max-steps", "12"]));
    let strip = |run: &str| -> Vec<serde_json::Value> {
        bin_records(&models.path().join(run))
            .into_iter()
            .map(|mut r| {
                r["eval_bin"].as_object_mut().unwrap().remove("seconds");
                r
            })
            .collect()
    };
    let (full, split) = (strip("full"), strip("split"));
    assert_eq!(full.iter().map(|r| r["step"].as_u64().unwrap()).collect::<Vec<_>>(), [4, 8, 12]);
    assert_eq!(full, split);
    assert_eq!(state(&models.path().join("full"), BEST)["best"], state(&models.path().join("split"), BEST)["best"]);
}

#[test]
fn missing_or_corrupt_bin_files_are_refused_before_the_run_folder_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_bin(dir.path(), "good");
    let truncated = dir.path().join("truncated.bin");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let not_a_pickle = dir.path().join("noise.bin");
    std::fs::write(&not_a_pickle, b"this is not a pickle at all").unwrap();
    // A well-formed pickle whose second image is not an image.
    let bad_image = dir.path().join("badimage.bin");
    let png = std::fs::read(facekit_testkit::shared_data().join("lfw100/Ariel_Sharon/Ariel_Sharon_0001.jpg")).unwrap();
    let images: Vec<Vec<u8>> = (0..20).map(|i| if i == 1 { b"garbage".to_vec() } else { png.clone() }).collect();
    std::fs::write(&bad_image, pickle_bin(&images, &[true; 10])).unwrap();
    let too_few = dir.path().join("few.bin");
    std::fs::write(&too_few, pickle_bin(&vec![png.clone(); 8], &[true; 4])).unwrap();
    let missing = dir.path().join("missing.bin");

    let models = tempfile::tempdir().unwrap();
    let run = models.path().join("x");
    let cases: [(&Path, &[&str]); 5] = [
        (&missing, &["missing.bin"]),
        (&truncated, &["truncated.bin", "not an insightface verification .bin"]),
        (&not_a_pickle, &["noise.bin", "not an insightface verification .bin"]),
        (&bad_image, &["badimage.bin", "image 1 cannot be decoded"]),
        (&too_few, &["few.bin", "4 pairs"]),
    ];
    for (bin, needles) in cases {
        let out = train(
            models.path(),
            &[
                "FR",
                "--train-sets",
                "lfw",
                "--max-steps",
                "2",
                "--run-name",
                "x",
                "--eval-bin",
                good.to_str().unwrap(),
                bin.to_str().unwrap(),
            ],
        );
        assert_eq!(out.status.code(), Some(2), "{}: {}", bin.display(), stderr(&out));
        for n in needles {
            assert!(stderr(&out).contains(n), "{}: stderr lacks {n:?}: {}", bin.display(), stderr(&out));
        }
        assert!(!run.exists(), "{}: the run folder was created", bin.display());
    }
    // --best-on must name a set.
    let out = train(
        models.path(),
        &["FR", "--train-sets", "lfw", "--run-name", "x", "--best-on", "lfw", "--eval-bin", good.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--best-on 'lfw' names no --eval-bin set (the --eval-bin sets are good)"),
        "{}",
        stderr(&out)
    );
    assert!(!run.exists());
    // Two sets of one name could not be told apart in the log.
    std::fs::create_dir(dir.path().join("again")).unwrap();
    let twin = dir.path().join("again/good.bin");
    std::fs::copy(&good, &twin).unwrap();
    let out = train(
        models.path(),
        &["FR", "--train-sets", "lfw", "--run-name", "x", "--eval-bin", good.to_str().unwrap(), twin.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--eval-bin names two sets 'good'"), "{}", stderr(&out));
    assert!(!run.exists());

    // An existing run with --overwrite and a bad file: nothing in its folder changes.
    ok(&train(models.path(), &["FR", "--train-sets", "lfw", "--max-steps", "2", "--run-name", "x"]));
    let before = snapshot(&run);
    let out = train(
        models.path(),
        &[
            "FR",
            "--train-sets",
            "lfw",
            "--max-steps",
            "2",
            "--run-name",
            "x",
            "--overwrite",
            "--eval-bin",
            truncated.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(snapshot(&run), before, "the existing run folder was touched");
}

/// Every file of a folder with its bytes and modification time.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>, std::time::SystemTime)> {
    let mut files: Vec<_> = walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| (e.path().to_path_buf(), std::fs::read(e.path()).unwrap(), e.metadata().unwrap().modified().unwrap()))
        .collect();
    files.sort();
    files
}

#[test]
fn eval_verify_bin_flips_by_default_and_agrees_with_the_training_time_score() {
    let bins = tempfile::tempdir().unwrap();
    let bin = write_bin(bins.path(), "agree");
    let models = tempfile::tempdir().unwrap();
    let args = [
        "FR",
        "--train-sets",
        "lfw",
        "--max-steps",
        "10",
        "--lr",
        "0.05",
        "--eval-every",
        "0",
        "--run-name",
        "f",
        "--eval-bin",
        bin.to_str().unwrap(),
    ];
    ok(&train(models.path(), &args));
    let run = models.path().join("f");
    let trained = bin_records(&run).pop().unwrap()["eval_bin"].clone();
    // No flag: insightface's protocol, the flip test, as the trainer scores it.
    let default = eval_verify(&run, "last", &bin, "32", &[]);
    assert_eq!(default["flip"], true, "{default}");
    for (t, e) in [("accuracy", "accuracy_mean"), ("std", "accuracy_std"), ("threshold", "best_threshold")] {
        assert_eq!(
            trained[t].as_f64(),
            default["kfold"][e].as_f64(),
            "{t}: trainer {trained} vs eval verify {default}"
        );
    }
    let plain = eval_verify(&run, "last", &bin, "32", &["--no-flip"]);
    assert_eq!(plain["flip"], false, "--no-flip turns it off: {plain}");
    assert_ne!(
        plain["kfold"]["fold_threshold"], default["kfold"]["fold_threshold"],
        "plain embeddings are other embeddings"
    );
}

#[test]
fn a_stop_request_during_bin_scoring_ends_it_at_the_next_batch_and_saves_the_step() {
    let bins = tempfile::tempdir().unwrap();
    // 2,400 pairs, 9,600 forward passes with the flip test: long beside a step.
    let bin = write_bin_repeated(bins.path(), "long", 40);
    let models = tempfile::tempdir().unwrap();
    let mut cmd = train_command(
        models.path(),
        &[
            "FR",
            "--train-sets",
            "lfw",
            "--max-steps",
            "1000",
            "--eval-every",
            "1",
            "--run-name",
            "s",
            "--eval-bin",
            bin.to_str().unwrap(),
        ],
    );
    let child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let run = models.path().join("s");
    let t0 = std::time::Instant::now();
    // Step 1 logged: its scoring of the set has begun.
    while std::fs::read_to_string(RunPaths::new(&run).losses()).map(|t| t.lines().count()).unwrap_or(0) < 2 {
        assert!(t0.elapsed().as_secs() < 300, "no step logged in 5 minutes");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
    assert_eq!(state(&run, LAST)["step"], 1, "the whole step is saved");
    assert!(bin_records(&run).is_empty(), "the scoring was cut short, so nothing of it was logged");
}

/// An export folder in `models` (`model.safetensors` + `net.json`) of a 2-step run's weights
/// ([`two_step_run`]) with `edit` applied (see [`doctored_weights`]).
fn doctored_model(models: &Path, edit: &str) -> PathBuf {
    let src = two_step_run();
    let dir = models.join(format!("doctored-{}", std::fs::read_dir(models).unwrap().count()));
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(RunPaths::new(src).net(), RunPaths::new(&dir).net()).unwrap();
    doctored_weights(src, &dir.join(MODEL_FILE), edit);
    dir
}

fn facekit_out(args: &[&str], model: &Path, out_dir: &Path) -> Output {
    crate::facekit()
        .args(args)
        .arg("--model")
        .arg(model)
        .args(["--device", "cpu", "--data-dir"])
        .arg(data().join("training"))
        .arg("--out")
        .arg(out_dir)
        .output()
        .unwrap()
}

#[test]
fn nan_weights_or_embeddings_are_errors_naming_the_input_and_the_network_not_scores() {
    let dir = tempfile::tempdir().unwrap();
    let bin = write_bin(dir.path(), "pairs");
    let models = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    // NaN statistics: refused when the weights load, naming them.
    let nan = doctored_model(models.path(), "t['bn1.running_var'][0] = float('nan')");
    for args in [&["eval", "verify", "--bin", bin.to_str().unwrap()][..], &["embed", "--dataset", "lfw.valid"][..]] {
        let out = facekit_out(args, &nan, &out_dir);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("model.safetensors: `bn1.running_var` holds 1 NaN"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert!(!out_dir.join("embeddings.npy").exists(), "no embeddings were written");
    // Finite weights whose activations overflow: the embeddings are caught, naming the input.
    let overflow = doctored_model(models.path(), "t['bn1.running_mean'][:] = -3e38");
    let out = facekit_out(&["eval", "verify", "--bin", bin.to_str().unwrap()], &overflow, &out_dir);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    for words in ["pairs.bin", "model.safetensors", "are NaN or infinite"] {
        assert!(stderr(&out).contains(words), "eval verify: stderr lacks {words:?}: {}", stderr(&out));
    }
    let out = facekit_out(&["embed", "--dataset", "lfw.valid"], &overflow, &out_dir);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("embedding dataset lfw.valid") && stderr(&out).contains("NaN or infinite"),
        "embed: {}",
        stderr(&out)
    );
    assert!(!out_dir.join("embeddings.npy").exists(), "no all-NaN embeddings.npy");
    // Saved embeddings with a NaN row: all-pairs verification names the file and the row.
    let emb = dir.path().join("emb");
    let out = facekit_out(&["embed", "--checkpoint", "last", "--dataset", "lfw.valid"], two_step_run(), &emb);
    assert!(out.status.success(), "{}", stderr(&out));
    let npy = emb.join("embeddings.npy");
    let script = "import sys, numpy as np; e = np.load(sys.argv[1]); e[3] = np.nan; np.save(sys.argv[1], e)";
    assert!(std::process::Command::new(facekit_testkit::venv_python())
        .args(["-c", script])
        .arg(&npy)
        .status()
        .unwrap()
        .success());
    let out = crate::facekit()
        .args(["eval", "verify", "--embeddings"])
        .arg(&emb)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("embeddings.npy") && stderr(&out).contains("embedding row 3"), "{}", stderr(&out));
}

#[test]
fn bin_scores_of_a_network_whose_embeddings_overflow_end_the_run_instead_of_picking_best_by_them() {
    let bins = tempfile::tempdir().unwrap();
    let bin = write_bin(bins.path(), "lfwmini");
    let models = tempfile::tempdir().unwrap();
    let weights = doctored_model(models.path(), "t['bn1.running_mean'][:] = -3e38").join(MODEL_FILE);
    let cmd = train_command(
        models.path(),
        &[
            "FR",
            "--train-sets",
            "lfw",
            "--max-steps",
            "6",
            "--eval-every",
            "3",
            "--checkpoint-every",
            "2",
            "--best-on",
            "lfwmini",
            "--run-name",
            "b",
            "--init",
            weights.to_str().unwrap(),
            "--eval-bin",
            bin.to_str().unwrap(),
        ],
    );
    let out = output_within(cmd, 300);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    for words in ["--eval-bin: verification on", "lfwmini.bin", "are NaN or infinite", "at step 3", "(step 2)"] {
        assert!(stderr(&out).contains(words), "stderr lacks {words:?}: {}", stderr(&out));
    }
    let run = models.path().join("b");
    assert!(bin_records(&run).is_empty(), "no accuracy of 0.5 was logged");
    assert!(!RunPaths::new(&run).checkpoint(BEST).exists(), "and no best picked by one");
    assert_eq!(state(&run, LAST)["step"], 2);
}
