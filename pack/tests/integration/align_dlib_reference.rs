//! Our dlib-compatible alignment against Python dlib on real photos.
//!
//! Python dlib (`scripts/dlib_chip_reference.py`) detects, predicts the 5 landmarks and cuts
//! `get_face_chip(img, shape, 224, 0.25)`; we feed the SAME landmarks to `align_dlib5` and
//! compare pixels, and we compare our own detector + predictor landmarks with Python's.
//! Both sides read the same lossless PNG so JPEG decoder differences do not enter.

use std::path::PathBuf;

use facekit_pack::align::{align_dlib5, dlib5_chip_details, ChipSpec, DetectorKind, FaceAligner};
use facekit_pack::photo::read_image;

struct Reference {
    landmarks: Option<[[f64; 2]; 5]>,
    face_box: Option<[i64; 4]>,
    faces: usize,
    upsampled: bool,
    chip: Option<PathBuf>,
}

/// Photos covering the three paths: plain LFW portraits, a group photo whose faces are only
/// found after 2x upsampling, and large faces where the chip needs dlib's image pyramid.
fn photos() -> Vec<PathBuf> {
    let data = facekit_testkit::shared_data();
    let mut names: Vec<_> = std::fs::read_dir(data.join("lfw100")).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    let mut out: Vec<PathBuf> = names
        .iter()
        .take(6)
        .map(|d| {
            let mut f: Vec<_> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().path()).collect();
            f.sort();
            f[0].clone()
        })
        .collect();
    for f in ["2007_007763.jpg", "Tom_Cruise_avp_2014_4.jpg", "bald_guys.jpg", "2008_001322.jpg"] {
        out.push(data.join("dlib_faces").join(f));
    }
    out
}

fn run_reference(pngs: &[PathBuf], out: &std::path::Path) -> Vec<Reference> {
    let script = facekit_testkit::workspace_root().join("scripts/dlib_chip_reference.py");
    let status = std::process::Command::new(facekit_testkit::venv_python())
        .arg(&script)
        .arg("--models")
        .arg(facekit_testkit::models_dir())
        .arg("--out")
        .arg(out)
        .args(pngs)
        .status()
        .expect("running the venv python");
    assert!(status.success(), "dlib_chip_reference.py failed");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("reference.json")).unwrap()).unwrap();
    json.as_array()
        .unwrap()
        .iter()
        .map(|e| Reference {
            landmarks: e.get("landmarks").map(|l| {
                let mut p = [[0.0; 2]; 5];
                for (k, q) in l.as_array().unwrap().iter().enumerate() {
                    p[k] = [q[0].as_f64().unwrap(), q[1].as_f64().unwrap()];
                }
                p
            }),
            face_box: e.get("box").map(|b| {
                let v: Vec<i64> = b.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
                [v[0], v[1], v[2], v[3]]
            }),
            faces: e["faces"].as_u64().unwrap() as usize,
            upsampled: e["upsampled"].as_bool().unwrap(),
            chip: e.get("chip").map(|c| PathBuf::from(c.as_str().unwrap())),
        })
        .collect()
}

fn mean_abs_diff(a: &image::RgbImage, b: &image::RgbImage) -> (f64, u8) {
    assert_eq!(a.dimensions(), b.dimensions());
    let mut sum = 0u64;
    let mut max = 0u8;
    for (x, y) in a.as_raw().iter().zip(b.as_raw()) {
        let d = x.abs_diff(*y);
        sum += u64::from(d);
        max = max.max(d);
    }
    (sum as f64 / a.as_raw().len() as f64, max)
}

#[test]
fn chips_and_landmarks_match_python_dlib_on_real_photos() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = photos();
    let mut pngs = Vec::new();
    let mut images = Vec::new();
    for (i, p) in photos.iter().enumerate() {
        let img = read_image(p).unwrap();
        let png = tmp.path().join(format!("in{i}.png"));
        img.save(&png).unwrap();
        pngs.push(png);
        images.push(img);
    }
    let refs = run_reference(&pngs, &tmp.path().join("ref"));
    assert_eq!(refs.len(), photos.len());

    let spec = ChipSpec::default();
    let aligner = FaceAligner::new(Some(&facekit_testkit::models_dir()), DetectorKind::Hog, spec).unwrap();
    let (mut compared, mut pyramid, mut upsampled) = (0, 0, 0);
    for ((photo, img), r) in photos.iter().zip(&images).zip(&refs) {
        let name = photo.file_name().unwrap().to_string_lossy();
        let (Some(lm), Some(chip_path)) = (r.landmarks, &r.chip) else {
            panic!("Python dlib found no face in {name}: the test photos must all have faces");
        };
        // 1. Same landmarks in, same chip out.
        let ours = align_dlib5(img, &lm, &spec);
        let theirs = image::open(chip_path).unwrap().to_rgb8();
        let (mad, max) = mean_abs_diff(&ours, &theirs);
        let depth = dlib5_chip_details(&lm, &spec).pyramid_depth();
        eprintln!("{name}: mean |diff| {mad:.4}, max {max}, pyramid depth {depth}, upsampled {}", r.upsampled);
        assert!(mad < 2.0, "{name}: chip differs from dlib's by {mad:.3} grey levels on average");
        // The bar is the mean above; we go further and keep dlib's exact f64 operation
        // order, so any difference at all means a speed-up changed the arithmetic.
        assert_eq!(max, 0, "{name}: chip is no longer bit-identical to dlib's (mean |diff| {mad:.4})");
        compared += 1;
        pyramid += usize::from(depth > 0);

        // 2. Our detector + predictor against Python's.
        let a = aligner.align(img).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(a.faces, r.faces, "{name}: face count");
        assert_eq!(a.upsampled, r.upsampled, "{name}: upsampling decision");
        let b = r.face_box.unwrap();
        assert_eq!([a.face.left, a.face.top, a.face.right, a.face.bottom], b, "{name}: chosen face box");
        for (p, q) in a.landmarks.iter().zip(lm.iter()) {
            assert!((p[0] - q[0]).abs() <= 1.0 && (p[1] - q[1]).abs() <= 1.0, "{name}: landmark {p:?} vs dlib {q:?}");
        }
        upsampled += usize::from(r.upsampled);
    }
    assert_eq!(compared, photos.len());
    assert!(pyramid >= 1, "no photo exercised dlib's pyramid path");
    assert!(upsampled >= 1, "no photo exercised the 2x upsampling path");
}
