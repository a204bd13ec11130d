//! Alignment throughput on real photos, one thread: decode, chip cut from given landmarks,
//! and the full HOG detect + 5 landmarks + chip. Used by `scripts/bench-align.sh`.
//!
//! Usage: align_bench <image>... (prints one `stage seconds images` line per stage)

use std::time::Instant;

use facekit::align::{align_dlib5, ChipSpec, DetectorKind, FaceAligner};
use facekit::image_io::decode_image;

fn main() -> anyhow::Result<()> {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(!paths.is_empty(), "usage: align_bench <image>...");
    let bytes: Vec<Vec<u8>> = paths.iter().map(std::fs::read).collect::<Result<_, _>>()?;

    let t = Instant::now();
    let images: Vec<_> = bytes.iter().map(|b| decode_image(b)).collect::<Result<_, _>>()?;
    println!("decode {:.3} {}", t.elapsed().as_secs_f64(), images.len());

    let spec = ChipSpec::default();
    let aligner = FaceAligner::new(None, DetectorKind::Hog, spec)?;
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
    eprintln!("(checksum {sum}, {ok} faces)");
    Ok(())
}
