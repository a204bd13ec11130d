//! `--align arcface` against insightface's own recipe on real photos.
//!
//! facekit detects the face, takes the five ArcFace points from dlib's 68-point predictor and
//! cuts the chip; `scripts/arcface_chip_reference.py` (OpenCV and scikit-image in `.venv-cv`)
//! cuts a chip from the SAME five points as insightface's `norm_crop` does: scikit-image's
//! `SimilarityTransform.estimate` onto `arcface_dst` scaled by `estimate_norm`'s rule, then
//! `cv2.warpAffine(borderValue=0)`. Both read the same lossless PNG. The chips must agree within
//! one grey level at 112 px, at 128 px (`estimate_norm`'s other scaling: ratio size/128 and 8 px
//! to the right) and at 224 px, on centred faces and on a face cut by the photo's border.

use std::path::{Path, PathBuf};

use facekit_pack::align::{align_arcface5, Alignment, ChipSpec, DetectorKind, FaceAligner};
use facekit_pack::photo::read_image;
use image::RgbImage;

/// LFW portraits, dlib's larger photos (a chip much smaller than the face), and one LFW photo
/// cropped so that the face runs off the left and top edges.
fn photos(tmp: &Path) -> Vec<(PathBuf, RgbImage)> {
    let data = facekit_testkit::shared_data();
    let mut people: Vec<_> = std::fs::read_dir(data.join("lfw100")).unwrap().map(|e| e.unwrap().path()).collect();
    people.sort();
    let mut files: Vec<PathBuf> = people
        .iter()
        .step_by(12)
        .map(|d| {
            let mut f: Vec<_> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().path()).collect();
            f.sort();
            f[0].clone()
        })
        .collect();
    for f in ["Tom_Cruise_avp_2014_4.jpg", "bald_guys.jpg"] {
        files.push(data.join("dlib_faces").join(f));
    }
    let mut out: Vec<(PathBuf, RgbImage)> = files.iter().map(|f| (f.clone(), read_image(f).unwrap())).collect();
    let whole = read_image(&files[0]).unwrap();
    let cut = image::imageops::crop_imm(&whole, 98, 96, 152, 154).to_image();
    out.push((PathBuf::from("cut-at-the-border"), cut));
    for (i, (_, img)) in out.iter_mut().enumerate() {
        let png = tmp.join(format!("in{i}.png"));
        img.save(&png).unwrap();
    }
    out
}

#[test]
fn arcface_chips_equal_insightfaces_norm_crop_on_real_photos() {
    let Some(python) = facekit_testkit::opencv_python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let photos = photos(tmp.path());
    let aligner = arcface_aligner();
    let sizes = [112u32, 128, 224];
    let (mut items, mut ours) = (Vec::new(), Vec::new());
    for (i, (name, img)) in photos.iter().enumerate() {
        let face = aligner.detect(img).largest().unwrap_or_else(|| panic!("{}: no face", name.display()));
        let points = aligner.landmarks(img, face);
        // The aligner's own chip is the warp of these points onto the template.
        let aligned = aligner.align(img).unwrap();
        assert_eq!(aligned.landmarks, points);
        assert_eq!(aligned.chip, align_arcface5(img, &points, &ChipSpec::arcface()), "{}", name.display());
        for size in sizes {
            let spec = ChipSpec { size, padding: 0.0 };
            items.push(serde_json::json!({
                "image": tmp.path().join(format!("in{i}.png")),
                "points": points,
                "size": size,
            }));
            ours.push((name.clone(), size, align_arcface5(img, &points, &spec)));
        }
    }
    let list = tmp.path().join("items.json");
    std::fs::write(&list, serde_json::to_vec(&items).unwrap()).unwrap();
    let out = tmp.path().join("ref");
    let status = std::process::Command::new(python)
        .arg(facekit_testkit::workspace_root().join("scripts/arcface_chip_reference.py"))
        .arg("--out")
        .arg(&out)
        .arg(&list)
        .status()
        .expect("running the OpenCV venv's python");
    assert!(status.success(), "arcface_chip_reference.py failed");
    let mut black = 0usize;
    for (k, (name, size, chip)) in ours.iter().enumerate() {
        let reference = image::open(out.join(format!("{k}.png"))).unwrap().to_rgb8();
        assert_eq!(reference.dimensions(), chip.dimensions());
        let mut worst = (0u8, 0u32, 0u32);
        for (x, y, p) in chip.enumerate_pixels() {
            let q = reference.get_pixel(x, y);
            for c in 0..3 {
                let d = p[c].abs_diff(q[c]);
                if d > worst.0 {
                    worst = (d, x, y);
                }
            }
        }
        assert!(
            worst.0 <= 1,
            "{} at {size} px: {} grey levels from OpenCV's chip at ({}, {}): ours {:?}, OpenCV {:?}",
            name.display(),
            worst.0,
            worst.1,
            worst.2,
            chip.get_pixel(worst.1, worst.2),
            reference.get_pixel(worst.1, worst.2)
        );
        black += chip.pixels().filter(|p| p.0 == [0, 0, 0]).count();
    }
    // The face cut by the border must give chips with black where the photo ends, in both.
    assert!(black > 1000, "no chip reached outside its photo ({black} black pixels)");
}

/// The HOG detector with ArcFace alignment at 112 pixels, models from the test's models folder.
pub(crate) fn arcface_aligner() -> FaceAligner {
    FaceAligner::open(Some(&facekit_testkit::models_dir()), DetectorKind::Hog, ChipSpec::arcface(), Alignment::Arcface)
        .unwrap()
}
