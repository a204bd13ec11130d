//! Face detection policy on real photos: no face, too small, several faces, CNN detector.

use facekit_pack::align::{AlignError, ChipSpec, DetectorKind, FaceAligner};
use facekit_pack::photo::read_image;

fn hog() -> FaceAligner {
    FaceAligner::new(Some(&facekit_testkit::models_dir()), DetectorKind::Hog, ChipSpec::default()).unwrap()
}

#[test]
fn photo_of_dogs_has_no_face_even_after_upsampling() {
    let img = read_image(&facekit_testkit::shared_data().join("dlib_faces/dogs.jpg")).unwrap();
    let err = hog().align(&img).unwrap_err();
    assert_eq!(err, AlignError::NoFace);
    assert_eq!(err.reason(), "no_face");
}

#[test]
fn face_with_eyes_closer_than_the_threshold_is_rejected_as_too_small() {
    let img = read_image(&facekit_testkit::shared_data().join("lfw100/Abdullah_Gul/Abdullah_Gul_0001.jpg")).unwrap();
    // The eyes are about 40 px apart in this 250x250 photo.
    let a = hog().align(&img).unwrap();
    assert_eq!(a.chip.dimensions(), (224, 224));
    match hog().with_min_eye_distance(60.0).align(&img) {
        Err(AlignError::TooSmall { eye_distance, min }) => {
            assert!(eye_distance > 30.0 && eye_distance < 60.0, "{eye_distance}");
            assert_eq!(min, 60.0);
        }
        other => panic!("expected too_small, got {other:?}"),
    }
}

#[test]
fn group_photo_uses_the_largest_face_and_reports_the_count() {
    let img = read_image(&facekit_testkit::shared_data().join("dlib_faces/bald_guys.jpg")).unwrap();
    let aligner = hog();
    let det = aligner.detect(&img);
    assert!(det.faces.len() > 10, "{} faces", det.faces.len());
    let a = aligner.align(&img).unwrap();
    assert_eq!(a.faces, det.faces.len());
    assert!(det.faces.iter().all(|f| f.area() <= a.face.area()));
    // The landmarks lie inside the chosen box (a box/landmark mix-up would not).
    for p in a.landmarks {
        assert!(p[0] >= a.face.left as f64 && p[0] <= a.face.right as f64, "{p:?} outside {:?}", a.face);
        assert!(p[1] >= a.face.top as f64 && p[1] <= a.face.bottom as f64, "{p:?} outside {:?}", a.face);
    }
}

#[test]
fn cnn_detector_finds_the_same_face_as_hog_on_a_portrait() {
    let img = read_image(&facekit_testkit::shared_data().join("lfw100/Adrien_Brody/Adrien_Brody_0001.jpg")).unwrap();
    let cnn = FaceAligner::new(Some(&facekit_testkit::models_dir()), DetectorKind::Cnn, ChipSpec::default()).unwrap();
    let (a, b) = (cnn.align(&img).unwrap(), hog().align(&img).unwrap());
    assert!(!a.upsampled, "the CNN path never upsamples");
    // Different boxes give the predictor different starts; the eyes still agree closely.
    for (p, q) in a.landmarks.iter().zip(&b.landmarks).take(4) {
        assert!((p[0] - q[0]).hypot(p[1] - q[1]) < 4.0, "cnn {p:?} vs hog {q:?}");
    }
}

#[test]
fn missing_models_folder_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = FaceAligner::new(Some(dir.path()), DetectorKind::Hog, ChipSpec::default()).err().unwrap();
    let msg = format!("{err:#}");
    assert!(msg.contains("shape_predictor_5_face_landmarks.dat") && msg.contains("setup.sh"), "{msg}");
}
