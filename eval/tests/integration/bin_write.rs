//! The verification `.bin` writer: what it writes reads back through facekit's reader and loads in
//! Python's own `pickle` as `(list of bytes, list of bool)`.

use facekit_eval::bin_write::{pickle_verification_bin, pickled_len, write_verification_bin};
use facekit_eval::pickle::{parse_verification_bin, VerificationBin};
use std::path::{Path, PathBuf};

/// Real LFW JPEGs, two per pair.
fn real_images() -> Vec<Vec<u8>> {
    let root = &facekit_testkit::shared_data().join("lfw100");
    [("Ariel_Sharon", 1, 2), ("Bill_Gates", 1, 3), ("Andre_Agassi", 2, 4)]
        .iter()
        .flat_map(|&(name, a, b)| [a, b].map(move |k| root.join(name).join(format!("{name}_{k:04}.jpg"))))
        .map(|p| std::fs::read(p).unwrap())
        .collect()
}

/// Images of every length class: under 256 bytes (SHORT_BINBYTES), 256 exactly, and larger (BINBYTES).
fn mixed_images(pairs: usize) -> Vec<Vec<u8>> {
    (0..2 * pairs).map(|i| (0..[1, 255, 256, 70_000][i % 4] + i).map(|j| (j * 31 + i) as u8).collect()).collect()
}

/// The project's Python, else the system's `python3`, else none.
fn python() -> Option<PathBuf> {
    let venv = facekit_testkit::venv_python();
    if venv.is_file() {
        return Some(venv);
    }
    facekit_testkit::reference_python(PathBuf::from("python3"), "pickle")
}

/// What Python's pickle finds in the file: it checks the types itself, and returns the images
/// (written back out by Python, concatenated, with their lengths) and the flags.
fn python_load(py: &Path, bin: &Path) -> VerificationBin {
    let script = r#"
import pickle, sys, json
with open(sys.argv[1], 'rb') as f:
    obj = pickle.load(f)
assert type(obj) is tuple and len(obj) == 2, type(obj)
bins, issame = obj
assert type(bins) is list and all(type(b) is bytes for b in bins), [type(b) for b in bins[:3]]
assert type(issame) is list and all(type(s) is bool for s in issame), [type(s) for s in issame[:3]]
with open(sys.argv[2], 'wb') as f:
    f.write(b''.join(bins))
print(json.dumps({"lengths": [len(b) for b in bins], "issame": issame}))
"#;
    let joined = bin.with_extension("joined");
    let out = std::process::Command::new(py).args(["-c", script]).arg(bin).arg(&joined).output().unwrap();
    assert!(out.status.success(), "python cannot load {}: {}", bin.display(), String::from_utf8_lossy(&out.stderr));
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let all = std::fs::read(&joined).unwrap();
    let mut at = 0;
    let mut images = Vec::new();
    for n in seen["lengths"].as_array().unwrap() {
        let n = n.as_u64().unwrap() as usize;
        images.push(all[at..at + n].to_vec());
        at += n;
    }
    assert_eq!(at, all.len());
    let issame = seen["issame"].as_array().unwrap().iter().map(|v| v.as_bool().unwrap()).collect();
    VerificationBin { images, issame }
}

#[test]
fn written_bin_reads_back_equal_through_facekits_reader() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("set.bin");
    let images = real_images();
    let issame = vec![true, false, true];
    write_verification_bin(&path, &images, &issame).unwrap();
    assert_eq!(
        VerificationBin::read(&path).unwrap(),
        VerificationBin { images: images.clone(), issame: issame.clone() }
    );
    assert_eq!(std::fs::metadata(&path).unwrap().len(), pickled_len(&images, &issame));
    // No temporary file is left beside it.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn batches_of_more_than_a_thousand_and_every_length_opcode_read_back() {
    let images = mixed_images(1_203);
    let issame: Vec<bool> = (0..1_203).map(|i| i % 3 == 0).collect();
    let mut bytes = Vec::new();
    pickle_verification_bin(&mut bytes, &images, &issame).unwrap();
    assert_eq!(bytes.len() as u64, pickled_len(&images, &issame));
    assert_eq!(parse_verification_bin(&bytes).unwrap(), VerificationBin { images, issame });
}

#[test]
fn python_pickle_loads_the_written_bin_as_list_of_bytes_and_list_of_bool() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    for (name, images, issame) in [
        ("real.bin", real_images(), vec![true, false, true]),
        ("mixed.bin", mixed_images(1_001), (0..1_001).map(|i| i % 2 == 1).collect::<Vec<bool>>()),
    ] {
        let path = dir.path().join(name);
        write_verification_bin(&path, &images, &issame).unwrap();
        assert_eq!(python_load(&py, &path), VerificationBin { images, issame }, "{name}");
    }
}

#[test]
fn image_count_other_than_two_per_pair_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("odd.bin");
    let images = real_images();
    for (imgs, issame) in
        [(&images[..5], vec![true, false, true]), (&images[..], vec![true, false]), (&images[..0], vec![])]
    {
        let err = write_verification_bin(&path, imgs, &issame).unwrap_err().to_string();
        assert!(err.contains("pair"), "{err}");
        assert!(!path.exists());
    }
    assert!(write_verification_bin(&path, &[Vec::new(), images[0].clone()], &[true])
        .unwrap_err()
        .to_string()
        .contains("empty"));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
