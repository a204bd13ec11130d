//! Hostile input and faults: every way facekit once crashed, hung, lost data or left its folder,
//! each as the situation a user meets (issue "Trust"). Packs here align from a landmarks file, so
//! they need no dlib and run in both build flavours; training cases need feature `torch`.

use facekit_shard::manifest::{EncodingInfo, LabelEntry, LabelMap, SourceInfo};
use facekit_shard::{DatasetPaths, DatasetWriter, Encoding, Labels, Manifest, Record};
use facekit_testkit::sets::{Chips, Storage};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn lfw() -> PathBuf {
    facekit_testkit::shared_data().join("lfw100")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs a command, killing it (and failing the test) if it has not ended after `secs`: a hang
/// must fail, not stall the suite.
fn run_within(mut cmd: Command, secs: u64) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("facekit starts");
    let t0 = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if t0.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("facekit hung for {secs} s:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn facekit(args: &[&str]) -> Output {
    let mut cmd = crate::facekit();
    cmd.args(args).env("FACEKIT_MODELS", facekit_testkit::models_dir());
    run_within(cmd, 300)
}

fn facekit_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = crate::facekit();
    cmd.args(args).env("FACEKIT_MODELS", facekit_testkit::models_dir());
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_within(cmd, 300)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "facekit failed ({:?}):\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        stderr(o)
    );
}

/// Exit code 2 and a message containing every one of `needles`.
fn refused(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "expected a clean error (exit 2), got {:?}:\n{err}", o.status);
    assert!(!err.contains("panicked"), "a panic is not a clean error:\n{err}");
    for n in needles {
        assert!(err.contains(n), "the message lacks {n:?}:\n{err}");
    }
}

/// `dst/<identity>/` with copies of the first `per` photos of each identity.
fn copy_photos(dst: &Path, identities: &[&str], per: usize) {
    for id in identities {
        let mut files: Vec<PathBuf> = fs::read_dir(lfw().join(id)).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        fs::create_dir_all(dst.join(id)).unwrap();
        for f in files.into_iter().take(per) {
            fs::copy(&f, dst.join(id).join(f.file_name().unwrap())).unwrap();
        }
    }
}

/// Plausible landmarks for a 250x250 LFW photo (the face is centred), one line per file under
/// `root`, insightface order: eyes, nose, mouth corners.
fn landmarks_for(root: &Path, out: &Path) {
    let mut text = String::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.unwrap();
        if e.file_type().is_dir() {
            continue;
        }
        let rel = e.path().strip_prefix(root).unwrap().to_str().unwrap().to_string();
        text.push_str(&format!("{rel} 105 115 145 115 125 140 110 165 140 165\n"));
    }
    fs::write(out, text).unwrap();
}

const FEW: &[&str] = &["Hans_Blix", "Gordon_Brown", "John_Ashcroft"];

/// Packs `root` from `landmarks` into `out` with small shards; extra args appended.
fn pack_landmarks(root: &Path, landmarks: &Path, out: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut args = vec![
        "pack",
        s(root),
        "-o",
        s(out),
        "--landmarks",
        s(landmarks),
        "--size",
        "64",
        "--shard-size",
        "16K",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    facekit_env(&args, env)
}

/// The files of `dir` whose names `keep` accepts, with their bytes, in name order.
fn files_in(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.file_name().unwrap().to_str().unwrap().to_string(), p))
        .filter(|(n, _)| keep(n))
        .map(|(n, p)| (n, fs::read(&p).unwrap()))
        .collect();
    v.sort();
    v
}

/// The shards of dataset `name` in `dir`, with their bytes.
fn shard_bytes(dir: &Path, name: &str) -> Vec<(String, Vec<u8>)> {
    files_in(dir, |f| f.starts_with(&format!("{name}-")) && f.ends_with(".shard"))
}

/// Every visible file of `dir` with its bytes (locks aside): what a user sees of the datasets there.
fn visible_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    files_in(dir, |n| !n.starts_with('.') && !n.ends_with(".lock"))
}

/// `t/name/` with copies of the first `per` photos of each of `identities` (and, if `broken`, a
/// file that is no photo among Hans Blix's), and its landmarks file `t/name.lm.txt`.
fn photos_with_landmarks(t: &Path, name: &str, identities: &[&str], per: usize, broken: bool) -> (PathBuf, PathBuf) {
    let root = t.join(name);
    copy_photos(&root, identities, per);
    if broken {
        fs::write(root.join("Hans_Blix/0_broken.jpg"), b"junk").unwrap();
    }
    let lm = root.with_extension("lm.txt");
    landmarks_for(&root, &lm);
    (root, lm)
}

/// The split of the packs whose datasets are compared shard by shard: a `.valid` set as well.
const SPLIT: [&str; 2] = ["--valid-fraction", "0.2"];

/// What the tests of resuming and replacing a pack only read, made once per test binary.
struct PackInputs {
    /// 2 identities, 3 photos each, and their landmarks file.
    small: (PathBuf, PathBuf),
    /// 3 identities, 6 photos each and one broken file, and their landmarks file.
    big: (PathBuf, PathBuf),
    /// The folder of `few` and `few.valid`: `big` packed from scratch with [`SPLIT`], what a
    /// resumed or replacing pack of `big` must equal.
    reference: PathBuf,
}

fn pack_inputs() -> &'static PackInputs {
    static INPUTS: std::sync::OnceLock<(tempfile::TempDir, PackInputs)> = std::sync::OnceLock::new();
    &INPUTS
        .get_or_init(|| {
            let t = tempfile::tempdir().unwrap();
            let small = photos_with_landmarks(t.path(), "small", &FEW[..2], 3, false);
            let big = photos_with_landmarks(t.path(), "big", FEW, 6, true);
            let reference = t.path().join("ref");
            ok(&pack_landmarks(&big.0, &big.1, &reference.join("few"), &SPLIT, &[]));
            (t, PackInputs { small, big, reference })
        })
        .1
}

// ---------------------------------------------------------------------------------------------
// Crashes and memory safety

#[test]
fn pack_and_resume_survive_a_header_truncated_jpeg_before_a_good_one() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path().join("r/Colin_Powell");
    fs::create_dir_all(&r).unwrap();
    let src = lfw().join("Colin_Powell");
    fs::write(r.join("Colin_Powell_0001.jpg"), &fs::read(src.join("Colin_Powell_0001.jpg")).unwrap()[..600]).unwrap();
    fs::copy(src.join("Colin_Powell_0002.jpg"), r.join("Colin_Powell_0002.jpg")).unwrap();
    let lm = t.path().join("lm.txt");
    landmarks_for(&t.path().join("r"), &lm);
    let out = t.path().join("o/x");
    let o = pack_landmarks(&t.path().join("r"), &lm, &out, &["--threads", "1"], &[]);
    ok(&o);
    let rejects = fs::read_to_string(t.path().join("o/x.rejects.tsv")).unwrap();
    assert!(rejects.contains("Colin_Powell_0001.jpg\ttruncated_or_corrupt"), "{rejects}");
    let ds = facekit_shard::Dataset::open_name(s(&out), None).unwrap();
    assert_eq!(ds.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Data loss

#[test]
fn a_crash_in_the_last_steps_of_a_pack_is_completed_by_resume_never_deleted() {
    let t = tempfile::tempdir().unwrap();
    let inputs = pack_inputs();
    let (root, lm) = &inputs.big;
    let reference = shard_bytes(&inputs.reference, "few");
    assert!(reference.len() >= 2);
    for step in ["checkpoint", "manifests", "rejects"] {
        let dir = t.path().join(step);
        let out = dir.join("few");
        let crashed = pack_landmarks(root, lm, &out, &SPLIT, &[("FACEKIT_TEST_PACK_CRASH_AFTER", step)]);
        assert_eq!(crashed.status.code(), Some(137), "{step}: {}", stderr(&crashed));
        assert!(!dir.join("few.report.json").exists());
        let resumed = pack_landmarks(root, lm, &out, &[SPLIT[0], SPLIT[1], "--resume"], &[]);
        ok(&resumed);
        assert!(stderr(&resumed).contains("is complete"), "{step}: {}", stderr(&resumed));
        assert_eq!(shard_bytes(&dir, "few"), reference, "{step}: the finished shards changed");
        assert!(!dir.join("few.progress.json").exists() && dir.join("few.report.json").exists());
        assert_eq!(
            fs::read(dir.join("few.rejects.tsv")).unwrap(),
            fs::read(inputs.reference.join("few.rejects.tsv")).unwrap()
        );
        ok(&facekit(&["verify-shard", s(&out), &format!("{}.valid", s(&out)), "--decode"]));
    }
}

#[test]
fn a_resume_never_deletes_a_finished_dataset_beside_an_unfinished_progress_file() {
    let t = tempfile::tempdir().unwrap();
    let (root, lm) = photos_with_landmarks(t.path(), "few", FEW, 6, false);
    let out = t.path().join("o/few");
    let stopped = pack_landmarks(&root, &lm, &out, &[], &[("FACEKIT_PACK_STOP_AFTER_SHARDS", "1")]);
    assert_eq!(stopped.status.code(), Some(130), "{}", stderr(&stopped));
    let progress = fs::read(t.path().join("o/few.progress.json")).unwrap();
    ok(&pack_landmarks(&root, &lm, &out, &["--resume"], &[]));
    // The progress file of the interrupted run comes back (a full disk once left it so).
    fs::write(t.path().join("o/few.progress.json"), progress).unwrap();
    let before = shard_bytes(&t.path().join("o"), "few");
    let manifest = fs::read(t.path().join("o/few.manifest.json")).unwrap();
    let o = pack_landmarks(&root, &lm, &out, &["--resume"], &[]);
    refused(&o, &["has a manifest", "nothing was changed"]);
    assert_eq!(shard_bytes(&t.path().join("o"), "few"), before);
    assert_eq!(fs::read(t.path().join("o/few.manifest.json")).unwrap(), manifest);
}

#[test]
fn a_second_writer_of_the_same_dataset_fails_at_once() {
    let t = tempfile::tempdir().unwrap();
    let (root, lm) = photos_with_landmarks(t.path(), "few", FEW, 2, false);
    let out = t.path().join("o/few");
    // Another process writing `o/few` holds its lock (taken here, as that process would).
    let held = facekit_io::lock::exclusive(&t.path().join("o/few.lock"), "dataset o/few").unwrap();
    let t0 = Instant::now();
    let o = pack_landmarks(&root, &lm, &out, &[], &[]);
    refused(&o, &["in use by another facekit process", "few.lock"]);
    assert!(t0.elapsed() < Duration::from_secs(30));
    assert!(!t.path().join("o/few.manifest.json").exists());
    drop(held);
    ok(&pack_landmarks(&root, &lm, &out, &[], &[]));
}

#[test]
fn resume_refuses_an_input_whose_file_moved_to_another_identity() {
    let t = tempfile::tempdir().unwrap();
    let (root, lm) = photos_with_landmarks(t.path(), "few", FEW, 6, false);
    let out = t.path().join("o/few");
    let stopped = pack_landmarks(&root, &lm, &out, &[], &[("FACEKIT_PACK_STOP_AFTER_SHARDS", "1")]);
    assert_eq!(stopped.status.code(), Some(130), "{}", stderr(&stopped));
    // Same file count: one photo of Hans Blix now filed under John Ashcroft.
    let moved = fs::read_dir(root.join("Hans_Blix")).unwrap().map(|e| e.unwrap().path()).max().unwrap();
    fs::rename(&moved, root.join("John_Ashcroft").join(moved.file_name().unwrap())).unwrap();
    landmarks_for(&root, &lm);
    let o = pack_landmarks(&root, &lm, &out, &["--resume"], &[]);
    refused(&o, &["the input files"]);
}

#[test]
fn resume_refuses_a_damaged_progress_file() {
    let t = tempfile::tempdir().unwrap();
    let (root, lm) = photos_with_landmarks(t.path(), "few", FEW, 6, false);
    let out = t.path().join("o/few");
    let stopped = pack_landmarks(&root, &lm, &out, &[], &[("FACEKIT_PACK_STOP_AFTER_SHARDS", "1")]);
    assert_eq!(stopped.status.code(), Some(130));
    let p = t.path().join("o/few.progress.json");
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
    v["consumed"] = 99_999_999u64.into();
    fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
    refused(&pack_landmarks(&root, &lm, &out, &["--resume"], &[]), &["cannot be trusted", "consumed"]);
}

#[test]
fn landmarks_slightly_outside_the_photo_are_packed_far_outside_rejected() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("r");
    copy_photos(&root, &["Hans_Blix"], 3);
    let names: Vec<String> = {
        let mut v: Vec<String> = fs::read_dir(root.join("Hans_Blix"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    let lm = t.path().join("lm.txt");
    fs::write(
        &lm,
        format!(
            // A face at the left border (a point at x = -0.8, as real landmark lists have), a face
            // far outside the photo, and collapsed points.
            "Hans_Blix/{} -0.8 150 40 150 20 170 5 190 35 190\nHans_Blix/{} 900 900 950 900 925 950 910 980 940 980\nHans_Blix/{} 100 100 100 100 100 100 100 100 100 100\n",
            names[0], names[1], names[2]
        ),
    )
    .unwrap();
    let out = t.path().join("o/x");
    ok(&pack_landmarks(&root, &lm, &out, &[], &[]));
    let rejects = fs::read_to_string(t.path().join("o/x.rejects.tsv")).unwrap();
    assert!(!rejects.contains(&names[0]), "{rejects}");
    assert!(rejects.contains(&format!("{}\tbad_landmarks", names[1])), "{rejects}");
    assert!(rejects.contains(&format!("{}\tbad_landmarks", names[2])), "{rejects}");
    let ds = facekit_shard::Dataset::open_name(s(&out), None).unwrap();
    let chip = facekit_data::decode_record(&ds.record(0).unwrap(), 64).unwrap();
    // Where the chip reaches past the photo's left edge it is black, as insightface fills it.
    assert!(chip.pixels().filter(|p| p.0 == [0, 0, 0]).count() > 64, "no black fill at the border");
}

#[test]
fn pack_refuses_an_output_inside_its_input() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("small");
    copy_photos(&root, &["Hans_Blix"], 2);
    let lm = t.path().join("lm.txt");
    landmarks_for(&root, &lm);
    let o = pack_landmarks(&root, &lm, &root.join("Hans_Blix/inside"), &[], &[]);
    refused(&o, &["is inside input folder"]);
    assert_eq!(fs::read_dir(root.join("Hans_Blix")).unwrap().count(), 2, "nothing written into the input");
}

#[test]
fn pack_over_a_finished_dataset_needs_overwrite_and_keeps_it_until_the_new_one_is_complete() {
    let t = tempfile::tempdir().unwrap();
    let PackInputs { small: (small, small_lm), big: (big, big_lm), reference } = pack_inputs();
    let split = SPLIT;
    let out = t.path().join("o/few");
    ok(&pack_landmarks(small, small_lm, &out, &split, &[]));
    let old = visible_files(&t.path().join("o"));

    refused(&pack_landmarks(big, big_lm, &out, &split, &[]), &["already exists", "--overwrite"]);
    assert_eq!(visible_files(&t.path().join("o")), old, "a pack without --overwrite changed the dataset");

    // Stopped after its first shard, the replacement has not touched the old dataset.
    let stopped = pack_landmarks(
        big,
        big_lm,
        &out,
        &["--overwrite", split[0], split[1]],
        &[("FACEKIT_PACK_STOP_AFTER_SHARDS", "1")],
    );
    assert_eq!(stopped.status.code(), Some(130), "{}", stderr(&stopped));
    assert_eq!(visible_files(&t.path().join("o")), old, "an unfinished replacement changed the dataset");
    ok(&facekit(&["verify-shard", s(&out), &format!("{}.valid", s(&out)), "--decode"]));

    // --resume continues the replacement, which then equals a pack of the new input from scratch.
    ok(&pack_landmarks(big, big_lm, &out, &["--resume", split[0], split[1]], &[]));
    for name in ["few", "few.valid"] {
        assert_eq!(shard_bytes(&t.path().join("o"), name), shard_bytes(reference, name), "{name}");
    }
    assert_eq!(
        fs::read(t.path().join("o/few.rejects.tsv")).unwrap(),
        fs::read(reference.join("few.rejects.tsv")).unwrap()
    );
    assert!(!t.path().join("o/.few.staging").exists() && !t.path().join("o/few.progress.json").exists());
    ok(&facekit(&["verify-shard", s(&out), &format!("{}.valid", s(&out)), "--decode"]));
}

#[test]
fn a_replacement_that_packs_nothing_leaves_the_old_dataset() {
    let t = tempfile::tempdir().unwrap();
    let (small, small_lm) = &pack_inputs().small;
    let out = t.path().join("o/few");
    ok(&pack_landmarks(small, small_lm, &out, &[], &[]));
    let old = visible_files(&t.path().join("o"));
    let junk = t.path().join("junk/Nobody");
    fs::create_dir_all(&junk).unwrap();
    fs::write(junk.join("a.jpg"), b"not a photo").unwrap();
    let lm = t.path().join("junk.lm.txt");
    landmarks_for(&t.path().join("junk"), &lm);
    let o = pack_landmarks(&t.path().join("junk"), &lm, &out, &["--overwrite"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("left as it was"), "{}", stderr(&o));
    assert_eq!(visible_files(&t.path().join("o")), old);
    ok(&facekit(&["verify-shard", s(&out)]));
}

#[test]
fn a_crash_while_a_replacement_is_put_in_place_is_finished_by_resume() {
    let t = tempfile::tempdir().unwrap();
    let PackInputs { small: (small, small_lm), big: (big, big_lm), reference } = pack_inputs();
    let split = SPLIT;
    let out = t.path().join("o/few");
    ok(&pack_landmarks(small, small_lm, &out, &split, &[]));
    let crashed = pack_landmarks(
        big,
        big_lm,
        &out,
        &["--overwrite", split[0], split[1]],
        &[("FACEKIT_TEST_PACK_CRASH_AFTER", "replacing")],
    );
    assert_eq!(crashed.status.code(), Some(137), "{}", stderr(&crashed));
    // Half put in place: no other run may touch it, with or without --overwrite.
    for extra in [&[][..], &["--overwrite"][..]] {
        let args: Vec<&str> = split.iter().chain(extra).copied().collect();
        refused(&pack_landmarks(big, big_lm, &out, &args, &[]), &["stopped while putting it in place", "--resume"]);
    }
    ok(&pack_landmarks(big, big_lm, &out, &["--resume", split[0], split[1]], &[]));
    for name in ["few", "few.valid"] {
        assert_eq!(shard_bytes(&t.path().join("o"), name), shard_bytes(reference, name), "{name}");
    }
    assert!(!t.path().join("o/.few.staging").exists());
    ok(&facekit(&["verify-shard", s(&out), &format!("{}.valid", s(&out)), "--decode"]));
}

#[test]
fn resume_never_replaces_a_finished_dataset() {
    let t = tempfile::tempdir().unwrap();
    let PackInputs { small: (small, small_lm), big: (big, big_lm), .. } = pack_inputs();
    let out = t.path().join("o/few");
    ok(&pack_landmarks(small, small_lm, &out, &[], &[]));
    let old = visible_files(&t.path().join("o"));
    for extra in [&["--resume"][..], &["--resume", "--overwrite"][..]] {
        refused(&pack_landmarks(big, big_lm, &out, extra, &[]), &["nothing to resume", "never replaces"]);
    }
    assert_eq!(visible_files(&t.path().join("o")), old);
}

#[test]
fn an_output_inside_the_packs_input_or_made_of_its_landmarks_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let (small, small_lm) = &pack_inputs().small;
    let out = t.path().join("o/few");
    ok(&pack_landmarks(small, small_lm, &out, &[], &[]));
    // The landmarks file is the rejects list of the dataset the pack would replace.
    let lm = t.path().join("o/few.rejects.tsv");
    let before = visible_files(&t.path().join("o"));
    refused(&pack_landmarks(small, &lm, &out, &["--overwrite"], &[]), &["the command's input", "few.rejects.tsv"]);
    assert_eq!(visible_files(&t.path().join("o")), before);
}

#[test]
fn an_error_names_its_cause_once() {
    let t = tempfile::tempdir().unwrap();
    let (small, _) = &pack_inputs().small;
    let o = pack_landmarks(small, &t.path().join("no/such/lm.txt"), &t.path().join("o/x"), &[], &[]);
    refused(&o, &["no/such/lm.txt"]);
    assert_eq!(stderr(&o).matches("No such file or directory").count(), 1, "{}", stderr(&o));
}

#[test]
fn every_command_writes_to_dash_o_and_still_takes_its_old_output_flag() {
    let mut commands = vec![vec!["pack"], vec!["import", "rec"], vec!["export", "rec"]];
    if cfg!(feature = "torch") {
        commands.extend([vec!["export"], vec!["embed"], vec!["eval", "verify"], vec!["eval", "make-bin"]]);
    }
    for c in &commands {
        let mut args = c.clone();
        args.push("--help");
        let o = facekit(&args);
        ok(&o);
        let help = String::from_utf8_lossy(&o.stdout);
        assert!(help.contains("-o, --output"), "facekit {c:?} --help:\n{help}");
        assert!(!help.contains("--out "), "the old spelling is shown: facekit {c:?} --help:\n{help}");
    }
    // `--out`, as scripts wrote it, still works.
    let t = tempfile::tempdir().unwrap();
    fs::create_dir_all(t.path().join("training")).unwrap();
    crate::raw_dataset(&t.path().join("training/d"), 2);
    let o = facekit(&["export", "rec", s(&t.path().join("training/d")), "--out", s(&t.path().join("exp")), "--quiet"]);
    ok(&o);
    assert!(t.path().join("exp/train.rec").is_file());
}

// ---------------------------------------------------------------------------------------------
// Confinement and hangs

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

#[test]
fn a_fifo_among_the_photos_is_listed_not_waited_on() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("r");
    copy_photos(&root, &["Hans_Blix"], 2);
    mkfifo(&root.join("Hans_Blix/fifo.jpg"));
    let lm = t.path().join("lm.txt");
    landmarks_for(&root, &lm);
    let out = t.path().join("o/x");
    ok(&pack_landmarks(&root, &lm, &out, &[], &[]));
    let rejects = fs::read_to_string(t.path().join("o/x.rejects.tsv")).unwrap();
    assert!(rejects.contains("fifo.jpg\tnot_a_regular_file"), "{rejects}");
}

/// A small valid dataset `dir/name` (3 classes, 6 records of 48x48 JPEG) written by the library.
fn tiny_dataset(dir: &Path, name: &str) -> PathBuf {
    let storage = Storage { side: 48, chips: Chips::Jpeg(90), shard_bytes: 8 << 10, source: "src" };
    let (mut records, mut labels) = (Vec::new(), LabelMap::default());
    for (c, id) in FEW.iter().enumerate() {
        labels.entries.push(LabelEntry { class_id: c as u32, source: "src".into(), identity: id.to_string() });
        for k in 1..=2 {
            let file = format!("{id}_{k:04}.jpg");
            let l = Labels { class_id: Some(c as u32), source: 0, gender: None, age: None };
            records.push(storage.record(&lfw().join(id).join(&file), None, l, format!("src/{file}")));
        }
    }
    let base = dir.join(name);
    storage.write_set(&base, &records, FEW.len() as u32, &labels);
    base
}

fn edit_manifest(base: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = PathBuf::from(format!("{}.manifest.json", base.display()));
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
    f(&mut v);
    fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// `verify-shard` exits 1 (the data is bad) and names `needle`.
fn verify_finds(base: &Path, needle: &str) {
    let o = facekit(&["verify-shard", s(base)]);
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert_eq!(o.status.code(), Some(1), "expected 'corrupt' (1):\n{text}");
    assert!(text.contains(needle), "no {needle:?} in:\n{text}");
}

#[test]
fn manifest_paths_outside_the_dataset_folder_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("training");
    fs::create_dir_all(&dir).unwrap();
    let base = tiny_dataset(&dir, "ds");
    ok(&facekit(&["verify-shard", s(&base)]));
    fs::copy(dir.join("ds-00000.shard"), t.path().join("outside.shard")).unwrap();
    let outside = t.path().join("outside.shard").display().to_string();
    for (k, bad) in ["../outside.shard", "/dev/zero", outside.as_str()].into_iter().enumerate() {
        let other = tiny_dataset(&t.path().join(format!("case{k}")), "ds");
        edit_manifest(&other, |v| v["shards"][0]["file"] = bad.into());
        verify_finds(&other, "is not a .shard file name in the manifest's folder");
        let e = format!("{:#}", facekit_shard::Dataset::open_name(s(&other), None).err().unwrap());
        assert!(e.contains("not valid"), "{bad}: {e}");
    }
    edit_manifest(&base, |v| v["label_map"] = "../../../../etc/passwd".into());
    verify_finds(&base, "label_map");
    // A link inside the folder that leads out is refused as well.
    edit_manifest(&base, |v| v["label_map"] = "ds.labels.tsv".into());
    fs::rename(dir.join("ds-00000.shard"), t.path().join("moved.shard")).unwrap();
    std::os::unix::fs::symlink(t.path().join("moved.shard"), dir.join("ds-00000.shard")).unwrap();
    let e = format!("{:#}", facekit_shard::Dataset::open_name(s(&base), None).err().unwrap());
    assert!(e.contains("leads outside"), "{e}");
}

#[test]
fn a_fifo_as_label_map_or_shard_is_reported_not_waited_on() {
    let t = tempfile::tempdir().unwrap();
    let base = tiny_dataset(t.path(), "ds");
    fs::remove_file(t.path().join("ds.labels.tsv")).unwrap();
    mkfifo(&t.path().join("ds.labels.tsv"));
    verify_finds(&base, "FIFO");
    let e = format!("{:#}", facekit_shard::Dataset::open_name(s(&base), None).err().unwrap());
    assert!(e.contains("FIFO"), "{e}");
    let base2 = tiny_dataset(&t.path().join("b"), "ds");
    fs::remove_file(t.path().join("b/ds-00000.shard")).unwrap();
    mkfifo(&t.path().join("b/ds-00000.shard"));
    verify_finds(&base2, "FIFO");
    let o = facekit(&["verify-shard", s(&t.path().join("b/ds-00000.shard"))]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn verify_shard_finds_duplicate_shards_bad_label_maps_and_wrong_record_sizes() {
    let t = tempfile::tempdir().unwrap();
    let base = tiny_dataset(t.path(), "ds");
    // The same shard twice (counts adjusted so that only the duplicate is wrong).
    edit_manifest(&base, |v| {
        let first = v["shards"][0].clone();
        let n = first["records"].as_u64().unwrap();
        v["shards"].as_array_mut().unwrap().push(first);
        v["records"] = (v["records"].as_u64().unwrap() + n).into();
    });
    verify_finds(&base, "listed twice");
    let base = tiny_dataset(&t.path().join("b"), "ds");
    for (text, needle) in [
        ("class_id\tsource\tidentity\n0\tsrc\ta\n0\tsrc\tb\n2\tsrc\tc\n", "class id 0 where 1 was expected"),
        ("class_id\tsource\tidentity\n0\tsrc\ta\n2\tsrc\tb\n1\tsrc\tc\n", "class id 2 where 1 was expected"),
    ] {
        fs::write(t.path().join("b/ds.labels.tsv"), text).unwrap();
        verify_finds(&base, needle);
    }
    let base = tiny_dataset(&t.path().join("c"), "ds");
    edit_manifest(&base, |v| v["encoding"]["width"] = 112.into());
    verify_finds(&base, "the manifest says every record is 112x48");
}

#[test]
fn a_record_claiming_a_huge_image_is_refused_before_any_allocation() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("big");
    let mut w = DatasetWriter::create(DatasetPaths::new(&base), 1 << 20).unwrap();
    for k in 0..2 {
        // 4000 x 4000 raw RGB would be 48 MB for a dataset of 48 x 48 chips; the payload is 12 bytes.
        w.push(&Record {
            labels: Labels { class_id: Some(0), source: 0, gender: None, age: None },
            encoding: Encoding::RawZstd,
            width: 4000,
            height: 4000,
            origin_sha256: [0; 16],
            path: format!("x/{k}.png"),
            data: vec![0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0],
        })
        .unwrap();
    }
    let labels = LabelMap { entries: vec![LabelEntry { class_id: 0, source: "x".into(), identity: "a".into() }] };
    let enc = EncodingInfo { format: Encoding::RawZstd, quality: None, chroma: None, width: 48, height: 48 };
    w.finish(
        Manifest::new(
            1,
            vec![SourceInfo { id: 0, name: "x".into(), class_offset: 0, classes: 1, records: 2 }],
            None,
            enc,
        ),
        &labels,
    )
    .unwrap();
    let ds = facekit_shard::Dataset::open_name(s(&base), None).unwrap();
    let e = format!("{:#}", ds.record(0).unwrap_err());
    assert!(e.contains("a 4000x4000 image") && e.contains("48x48"), "{e}");
    verify_finds(&base, "4000x4000");
    // Whatever a header claims, no record decodes to more than the 64 MiB payload limit: a
    // 60000 x 60000 claim (10 GB) is refused before any buffer exists.
    let t0 = Instant::now();
    let e = format!(
        "{:#}",
        facekit_data::codec::decode(Encoding::RawZstd, &[0x28, 0xb5, 0x2f, 0xfd, 0, 0], 60_000, 60_000).unwrap_err()
    );
    assert!(e.contains("larger than a record may hold"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(1));
    let huge = facekit_shard::reader::RecordView {
        header: facekit_shard::format::RecordHeader {
            width: 60_000,
            height: 60_000,
            ..ds.shards()[0].record(0).unwrap().header
        },
        path: b"x",
        payload: &[0; 12],
    };
    assert!(
        format!("{:#}", facekit_data::decode_record(&huge, 48).unwrap_err()).contains("larger than a record may hold")
    );
}

// ---------------------------------------------------------------------------------------------
// Docs that say what the code does

#[test]
fn format_md_names_the_alignment_values_pack_writes() {
    let doc = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/FORMAT.md")).unwrap();
    for v in ["dlib-get-face-chip", "arcface5-similarity-warp", "dlib5", "arcface5", "relative to the manifest"] {
        assert!(doc.contains(v), "docs/FORMAT.md does not mention {v}");
    }
    for v in ["similarity-5pt", "dlib-5pt", "arcface-5pt"] {
        assert!(!doc.contains(v), "docs/FORMAT.md still names {v}, which facekit never writes");
    }
}

// ---------------------------------------------------------------------------------------------
// Training (feature `train`)

#[cfg(feature = "torch")]
mod training {
    use super::*;
    use facekit_train::run::paths::{RunPaths, LAST, MODEL_FILE, STATE_FILE};

    /// `facekit train` on the tiny network at 48 px, data in `data_dir`, runs in `models`.
    pub fn train(data_dir: &Path, models: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = crate::facekit();
        cmd.arg("train")
            .args(args)
            .args(["--arch", "tiny", "--image-size", "48", "--batch-size", "4", "--workers", "1", "--device", "cpu"])
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--model-dir")
            .arg(models);
        for (k, v) in env {
            cmd.env(k, v);
        }
        run_within(cmd, 300)
    }

    /// Every file under `dir` with its bytes.
    fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut v: Vec<(PathBuf, Vec<u8>)> = walkdir::WalkDir::new(dir)
            .into_iter()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().is_file())
            .map(|e| (e.path().to_path_buf(), fs::read(e.path()).unwrap()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn commands_refuse_to_write_into_a_run_folder_they_did_not_create() {
        let t = tempfile::tempdir().unwrap();
        let run = t.path().join("Model/r");
        let paths = RunPaths::new(&run);
        fs::create_dir_all(paths.checkpoint(LAST)).unwrap();
        fs::write(paths.config(), b"{}").unwrap();
        fs::write(paths.net(), b"{}").unwrap();
        fs::write(paths.lock(), b"").unwrap();
        let photos = t.path().join("photos");
        copy_photos(&photos, &FEW[..1], 1);
        fs::create_dir_all(t.path().join("training")).unwrap();
        let data = t.path().join("training/d");
        crate::raw_dataset(&data, 2);
        let before = tree(&run);
        let (r, sub) = (s(&run).to_string(), |x: &str| format!("{}/{x}", s(&run)));
        let cases: Vec<Vec<String>> = vec![
            vec!["export".into(), "--model".into(), r.clone(), "-o".into(), r.clone()],
            vec!["export".into(), "--model".into(), r.clone(), "-o".into(), sub("exp")],
            vec![
                "embed".into(),
                "--model".into(),
                r.clone(),
                "--images".into(),
                s(&photos).into(),
                "-o".into(),
                sub("emb"),
            ],
            vec!["eval".into(), "verify".into(), "--embeddings".into(), s(&photos).into(), "-o".into(), r.clone()],
            vec![
                "eval".into(),
                "make-bin".into(),
                "--dataset".into(),
                s(&data).into(),
                "--draw-pairs".into(),
                "1".into(),
                "-o".into(),
                sub("x.bin"),
            ],
            vec!["export".into(), "rec".into(), s(&data).into(), "-o".into(), sub("rec")],
            vec!["import".into(), "rec".into(), s(&photos).into(), "-o".into(), sub("ds")],
        ];
        for args in &cases {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            refused(&facekit(&args), &["belongs to run folder", "which this command did not create"]);
        }
        let o = train(t.path(), &run, &["FR", "--train-sets", "d", "--run-name", "inner"], &[]);
        refused(&o, &["belongs to run folder"]);
        let lm = t.path().join("lm.txt");
        landmarks_for(&photos, &lm);
        refused(&pack_landmarks(&photos, &lm, &run.join("ds"), &[], &[]), &["belongs to run folder"]);
        assert_eq!(tree(&run), before, "a refused command changed the run folder");
    }

    #[test]
    fn train_help_shows_defaults_it_accepts_and_the_arch_aliases() {
        let o = facekit(&["train", "-h"]);
        ok(&o);
        let help = String::from_utf8_lossy(&o.stdout).into_owned();
        let betas = help
            .split("--adam-betas <B1,B2>")
            .nth(1)
            .and_then(|r| r.split("[default: ").nth(1))
            .and_then(|r| r.split(']').next())
            .unwrap();
        assert_eq!(betas, "0.9,0.999", "{help}");
        let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.contains("r50 for iresnet50") && flat.contains("Network architecture, case-insensitive"),
            "{help}"
        );
        // What -h shows is accepted, and so is an architecture in capitals: the run goes on to
        // look for its (missing) data.
        let t = tempfile::tempdir().unwrap();
        let o = train(
            t.path(),
            &t.path().join("Model"),
            &["FR", "--train-sets", "nope", "--optimizer", "adamw", "--adam-betas", betas],
            &[],
        );
        refused(&o, &["nope"]);
        let mut cmd = crate::facekit();
        cmd.args(["train", "FR", "--train-sets", "nope", "--arch", "R50", "--device", "cpu", "--data-dir"])
            .arg(t.path())
            .arg("--model-dir")
            .arg(t.path().join("Model"));
        refused(&run_within(cmd, 300), &["nope"]);
    }

    #[test]
    fn overwrite_with_a_run_name_that_climbs_out_deletes_nothing() {
        let t = tempfile::tempdir().unwrap();
        let sb = t.path().join("sb");
        fs::create_dir_all(sb.join("Model")).unwrap();
        fs::write(sb.join("keep.txt"), b"precious").unwrap();
        for name in ["..", "../..", "/tmp", "a/b", ".hidden"] {
            let o = train(
                t.path(),
                &sb.join("Model"),
                &["FR", "--train-sets", "nope", "--run-name", name, "--overwrite"],
                &[],
            );
            refused(&o, &["--run-name"]);
        }
        assert_eq!(fs::read(sb.join("keep.txt")).unwrap(), b"precious");
        // A real run is not deleted by --overwrite when the new run's data cannot be opened.
        let run = RunPaths::new(sb.join("Model/old")).checkpoint(LAST);
        fs::create_dir_all(&run).unwrap();
        fs::write(run.join(STATE_FILE), b"{}").unwrap();
        let o = train(
            t.path(),
            &sb.join("Model"),
            &["FR", "--train-sets", "nope", "--run-name", "old", "--overwrite"],
            &[],
        );
        refused(&o, &["nope"]);
        assert!(run.join(STATE_FILE).is_file(), "the old run was deleted before the new one was checked");
        // And a failed start leaves no folder behind.
        let o = train(t.path(), &sb.join("Model"), &["FR", "--train-sets", "nope", "--run-name", "new"], &[]);
        refused(&o, &["nope"]);
        assert!(!sb.join("Model/new").exists());
    }

    #[test]
    fn a_class_id_beyond_the_manifest_is_a_clean_error() {
        let t = tempfile::tempdir().unwrap();
        let base = tiny_dataset(t.path(), "ds");
        edit_manifest(&base, |v| {
            v["classes"] = 2.into();
            v["sources"][0]["classes"] = 2.into();
        });
        fs::write(t.path().join("ds.labels.tsv"), "class_id\tsource\tidentity\n0\tsrc\ta\n1\tsrc\tb\n").unwrap();
        let o = train(t.path(), &t.path().join("Model"), &["FR", "--train-sets", "ds", "--max-steps", "2"], &[]);
        refused(&o, &["class id 2", "not below the manifest's 2 classes"]);
    }

    #[test]
    fn an_enormous_class_count_is_refused_before_any_allocation() {
        let t = tempfile::tempdir().unwrap();
        let base = tiny_dataset(t.path(), "ds");
        edit_manifest(&base, |v| v["classes"] = 4_000_000_000u64.into());
        let o = train(t.path(), &t.path().join("Model"), &["FR", "--train-sets", "ds", "--max-steps", "2"], &[]);
        refused(&o, &["label map", "4000000000"]);
        // A label map as long as the count, but a head too large for this machine's memory.
        let n = 300_000u32;
        let mut text = String::from("class_id\tsource\tidentity\n");
        for c in 0..n {
            text.push_str(&format!("{c}\tsrc\tp{c}\n"));
        }
        fs::write(t.path().join("ds.labels.tsv"), text).unwrap();
        edit_manifest(&base, |v| v["classes"] = n.into());
        let o = train(
            t.path(),
            &t.path().join("Model"),
            &["FR", "--train-sets", "ds", "--max-steps", "2", "--embedding-size", "65536"],
            &[],
        );
        refused(&o, &["ArcFace head for 300000 classes", "GiB"]);
    }

    #[test]
    fn out_of_range_and_non_finite_training_numbers_are_refused() {
        let t = tempfile::tempdir().unwrap();
        tiny_dataset(t.path(), "ds");
        for (flag, value, needle) in [
            ("--workers", "5000", "--workers"),
            ("--momentum", "NaN", "--momentum"),
            ("--momentum", "1.5", "--momentum"),
            ("--weight-decay=-1", "", "--weight-decay"),
            ("--lr", "NaN", "--lr"),
            ("--lr", "inf", "--lr"),
            ("--arcface-margin", "NaN", "--arcface-margin"),
            ("--lr-shrink", "0", "--lr-shrink"),
            ("--dropout", "NaN", "--dropout"),
        ] {
            let mut args = vec!["FR", "--train-sets", "ds", "--max-steps", "2", flag];
            if !value.is_empty() {
                args.push(value);
            }
            let o = train(t.path(), &t.path().join("Model"), &args, &[]);
            refused(&o, &[needle]);
        }
        assert!(!t.path().join("Model").exists() || fs::read_dir(t.path().join("Model")).unwrap().count() == 0);
    }

    #[test]
    fn gender_training_on_data_without_gender_labels_is_refused() {
        let t = tempfile::tempdir().unwrap();
        tiny_dataset(t.path(), "ds");
        let o = train(
            t.path(),
            &t.path().join("Model"),
            &["Gender", "--train-sets", "ds", "--max-steps", "3", "--run-name", "g"],
            &[],
        );
        refused(&o, &["gender label"]);
    }

    /// A real divergence, without fault injection (the trainer's own tests inject NaN losses
    /// through the library): weights whose BN statistics overflow every activation in eval mode
    /// make validation's embeddings infinite at step 1, before the first checkpoint.
    #[test]
    fn a_divergence_before_any_checkpoint_names_none() {
        use crate::train_loop::{output_within, overflowing_weights, train_command};
        let models = tempfile::tempdir().unwrap();
        let mut cmd = train_command(
            models.path(),
            &["FR", "--train-sets", "lfw", "--valid-sets", "lfw.valid", "--max-steps", "4", "--valid-every", "1"],
        );
        cmd.args(["--checkpoint-every", "3", "--run-name", "nan", "--init"]).arg(overflowing_weights());
        let o = output_within(cmd, 300);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains("at step 1"), "{}", stderr(&o));
        assert!(stderr(&o).contains("No checkpoint had been written yet"), "{}", stderr(&o));
        assert!(!RunPaths::new(models.path().join("nan")).checkpoint(LAST).exists());
    }

    #[test]
    fn stale_checkpoint_temporaries_are_cleared_and_resume_needs_no_train_sets() {
        let t = tempfile::tempdir().unwrap();
        tiny_dataset(t.path(), "ds");
        let models = t.path().join("Model");
        ok(&train(t.path(), &models, &["FR", "--train-sets", "ds", "--max-steps", "2", "--run-name", "r"], &[]));
        let summary = ok_stdout(&train(
            t.path(),
            &models,
            &["FR", "--train-sets", "ds", "--max-steps", "1", "--run-name", "r2"],
            &[],
        ));
        assert!(
            !summary.contains("{last,best}") && summary.contains("checkpoints/last/model.safetensors"),
            "{summary}"
        );
        // What a full disk left: temporaries of this and of another (reused, dead) PID.
        let ck = RunPaths::new(models.join("r")).checkpoints();
        for tmp in [".tmp-1-last", ".tmp-4000000-best"] {
            fs::create_dir_all(ck.join(tmp)).unwrap();
            fs::write(ck.join(tmp).join(MODEL_FILE), vec![0u8; 1000]).unwrap();
        }
        fs::write(models.join("r/.tmp-1-config.json"), b"{").unwrap();
        // The README's example: no --train-sets on resume.
        let o = train(t.path(), &models, &["FR", "--resume", "r", "--max-steps", "3"], &[]);
        ok(&o);
        assert!(stderr(&o).contains("removed 3 temporary file(s)"), "{}", stderr(&o));
        assert!(fs::read_dir(&ck).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().starts_with('.')));
        // A run without validation has no `best`: embedding it uses `last`, and says so.
        let o = crate::facekit()
            .args(["embed", "--model", s(&models.join("r")), "--dataset", "ds", "--device", "cpu", "-o"])
            .arg(t.path().join("emb"))
            .arg("--data-dir")
            .arg(t.path())
            .output()
            .unwrap();
        ok(&o);
        assert!(stderr(&o).contains("using `last`"), "{}", stderr(&o));
    }

    fn ok_stdout(o: &Output) -> String {
        ok(o);
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    #[test]
    fn resume_refuses_a_repacked_dataset_unless_allowed() {
        let t = tempfile::tempdir().unwrap();
        tiny_dataset(t.path(), "ds");
        let models = t.path().join("Model");
        ok(&train(t.path(), &models, &["FR", "--train-sets", "ds", "--max-steps", "2", "--run-name", "r"], &[]));
        // Repacked: same name, other content.
        fs::remove_file(t.path().join("ds.manifest.json")).unwrap();
        let base = tiny_dataset(t.path(), "ds");
        edit_manifest(&base, |v| v["tool_version"] = "repacked".into());
        let o = train(t.path(), &models, &["FR", "--resume", "r", "--max-steps", "3"], &[]);
        refused(&o, &["changed since it started", "--allow-changed-data"]);
        ok(&train(t.path(), &models, &["FR", "--resume", "r", "--max-steps", "3", "--allow-changed-data"], &[]));
    }

    #[test]
    fn sigterm_ends_training_after_saving_last_with_code_143_and_openmp_threads_sleep() {
        let t = tempfile::tempdir().unwrap();
        tiny_dataset(t.path(), "ds");
        let models = t.path().join("Model");
        let mut cmd = crate::facekit();
        cmd.args([
            "train",
            "FR",
            "--train-sets",
            "ds",
            "--max-steps",
            "100000",
            "--arch",
            "tiny",
            "--image-size",
            "48",
        ])
        .args([
            "--batch-size",
            "4",
            "--workers",
            "1",
            "--device",
            "cpu",
            "--run-name",
            "term",
            "--checkpoint-every",
            "0",
        ])
        .arg("--data-dir")
        .arg(t.path())
        .arg("--model-dir")
        .arg(&models)
        .env_remove("OMP_WAIT_POLICY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let child = cmd.spawn().unwrap();
        let tsv = RunPaths::new(models.join("term")).losses();
        let t0 = Instant::now();
        while fs::read_to_string(&tsv).map(|t| t.lines().count()).unwrap_or(0) < 4 {
            assert!(t0.elapsed() < Duration::from_secs(120), "no step logged in 2 minutes");
            std::thread::sleep(Duration::from_millis(50));
        }
        // libtorch's OpenMP pool was started with idle threads sleeping, not spinning.
        let environ = fs::read(format!("/proc/{}/environ", child.id())).unwrap();
        assert!(environ.split(|&b| b == 0).any(|v| v == b"OMP_WAIT_POLICY=PASSIVE"), "OMP_WAIT_POLICY is not PASSIVE");
        assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("stopped by SIGTERM"));
        let logged = fs::read_to_string(&tsv).unwrap().lines().count() as u64 - 1;
        let state: serde_json::Value = serde_json::from_slice(
            &fs::read(RunPaths::new(models.join("term")).checkpoint(LAST).join(STATE_FILE)).unwrap(),
        )
        .unwrap();
        assert_eq!(state["step"], logged, "`last` holds every logged step");
    }
}

#[test]
fn sigterm_leaves_a_pack_resumable_with_code_143() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("many");
    // Enough photos that the pack is still running when the signal comes.
    for id in ["Colin_Powell", "Tony_Blair", "Donald_Rumsfeld"].iter().flat_map(|id| (0..6).map(move |k| (id, k))) {
        let (id, k) = id;
        let dst = root.join(format!("{id}_{k}"));
        fs::create_dir_all(&dst).unwrap();
        for e in fs::read_dir(lfw().join(*id)).unwrap() {
            let p = e.unwrap().path();
            std::os::unix::fs::symlink(&p, dst.join(p.file_name().unwrap())).unwrap();
        }
    }
    let lm = t.path().join("lm.txt");
    landmarks_for(&root, &lm);
    let out = t.path().join("o/many");
    let pack = |extra: &[&'static str]| {
        let args = ["pack", s(&root), "-o", s(&out), "--landmarks", s(&lm), "--size", "224", "--shard-size", "64K"];
        [&args[..], &["--quiet"], extra].concat()
    };
    let mut cmd = crate::facekit();
    cmd.args(pack(&["--threads", "1"])).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let progress = t.path().join("o/many.progress.json");
    let t0 = Instant::now();
    while !progress.exists() {
        assert!(t0.elapsed() < Duration::from_secs(120), "no checkpoint in 2 minutes");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(143), "{}", stderr(&o));
    assert!(stderr(&o).contains("stopped by SIGTERM"), "{}", stderr(&o));
    assert!(!t.path().join("o/many.manifest.json").exists());
    let resumed = facekit(&pack(&["--resume"]));
    ok(&resumed);
    assert!(stderr(&resumed).contains("resuming after"), "{}", stderr(&resumed));
    ok(&facekit(&["verify-shard", s(&out)]));
}

#[cfg(feature = "torch")]
#[test]
fn eval_verify_with_zero_pairs_folds_or_batch_is_a_clean_error() {
    for (args, needle) in [
        (&["eval", "verify", "--embeddings", "x", "--max-pairs", "0"][..], "--max-pairs"),
        (&["eval", "verify", "--embeddings", "x", "--folds", "1"][..], "--folds"),
        (&["embed", "--model", "x", "--dataset", "y", "-o", "z", "--batch-size", "0"][..], "--batch-size"),
    ] {
        refused(&facekit(args), &[needle]);
    }
}
