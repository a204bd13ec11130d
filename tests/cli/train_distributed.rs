//! `facekit train` on two ranks (Gloo over 127.0.0.1, the tiny network on real LFW faces): both
//! launchers, the loss curve against one rank with twice the batch, resume across world sizes,
//! a killed and a hung rank, Partial FC, and gradient accumulation.

use super::train_loop::{data, ok, state};
use facekit_train::run::paths::{RunPaths, LAST, MODEL_FILE, OPTIMIZER_FILE};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const STEPS: &str = "40";

/// `facekit train FR` on the LFW set with the small-test settings, batch `batch` per rank.
fn train_cmd(models: &Path, run: &str, batch: &str, args: &[&str]) -> Command {
    let mut cmd = crate::facekit();
    cmd.args([
        "train",
        "FR",
        "--train-sets",
        "lfw",
        "--arch",
        "tiny",
        "--image-size",
        "48",
        "--workers",
        "1",
        "--threads",
        "1",
    ])
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
    cmd.args(["--standalone", "--nproc-per-node", "2", "--no-python"])
        .arg(facekit.get_program())
        .args(facekit.get_args());
    cmd
}

fn total_losses(run: &Path) -> Vec<f64> {
    facekit_testkit::runs::step_losses(run).iter().map(|l| l.total).collect()
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

/// The losses of one rank with batch 16: the reference the 2-rank runs are compared with, trained
/// once per test binary.
fn one_rank_reference() -> &'static [f64] {
    static LOSSES: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    LOSSES.get_or_init(|| {
        let models = tempfile::tempdir().unwrap();
        let out = train_cmd(models.path(), "one", "16", &["--max-steps", STEPS]).output().unwrap();
        ok(&out);
        total_losses(&models.path().join("one"))
    })
}

#[test]
fn two_ranks_from_either_launcher_follow_one_rank_with_twice_the_batch_and_only_rank_0_writes() {
    let models = tempfile::tempdir().unwrap();
    let one = one_rank_reference();

    let out = train_cmd(models.path(), "two", "8", &["--max-steps", STEPS, "--nproc-per-node", "2"]).output().unwrap();
    ok(&out);
    let err = stderr(&out);
    assert!(err.contains("batch 8 per rank x 2 ranks = global batch 16 images per step"), "{err}");
    assert!(err.contains("rank 1 of 2: pid"), "the launcher names its ranks: {err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).matches("Training finished.").count(), 1, "one summary, rank 0's");
    let run = models.path().join("two");
    assert_follows(&total_losses(&run), one, "--nproc-per-node 2");
    assert_eq!(state(&run, LAST)["step"], 40);
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(RunPaths::new(&run).config()).unwrap()).unwrap();
    assert_eq!((saved["config"]["world_size"].as_u64(), saved["config"]["batch_size"].as_u64()), (Some(2), Some(8)));
    // Nothing but rank 0's files: one lock, no second copy of anything.
    let names: Vec<String> =
        std::fs::read_dir(&run).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(!names.iter().any(|n| n.starts_with(".tmp")), "{names:?}");

    let out = torchrun_cmd(models.path(), "torchrun", "8", &["--max-steps", STEPS]).output().unwrap();
    ok(&out);
    assert_follows(&total_losses(&models.path().join("torchrun")), one, "torchrun --nproc-per-node 2");
}

#[test]
fn a_run_resumes_on_another_number_of_ranks_with_the_same_global_batch() {
    let models = tempfile::tempdir().unwrap();
    // Two ranks for 20 steps, then one rank to 30, then two again to 40.
    ok(&train_cmd(models.path(), "r", "8", &["--max-steps", "20", "--nproc-per-node", "2"]).output().unwrap());
    let run = models.path().join("r");
    let resume = |extra: &[&str], steps: &str| {
        let mut cmd = crate::facekit();
        cmd.args(["train", "FR", "--resume"])
            .arg(&run)
            .args(["--max-steps", steps, "--workers", "1", "--threads", "1", "--device", "cpu"])
            .args(extra);
        cmd.output().unwrap()
    };
    let out = resume(&[], "30");
    ok(&out);
    assert!(
        stderr(&out).contains("batch 16 per rank = global batch 16"),
        "one rank takes the whole global batch: {}",
        stderr(&out)
    );
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(RunPaths::new(&run).config()).unwrap()).unwrap();
    assert_eq!((saved["config"]["world_size"].as_u64(), saved["config"]["batch_size"].as_u64()), (Some(1), Some(16)));
    let out = resume(&["--nproc-per-node", "2"], "40");
    ok(&out);
    assert!(stderr(&out).contains("batch 8 per rank x 2 ranks = global batch 16"), "{}", stderr(&out));
    let l = total_losses(&run);
    assert_eq!(l.len(), 40, "every step logged once across the three runs");
    let last = state(&run, LAST);
    assert_eq!((last["step"].as_u64(), last["images_seen"].as_u64()), (Some(40), Some(40 * 16)));
    // The data order is the global batch's: the position in the epoch carries over unchanged.
    assert_eq!(
        last["epoch"].as_u64().unwrap() * 15 + last["batch_in_epoch"].as_u64().unwrap(),
        40,
        "240 images give 15 steps of 16 per epoch"
    );
    assert!(mean(&l[30..]) < mean(&l[..5]), "training went on from the checkpoint");
    // Two ranks cannot split a global batch of 3 (and a 2-core machine refuses three CPU ranks).
    ok(&train_cmd(models.path(), "odd", "3", &["--max-steps", "1"]).output().unwrap());
    let mut cmd = crate::facekit();
    cmd.args(["train", "FR", "--resume"]).arg(models.path().join("odd")).args([
        "--max-steps",
        "2",
        "--workers",
        "1",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--nproc-per-node",
        "2",
    ]);
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cannot split evenly"), "{}", stderr(&out));
}

/// Starts a 2-rank `--nproc-per-node` run that would last long, and returns it with rank 1's pid
/// once a few steps are logged.
fn start_long_run(models: &Path, timeout: &str) -> (std::process::Child, u32, std::path::PathBuf) {
    let mut child =
        train_cmd(models, "long", "8", &["--max-steps", "100000", "--nproc-per-node", "2", "--dist-timeout", timeout])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
    let run = models.join("long");
    let t0 = Instant::now();
    while std::fs::read_to_string(RunPaths::new(&run).losses()).map(|t| t.lines().count()).unwrap_or(0) < 4 {
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
    assert!(
        err.contains("rank 1 of 2 stopped") || err.contains("rank 1 of 2: killed"),
        "the message names rank 1: {err}"
    );
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
    let out = train_cmd(
        models.path(),
        "pfc",
        "8",
        &[
            "--max-steps",
            "30",
            "--nproc-per-node",
            "2",
            "--partial-fc",
            "0.5",
            "--valid-sets",
            "lfw.valid",
            "--valid-every",
            "15",
        ],
    )
    .output()
    .unwrap();
    ok(&out);
    let err = stderr(&out);
    assert!(err.contains("Partial FC at sample rate 0.5: 10 classes over 2 rank(s), 5 on rank 0"), "{err}");
    let run = models.path().join("pfc");
    let l = total_losses(&run);
    assert!(mean(&l[25..]) < mean(&l[..5]), "Partial FC's loss fell: {l:?}");
    assert!(err.contains("identity_accuracy"), "validation scores identities over both shards: {err}");
    for file in [MODEL_FILE, OPTIMIZER_FILE] {
        let shapes = safetensors_shapes(&RunPaths::new(&run).checkpoint(LAST).join(file));
        assert_eq!(
            shapes.get("arcface.weight").or(shapes.get("exp_avg.arcface.weight")),
            Some(&vec![10, 512]),
            "{file}: both shards in one tensor: {shapes:?}"
        );
    }
    // The same checkpoint continues on one rank (the whole head on it).
    let out = crate::facekit()
        .args(["train", "FR", "--resume"])
        .arg(&run)
        .args(["--max-steps", "35", "--workers", "1", "--device", "cpu"])
        .output()
        .unwrap();
    ok(&out);
    assert_eq!(state(&run, LAST)["step"], 35);
}

#[test]
fn accumulating_two_micro_batches_follows_twice_the_batch() {
    let models = tempfile::tempdir().unwrap();
    let one = one_rank_reference();
    let out = train_cmd(models.path(), "acc", "8", &["--max-steps", STEPS, "--accumulate", "2"]).output().unwrap();
    ok(&out);
    assert!(
        stderr(&out).contains("batch 8 per rank x 2 accumulated micro-batches = global batch 16"),
        "{}",
        stderr(&out)
    );
    assert_follows(&total_losses(&models.path().join("acc")), one, "--accumulate 2");
}

#[test]
fn multi_task_with_masked_heads_and_partial_fc_trains_on_two_ranks() {
    let models = tempfile::tempdir().unwrap();
    let mut cmd = crate::facekit();
    cmd.args([
        "train",
        "Multi",
        "--train-sets",
        "lfw",
        "utk",
        "--valid-sets",
        "lfw.valid",
        "utk.valid",
        "--arch",
        "tiny",
        "--image-size",
        "48",
    ])
    .args([
        "--workers",
        "1",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--lr",
        "0.02",
        "--batch-size",
        "8",
        "--max-steps",
        "30",
        "--run-name",
        "m",
    ])
    .args(["--nproc-per-node", "2", "--partial-fc", "1.0"])
    .arg("--data-dir")
    .arg(data().join("training"))
    .arg("--model-dir")
    .arg(models.path());
    let out = cmd.output().unwrap();
    ok(&out);
    let run = models.path().join("m");
    let rows = facekit_testkit::runs::step_losses(&run);
    assert_eq!(rows.len(), 30);
    assert!(
        rows.iter().all(|r| r.total.is_finite() && r.tasks.iter().all(|x| x.is_some_and(f64::is_finite))),
        "every task's loss is finite at every step: {rows:?}"
    );
    let log = std::fs::read_to_string(RunPaths::new(run).log()).unwrap();
    let last = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("validation").cloned())
        .next_back()
        .unwrap();
    for k in ["identity_accuracy", "gender_accuracy", "age_mae"] {
        assert!(last[k].as_f64().is_some_and(f64::is_finite), "validation lacks {k}: {last}");
    }
}

// --- ranks that agree or stop (issue 21) ----------------------------------------------------

/// torchrun's variables for rank `rank` of 2 on this machine, the store at 127.0.0.1:`port`
/// (hosted by rank 0 unless `agent`: a launcher's).
fn rank_env(cmd: &mut Command, rank: usize, port: u16, agent: bool) {
    let vars = [
        ("RANK", rank.to_string()),
        ("WORLD_SIZE", "2".into()),
        ("LOCAL_RANK", rank.to_string()),
        ("LOCAL_WORLD_SIZE", "2".into()),
    ];
    cmd.envs(vars).env("MASTER_ADDR", "127.0.0.1").env("MASTER_PORT", port.to_string());
    cmd.env("TORCHELASTIC_USE_AGENT_STORE", if agent { "True" } else { "False" });
}

/// A port the system just handed out and took back: free for a store to be hosted on.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The flags of a hand-made launch's ranks, each overridable per rank.
const HAND_DEFAULTS: [(&str, &str); 9] = [
    ("--train-sets", "lfw"),
    ("--lr", "0.05"),
    ("--batch-size", "8"),
    ("--seed", "1"),
    ("--margin", "arcface"),
    ("--workers", "1"),
    ("--threads", "1"),
    ("--log-every", "10"),
    ("--max-steps", "3"),
];

/// Rank `rank` of a hand-made 2-rank launch (rank 0 hosts the store on `port`), with
/// [`HAND_DEFAULTS`] but for `own` flags, data from `data_dir`.
fn hand_rank(models: &Path, data_dir: &Path, rank: usize, port: u16, own: &[(&str, &str)]) -> Command {
    let mut cmd = crate::facekit();
    cmd.args([
        "train",
        "FR",
        "--arch",
        "tiny",
        "--image-size",
        "48",
        "--device",
        "cpu",
        "--run-name",
        "hand",
        "--dist-timeout",
        "60",
    ]);
    for (flag, value) in HAND_DEFAULTS {
        cmd.args([flag, own.iter().find(|(f, _)| *f == flag).map_or(value, |(_, v)| v)]);
    }
    cmd.arg("--data-dir").arg(data_dir).arg("--model-dir").arg(models).stdout(Stdio::piped()).stderr(Stdio::piped());
    rank_env(&mut cmd, rank, port, false);
    cmd
}

/// Starts both ranks of a hand-made launch with their own flags and waits for both.
fn hand_launch(models: &Path, data_dirs: [&Path; 2], own: [&[(&str, &str)]; 2]) -> Vec<Output> {
    let port = free_port();
    let children = (0..2).map(|r| hand_rank(models, data_dirs[r], r, port, own[r]).spawn().unwrap()).collect();
    outputs_within(children, Duration::from_secs(240))
}

/// The outputs of `children` (their pipes read as they run), killing them all and failing when
/// they are not all done within `limit`.
fn outputs_within(children: Vec<std::process::Child>, limit: Duration) -> Vec<Output> {
    let pids: Vec<u32> = children.iter().map(|c| c.id()).collect();
    let (tx, rx) = std::sync::mpsc::channel();
    for (i, child) in children.into_iter().enumerate() {
        let tx = tx.clone();
        std::thread::spawn(move || tx.send((i, child.wait_with_output().unwrap())));
    }
    let deadline = Instant::now() + limit;
    let mut outputs: Vec<Option<Output>> = pids.iter().map(|_| None).collect();
    for _ in 0..pids.len() {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((i, out)) => outputs[i] = Some(out),
            Err(_) => {
                for pid in &pids {
                    let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
                }
                panic!("the processes did not all end within {limit:?}");
            }
        }
    }
    outputs.into_iter().map(Option::unwrap).collect()
}

#[test]
fn ranks_started_with_different_settings_stop_naming_the_setting_and_both_values() {
    let training = data().join("training");
    let cases = [
        ("--lr", "0.1", "--lr (0.05 on rank 0, 0.1 on rank 1)"),
        ("--batch-size", "4", "--batch-size (8 on rank 0, 4 on rank 1)"),
        ("--seed", "2", "--seed (1 on rank 0, 2 on rank 1)"),
        ("--train-sets", "lfw.valid", "--train-sets (lfw on rank 0, lfw.valid on rank 1)"),
        ("--margin", "cosface", "--margin (arcface on rank 0, cosface on rank 1)"),
    ];
    for (flag, other, expect) in cases {
        let models = tempfile::tempdir().unwrap();
        let outs = hand_launch(models.path(), [&training, &training], [&[], &[(flag, other)]]);
        for (rank, out) in outs.iter().enumerate() {
            let err = stderr(out);
            assert_eq!(out.status.code(), Some(2), "{flag}: rank {rank} {:?}: {err}", out.status);
            assert!(
                err.contains(
                    "the ranks do not train with the same configuration and data: rank 1 of 2 differs from rank 0 in"
                ),
                "{flag}, rank {rank}: {err}"
            );
            assert!(err.contains(expect), "{flag}, rank {rank}: {err}");
            assert!(!err.contains("every other rank"), "a disagreement needs no diagnosis of the others: {err}");
        }
        if flag == "--train-sets" {
            assert!(
                stderr(&outs[0]).contains("train set 1 (240 records, manifest SHA-256"),
                "the data's content differs too: {}",
                stderr(&outs[0])
            );
        }
        assert!(!models.path().join("hand").exists(), "{flag}: no run folder is left behind");
    }
}

/// Copies the datasets of folder `from` into `to` (a node keeping the same data at another path).
fn copy_datasets(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn ranks_may_differ_in_their_own_threads_workers_logging_and_data_path() {
    let models = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    copy_datasets(&data().join("training"), elsewhere.path());
    let own: &[(&str, &str)] = &[("--workers", "2"), ("--threads", "2"), ("--log-every", "1")];
    let outs = hand_launch(models.path(), [&data().join("training"), elsewhere.path()], [&[], own]);
    for out in &outs {
        ok(out);
    }
    assert_eq!(state(&models.path().join("hand"), LAST)["step"], 3);
}

/// A plain TCP server on a free port that accepts connections and never answers, as a program
/// holding MASTER_PORT would; its port, and a channel that hears of each connection.
fn silent_listener() -> (u16, std::sync::mpsc::Receiver<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().map_while(Result::ok) {
            held.push(conn);
            let _ = tx.send(());
        }
    });
    (port, rx)
}

#[test]
fn a_rank_whose_master_port_is_held_by_another_program_stops_in_time_and_on_sigterm() {
    let models = tempfile::tempdir().unwrap();
    let (port, connected) = silent_listener();
    let rank1 = |timeout: &str| {
        let mut cmd = train_cmd(models.path(), "held", "8", &["--max-steps", "3", "--dist-timeout", timeout]);
        rank_env(&mut cmd, 1, port, true);
        cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
    };
    let t0 = Instant::now();
    let out = outputs_within(vec![rank1("3")], Duration::from_secs(60)).remove(0);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{:?}: {err}", out.status);
    assert!(
        err.contains(&format!("127.0.0.1:{port} (MASTER_ADDR:MASTER_PORT)"))
            && err.contains("something else answers there"),
        "{err}"
    );
    assert!(t0.elapsed() < Duration::from_secs(30), "gave up after {:?}", t0.elapsed());

    // With the default deadline, SIGTERM ends the wait: a stop, with its code.
    let child = rank1("600");
    while connected.try_recv().is_ok() {}
    connected.recv_timeout(Duration::from_secs(60)).expect("the rank never connected");
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let out = outputs_within(vec![child], Duration::from_secs(20)).remove(0);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(143), "{:?}: {err}", out.status);
    assert!(err.contains("stopped by SIGTERM while waiting for the store to answer"), "{err}");
}

#[test]
fn a_master_addr_that_does_not_resolve_is_one_line_saying_so() {
    let models = tempfile::tempdir().unwrap();
    let mut cmd = train_cmd(models.path(), "nowhere", "8", &["--max-steps", "3", "--dist-timeout", "30"]);
    rank_env(&mut cmd, 1, 29500, true);
    let out = cmd.env("MASTER_ADDR", "no-such-host.invalid").output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("the host name 'no-such-host.invalid' does not resolve") && !err.contains("timed out"),
        "{err}"
    );
}

#[test]
fn the_launcher_checks_every_flag_before_starting_any_rank() {
    let models = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["--nproc-per-node", "2", "--momentum", "1.5"], "--momentum must be in [0, 1), got 1.5"),
        (&["--nproc-per-node", "2", "--dist-timeout", "0"], "--dist-timeout 0: a deadline of 0 s"),
        (
            &["--nproc-per-node", "2", "--dist-timeout", "99999999999"],
            "--dist-timeout 99999999999: a deadline of 99999999999 s",
        ),
        (&["--nproc-per-node", "2", "--dist-backend", "nccl"], "the NCCL backend needs CUDA devices"),
        (&["--nproc-per-node", "1024"], "--nproc-per-node 1024 on the CPU, which gives this process"),
    ];
    for (args, expect) in cases {
        let t0 = Instant::now();
        let out = train_cmd(models.path(), "refused", "8", args).output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: {err}");
        assert!(!err.contains("facekit launch:"), "{args:?}: no rank may start: {err}");
        assert!(t0.elapsed() < Duration::from_secs(30), "{args:?}: took {:?}", t0.elapsed());
    }
    assert!(!models.path().join("refused").exists());
}

#[test]
fn sigterm_to_the_launcher_stops_every_rank_after_saving_with_code_143() {
    let models = tempfile::tempdir().unwrap();
    let (mut child, _, run) = start_long_run(models.path(), "60");
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let status = wait_within(&mut child, Duration::from_secs(120));
    let err = collected_stderr();
    assert_eq!(status.code(), Some(143), "{status:?}: {err}");
    assert!(err.contains("all 2 ranks stopped as asked by SIGTERM (exit code 143)"), "{err}");
    assert!(!err.contains("failed"), "a deliberate stop is no failure: {err}");
    assert!(state(&run, LAST)["step"].as_u64().unwrap() >= 3, "`last` was saved");
}

#[test]
fn a_rank_whose_store_host_died_says_so_without_cpp_stacks() {
    let models = tempfile::tempdir().unwrap();
    let training = data().join("training");
    let port = free_port();
    let own: &[(&str, &str)] = &[("--max-steps", "100000")];
    let mut rank0 =
        hand_rank(models.path(), &training, 0, port, own).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let rank1 = hand_rank(models.path(), &training, 1, port, own).spawn().unwrap();
    let losses = RunPaths::new(models.path().join("hand")).losses();
    let t0 = Instant::now();
    while std::fs::read_to_string(&losses).map(|t| t.lines().count()).unwrap_or(0) < 4 {
        assert!(t0.elapsed() < Duration::from_secs(180), "no step logged in 3 minutes");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Rank 0 hosts the store: its death takes the store, and rank 1's heartbeat, with it.
    rank0.kill().unwrap();
    rank0.wait().unwrap();
    let out = outputs_within(vec![rank1], Duration::from_secs(90)).remove(0);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("rank 0 of 2, which hosts it, is gone"), "{err}");
    assert!(!err.contains("frame #"), "libtorch's C++ stacks stay out of the output: {err}");
}
