//! Hostile and damaged photos: decoding never crashes, never reuses a decoder a failure left
//! behind, and never turns damage into an image (issue "Trust").

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn lfw() -> PathBuf {
    facekit_testkit::shared_data().join("lfw100")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_header_truncated_jpeg_does_not_poison_the_next_decode() {
    let good = fs::read(lfw().join("Colin_Powell/Colin_Powell_0002.jpg")).unwrap();
    let cut = fs::read(lfw().join("Colin_Powell/Colin_Powell_0001.jpg")).unwrap()[..600].to_vec();
    // Same thread, alternating: the decoder a failure leaves behind must never be reused.
    for _ in 0..3 {
        let e = facekit_pack::photo::decode_image(&cut).unwrap_err();
        assert_eq!(e.reason(), "truncated_or_corrupt", "{e}");
        let img = facekit_pack::photo::decode_image(&good).unwrap();
        assert_eq!(img.dimensions(), (250, 250));
    }
}

/// Damaged copies of a real JPEG: one byte changed in the headers and in the entropy-coded data.
fn damaged_jpegs() -> Vec<(String, Vec<u8>)> {
    let good = fs::read(lfw().join("Colin_Powell/Colin_Powell_0002.jpg")).unwrap();
    let sos = good.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    let mut out = Vec::new();
    for at in (2..sos).step_by(7).chain((sos + 20..good.len() - 2).step_by(good.len() / 40)) {
        for v in [0x00u8, 0xFF, 0x5A] {
            let mut b = good.clone();
            if b[at] == v {
                continue;
            }
            b[at] = v;
            out.push((format!("byte {at} = {v:#04x}"), b));
        }
    }
    out
}

#[test]
fn damaged_jpegs_that_pillow_refuses_are_rejects_not_garbage() {
    let t = tempfile::tempdir().unwrap();
    let cases = damaged_jpegs();
    for (i, (_, b)) in cases.iter().enumerate() {
        fs::write(t.path().join(format!("{i}.jpg")), b).unwrap();
    }
    // Pillow (libjpeg-turbo underneath): which of them does it refuse to load?
    let py = Command::new(facekit_testkit::venv_python())
        .arg("-c")
        .arg(
            "import sys, warnings\nfrom PIL import Image\nfor i in range(int(sys.argv[2])):\n    \
             try:\n        Image.open(f'{sys.argv[1]}/{i}.jpg').load(); print('ok')\n    except Exception: print('refused')",
        )
        .args([s(t.path()), &cases.len().to_string()])
        .output()
        .unwrap();
    assert!(py.status.success(), "{}", String::from_utf8_lossy(&py.stderr));
    let verdicts: Vec<String> = String::from_utf8_lossy(&py.stdout).lines().map(str::to_string).collect();
    assert_eq!(verdicts.len(), cases.len());
    let mut refused_by_pillow = 0;
    for ((what, b), v) in cases.iter().zip(&verdicts) {
        if v == "refused" {
            refused_by_pillow += 1;
            // A reject for what it is (damaged, or no longer recognisable as an image), never a
            // decoded image of garbage that then counts as `no_face` or, worse, is packed.
            let got = facekit_pack::photo::decode_image(b);
            assert!(
                matches!(&got, Err(e) if ["truncated_or_corrupt", "not_an_image", "unsupported"].contains(&e.reason())),
                "{what}: Pillow refuses it, facekit gave {:?}",
                got.map(|i| i.dimensions())
            );
        }
    }
    assert!(refused_by_pillow > 5, "the damage must include files Pillow refuses ({refused_by_pillow})");
}

#[test]
fn a_truncated_jpeg_with_an_end_marker_appended_is_a_reject() {
    let good = fs::read(lfw().join("Colin_Powell/Colin_Powell_0002.jpg")).unwrap();
    for keep in [good.len() / 2, good.len() * 3 / 4] {
        let mut b = good[..keep].to_vec();
        b.extend_from_slice(&[0xFF, 0xD9]);
        let e = facekit_pack::photo::decode_image(&b).map(|i| i.dimensions()).unwrap_err();
        assert_eq!(e.reason(), "truncated_or_corrupt", "cut at {keep}: {e}");
    }
}
