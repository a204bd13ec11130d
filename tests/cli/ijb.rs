//! `facekit eval ijb` end to end on an IJB-C-format set built here from LFW photos: five points and
//! faceness scores from a real detector (MTCNN, `.venv-mtcnn`), templates of a person's photos with
//! media shared by some faces, genuine and impostor template pairs, 1:N galleries and probes, plus a
//! missing image, an unusable landmarks line and pairs naming unknown and empty templates. Checked
//! against an independent NumPy implementation of the protocol (scripts/ijb_reference.py) fed with
//! facekit's per-face features, and those features against insightface's preprocessing (cv2 and
//! scikit-image, `.venv-cv`) and the same network exported to TorchScript (`.venv`).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const PEOPLE: [&str; 8] = [
    "Ariel_Sharon",
    "Jean_Chretien",
    "John_Ashcroft",
    "Jacques_Chirac",
    "Vladimir_Putin",
    "Luiz_Inacio_Lula_da_Silva",
    "Lleyton_Hewitt",
    "Hans_Blix",
];
const PER: usize = 6;
const SIDE: usize = 48;

fn script(name: &str) -> PathBuf {
    facekit_testkit::workspace_root().join("scripts").join(name)
}

fn run_ok(cmd: &mut Command, what: &str) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Template of photo `k` of person `p`: three per person, two photos each.
fn template(p: usize, k: usize) -> u64 {
    (100 * (p + 1) + k / 2) as u64
}

/// The set under `root` (insightface's layout, target IJBC). Returns the number of faces listed.
fn build_set(root: &Path, mtcnn: &Path) -> usize {
    let crops = root.join("loose_crop");
    let meta = root.join("meta");
    std::fs::create_dir_all(&crops).unwrap();
    std::fs::create_dir_all(&meta).unwrap();
    let lfw = facekit_testkit::shared_data().join("lfw100");
    let mut names = Vec::new();
    for name in PEOPLE {
        for k in 1..=PER {
            let file = format!("{name}_{k:04}.jpg");
            std::fs::copy(lfw.join(name).join(&file), crops.join(&file)).unwrap();
            names.push(file);
        }
    }
    let paths: Vec<PathBuf> = names.iter().map(|n| crops.join(n)).collect();
    let found: Value = serde_json::from_slice(&run_ok(
        Command::new(mtcnn).arg(script("mtcnn_landmarks_reference.py")).args(&paths),
        "mtcnn_landmarks_reference.py",
    ))
    .unwrap();
    let (mut lm, mut tm) = (String::new(), String::new());
    let mut first_line = String::new();
    for (i, (name, faces)) in names.iter().zip(found.as_array().unwrap()).enumerate() {
        // LFW centres its subject: the detection nearest the centre of the 250x250 photo.
        let centre = |f: &Value| {
            let b: Vec<f64> = f["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            ((b[0] + b[2]) / 2.0 - 125.0).hypot((b[1] + b[3]) / 2.0 - 125.0)
        };
        let face = faces
            .as_array()
            .unwrap()
            .iter()
            .min_by(|a, b| centre(a).total_cmp(&centre(b)))
            .unwrap_or_else(|| panic!("MTCNN found no face in {name}"));
        let pts: Vec<String> = face["points"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p.as_array().unwrap().iter().map(|v| format!("{}", v.as_f64().unwrap())))
            .collect();
        let line = format!("{name} {} {}\n", pts.join(" "), face["prob"].as_f64().unwrap());
        if i == 0 {
            first_line = line.clone();
        }
        lm.push_str(&line);
        let (p, k) = (i / PER, i % PER);
        // The first two photos of a person are one media (averaged), the others one media each.
        let media = if k < 2 { 1000 * (p + 1) } else { 1000 * (p + 1) + k };
        tm.push_str(&format!("{name} {} {media}\n", template(p, k)));
    }
    // A face whose image is missing (template 102 pools its other faces), and one whose landmarks
    // line is unusable, alone in template 903: an empty template.
    lm.push_str(&first_line.replacen(&names[0], "missing.jpg", 1));
    tm.push_str("missing.jpg 102 5000\n");
    lm.push_str("broken.jpg 1 2 3\n");
    tm.push_str("broken.jpg 903 6000\n");
    std::fs::write(meta.join("ijbc_name_5pts_score.txt"), lm).unwrap();
    std::fs::write(meta.join("ijbc_face_tid_mid.txt"), tm).unwrap();

    let templates: Vec<(usize, u64)> =
        (0..PEOPLE.len()).flat_map(|p| (0..3).map(move |t| (p, template(p, 2 * t)))).collect();
    let mut pairs = String::new();
    for (i, &(p, a)) in templates.iter().enumerate() {
        for &(q, b) in &templates[i + 1..] {
            pairs.push_str(&format!("{a} {b} {}\n", u8::from(p == q)));
        }
    }
    pairs.push_str("100 903 0\n100 999 0\n101 102\n");
    std::fs::write(meta.join("ijbc_template_pair_label.txt"), pairs).unwrap();

    // 1:N: each person's first template in G1 (people 0-3) or G2 (4-7), the other two are probes.
    let csv = |rows: &mut dyn Iterator<Item = (usize, usize)>| {
        let mut s = String::from("TEMPLATE_ID,SUBJECT_ID,FILENAME\n");
        for (p, k) in rows {
            s.push_str(&format!("{},{},{}\n", template(p, k), p + 1, names[p * PER + k]));
        }
        s
    };
    let gallery = |people: std::ops::Range<usize>| csv(&mut people.flat_map(|p| [(p, 0), (p, 1)]));
    std::fs::write(meta.join("ijbc_1N_gallery_G1.csv"), gallery(0..4)).unwrap();
    std::fs::write(meta.join("ijbc_1N_gallery_G2.csv"), gallery(4..8)).unwrap();
    std::fs::write(meta.join("ijbc_1N_probe_mixed.csv"), csv(&mut (0..8).flat_map(|p| (2..PER).map(move |k| (p, k)))))
        .unwrap();
    names.len() + 2
}

/// A float64 `.npy` file's values (as `np.save` and facekit write them: version 1, C order).
fn read_f64_npy(path: &Path) -> Vec<f64> {
    let b = std::fs::read(path).unwrap();
    let header_len = u16::from_le_bytes([b[8], b[9]]) as usize;
    assert!(std::str::from_utf8(&b[10..10 + header_len]).unwrap().contains("'<f8'"));
    b[10 + header_len..].chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()
}

fn close(a: &Value, b: &Value, tol: f64, what: &str) {
    let (x, y) =
        (a.as_f64().unwrap_or_else(|| panic!("{what}: {a}")), b.as_f64().unwrap_or_else(|| panic!("{what}: {b}")));
    assert!((x - y).abs() <= tol, "{what}: facekit {x}, reference {y}");
}

/// `facekit eval ijb`'s figures in `out_dir` against the NumPy protocol of
/// scripts/ijb_reference.py on the features `out_dir` holds: every pair score within 1e-5, every
/// 1:1 and 1:N figure equal. Returns facekit's report.
fn compare_with_reference(np_py: &Path, root: &Path, out_dir: &Path) -> Value {
    let report: Value = serde_json::from_slice(&std::fs::read(out_dir.join("ijb.json")).unwrap()).unwrap();
    let v = &report["verification"];
    let reference: Value = serde_json::from_slice(&run_ok(
        Command::new(np_py).arg(script("ijb_reference.py")).args(["protocol"]).arg(root).arg("IJBC").arg(out_dir),
        "ijb_reference.py protocol",
    ))
    .unwrap();
    let ours = read_f64_npy(&out_dir.join("pair_scores.npy"));
    let theirs = reference["scores"].as_array().unwrap();
    assert_eq!(ours.len(), theirs.len());
    for (k, (a, b)) in ours.iter().zip(theirs).enumerate() {
        match b.as_f64() {
            Some(b) => assert!((a - b).abs() < 1e-5, "pair {k}: facekit {a}, reference {b}"),
            None => assert!(a.is_nan(), "pair {k} names an unknown template: {a}"),
        }
    }
    assert_eq!(reference["faces_without_feature"], 2);
    for (a, b) in v["tar_at_far"].as_array().unwrap().iter().zip(reference["tar_at_far"].as_array().unwrap()) {
        close(&a["far_target"], &b["far_target"], 0.0, "FAR target");
        close(&a["tar"], &b["tar"], 1e-12, &format!("TAR at FAR {}", b["far_target"]));
        close(&a["far"], &b["far"], 1e-12, &format!("FAR at FAR {}", b["far_target"]));
    }
    let (n, rn) = (&report["identification"], &reference["identification"]);
    for key in ["probes", "probes_without_mate", "gallery_templates", "top1", "top5", "top10"] {
        close(&n["insightface"][key], &rn["insightface"][key], 1e-12, key);
    }
    for (a, b) in n["insightface"]["tpir_at_far"]
        .as_array()
        .unwrap()
        .iter()
        .zip(rn["insightface"]["tpir_at_far"].as_array().unwrap())
    {
        close(&a["tpir"], &b["tpir"], 1e-12, "insightface TPIR");
        close(&a["threshold"], &b["threshold"], 1e-5, "insightface threshold");
    }
    for (g, rg) in n["open_set"].as_array().unwrap().iter().zip(rn["open_set"].as_array().unwrap()) {
        assert_eq!(g["gallery"], rg["gallery"]);
        for key in ["mated", "non_mated", "rank1", "rank5"] {
            close(&g[key], &rg[key], 1e-12, key);
        }
        for (a, b) in g["tpir_at_fpir"].as_array().unwrap().iter().zip(rg["tpir_at_fpir"].as_array().unwrap()) {
            for key in ["tpir", "fpir"] {
                close(&a[key], &b[key], 1e-12, key);
            }
            close(&a["threshold"], &b["threshold"], 1e-5, "open-set threshold");
        }
    }

    report
}

/// Features that tell people apart to a chosen degree, written over facekit's cached ones (the
/// cache key stays, so `eval ijb` reuses them): face `i` of person `i / PER` is that person's
/// random unit direction plus Gaussian noise of norm about `noise`, at a scale varying with the
/// photo (the norm is part of insightface's weighting); the faces without a feature keep zeros.
fn plant_features(out_dir: &Path, people_faces: usize, noise: f32) {
    let path = out_dir.join("features.npy");
    let m = facekit_eval::npy::read_f32(&path).unwrap();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut gauss = || {
        // splitmix64 then Box-Muller: deterministic, no generator crate needed.
        let mut next = || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        };
        let (u, v) = (next().max(1e-12), next());
        ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
    };
    let dim = m.cols;
    let people: Vec<Vec<f32>> = (0..PEOPLE.len())
        .map(|_| {
            let d: Vec<f32> = (0..dim).map(|_| gauss()).collect();
            let n = d.iter().map(|x| x * x).sum::<f32>().sqrt();
            d.into_iter().map(|x| x / n).collect()
        })
        .collect();
    let mut values = m.data.clone();
    for i in 0..people_faces {
        let scale = 1.0 + (i % PER) as f32 * 0.3;
        for d in 0..dim {
            values[i * dim + d] = scale * (people[i / PER][d] + noise * gauss() / (dim as f32).sqrt());
        }
    }
    facekit_eval::npy::write_f32(&path, m.rows, dim, &values).unwrap();
}

#[test]
fn eval_ijb_matches_a_numpy_reference_and_insightfaces_preprocessing() {
    let Some(mtcnn) = facekit_testkit::mtcnn_python() else { return };
    let Some(cv) = facekit_testkit::opencv_python() else { return };
    let Some(np_py) = facekit_testkit::reference_python(facekit_testkit::venv_python(), "torch, sklearn") else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let cwd = t.path();
    let root = cwd.join("IJBC");
    let faces = build_set(&root, &mtcnn);

    let run = crate::train_loop::twenty_step_run();
    let out_dir = cwd.join("out");
    let eval = || {
        let out = crate::facekit()
            .args(["eval", "ijb", "--target", "IJBC", "--checkpoint", "last", "--device", "cpu", "--batch-size", "7"])
            .arg(&root)
            .arg("--model")
            .arg(run)
            .arg("-o")
            .arg(&out_dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "eval ijb failed\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (stdout, stderr) = eval();
    assert!(stdout.contains("TAR @ FAR") && stdout.contains("top-1") && stdout.contains("1:N open set G2"), "{stdout}");
    // Every unusable line and face is named.
    assert!(stderr.contains("ijbc_name_5pts_score.txt line 50: 4 fields"), "{stderr}");
    assert!(stderr.contains("ijbc_template_pair_label.txt line 279: 2 fields"), "{stderr}");
    assert!(stderr.contains("face missing.jpg") && stderr.contains("face broken.jpg"), "{stderr}");
    let report: Value = serde_json::from_slice(&std::fs::read(out_dir.join("ijb.json")).unwrap()).unwrap();
    assert_eq!(report["faces"]["total"], faces);
    assert_eq!(report["faces"]["without_feature"], 2);
    assert_eq!(report["faces"]["features_reused"], false);
    assert_eq!(report["meta"]["unusable_lines"], 2);
    assert_eq!(report["meta"]["name_mismatches"], 0);
    assert_eq!(report["templates"]["total"], 25);
    assert_eq!(report["templates"]["without_feature"], 1);
    let v = &report["verification"];
    assert_eq!((v["pairs_listed"].as_u64(), v["pairs_scored"].as_u64()), (Some(278), Some(277)));
    assert_eq!((v["genuine"].as_u64(), v["pairs_unknown_template"].as_u64()), (Some(24), Some(1)));
    assert_eq!(v["pairs_empty_template"], 1);
    assert!(out_dir.join("roc.png").is_file());

    // The protocol, in NumPy, on facekit's own features.
    compare_with_reference(&np_py, &root, &out_dir);

    // A rerun reuses the features and gives the same figures.
    let features = std::fs::read(out_dir.join("features.npy")).unwrap();
    let (stdout, _) = eval();
    assert!(stdout.contains("reusing the face features"), "{stdout}");
    let again: Value = serde_json::from_slice(&std::fs::read(out_dir.join("ijb.json")).unwrap()).unwrap();
    assert_eq!(again["verification"], report["verification"]);
    assert_eq!(again["identification"], report["identification"]);
    assert_eq!(std::fs::read(out_dir.join("features.npy")).unwrap(), features);

    // facekit's features of a few faces against insightface's preprocessing and the exported network.
    let exp = cwd.join("exp");
    run_ok(
        crate::facekit()
            .args(["export", "--checkpoint", "last", "--format", "torchscript", "--model"])
            .arg(run)
            .arg("-o")
            .arg(&exp),
        "export",
    );
    let picked = [0usize, 7, 20, 33, 47];
    let chips = cwd.join("chips.npy");
    run_ok(
        Command::new(&cv)
            .arg(script("ijb_reference.py"))
            .args(["chips"])
            .arg(&root)
            .args(["IJBC", &SIDE.to_string()])
            .arg(&chips)
            .args(picked.map(|i| i.to_string())),
        "ijb_reference.py chips",
    );
    let theirs_npy = cwd.join("theirs.npy");
    run_ok(
        Command::new(&np_py)
            .arg(script("ijb_reference.py"))
            .arg("embed")
            .arg(exp.join("model.torchscript.pt"))
            .arg(&chips)
            .arg(&theirs_npy),
        "ijb_reference.py embed",
    );
    let ours = facekit_eval::npy::read_f32(&out_dir.join("features.npy")).unwrap();
    let theirs = facekit_eval::npy::read_f32(&theirs_npy).unwrap();
    assert_eq!(theirs.rows, picked.len());
    for (r, &i) in picked.iter().enumerate() {
        let (a, b) = (ours.row(i), theirs.row(r));
        let norm = b.iter().map(|v| v * v).sum::<f32>().sqrt();
        let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max) / norm;
        assert!(
            worst < 1e-3,
            "face {i}: facekit's feature differs from cv2 + TorchScript by {worst} of its norm {norm}"
        );
    }

    // The test's small network hardly tells these people apart, so many of its figures are 0 or 1.
    // The same comparison on planted features that separate them only partly: every figure
    // between its extremes, still equal to the reference's.
    plant_features(&out_dir, PEOPLE.len() * PER, 5.0);
    assert!(eval().0.contains("reusing the face features"));
    let planted = compare_with_reference(&np_py, &root, &out_dir);
    let tar = planted["verification"]["tar_at_far"].as_array().unwrap();
    let at = |far: f64| tar.iter().find(|t| t["far_target"].as_f64() == Some(far)).unwrap()["tar"].as_f64().unwrap();
    assert!(at(1e-1) > 0.0 && at(1e-1) < 1.0 && at(1e-2) <= at(1e-1), "planted TAR: {tar:?}");
    let closed = &planted["identification"]["insightface"];
    let top1 = closed["top1"].as_f64().unwrap();
    assert!(top1 > 0.0 && top1 < 1.0, "planted top-1 {top1}");
}
