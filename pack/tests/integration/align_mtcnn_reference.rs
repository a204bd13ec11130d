//! The five ArcFace points `--align arcface` takes from dlib's 68-point predictor, against a
//! second, independent detector: MTCNN (facenet-pytorch's weights, `.venv-mtcnn`), which
//! predicts the same five points directly, as the detectors insightface's data was aligned with
//! do. On LFW photos the two must agree within a few pixels; a wrong point index, a swapped
//! left/right or an eye "centre" taken from the wrong points is off by 10 px or more.

use facekit_pack::align::{LandmarkOrder, Landmarks5};
use facekit_pack::photo::read_image;

#[test]
fn arcface_points_from_68_landmarks_agree_with_mtcnn_on_lfw() {
    let Some(python) = facekit_testkit::mtcnn_python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let lfw = facekit_testkit::shared_data().join("lfw100");
    let mut people: Vec<_> = std::fs::read_dir(&lfw).unwrap().map(|e| e.unwrap().path()).collect();
    people.sort();
    let aligner = super::align_arcface_reference::arcface_aligner();
    let (mut pngs, mut ours) = (Vec::new(), Vec::new());
    for (i, person) in people.iter().step_by(3).enumerate() {
        let mut files: Vec<_> = std::fs::read_dir(person).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        let img = read_image(&files[0]).unwrap();
        let Some(face) = aligner.detect(&img).largest() else { continue };
        let png = tmp.path().join(format!("{i}.png"));
        img.save(&png).unwrap();
        pngs.push(png);
        ours.push((files[0].clone(), aligner.landmarks(&img, face)));
    }
    assert!(ours.len() >= 25, "dlib found faces in only {} LFW photos", ours.len());
    let out = std::process::Command::new(python)
        .arg(facekit_testkit::workspace_root().join("scripts/mtcnn_landmarks_reference.py"))
        .args(&pngs)
        .output()
        .expect("running the MTCNN venv's python");
    assert!(out.status.success(), "mtcnn_landmarks_reference.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let theirs: Vec<Vec<serde_json::Value>> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(theirs.len(), ours.len());
    let mut errors: [Vec<f64>; 5] = Default::default();
    for ((file, p), t) in ours.iter().zip(&theirs) {
        // The same face: the MTCNN box whose centre is nearest the centre of dlib's points (an
        // LFW photo may show other people too, and the two detectors need not rank them alike).
        let centre = p.iter().fold([0.0, 0.0], |a, q| [a[0] + q[0] / 5.0, a[1] + q[1] / 5.0]);
        let box_distance = |f: &serde_json::Value| {
            let b: Vec<f64> = f["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            ((b[0] + b[2]) / 2.0 - centre[0]).hypot((b[1] + b[3]) / 2.0 - centre[1])
        };
        let Some(t) = t.iter().min_by(|a, b| box_distance(a).total_cmp(&box_distance(b))) else { continue };
        let q: Vec<[f64; 2]> =
            t["points"].as_array().unwrap().iter().map(|v| [v[0].as_f64().unwrap(), v[1].as_f64().unwrap()]).collect();
        let eyes = Landmarks5 { points: *p, order: LandmarkOrder::InsightFace }.eye_distance();
        for k in 0..5 {
            let e = (p[k][0] - q[k][0]).hypot(p[k][1] - q[k][1]);
            // Beyond a third of the eye distance the points are not the same facial feature.
            assert!(e < eyes / 3.0, "{}: point {k} at {:?}, MTCNN {:?} ({e:.1} px)", file.display(), p[k], q[k]);
            errors[k].push(e);
        }
    }
    assert!(errors[0].len() >= 25, "MTCNN and dlib agreed on a face in only {} photos", errors[0].len());
    for (k, e) in errors.iter_mut().enumerate() {
        e.sort_by(f64::total_cmp);
        let median = e[e.len() / 2];
        let p90 = e[e.len() * 9 / 10];
        eprintln!("point {k}: median {median:.2} px, 90th percentile {p90:.2} px over {} faces", e.len());
        assert!(
            median < 4.0 && p90 < 7.0,
            "point {k}: median {median:.2} px, 90th percentile {p90:.2} px from MTCNN's"
        );
    }
}
