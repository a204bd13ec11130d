//! `facekit train` on two ranks (Gloo over 127.0.0.1, the tiny network on real LFW faces): both
//! launchers, the loss curve against one rank with twice the batch, resume across world sizes,
//! a killed and a hung rank, Partial FC, and gradient accumulation.

use super::train_loop::{data, ok, state};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const STEPS: &str = "40";

/// `facekit train FR` on the LFW set with the small-test settings, batch `batch` per rank.
fn train_cmd(models: &Path, run: &str, batch: &str, args: &[&str]) -> Command {
    let mut cmd = crate::facekit();
    cmd.args(["train", "FR", "--train-sets", "lfw", "--arch", "tiny", "--image-size", "48", "--workers", "1", "--threads", "1"])
        .args(["--device", "cpu", "--lr", "0.05", "--batch-size", batch, "--run-name", run, "--log-every", "10"])
        .args(args)
        .arg("--data-dir")
        .arg(data().join("training"))
        .arg("--model-dir")
        .arg(models);
    cmd
}

/// The same command as torchrun runs it: the facekit binary after torchrun's own flags.
fn torchrun_cmd(models: &Path, run: &str, batch: &str, args: &[&str]) -> Command {
    let facekit = train_cmd(models, run, batch, args);
    let mut cmd = Command::new(facekit_testkit::venv_python().with_file_name("torchrun"));
    cmd.args(["--standalone", "--nproc-per-node", "2", "--no-python"]).arg(facekit.get_program()).args(facekit.get_args());
    cmd
}

fn total_losses(run: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(run.join("loss_debug/losses.tsv")).unwrap();
    text.lines().skip(1).map(|l| l.split('\t').nth(3).unwrap().parse().unwrap()).collect()
}

/// Tensor name -> shape, from a safetensors file's header (8-byte length, then JSON).
fn safetensors_shapes(path: &Path) -> std::collections::BTreeMap<String, Vec<u64>> {
    let bytes = std::fs::read(path).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| (k.clone(), v["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).collect()))
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The 2-rank run's losses against the 1-rank run's with twice the batch: the first step sees the
/// same records from the same weights (only batch norm's per-rank statistics differ), and the
/// curves stay together.
fn assert_follows(two: &[f64], one: &[f64], what: &str) {
    assert_eq!(two.len(), one.len(), "{what}: as many steps");
    let first = (two[0] - one[0]).abs() / one[0];
    assert!(first < 0.05, "{what}: first step loss {} against {} (one rank, twice the batch)", two[0], one[0]);
    let (a, b) = (mean(&two[two.len() - 10..]), mean(&one[one.len() - 10..]));
    assert!((a - b).abs() / b < 0.25, "{what}: last 10 steps' mean loss {a:.3} against {b:.3}");
    assert!(a < 0.9 * mean(&two[..5]), "{what}: the loss fell ({:.3} -> {a:.3})", mean(&two[..5]));
}

/// One rank with batch 16: the reference the 2-rank runs are compared with.
fn one_rank_reference(models: &Path) -> Vec<f64> {
    let out = train_cmd(models, "one", "16", &["--max-steps", STEPS]).output().unwrap();
    ok(&out);
    total_losses(&models.join("one"))
}

#[test]
fn two_ranks_from_either_launcher_follow_one_rank_with_twice_the_batch_and_only_rank_0_writes() {
    let models = tempfile::tempdir().unwrap();
    let one = one_rank_reference(models.path());

    let out = train_cmd(models.path(), "two", "8", &["--max-steps", STEPS, "--nproc-per-node", "2"]).output().unwrap();
    ok(&out);
    let err = stderr(&out);
    assert!(err.contains("batch 8 per rank x 2 ranks = global batch 16 images per step"), "{err}");
    assert!(err.contains("rank 1 of 2: pid"), "the launcher names its ranks: {err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).matches("Training finished.").count(), 1, "one summary, rank 0's");
    let run = models.path().join("two");
    assert_follows(&total_losses(&run), &one, "--nproc-per-node 2");
    assert_eq!(state(&run, "last")["step"], 40);
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    assert_eq!((saved["config"]["world_size"].as_u64(), saved["config"]["batch_size"].as_u64()), (Some(2), Some(8)));
    // Nothing but rank 0's files: one lock, no second copy of anything.
    let names: Vec<String> = std::fs::read_dir(&run).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(!names.iter().any(|n| n.starts_with(".tmp")), "{names:?}");

    let out = torchrun_cmd(models.path(), "torchrun", "8", &["--max-steps", STEPS]).output().unwrap();
    ok(&out);
    assert_follows(&total_losses(&models.path().join("torchrun")), &one, "torchrun --nproc-per-node 2");
}

#[test]
fn a_run_resumes_on_another_number_of_ranks_with_the_same_global_batch() {
    let models = tempfile::tempdir().unwrap();
    // Two ranks for 20 steps, then one rank to 30, then two again to 40.
    ok(&train_cmd(models.path(), "r", "8", &["--max-steps", "20", "--nproc-per-node", "2"]).output().unwrap());
    let run = models.path().join("r");
    let resume = |extra: &[&str], steps: &str| {
        let mut cmd = crate::facekit();
        cmd.args(["train", "FR", "--resume"]).arg(&run).args(["--max-steps", steps, "--workers", "1", "--threads", "1", "--device", "cpu"]).args(extra);
        cmd.output().unwrap()
    };
    let out = resume(&[], "30");
    ok(&out);
    assert!(stderr(&out).contains("batch 16 per rank = global batch 16"), "one rank takes the whole global batch: {}", stderr(&out));
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    assert_eq!((saved["config"]["world_size"].as_u64(), saved["config"]["batch_size"].as_u64()), (Some(1), Some(16)));
    let out = resume(&["--nproc-per-node", "2"], "40");
    ok(&out);
    assert!(stderr(&out).contains("batch 8 per rank x 2 ranks = global batch 16"), "{}", stderr(&out));
    let l = total_losses(&run);
    assert_eq!(l.len(), 40, "every step logged once across the three runs");
    let last = state(&run, "last");
    assert_eq!((last["step"].as_u64(), last["images_seen"].as_u64()), (Some(40), Some(40 * 16)));
    // The data order is the global batch's: the position in the epoch carries over unchanged.
    assert_eq!(last["epoch"].as_u64().unwrap() * 15 + last["batch_in_epoch"].as_u64().unwrap(), 40, "240 images give 15 steps of 16 per epoch");
    assert!(mean(&l[30..]) < mean(&l[..5]), "training went on from the checkpoint");
    // An odd number of ranks cannot split a global batch of 16.
    let out = resume(&["--nproc-per-node", "3"], "50");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cannot split evenly"), "{}", stderr(&out));
}

/// Starts a 2-rank `--nproc-per-node` run that would last long, and returns it with rank 1's pid
/// once a few steps are logged.
fn start_long_run(models: &Path, timeout: &str) -> (std::process::Child, u32, std::path::PathBuf) {
    let mut child = train_cmd(models, "long", "8", &["--max-steps", "100000", "--nproc-per-node", "2", "--dist-timeout", timeout])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let run = models.join("long");
    let t0 = Instant::now();
    while std::fs::read_to_string(run.join("loss_debug/losses.tsv")).map(|t| t.lines().count()).unwrap_or(0) < 4 {
        assert!(t0.elapsed() < Duration::from_secs(180), "no step logged in 3 minutes");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended early: {status:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The launcher names each rank's pid on stderr; read until rank 1's line.
    use std::io::{BufRead, BufReader};
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let pid = loop {
        let line = lines.next().expect("the launcher printed no pid for rank 1").unwrap();
        if let Some(p) = line.strip_prefix("facekit launch: rank 1 of 2: pid ") {
            break p.trim().parse::<u32>().unwrap();
        }
    };
    // The rest of stderr is collected in the background so that the child never blocks on it.
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>().join("\n"));
    STDERR.with(|s| *s.borrow_mut() = Some(rest));
    (child, pid, run)
}

thread_local! {
    static STDERR: std::cell::RefCell<Option<std::thread::JoinHandle<String>>> = const { std::cell::RefCell::new(None) };
}

fn collected_stderr() -> String {
    STDERR.with(|s| s.borrow_mut().take().map(|h| h.join().unwrap()).unwrap_or_default())
}

/// Waits for `child` at most `limit`, killing it (and failing) past that.
fn wait_within(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("the run did not stop within {limit:?} of the rank's failure");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_killed_rank_stops_the_other_with_a_message_naming_it() {
    let models = tempfile::tempdir().unwrap();
    let (mut child, pid, _) = start_long_run(models.path(), "20");
    assert!(Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap().success());
    let status = wait_within(&mut child, Duration::from_secs(60));
    let err = collected_stderr();
    assert!(!status.success(), "{err}");
    assert!(err.contains("rank 1 of 2 stopped") || err.contains("rank 1 of 2: killed"), "the message names rank 1: {err}");
}

#[test]
fn a_hung_rank_stops_the_other_within_the_timeout_with_a_message_naming_it() {
    let models = tempfile::tempdir().unwrap();
    let (mut child, pid, _) = start_long_run(models.path(), "8");
    // SIGSTOP: alive but silent, its heartbeat too; only the collective deadline can notice.
    assert!(Command::new("kill").args(["-STOP", &pid.to_string()]).status().unwrap().success());
    let t0 = Instant::now();
    let status = wait_within(&mut child, Duration::from_secs(90));
    let err = collected_stderr();
    let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    assert!(!status.success(), "{err}");
    assert!(err.contains("rank 1 of 2 stopped (no heartbeat"), "rank 0 names the hung rank: {err}");
    assert!(t0.elapsed() >= Duration::from_secs(5), "rank 0 waited for the deadline, not less");
}

#[test]
fn partial_fc_on_two_ranks_trains_and_its_checkpoint_holds_the_whole_head() {
    let models = tempfile::tempdir().unwrap();
    let out = train_cmd(models.path(), "pfc", "8", &["--max-steps", "30", "--nproc-per-node", "2", "--partial-fc", "0.5", "--valid-sets", "lfw.valid", "--valid-every", "15"])
        .output()
        .unwrap();
    ok(&out);
    let err = stderr(&out);
    assert!(err.contains("Partial FC at sample rate 0.5: 10 classes over 2 rank(s), 5 on rank 0"), "{err}");
    let run = models.path().join("pfc");
    let l = total_losses(&run);
    assert!(mean(&l[25..]) < mean(&l[..5]), "Partial FC's loss fell: {l:?}");
    assert!(err.contains("identity_accuracy"), "validation scores identities over both shards: {err}");
    for file in ["model.safetensors", "optimizer.safetensors"] {
        let shapes = safetensors_shapes(&run.join("checkpoints/last").join(file));
        assert_eq!(shapes.get("arcface.weight").or(shapes.get("exp_avg.arcface.weight")), Some(&vec![10, 512]), "{file}: both shards in one tensor: {shapes:?}");
    }
    // The same checkpoint continues on one rank (the whole head on it).
    let out = crate::facekit().args(["train", "FR", "--resume"]).arg(&run).args(["--max-steps", "35", "--workers", "1", "--device", "cpu"]).output().unwrap();
    ok(&out);
    assert_eq!(state(&run, "last")["step"], 35);
}

#[test]
fn accumulating_two_micro_batches_follows_twice_the_batch() {
    let models = tempfile::tempdir().unwrap();
    let one = one_rank_reference(models.path());
    let out = train_cmd(models.path(), "acc", "8", &["--max-steps", STEPS, "--accumulate", "2"]).output().unwrap();
    ok(&out);
    assert!(stderr(&out).contains("batch 8 per rank x 2 accumulated micro-batches = global batch 16"), "{}", stderr(&out));
    assert_follows(&total_losses(&models.path().join("acc")), &one, "--accumulate 2");
}

#[test]
fn multi_task_with_masked_heads_and_partial_fc_trains_on_two_ranks() {
    let models = tempfile::tempdir().unwrap();
    let mut cmd = crate::facekit();
    cmd.args(["train", "Multi", "--train-sets", "lfw", "utk", "--valid-sets", "lfw.valid", "utk.valid", "--arch", "tiny", "--image-size", "48"])
        .args(["--workers", "1", "--threads", "1", "--device", "cpu", "--lr", "0.02", "--batch-size", "8", "--max-steps", "30", "--run-name", "m"])
        .args(["--nproc-per-node", "2", "--partial-fc", "1.0"])
        .arg("--data-dir")
        .arg(data().join("training"))
        .arg("--model-dir")
        .arg(models.path());
    let out = cmd.output().unwrap();
    ok(&out);
    let run = models.path().join("m");
    let text = std::fs::read_to_string(run.join("loss_debug/losses.tsv")).unwrap();
    let rows: Vec<Vec<f64>> = text.lines().skip(1).map(|l| l.split('\t').skip(3).map(|x| x.parse().unwrap()).collect()).collect();
    assert_eq!(rows.len(), 30);
    assert!(rows.iter().all(|r| r.len() == 4 && r.iter().all(|x| x.is_finite())), "every task's loss is finite at every step: {rows:?}");
    let log = std::fs::read_to_string(run.join("train_log.jsonl")).unwrap();
    let last = log.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).filter_map(|v| v.get("validation").cloned()).last().unwrap();
    for k in ["identity_accuracy", "gender_accuracy", "age_mae"] {
        assert!(last[k].as_f64().is_some_and(f64::is_finite), "validation lacks {k}: {last}");
    }
}
