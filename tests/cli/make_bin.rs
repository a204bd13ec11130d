//! `facekit eval make-bin` on real lfw100 photos: a `.bin` whose chips are the training set's own
//! records (`--like`), that Python's pickle loads, that `eval verify --bin` scores as an
//! independent insightface-style 10-fold computation does; the `--dataset` form; and the errors.

use facekit_eval::pickle::VerificationBin;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;

/// `facekit ARGS` run in `cwd` with the models folder set.
pub(crate) fn run(args: &[&str], cwd: &Path) -> Output {
    crate::facekit().args(args).current_dir(cwd).env("FACEKIT_MODELS", facekit_testkit::models_dir()).output().unwrap()
}

/// [`run`] that must succeed, or the test fails showing its output.
pub(crate) fn ok(args: &[&str], cwd: &Path) -> Output {
    let out = run(args, cwd);
    assert!(
        out.status.success(),
        "facekit {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn fails(args: &[&str], cwd: &Path) -> String {
    let out = run(args, cwd);
    assert!(!out.status.success(), "facekit {args:?} should have failed:\n{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The people of the small sets: 4 photos each are packed.
const SMALL: [&str; 3] = ["Bill_Gates", "Hans_Blix", "Tony_Blair"];

/// `cwd/photos` with 4 photos of each of [`SMALL`], packed into `training/small` at 96 px (`flags`
/// added), and then a photo without a face where a pairs list expects Bill_Gates_0009.
fn small_set_and_a_photo_without_a_face(cwd: &Path, flags: &[&str]) {
    crate::lfw_subset(&cwd.join("photos"), &SMALL, 4);
    ok(&[&["pack", "photos", "-o", "training/small", "--size", "96", "--quiet"][..], flags].concat(), cwd);
    std::fs::copy(
        facekit_testkit::shared_data().join("dlib_faces/dogs.jpg"),
        cwd.join("photos/Bill_Gates/Bill_Gates_0009.jpg"),
    )
    .unwrap();
}

/// `eval make-bin --dataset BASE --draw-pairs PAIRS [extra] -o OUT`.
fn draw_pairs<'a>(base: &'a Path, pairs: &'a str, extra: &[&'a str], out: &'a Path) -> Vec<&'a str> {
    let head = ["eval", "make-bin", "--dataset", base.to_str().unwrap(), "--draw-pairs", pairs];
    [&head[..], extra, &["-o", out.to_str().unwrap()]].concat()
}

/// `eval make-bin --pairs pairs.txt --images photos --like LIKE -o OUT --quiet` in `cwd`, which
/// must succeed: its summary.
fn made_like(cwd: &Path, like: &str, out: &str) -> String {
    let args = ["eval", "make-bin", "--pairs", "pairs.txt", "--images", "photos", "--like", like, "-o", out, "--quiet"];
    String::from_utf8_lossy(&ok(&args, cwd).stdout).into_owned()
}

/// `Name/Name_0001.jpg` (the last two components of the recorded path) -> payload of every record
/// of a packed dataset.
fn records(base: &Path) -> std::collections::HashMap<String, Vec<u8>> {
    let ds = facekit_shard::Dataset::open_name(base.to_str().unwrap(), None).unwrap();
    (0..ds.len())
        .map(|i| {
            let r = ds.record(i).unwrap();
            let path = String::from_utf8(r.path.to_vec()).unwrap();
            let parts: Vec<&str> = path.rsplitn(3, '/').collect();
            (format!("{}/{}", parts[1], parts[0]), r.payload.to_vec())
        })
        .collect()
}

/// A face of a pairs list: person and photo number.
type Face = (String, u32);

/// 10 folds of 3 same-person and 3 different-person pairs over `faces` (each person's packed
/// photos), deterministic; writes `path` and returns the pairs in order.
fn write_pairs(path: &Path, faces: &[(String, Vec<u32>)]) -> Vec<(Face, Face, bool)> {
    let mut out = Vec::new();
    let mut f = std::fs::File::create(path).unwrap();
    writeln!(f, "10\t3").unwrap();
    let n = faces.len();
    let mut k = 0usize;
    for _fold in 0..10 {
        for _ in 0..3 {
            let (name, nums) = &faces[k % n];
            let (a, b) = (nums[k % nums.len()], nums[(k * 5 + 3) % nums.len()]);
            let b = if a == b { nums[(k * 5 + 4) % nums.len()] } else { b };
            writeln!(f, "{name}\t{a}\t{b}").unwrap();
            out.push(((name.clone(), a), (name.clone(), b), true));
            k += 1;
        }
        for _ in 0..3 {
            let ((p, pn), (q, qn)) = (&faces[k % n], &faces[(k + 2) % n]);
            let (a, b) = (pn[k % pn.len()], qn[(k * 7) % qn.len()]);
            writeln!(f, "{p}\t{a}\t{q}\t{b}").unwrap();
            out.push(((p.clone(), a), (q.clone(), b), false));
            k += 1;
        }
    }
    out
}

/// Each person's photo numbers that made it into the dataset.
fn packed_faces(recs: &std::collections::HashMap<String, Vec<u8>>, people: &[&str]) -> Vec<(String, Vec<u32>)> {
    people
        .iter()
        .map(|name| {
            let mut nums: Vec<u32> = recs
                .keys()
                .filter_map(|p| p.strip_prefix(&format!("{name}/{name}_"))?.strip_suffix(".jpg")?.parse().ok())
                .collect();
            nums.sort();
            assert!(nums.len() >= 3, "{name}: only {} photos packed", nums.len());
            (name.to_string(), nums)
        })
        .collect()
}

/// What Python's own pickle finds in a `.bin`: (image count, flags), after checking the types.
fn python_counts(bin: &Path) -> Option<(usize, Vec<bool>)> {
    let py = [facekit_testkit::venv_python(), PathBuf::from("python3")]
        .into_iter()
        .find(|p| std::process::Command::new(p).args(["-c", "pass"]).status().is_ok_and(|s| s.success()));
    let Some(py) = py else {
        println!("skipped the Python check: no python3 on this machine");
        return None;
    };
    let script = "import pickle, sys, json\n\
                  bins, issame = pickle.load(open(sys.argv[1], 'rb'))\n\
                  assert type(bins) is list and all(type(b) is bytes for b in bins)\n\
                  assert type(issame) is list and all(type(s) is bool for s in issame)\n\
                  print(json.dumps([len(bins), issame]))";
    let out = std::process::Command::new(py).args(["-c", script]).arg(bin).output().unwrap();
    assert!(out.status.success(), "python cannot load {}: {}", bin.display(), String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    Some((v[0].as_u64().unwrap() as usize, v[1].as_array().unwrap().iter().map(|b| b.as_bool().unwrap()).collect()))
}

/// insightface's `verification.py` (`calculate_roc` / `calculate_accuracy`) written out here,
/// independent of facekit_eval::metrics: thresholds 0, 0.01, ..., 3.99 on squared L2 distance,
/// scikit-learn's unshuffled KFold, the best threshold on the other folds (first maximum) scoring
/// each fold; the mean accuracy.
fn insightface_10_fold(dist: &[f64], same: &[bool]) -> f64 {
    let n = dist.len();
    let thresholds: Vec<f64> = (0..400).map(|i| i as f64 * 0.01).collect();
    let accuracy =
        |t: f64, idx: &[usize]| idx.iter().filter(|&&i| (dist[i] < t) == same[i]).count() as f64 / idx.len() as f64;
    let mut start = 0;
    let mut accs = Vec::new();
    for fold in 0..10 {
        let len = n / 10 + usize::from(fold < n % 10);
        let test: Vec<usize> = (start..start + len).collect();
        let train: Vec<usize> = (0..n).filter(|i| !(start..start + len).contains(i)).collect();
        start += len;
        let mut best = (f64::NEG_INFINITY, 0.0);
        for &t in &thresholds {
            let a = accuracy(t, &train);
            if a > best.0 {
                best = (a, t);
            }
        }
        accs.push(accuracy(best.1, &test));
    }
    accs.iter().sum::<f64>() / accs.len() as f64
}

/// `embeddings.npy` as facekit embed writes it (NPY v1.0, little-endian float32, C order).
fn read_npy(path: &Path) -> (usize, usize, Vec<f32>) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..6], b"\x93NUMPY");
    let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
    let header = std::str::from_utf8(&b[10..10 + hlen]).unwrap();
    assert!(header.contains("'<f4'") && header.contains("False"), "{header}");
    let shape = header.split("'shape': (").nth(1).unwrap().split(')').next().unwrap();
    let dims: Vec<usize> =
        shape.split(',').filter(|s| !s.trim().is_empty()).map(|s| s.trim().parse().unwrap()).collect();
    let data: Vec<f32> = b[10 + hlen..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(data.len(), dims[0] * dims[1]);
    (dims[0], dims[1], data)
}

const PEOPLE: [&str; 6] =
    ["Ariel_Sharon", "Colin_Powell", "Donald_Rumsfeld", "Tony_Blair", "Jacques_Chirac", "Vladimir_Putin"];

#[test]
fn bin_made_like_the_training_set_holds_its_records_and_scores_as_insightface_computes() {
    let t = tempfile::tempdir().unwrap();
    let cwd = t.path();
    crate::lfw_subset(&cwd.join("photos"), &PEOPLE, 10);
    ok(&["pack", "photos", "-o", "training/lfw6", "--size", "112", "--quiet"], cwd);
    let recs = records(&cwd.join("training/lfw6"));
    let pairs = write_pairs(&cwd.join("pairs.txt"), &packed_faces(&recs, &PEOPLE));

    let summary = made_like(cwd, "training/lfw6", "lfw.bin");
    assert!(summary.contains("60 (30 same, 30 different), 120 images"), "{summary}");
    assert!(summary.contains("0 gave none"), "{summary}");
    let rejects = std::fs::read_to_string(cwd.join("lfw.bin.rejects.tsv")).unwrap();
    assert_eq!(rejects, "path\treason\tdetail\n", "every photo of the pairs was packed, so each gives a chip");

    // Python's pickle reads it as insightface's loader does.
    if let Some((images, issame)) = python_counts(&cwd.join("lfw.bin")) {
        assert_eq!(images, 120);
        assert_eq!(issame, pairs.iter().map(|p| p.2).collect::<Vec<_>>());
    }

    // Each chip is the record `facekit pack` made of the same photo: the point of --like.
    let bin = VerificationBin::read(&cwd.join("lfw.bin")).unwrap();
    for (k, (left, right, same)) in pairs.iter().enumerate() {
        assert_eq!(bin.issame[k], *same);
        for (j, (name, n)) in [left, right].into_iter().enumerate() {
            let rel = format!("{name}/{name}_{n:04}.jpg");
            assert!(bin.images[2 * k + j] == recs[&rel], "pair {k}: the chip of {rel} differs from its record");
            let img = image::load_from_memory(&bin.images[2 * k + j]).unwrap();
            assert_eq!((img.width(), img.height()), (112, 112), "{rel}");
        }
    }

    // From the packed records themselves: the same file, byte for byte.
    let out = ok(&["eval", "make-bin", "--pairs", "pairs.txt", "--dataset", "lfw6", "-o", "ds.bin"], cwd);
    assert!(String::from_utf8_lossy(&out.stdout).contains("records of lfw6, as stored"));
    assert!(std::fs::read(cwd.join("ds.bin")).unwrap() == std::fs::read(cwd.join("lfw.bin")).unwrap());

    // A tiny network, scored on the .bin by facekit and by the 10-fold loop above.
    ok(
        &[
            "train",
            "FR",
            "--train-sets",
            "lfw6",
            "--arch",
            "tiny",
            "--image-size",
            "112",
            "--batch-size",
            "32",
            "--max-steps",
            "30",
            "--lr",
            "0.05",
            "--arcface-scale",
            "16",
            "--arcface-margin",
            "0.2",
            "--device",
            "cpu",
            "--run-name",
            "mb",
            "--checkpoint-every",
            "30",
            "--log-every",
            "10",
        ],
        cwd,
    );
    let model = ["--model", "Model/mb", "--checkpoint", "last", "--device", "cpu", "--batch-size", "32"];
    let out = ok(&[&["eval", "verify", "--bin", "lfw.bin", "--json", "--out", "ev"][..], &model].concat(), cwd);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["pairs_used"], 60);
    let facekit_acc = report["kfold"]["accuracy_mean"].as_f64().unwrap();

    std::fs::create_dir_all(cwd.join("chips")).unwrap();
    for (i, img) in bin.images.iter().enumerate() {
        std::fs::write(cwd.join(format!("chips/{i:05}.jpg")), img).unwrap();
    }
    // `eval verify` runs insightface's flip test by default: embed the same way.
    ok(&[&["embed", "--images", "chips", "--prep", "resize", "--flip", "-o", "emb"][..], &model].concat(), cwd);
    let (rows, dim, emb) = read_npy(&cwd.join("emb/embeddings.npy"));
    assert_eq!(rows, 120);
    let labels = std::fs::read_to_string(cwd.join("emb/labels.tsv")).unwrap();
    let order: Vec<usize> = labels
        .lines()
        .skip(1)
        .map(|l| l.split('\t').nth(3).unwrap().trim_end_matches(".jpg").parse().unwrap())
        .collect();
    let mut by_image = vec![0; rows];
    for (row, &img) in order.iter().enumerate() {
        by_image[img] = row;
    }
    let normalised = |i: usize| {
        let v = &emb[by_image[i] * dim..(by_image[i] + 1) * dim];
        let n = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        v.iter().map(move |x| f64::from(*x) / n)
    };
    let dist: Vec<f64> =
        (0..60).map(|k| normalised(2 * k).zip(normalised(2 * k + 1)).map(|(a, b)| (a - b).powi(2)).sum()).collect();
    let ours = insightface_10_fold(&dist, &bin.issame);
    println!("accuracy on lfw.bin: eval verify {facekit_acc}, independent 10-fold {ours}");
    assert!(
        (facekit_acc - ours).abs() < 1e-9,
        "eval verify --bin says {facekit_acc}, the 10-fold loop on embed's embeddings {ours}"
    );
}

#[test]
fn photos_without_a_face_missing_people_and_unreproducible_datasets_are_reported() {
    let t = tempfile::tempdir().unwrap();
    let cwd = t.path();
    small_set_and_a_photo_without_a_face(cwd, &["--encoding", "raw-zstd"]);
    let write = |name: &str, text: &str| std::fs::write(cwd.join(name), text).unwrap();
    write(
        "pairs.txt",
        "1\t2\nBill_Gates\t1\t9\nHans_Blix\t1\t2\nBill_Gates\t2\tTony_Blair\t1\nHans_Blix\t3\tTony_Blair\t4\n",
    );
    let like = ["--images", "photos", "--like", "training/small", "--quiet"];

    let err = fails(
        &[&["eval", "make-bin", "--pairs", "pairs.txt", "-o", "a.bin", "--missing", "error"][..], &like].concat(),
        cwd,
    );
    assert!(err.contains("1 photo(s) gave no chip") && err.contains("--missing error"), "{err}");
    assert!(!cwd.join("a.bin").exists());
    let listed = std::fs::read_to_string(cwd.join("a.bin.rejects.tsv")).unwrap();
    assert!(listed.lines().nth(1).unwrap().contains("Bill_Gates_0009.jpg\tno_face\t"), "{listed}");
    assert_eq!(listed.lines().count(), 2);

    // By default one photo without a face does not fail the set: it is listed and its pair left out.
    let out = ok(&[&["eval", "make-bin", "--pairs", "pairs.txt", "-o", "a.bin"][..], &like].concat(), cwd);
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("3 (1 same, 2 different), 6 images") && summary.contains("1 with a photo that gave no chip"),
        "{summary}"
    );
    assert!(summary.contains("fold 1: 1 of 4 left out (1 unusable, 0 to keep the folds equal), 3 kept"), "{summary}");
    assert_eq!(std::fs::read_to_string(cwd.join("a.bin.rejects.tsv")).unwrap(), listed);
    let bin = VerificationBin::read(&cwd.join("a.bin")).unwrap();
    assert_eq!(bin.issame, [true, false, false]);
    // A rawzstd dataset's chips are PNG with its records' pixels.
    for img in &bin.images {
        let png = image::load_from_memory_with_format(img, image::ImageFormat::Png).unwrap();
        assert_eq!((png.width(), png.height()), (96, 96));
    }
    let ds_bin = ok(&["eval", "make-bin", "--pairs", "pairs.txt", "--dataset", "small", "-o", "d.bin"], cwd);
    assert!(
        String::from_utf8_lossy(&ds_bin.stdout).contains("1 with missing photos"),
        "the dataset has no Bill_Gates_0009"
    );
    let from_records = VerificationBin::read(&cwd.join("d.bin")).unwrap();
    for (a, b) in bin.images.iter().zip(&from_records.images) {
        let decode = |x: &[u8]| image::load_from_memory(x).unwrap().into_rgb8().into_raw();
        assert!(decode(a) == decode(b), "a chip made like the dataset differs from its record's pixels");
    }

    // People or photos the folder does not have.
    write("nobody.txt", "1\t1\nNo_Body\t1\t2\nHans_Blix\t1\tTony_Blair\t7\n");
    let err = fails(
        &[&["eval", "make-bin", "--pairs", "nobody.txt", "-o", "n.bin", "--missing", "error"][..], &like].concat(),
        cwd,
    );
    assert!(err.contains("1 pair(s) name people missing") && err.contains("1 name missing photos"), "{err}");
    let err = fails(&[&["eval", "make-bin", "--pairs", "nobody.txt", "-o", "n.bin"][..], &like].concat(), cwd);
    assert!(err.contains("no pair is left"), "{err}");
    let missing = std::fs::read_to_string(cwd.join("n.bin.rejects.tsv")).unwrap();
    assert!(
        missing.contains("No_Body_0001.jpg\tmissing_person\tnamed by line 2")
            && missing.contains("Tony_Blair_0007.jpg\tmissing_photo\tnamed by line 3"),
        "{missing}"
    );
    let err = fails(
        &["eval", "make-bin", "--pairs", "nobody.txt", "--dataset", "small", "-o", "n.bin", "--missing", "error"],
        cwd,
    );
    assert!(err.contains("people missing"), "{err}");

    // A pairs file whose header promises other counts than it has.
    write("odd.txt", "1\t2\nHans_Blix\t1\t2\nBill_Gates\t2\tTony_Blair\t1\nHans_Blix\t3\tTony_Blair\t4\n");
    let err = fails(&[&["eval", "make-bin", "--pairs", "odd.txt", "-o", "o.bin"][..], &like].concat(), cwd);
    assert!(err.contains("promises"), "{err}");

    // --like a dataset that does not exist, or whose chips cannot be cut from photos.
    let err = fails(
        &["eval", "make-bin", "--pairs", "pairs.txt", "--images", "photos", "--like", "nowhere", "-o", "x.bin"],
        cwd,
    );
    assert!(err.contains("--like nowhere"), "{err}");
    let err = fails(&["eval", "make-bin", "--pairs", "pairs.txt", "--like", "training/small", "-o", "x.bin"], cwd);
    assert!(err.contains("--images"), "--like needs --images: {err}");
    let lm: String = SMALL
        .iter()
        .flat_map(|p| (1..=4).map(move |k| format!("{p}/{p}_{k:04}.jpg 100 115 150 115 125 140 105 165 145 165\n")))
        .collect();
    write("landmarks.txt", &lm);
    ok(&["pack", "photos", "-o", "training/lm", "--size", "96", "--landmarks", "landmarks.txt", "--quiet"], cwd);
    let err = fails(
        &["eval", "make-bin", "--pairs", "pairs.txt", "--images", "photos", "--like", "training/lm", "-o", "x.bin"],
        cwd,
    );
    assert!(err.contains("--landmarks file") && err.contains("--dataset"), "{err}");
    // An imported pre-aligned dataset records no alignment.
    let manifest = cwd.join("training/lm.manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    m["alignment"] = serde_json::Value::Null;
    std::fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();
    let err = fails(
        &["eval", "make-bin", "--pairs", "pairs.txt", "--images", "photos", "--like", "training/lm", "-o", "x.bin"],
        cwd,
    );
    assert!(err.contains("records no alignment"), "{err}");
    assert!(!cwd.join("x.bin").exists());
}

#[test]
fn pairs_drawn_from_a_datasets_identities_make_a_bin_of_its_records() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("training/raw");
    let made = super::raw_dataset(&base, 6);
    let bin = t.path().join("drawn.bin");
    ok(&draw_pairs(&base, "5", &["--seed", "3"], &bin), t.path());
    let vb = facekit_eval::pickle::VerificationBin::read(&bin).unwrap();
    assert_eq!(vb.issame, [true, false, true, false, true, false, true, false, true, false]);
    // Every image is one of the records (raw pixels as PNG), and same means same identity.
    let class_of = |png: &[u8]| {
        let px = image::load_from_memory(png).unwrap().to_rgb8().into_raw();
        made.iter().find(|(d, _)| *d == px).expect("an image that is no record").1
    };
    for (k, same) in vb.issame.iter().enumerate() {
        let (l, r) = (class_of(&vb.images[2 * k]), class_of(&vb.images[2 * k + 1]));
        assert!(l.is_some() && r.is_some(), "records without identity are never drawn");
        assert_eq!(l == r, *same);
    }
    let again = t.path().join("again.bin");
    ok(&draw_pairs(&base, "5", &["--seed", "3"], &again), t.path());
    assert_eq!(std::fs::read(&bin).unwrap(), std::fs::read(&again).unwrap(), "the same seed draws the same pairs");
    let err = fails(&draw_pairs(&base, "50", &[], &again), t.path());
    assert!(err.contains("distinct same-identity"), "{err}");
}

#[test]
fn make_bin_refuses_an_output_that_is_part_of_a_dataset_a_device_a_fifo_or_a_link() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("training/raw");
    super::raw_dataset(&base, 3);
    let dataset_files = |dir: &Path| -> Vec<(PathBuf, Vec<u8>)> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
            .collect();
        v.sort();
        v
    };
    let before = dataset_files(&t.path().join("training"));
    let fifo = t.path().join("fifo.bin");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let link = t.path().join("link.bin");
    std::os::unix::fs::symlink(base.with_file_name("raw-00000.shard"), &link).unwrap();
    let cases = [
        (base.with_file_name("raw-00000.shard"), "belongs to dataset"),
        (base.with_file_name("raw.labels.tsv"), "belongs to dataset"),
        (base.with_file_name("raw.manifest.json"), "belongs to dataset"),
        (PathBuf::from("/dev/null"), "a character device"),
        (fifo, "a FIFO"),
        (link, "a symbolic link"),
    ];
    for (output, says) in &cases {
        let out = run(&draw_pairs(&base, "2", &[], output), t.path());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{output:?}: {err}");
        assert!(err.contains(says) && err.contains(output.to_str().unwrap()), "{output:?}: {err}");
    }
    assert!(before == dataset_files(&t.path().join("training")), "a refused make-bin changed the dataset");
}

#[test]
fn make_bin_removes_the_temporaries_an_interrupted_run_left() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("training/raw");
    super::raw_dataset(&base, 3);
    let bin = t.path().join("out/lfw.bin");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    let leftovers = [t.path().join("out/.tmp-4242-lfw.bin"), t.path().join("out/.tmp-4242-lfw.bin.rejects.tsv")];
    for l in &leftovers {
        std::fs::write(l, vec![0u8; 1000]).unwrap();
    }
    let mine = t.path().join("out/.tmp-4242-other.bin");
    std::fs::write(&mine, b"another output's").unwrap();
    ok(&draw_pairs(&base, "2", &[], &bin), t.path());
    assert!(leftovers.iter().all(|l| !l.exists()), "an interrupted make-bin's temporaries were left");
    assert!(mine.exists(), "another output's temporary was removed");
    assert_eq!(VerificationBin::read(&bin).unwrap().issame.len(), 4);
}

#[test]
fn a_photo_without_a_face_drops_its_pair_and_the_folds_stay_those_of_the_pairs_file() {
    let t = tempfile::tempdir().unwrap();
    let cwd = t.path();
    small_set_and_a_photo_without_a_face(cwd, &[]);
    // Two folds of one same-person and two different-person pairs; fold 1's same pair names the
    // photo without a face.
    let pairs = "2\t1\nBill_Gates\t1\t9\nHans_Blix\t1\tTony_Blair\t1\nHans_Blix\t2\t3\nBill_Gates\t2\tTony_Blair\t4\n";
    std::fs::write(cwd.join("pairs.txt"), pairs).unwrap();
    let summary = made_like(cwd, "training/small", "f.bin");
    // Dropping only fold 1's pair would put fold 2's first pair into fold 1 for every reader that
    // cuts a .bin into equal folds; fold 2 gives up its same-person pair too.
    assert!(summary.contains("2 (0 same, 2 different), 4 images"), "{summary}");
    assert!(summary.contains("1 with a photo that gave no chip, 1 to keep the 2 folds equal"), "{summary}");
    assert!(summary.contains("fold 1: 1 of 2 left out (1 unusable, 0 to keep the folds equal), 1 kept"), "{summary}");
    assert!(summary.contains("fold 2: 1 of 2 left out (0 unusable, 1 to keep the folds equal), 1 kept"), "{summary}");
    let bin = VerificationBin::read(&cwd.join("f.bin")).unwrap();
    assert_eq!(bin.issame, [false, false]);
    let recs = records(&cwd.join("training/small"));
    // Pair k of the .bin is the different-person pair of fold k + 1.
    assert!(
        bin.images[0] == recs["Hans_Blix/Hans_Blix_0001.jpg"]
            && bin.images[2] == recs["Bill_Gates/Bill_Gates_0002.jpg"]
    );
}

/// Mean absolute difference of two encoded images' pixels.
fn pixel_distance(a: &[u8], b: &[u8]) -> f64 {
    let (a, b) = (image::load_from_memory(a).unwrap().to_rgb8(), image::load_from_memory(b).unwrap().to_rgb8());
    assert_eq!(a.dimensions(), b.dimensions());
    let sum: u64 = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| u64::from(x.abs_diff(*y))).sum();
    sum as f64 / a.as_raw().len() as f64
}

#[test]
fn an_arcface_pack_records_its_alignment_and_make_bin_like_it_or_its_rec_import_cuts_arcface_chips() {
    let t = tempfile::tempdir().unwrap();
    let cwd = t.path();
    let people = ["Ariel_Sharon", "Colin_Powell", "Hans_Blix"];
    crate::lfw_subset(&cwd.join("photos"), &people, 4);
    let out = ok(&["pack", "photos", "-o", "training/af", "--align", "arcface", "--quiet"], cwd);
    assert!(String::from_utf8_lossy(&out.stdout).contains("12"), "{}", String::from_utf8_lossy(&out.stdout));
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cwd.join("training/af.manifest.json")).unwrap()).unwrap();
    let a = &m["alignment"];
    assert_eq!(
        (
            a["method"].as_str(),
            a["template"].as_str(),
            a["detector"].as_str(),
            a["size"].as_u64(),
            a["padding"].as_f64()
        ),
        (Some("arcface5-similarity-warp"), Some("arcface5"), Some("hog"), Some(112), Some(0.0)),
        "{a}"
    );
    assert_eq!(a["template_points"][0], serde_json::json!([38.2946, 51.6963]), "{a}");
    let recs = records(&cwd.join("training/af"));
    assert_eq!(recs.len(), 12);
    write_pairs(&cwd.join("pairs.txt"), &packed_faces(&recs, &people));
    let like = |dataset: &str, bin: &str| {
        ok(
            &[
                "eval",
                "make-bin",
                "--pairs",
                "pairs.txt",
                "--images",
                "photos",
                "--like",
                dataset,
                "-o",
                bin,
                "--quiet",
            ],
            cwd,
        )
    };
    let out = like("training/af", "af.bin");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("arcface alignment"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let bin = VerificationBin::read(&cwd.join("af.bin")).unwrap();
    for chip in &bin.images {
        assert!(recs.values().any(|r| r == chip), "a chip made like an ArcFace dataset is none of its records");
    }
    // The same faces as a dlib pack are other chips: --like really followed the manifest.
    ok(&["pack", "photos", "-o", "training/dl", "--size", "112", "--padding", "0", "--quiet"], cwd);
    let dlib = records(&cwd.join("training/dl"));
    let k = recs.keys().next().unwrap();
    assert!(recs[k] != dlib[k], "{k}: the dlib and ArcFace chips are the same");

    // A dataset imported from insightface's .rec files is ArcFace-aligned: --like cuts its photos so.
    ok(&["export", "rec", "training/af", "-o", "rec", "--quiet"], cwd);
    ok(&["import", "rec", "rec", "-o", "training/imported", "--quiet"], cwd);
    let out = like("training/imported", "imported.bin");
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("arcface alignment") && summary.contains("112 px"), "{summary}");
    let imported = VerificationBin::read(&cwd.join("imported.bin")).unwrap();
    assert_eq!(imported.images.len(), bin.images.len());
    for (i, (a, b)) in imported.images.iter().zip(&bin.images).enumerate() {
        // Same alignment, detector and size; an import's chips are JPEG at quality 95 and 4:2:0,
        // which are also pack's defaults, so here they are the same bytes.
        let d = pixel_distance(a, b);
        assert!(a == b, "chip {i}: {d:.2} grey levels on average from the ArcFace dataset's chip");
    }
}
