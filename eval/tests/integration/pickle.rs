//! The verification `.bin` reader on files written by Python's own `pickle` from real LFW JPEGs.

use facekit_eval::pickle::{parse_verification_bin, VerificationBin};
use std::path::PathBuf;

/// Six real photos (three pairs) from lfw100.
fn photos() -> Vec<PathBuf> {
    let root = facekit_testkit::shared_data().join("lfw100");
    let mut out = Vec::new();
    for (name, a, b) in [("Ariel_Sharon", 1, 2), ("Bill_Gates", 1, 3), ("Andre_Agassi", 2, 4)] {
        out.push(root.join(name).join(format!("{name}_{a:04}.jpg")));
        out.push(root.join(name).join(format!("{name}_{b:04}.jpg")));
    }
    out
}

const ISSAME: [bool; 3] = [true, false, true];

/// Runs Python to pickle `(images, issame)`; `kind` picks how booleans and bytes are written.
fn python_bin(protocol: u8, kind: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("v.bin");
    let paths: Vec<String> = photos().iter().map(|p| p.display().to_string()).collect();
    let script = r#"
import pickle, sys, json
import numpy as np
out, protocol, kind, paths = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
bins = [open(p, 'rb').read() for p in paths]
issame = [True, False, True]
if kind == 'numpy':
    issame = [np.bool_(x) for x in issame]
with open(out, 'wb') as f:
    pickle.dump((bins, issame), f, protocol=protocol)
"#;
    let status = std::process::Command::new(facekit_testkit::venv_python())
        .args(["-c", script])
        .arg(&out)
        .arg(protocol.to_string())
        .arg(kind)
        .arg(serde_json::to_string(&paths).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read(&out).unwrap()
}

fn expected() -> VerificationBin {
    VerificationBin { images: photos().iter().map(|p| std::fs::read(p).unwrap()).collect(), issame: ISSAME.to_vec() }
}

#[test]
fn protocol_2_bin_written_by_python3_reads_back_exactly() {
    // Python 3 writes bytes at protocol 2 as _codecs.encode(latin1 text): the reader must map it back.
    assert_eq!(parse_verification_bin(&python_bin(2, "plain")).unwrap(), expected());
}

#[test]
fn protocol_4_bin_with_frames_and_memoize_reads_back_exactly() {
    assert_eq!(parse_verification_bin(&python_bin(4, "plain")).unwrap(), expected());
}

#[test]
fn numpy_bool_flags_are_read_as_booleans() {
    for protocol in [2, 4] {
        assert_eq!(parse_verification_bin(&python_bin(protocol, "numpy")).unwrap(), expected(), "protocol {protocol}");
    }
}

#[test]
fn python2_style_binstring_bin_reads_back_exactly() {
    // Python 2 writes str with SHORT_BINSTRING / BINSTRING; build such a pickle by hand.
    let exp = expected();
    let mut p = vec![0x80, 2, b'(', b']', b'q', 0, b'('];
    for img in &exp.images {
        p.push(b'T');
        p.extend((img.len() as u32).to_le_bytes());
        p.extend(img);
    }
    p.extend([b'e', b']', b'q', 1, b'(', 0x88, 0x89, 0x88, b'e', b't', b'.']);
    assert_eq!(parse_verification_bin(&p).unwrap(), exp);
}

#[test]
fn pickle_calling_anything_else_is_refused_without_running_it() {
    let script = "import pickle, os, sys; sys.stdout.buffer.write(pickle.dumps((os.system, [True]), protocol=2))";
    let out = std::process::Command::new(facekit_testkit::venv_python()).args(["-c", script]).output().unwrap();
    let err = parse_verification_bin(&out.stdout).unwrap_err();
    assert!(format!("{err:#}").contains("refusing to load posix.system"), "{err:#}");
}

#[test]
fn truncated_and_oversized_lengths_are_errors_not_panics() {
    let good = python_bin(4, "plain");
    for cut in [1, 10, good.len() / 2, good.len() - 1] {
        assert!(parse_verification_bin(&good[..cut]).is_err(), "cut at {cut}");
    }
    // BINBYTES8 claiming 2^62 bytes.
    let mut huge = vec![0x80, 4, 0x8e];
    huge.extend((1u64 << 62).to_le_bytes());
    let err = parse_verification_bin(&huge).unwrap_err();
    assert!(format!("{err:#}").contains("runs past the end"), "{err:#}");
}

#[test]
fn image_count_must_be_twice_the_pair_count() {
    let script = "import pickle, sys; sys.stdout.buffer.write(pickle.dumps(([b'a', b'b', b'c'], [True]), protocol=4))";
    let out = std::process::Command::new(facekit_testkit::venv_python()).args(["-c", script]).output().unwrap();
    let err = parse_verification_bin(&out.stdout).unwrap_err();
    assert!(format!("{err:#}").contains("3 images for 1 pairs"), "{err:#}");
}

/// `(images, issame)` pickled by `python` (a venv's interpreter) with `issame` as the numpy array
/// `ARRAY` (a Python expression over the list `issame`), as insightface's scripts write it.
fn numpy_bin(python: &std::path::Path, protocol: u8, array: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("v.bin");
    let paths: Vec<String> = photos().iter().map(|p| p.display().to_string()).collect();
    let script = format!(
        "import pickle, sys, json\nimport numpy as np\nbins = [open(p, 'rb').read() for p in json.loads(sys.argv[3])]\n\
         issame = [True, False, True]\nwith open(sys.argv[1], 'wb') as f:\n    pickle.dump((bins, {array}), f, protocol=int(sys.argv[2]))\n"
    );
    let o = std::process::Command::new(python)
        .args(["-c", &script])
        .arg(&out)
        .arg(protocol.to_string())
        .arg(serde_json::to_string(&paths).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read(&out).unwrap()
}

/// The Pythons whose numpy writes the pickles: the project venv's (numpy 2, `numpy._core`) and
/// MXNet's (numpy 1, `numpy.core`) when it is installed.
fn numpys() -> Vec<PathBuf> {
    let mut out = vec![facekit_testkit::venv_python()];
    out.extend(facekit_testkit::mxnet_python());
    out
}

#[test]
fn a_numpy_bool_array_issame_as_insightface_writes_it_reads_back_exactly() {
    for py in numpys() {
        // Protocols 2 to 4 reduce the array with `_reconstruct` and BUILD, protocol 5 (insightface's
        // pickle.HIGHEST_PROTOCOL) with `_frombuffer` over an in-band bytearray.
        for protocol in [2, 3, 4, 5] {
            let bin = numpy_bin(&py, protocol, "np.array(issame)");
            let got =
                parse_verification_bin(&bin).unwrap_or_else(|e| panic!("{} protocol {protocol}: {e:#}", py.display()));
            assert_eq!(got, expected(), "{} protocol {protocol}", py.display());
        }
    }
}

#[test]
fn numpy_arrays_that_are_not_one_dimensional_booleans_are_refused_with_their_offset() {
    let py = facekit_testkit::venv_python();
    for (array, says) in [
        ("np.array(issame, dtype=np.int64)", "dtype"),
        ("np.array(issame, dtype=np.float32)", "dtype"),
        ("np.array([issame, issame])", "dimensions"),
        ("np.array(issame, dtype=object)", "dtype \"O8\""),
    ] {
        for protocol in [2, 5] {
            let err = format!("{:#}", parse_verification_bin(&numpy_bin(&py, protocol, array)).unwrap_err());
            assert!(err.contains(says) && err.contains("at byte"), "{array} at protocol {protocol}: {err}");
        }
    }
    // A numpy array of the wrong length is a wrong pair count, as a list would be.
    let err = format!("{:#}", parse_verification_bin(&numpy_bin(&py, 4, "np.array(issame + [True])")).unwrap_err());
    assert!(err.contains("6 images for 4 pairs"), "{err}");
}
