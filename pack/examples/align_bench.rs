//! Alignment throughput on real photos, one thread: decode, the full HOG detect + 5 landmarks +
//! chip, the dlib chip cut alone, and the `--landmarks` path's stages (ArcFace-template warp,
//! JPEG q95 encode, SHA-256 of the file). Used by `scripts/bench-align.sh`.
//!
//! Usage: align_bench <image>... (prints one `stage seconds images` line per stage)

use std::time::Instant;

use facekit_pack::align::chip::warp_affine_exact;
use facekit_pack::align::{align_arcface5, align_dlib5, arcface5_transform, ChipSpec, DetectorKind, FaceAligner};
use facekit_pack::encode as codec;
use facekit_pack::photo::decode_image;
use facekit_shard::Encoding;

fn main() -> anyhow::Result<()> {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(!paths.is_empty(), "usage: align_bench <image>...");
    let bytes: Vec<Vec<u8>> = paths.iter().map(std::fs::read).collect::<Result<_, _>>()?;

    let t = Instant::now();
    let images: Vec<_> = bytes.iter().map(|b| decode_image(b)).collect::<Result<_, _>>()?;
    println!("decode {:.3} {}", t.elapsed().as_secs_f64(), images.len());

    let spec = ChipSpec::default();
    // The models where scripts/setup.sh's environment says (`FACEKIT_MODELS`), else ./models.
    let models = std::env::var_os("FACEKIT_MODELS").map(std::path::PathBuf::from);
    let aligner = FaceAligner::new(models.as_deref(), DetectorKind::Hog, spec)?;
    let t = Instant::now();
    let mut found = Vec::new();
    for img in &images {
        if let Ok(a) = aligner.align(img) {
            found.push(a.landmarks);
        } else {
            found.push([[f64::NAN; 2]; 5]);
        }
    }
    let ok = found.iter().filter(|l| !l[0][0].is_nan()).count();
    println!("detect+landmarks+chip {:.3} {}", t.elapsed().as_secs_f64(), images.len());

    let t = Instant::now();
    let mut sum = 0u64;
    for (img, lm) in images.iter().zip(&found) {
        if !lm[0][0].is_nan() {
            sum += u64::from(align_dlib5(img, lm, &spec).as_raw()[0]);
        }
    }
    println!("chip_only {:.3} {}", t.elapsed().as_secs_f64(), ok);

    // The --landmarks path: insightface-order points made from dlib's (eye centres from the eye
    // corners, nose, mouth corners below the nose); only the geometry's scale matters for timing.
    let to_insightface = |l: &[[f64; 2]; 5]| {
        let mid = |a: [f64; 2], b: [f64; 2]| [(a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0];
        let (le, re) = (mid(l[2], l[3]), mid(l[0], l[1]));
        let eyes = re[0] - le[0];
        [le, re, l[4], [le[0], l[4][1] + 0.4 * eyes], [re[0], l[4][1] + 0.4 * eyes]]
    };
    let t = Instant::now();
    let mut chips = Vec::new();
    for (img, lm) in images.iter().zip(&found) {
        if !lm[0][0].is_nan() {
            chips.push(align_arcface5(img, &to_insightface(lm), &spec));
        }
    }
    println!("arcface_warp {:.3} {}", t.elapsed().as_secs_f64(), chips.len());

    // The same warps in exact f64 arithmetic, for the fixed-point speed-up.
    let t = Instant::now();
    for (img, lm) in images.iter().zip(&found) {
        if let Some(tf) = (!lm[0][0].is_nan()).then(|| arcface5_transform(&to_insightface(lm), &spec)).flatten() {
            sum += u64::from(warp_affine_exact(img, &tf, spec.size, spec.size).as_raw()[0]);
        }
    }
    println!("arcface_warp_exact {:.3} {}", t.elapsed().as_secs_f64(), chips.len());

    let t = Instant::now();
    let bytes_out: usize = chips.iter().map(|c| codec::encode(c, Encoding::Jpeg, 95).unwrap().len()).sum();
    println!("jpeg_q95_420 {:.3} {}", t.elapsed().as_secs_f64(), chips.len());
    let t = Instant::now();
    for c in &chips {
        sum += codec::encode_with(c, Encoding::Jpeg, 95, codec::Chroma::S444).unwrap().len() as u64;
    }
    println!("jpeg_q95_444 {:.3} {}", t.elapsed().as_secs_f64(), chips.len());
    sum += bytes_out as u64;

    let t = Instant::now();
    for b in &bytes {
        use sha2::Digest;
        sum += u64::from(sha2::Sha256::digest(b)[0]);
    }
    println!("sha256 {:.3} {}", t.elapsed().as_secs_f64(), bytes.len());
    facekit_io::console::line(&format!("(checksum {sum}, {ok} faces)"));
    Ok(())
}
