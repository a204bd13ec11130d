//! Alignment puts the landmarks where the template says, checked on real photos by painting
//! coloured markers at the landmarks and finding them again in the chip.
//!
//! The expected positions come only from the published templates; where the markers end up is
//! measured from the output pixels, so a wrong transform, a transposed axis, a half-pixel
//! convention error or a swapped landmark order all fail here.

use facekit_pack::align::{align_arcface5, align_dlib5, ChipSpec, Similarity, Template};
use facekit_pack::photo::read_image;
use image::{Rgb, RgbImage};

const COLOURS: [[u8; 3]; 5] = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [0, 255, 255], [255, 0, 255]];

fn photo() -> RgbImage {
    read_image(&facekit_testkit::shared_data().join("lfw100/Abdullah_Gul/Abdullah_Gul_0001.jpg")).unwrap()
}

/// Paints a 5x5 marker of colour `COLOURS[i]` centred on each (integer) landmark.
fn paint(img: &mut RgbImage, pts: &[[f64; 2]; 5]) {
    for (p, c) in pts.iter().zip(COLOURS) {
        let (cx, cy) = (p[0].round() as i64, p[1].round() as i64);
        for y in cy - 2..=cy + 2 {
            for x in cx - 2..=cx + 2 {
                img.put_pixel(x as u32, y as u32, Rgb(c));
            }
        }
    }
}

/// Centroid of marker-coloured pixels within 6 px of `near`, or None if there are none.
fn find_marker(chip: &RgbImage, colour: [u8; 3], near: [f64; 2]) -> Option<[f64; 2]> {
    let (mut sx, mut sy, mut n) = (0.0, 0.0, 0.0);
    for y in 0..chip.height() {
        for x in 0..chip.width() {
            let (dx, dy) = (f64::from(x) - near[0], f64::from(y) - near[1]);
            if dx.abs() > 6.0 || dy.abs() > 6.0 {
                continue;
            }
            let p = chip.get_pixel(x, y);
            let d2: i32 = (0..3).map(|k| (i32::from(p[k]) - i32::from(colour[k])).pow(2)).sum();
            if d2 < 70 * 70 {
                sx += f64::from(x);
                sy += f64::from(y);
                n += 1.0;
            }
        }
    }
    (n > 0.0).then(|| [sx / n, sy / n])
}

fn assert_markers_on_template(chip: &RgbImage, template: &[[f64; 2]; 5], tol: f64, what: &str) {
    for (i, (t, c)) in template.iter().zip(COLOURS).enumerate() {
        let found =
            find_marker(chip, c, *t).unwrap_or_else(|| panic!("{what}: marker {i} not near template point {t:?}"));
        let err = (found[0] - t[0]).hypot(found[1] - t[1]);
        assert!(err < tol, "{what}: landmark {i} landed at {found:?}, template {t:?} (error {err:.2} px)");
    }
}

/// Plausible landmark positions on this LFW photo in insightface order (eye centres, nose
/// tip, mouth corners), read off the image by eye; only their rough placement matters.
const GUL_INSIGHTFACE: [[f64; 2]; 5] = [[108.0, 114.0], [147.0, 113.0], [126.0, 138.0], [111.0, 160.0], [141.0, 159.0]];
/// dlib 5-point landmarks Python dlib finds on the same photo.
const GUL_DLIB5: [[f64; 2]; 5] = [[155.0, 113.0], [139.0, 113.0], [101.0, 115.0], [115.0, 114.0], [125.0, 143.0]];

#[test]
fn arcface_alignment_moves_real_photo_landmarks_onto_the_arcface_template() {
    let mut img = photo();
    paint(&mut img, &GUL_INSIGHTFACE);
    for spec in [ChipSpec::arcface(), ChipSpec { size: 224, padding: 0.1 }] {
        let chip = align_arcface5(&img, &GUL_INSIGHTFACE, &spec);
        assert_eq!(chip.dimensions(), (spec.size, spec.size));
        // Real landmarks do not fit the template exactly: compare with where the fitted
        // similarity sends them (independently re-fitted here), and that with the template.
        let template = Template::ArcFace5.points(&spec);
        let fit = Similarity::fit(&GUL_INSIGHTFACE, &template);
        let landed = GUL_INSIGHTFACE.map(|p| fit.apply(p));
        for (l, t) in landed.iter().zip(&template) {
            let scale = f64::from(spec.size) / 112.0;
            assert!((l[0] - t[0]).hypot(l[1] - t[1]) < 6.0 * scale, "landmark far from template: {l:?} vs {t:?}");
        }
        assert_markers_on_template(&chip, &landed, 1.0, &format!("arcface {spec:?}"));
    }
}

#[test]
fn arcface_alignment_undoes_a_known_rotation_and_scale() {
    // Landmarks that ARE the template under a known similarity (rotated 25 degrees, 1.6x):
    // alignment must bring each one back onto its template point.
    let spec = ChipSpec::arcface();
    let template = Template::ArcFace5.points(&spec);
    let truth = Similarity { scale: 1.6, angle: 25f64.to_radians(), t: [70.0, 20.0] };
    let pts = template.map(|p| {
        let q = truth.apply(p);
        [q[0].round(), q[1].round()]
    });
    let mut img = photo();
    paint(&mut img, &pts);
    let chip = align_arcface5(&img, &pts, &spec);
    // Rounding the landmarks to whole pixels moves them by up to 0.7 px, i.e. 0.45 chip px.
    assert_markers_on_template(&chip, &template, 1.0, "rotated arcface");
}

#[test]
fn dlib_alignment_moves_dlib_landmarks_onto_dlibs_template() {
    let mut img = photo();
    paint(&mut img, &GUL_DLIB5);
    let spec = ChipSpec::default();
    let chip = align_dlib5(&img, &GUL_DLIB5, &spec);
    assert_eq!(chip.dimensions(), (224, 224));
    let template = Template::Dlib5.points(&spec);
    let fit = Similarity::fit(&template, &GUL_DLIB5);
    // dlib's chip rectangle is cols * scale - 1 wide: the chip is stretched by up to one
    // source pixel relative to the fitted similarity, which is why 1.5 px is allowed.
    let landed = GUL_DLIB5.map(|p| fit.to_affine().inverse().unwrap().apply(p));
    assert_markers_on_template(&chip, &landed, 1.5, "dlib 224/0.25");
}

#[test]
fn swapped_eye_order_is_visible_as_a_mirrored_fit() {
    // Feeding insightface-order points to a template with swapped eyes makes the fit worse:
    // the order documentation matters and this is how a mix-up would show.
    let spec = ChipSpec::arcface();
    let template = Template::ArcFace5.points(&spec);
    let good = Similarity::fit(&GUL_INSIGHTFACE, &template);
    let mut swapped = GUL_INSIGHTFACE;
    swapped.swap(0, 1);
    swapped.swap(3, 4);
    let bad = Similarity::fit(&swapped, &template);
    let residual = |s: &Similarity, pts: &[[f64; 2]; 5]| -> f64 {
        pts.iter()
            .zip(&template)
            .map(|(p, t)| {
                let q = s.apply(*p);
                (q[0] - t[0]).hypot(q[1] - t[1])
            })
            .sum()
    };
    assert!(residual(&bad, &swapped) > 5.0 * residual(&good, &GUL_INSIGHTFACE));
}
