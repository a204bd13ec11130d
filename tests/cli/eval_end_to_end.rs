//! End to end on CPU with real photos: pack an lfw100 subset, train the tiny network briefly,
//! embed, and evaluate (LFW pairs from the dataset and from the photo folder, all pairs).

use std::io::Write;
use std::path::Path;
use std::process::Output;

/// Identities with enough photos for genuine pairs, and how many photos of each are used.
const PEOPLE: [&str; 8] = [
    "Ariel_Sharon",
    "Colin_Powell",
    "Donald_Rumsfeld",
    "Jean_Chretien",
    "John_Ashcroft",
    "Vladimir_Putin",
    "Tony_Blair",
    "Jacques_Chirac",
];
const PER_PERSON: u32 = 12;

fn facekit(args: &[&str], cwd: &Path) -> Output {
    let out = crate::facekit().args(args).current_dir(cwd).output().unwrap();
    assert!(
        out.status.success(),
        "facekit {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// 10 folds of 3 same-person and 3 different-person pairs over the subset, deterministic.
fn pairs_file(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    writeln!(f, "10\t3").unwrap();
    let mut k = 0usize;
    for _fold in 0..10 {
        for _ in 0..3 {
            let p = PEOPLE[k % 8];
            let (a, b) = (1 + (k as u32 % PER_PERSON), 1 + ((k as u32 * 5 + 3) % PER_PERSON));
            let b = if a == b { 1 + (b % PER_PERSON) } else { b };
            writeln!(f, "{p}\t{a}\t{b}").unwrap();
            k += 1;
        }
        for _ in 0..3 {
            let (p, q) = (PEOPLE[k % 8], PEOPLE[(k + 3) % 8]);
            writeln!(f, "{p}\t{}\t{q}\t{}", 1 + (k as u32 % PER_PERSON), 1 + ((k as u32 * 7) % PER_PERSON)).unwrap();
            k += 1;
        }
    }
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn pack_train_embed_eval_pipeline_runs_and_beats_chance() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    crate::lfw_subset(&cwd.join("photos"), &PEOPLE, PER_PERSON);
    pairs_file(&cwd.join("pairs.txt"));

    facekit(&["pack", "photos", "-o", "training/lfw8", "--size", "112"], cwd);
    facekit(
        &[
            "train",
            "FR",
            "--train-sets",
            "lfw8",
            "--arch",
            "tiny",
            "--image-size",
            "112",
            "--batch-size",
            "32",
            "--max-steps",
            "60",
            "--lr",
            "0.05",
            "--arcface-scale",
            "16",
            "--arcface-margin",
            "0.2",
            "--device",
            "cpu",
            "--run-name",
            "e2e",
            "--checkpoint-every",
            "60",
            "--log-every",
            "20",
        ],
        cwd,
    );
    let model = ["--model", "Model/e2e", "--checkpoint", "last", "--device", "cpu"];
    // `eval verify` of the LFW protocol (pairs.txt) with the model, the images from `source`.
    let verify = |source: &[&str]| {
        json(&facekit(&[&["eval", "verify"][..], &model, &["--pairs", "pairs.txt"], source].concat(), cwd))
    };

    // LFW protocol with images from the packed dataset (records keep their paths).
    let r = verify(&["--dataset", "lfw8", "--missing", "skip", "--json", "--out", "eval_ds"]);
    let used = r["pairs_used"].as_u64().unwrap();
    let skipped = r["missing_people"].as_u64().unwrap() + r["missing_images"].as_u64().unwrap();
    assert_eq!(used + skipped, 60, "every listed pair is scored or counted as skipped");
    assert!(used >= 40, "pack should have aligned most photos, {used} pairs usable");
    let acc = r["kfold"]["accuracy_mean"].as_f64().unwrap();
    assert!(acc > 0.6, "accuracy {acc} is not above chance (0.5)");

    // The same protocol straight from the photo folder, aligned on the fly, with the flip test.
    let r = verify(&["--images", "photos", "--padding", "0.25", "--flip", "--json", "--out", "eval_dir"]);
    assert_eq!(r["pairs_used"], 60);
    let prep = &r["preparation"];
    assert_eq!(prep["aligned"].as_u64().unwrap() + prep["fallback"].as_u64().unwrap(), r["images"].as_u64().unwrap());
    assert!(r["kfold"]["accuracy_mean"].as_f64().unwrap() > 0.6, "folder accuracy {}", r["kfold"]["accuracy_mean"]);

    // Embeddings readable by numpy, then all-pairs verification on them without the model.
    facekit(&[&["embed"][..], &model, &["--dataset", "lfw8", "-o", "emb"]].concat(), cwd);
    let check = std::process::Command::new(facekit_testkit::venv_python())
        .args([
            "-c",
            "import numpy as np, sys; e = np.load(sys.argv[1]); n = len(open(sys.argv[2]).read().splitlines()) - 1; \
                      assert e.shape == (n, 512) and e.dtype == np.float32, (e.shape, n); \
                      assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5); print(n)",
        ])
        .arg(cwd.join("emb/embeddings.npy"))
        .arg(cwd.join("emb/labels.tsv"))
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let r = json(&facekit(&["eval", "verify", "--embeddings", "emb", "--json", "--out", "eval_all"], cwd));
    assert!(r["auc"].as_f64().unwrap() > 0.55, "all-pairs AUC {}", r["auc"]);
    assert!(r["tar_at_far"][0]["tar"].is_number(), "FAR 1e-1 is measurable with thousands of impostor pairs");
    assert!(
        r["tar_at_far"][5]["tar"].is_null() && r["tar_at_far"][5]["note"].is_string(),
        "FAR 1e-6 must be reported unsupported"
    );
    assert!(cwd.join("eval_all/roc.png").is_file() && cwd.join("eval_all/roc.csv").is_file());
}
