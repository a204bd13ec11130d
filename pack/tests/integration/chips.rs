//! Chips for new photos cut as a dataset's were (`facekit_pack::chips`): what a manifest allows to
//! reproduce, and (with dlib) that a chip of a photo is the record `pack` made of the same photo.

#[cfg(feature = "dlib")]
use facekit_pack::align::Alignment;
use facekit_pack::align::{ChipSpec, Template};
use facekit_pack::chips::ChipRecipe;
use facekit_shard::manifest::{AlignmentInfo, EncodingInfo};
use facekit_shard::Encoding;

fn dlib_alignment(spec: ChipSpec) -> AlignmentInfo {
    AlignmentInfo {
        method: "dlib-get-face-chip".into(),
        detector: "hog".into(),
        size: spec.size,
        padding: spec.padding,
        template: "dlib5".into(),
        template_points: Template::Dlib5.points(&spec).to_vec(),
        interpolation: "bilinear".into(),
    }
}

fn jpeg(size: u32) -> EncodingInfo {
    EncodingInfo { format: Encoding::Jpeg, quality: Some(90), chroma: Some("444".into()), width: size, height: size }
}

fn refusal(alignment: Option<&AlignmentInfo>, encoding: &EncodingInfo) -> String {
    format!("{:#}", ChipRecipe::like(alignment, encoding).unwrap_err())
}

#[test]
fn datasets_whose_alignment_cannot_be_reproduced_are_refused_with_the_reason() {
    let spec = ChipSpec { size: 112, padding: 0.25 };
    let enc = jpeg(112);
    assert!(refusal(None, &enc).contains("records no alignment"));
    let mut landmarks = dlib_alignment(spec);
    (landmarks.method, landmarks.detector, landmarks.template) =
        ("arcface5-similarity-warp".into(), "landmarks-file".into(), "arcface5".into());
    assert!(refusal(Some(&landmarks), &enc).contains("--landmarks file"));
    let mut other = dlib_alignment(spec);
    other.method = "mtcnn-similarity".into();
    assert!(refusal(Some(&other), &enc).contains("cannot reproduce"));
    let mut moved = dlib_alignment(spec);
    moved.template_points[0][0] += 0.5;
    assert!(refusal(Some(&moved), &enc).contains("template points differ"));
    let mut detector = dlib_alignment(spec);
    detector.detector = "retinaface".into();
    assert!(refusal(Some(&detector), &enc).contains("retinaface"));
    assert!(refusal(Some(&dlib_alignment(spec)), &jpeg(224)).contains("224x224"));
}

/// What `facekit import rec` records for insightface's 112x112 chips.
fn imported(size: u32) -> AlignmentInfo {
    AlignmentInfo {
        method: "pre-aligned (imported from MXNet RecordIO)".into(),
        detector: "none".into(),
        size,
        padding: 0.0,
        template: "arcface5".into(),
        template_points: Template::ArcFace5.points(&ChipSpec { size, padding: 0.0 }).to_vec(),
        interpolation: "unknown".into(),
    }
}

#[cfg(feature = "dlib")]
#[test]
fn an_imported_rec_dataset_is_cut_by_the_arcface_alignment_at_its_size() {
    let enc = EncodingInfo { format: Encoding::Jpeg, quality: None, chroma: None, width: 112, height: 112 };
    let r = ChipRecipe::like(Some(&imported(112)), &enc).unwrap();
    assert_eq!(
        (r.alignment, r.detector, r.spec, r.encoding, r.quality, r.same_bytes_as_records),
        (Alignment::Arcface, facekit_pack::align::DetectorKind::Hog, ChipSpec::arcface(), Encoding::Jpeg, 95, false)
    );
    // A packed ArcFace dataset is reproduced with its own detector and quality.
    let mut packed = imported(112);
    (packed.method, packed.detector, packed.interpolation) =
        ("arcface5-similarity-warp".into(), "cnn".into(), "bilinear".into());
    let r = ChipRecipe::like(Some(&packed), &jpeg(112)).unwrap();
    assert_eq!(
        (r.alignment, r.detector, r.quality, r.same_bytes_as_records),
        (Alignment::Arcface, facekit_pack::align::DetectorKind::Cnn, 90, true)
    );
    // Its template points must be this facekit's ArcFace template (estimate_norm's at 128 px).
    packed.template_points[0][0] += 0.5;
    assert!(refusal(Some(&packed), &jpeg(112)).contains("template points differ"));
}

#[cfg(not(feature = "dlib"))]
#[test]
fn a_build_without_detection_refuses_to_align_photos() {
    let spec = ChipSpec { size: 112, padding: 0.25 };
    assert!(refusal(Some(&dlib_alignment(spec)), &jpeg(112)).contains("without face detection"));
    assert!(refusal(Some(&imported(112)), &jpeg(112)).contains("without face detection"));
}

#[cfg(feature = "dlib")]
mod with_dlib {
    use super::*;
    use facekit_pack::chips::{make_chips, ChipMaker};
    use facekit_pack::encode::Chroma;
    use facekit_pack::{PackEnd, PackOptions, RejectReason};
    use facekit_shard::Dataset;
    use std::path::{Path, PathBuf};

    /// Links the first 4 photos of 3 lfw100 people into `root/<Name>/`, plus one file that is not an image.
    fn photos(root: &Path) -> Vec<PathBuf> {
        let lfw = facekit_testkit::shared_data().join("lfw100");
        let mut out = Vec::new();
        for name in ["Ariel_Sharon", "Bill_Gates", "Colin_Powell"] {
            std::fs::create_dir_all(root.join(name)).unwrap();
            for k in 1..=4 {
                let f = format!("{name}_{k:04}.jpg");
                std::os::unix::fs::symlink(lfw.join(name).join(&f), root.join(name).join(&f)).unwrap();
                out.push(root.join(name).join(&f));
            }
        }
        out
    }

    fn pack(roots: &Path, output: &Path, encoding: Encoding) -> Dataset {
        pack_aligned(roots, output, encoding, Alignment::Dlib, ChipSpec { size: 96, padding: 0.3 })
    }

    fn pack_aligned(roots: &Path, output: &Path, encoding: Encoding, alignment: Alignment, spec: ChipSpec) -> Dataset {
        let opts = PackOptions {
            roots: vec![roots.to_path_buf()],
            output: output.to_path_buf(),
            detector: facekit_pack::align::DetectorKind::Hog,
            alignment,
            models: Some(facekit_testkit::models_dir()),
            landmarks: None,
            attributes: None,
            utkface_labels: false,
            spec,
            encoding,
            quality: 87,
            chroma: Chroma::S444,
            shard_size: 1 << 30,
            threads: 2,
            valid_fraction: 0.0,
            valid_per_class: 0,
            part: None,
            resume: false,
            overwrite: false,
            progress: false,
            stop: facekit_io::StopFlag::new(),
            events: Default::default(),
        };
        assert!(matches!(facekit_pack::pack(&opts).unwrap(), PackEnd::Done(_)));
        Dataset::open_name(output.to_str().unwrap(), None).unwrap()
    }

    fn recipe(ds: &Dataset) -> ChipRecipe {
        let m = ds.manifest();
        ChipRecipe::like(m.alignment.as_ref(), &m.encoding).unwrap()
    }

    #[test]
    fn chip_of_a_photo_is_byte_identical_to_the_record_pack_made_of_it() {
        let t = tempfile::tempdir().unwrap();
        let files = photos(&t.path().join("photos"));
        let ds = pack(&t.path().join("photos"), &t.path().join("out/ds"), Encoding::Jpeg);
        let r = recipe(&ds);
        assert_eq!(
            (r.spec, r.encoding, r.quality, r.chroma, r.same_bytes_as_records),
            (ChipSpec { size: 96, padding: 0.3 }, Encoding::Jpeg, 87, Chroma::S444, true)
        );
        let maker = ChipMaker::new(&r, Some(&facekit_testkit::models_dir())).unwrap();
        let chips = make_chips(&r, Some(&facekit_testkit::models_dir()), &files, 2, false).unwrap();
        assert_eq!(ds.len(), files.len(), "every test photo has a face");
        for i in 0..ds.len() {
            let rec = ds.record(i).unwrap();
            let rel = std::str::from_utf8(rec.path).unwrap();
            let k = files.iter().position(|f| f.ends_with(rel)).unwrap_or_else(|| panic!("{rel} is no test photo"));
            assert!(maker.chip(&files[k]).unwrap() == rec.payload, "{rel}: chip differs from the record");
            assert!(chips[k].as_ref().unwrap() == rec.payload, "{rel}: parallel chip differs from the record");
        }
    }

    #[test]
    fn an_arcface_pack_records_its_alignment_and_its_chips_are_its_records() {
        let t = tempfile::tempdir().unwrap();
        let files = photos(&t.path().join("photos"));
        let spec = ChipSpec { size: 128, padding: 0.0 };
        let ds =
            pack_aligned(&t.path().join("photos"), &t.path().join("out/af"), Encoding::Jpeg, Alignment::Arcface, spec);
        let a = ds.manifest().alignment.clone().unwrap();
        assert_eq!(
            (a.method.as_str(), a.template.as_str(), a.detector.as_str()),
            ("arcface5-similarity-warp", "arcface5", "hog")
        );
        // estimate_norm's 128 px template: arcface_dst moved 8 px to the right.
        assert!(
            (a.template_points[0][0] - (38.2946 + 8.0)).abs() < 1e-9
                && (a.template_points[0][1] - 51.6963).abs() < 1e-9
        );
        let r = recipe(&ds);
        assert_eq!((r.alignment, r.spec, r.same_bytes_as_records), (Alignment::Arcface, spec, true));
        let chips = make_chips(&r, Some(&facekit_testkit::models_dir()), &files, 2, false).unwrap();
        assert_eq!(ds.len(), files.len(), "every test photo has a face");
        for i in 0..ds.len() {
            let rec = ds.record(i).unwrap();
            let rel = std::str::from_utf8(rec.path).unwrap();
            let k = files.iter().position(|f| f.ends_with(rel)).unwrap();
            assert!(chips[k].as_ref().unwrap() == rec.payload, "{rel}: chip differs from the record");
        }
        // The dlib pack of the same photos cuts other chips.
        let dlib =
            pack_aligned(&t.path().join("photos"), &t.path().join("out/dl"), Encoding::Jpeg, Alignment::Dlib, spec);
        assert!(dlib.record(0).unwrap().payload != ds.record(0).unwrap().payload);
    }

    #[test]
    fn raw_dataset_chips_are_png_with_the_records_pixels() {
        let t = tempfile::tempdir().unwrap();
        let files = photos(&t.path().join("photos"));
        let ds = pack(&t.path().join("photos"), &t.path().join("out/raw"), Encoding::RawZstd);
        let r = recipe(&ds);
        assert_eq!((r.encoding, r.same_bytes_as_records), (Encoding::Png, false));
        let chips = make_chips(&r, Some(&facekit_testkit::models_dir()), &files[..4], 1, false).unwrap();
        for i in 0..ds.len() {
            let rec = ds.record(i).unwrap();
            let rel = std::str::from_utf8(rec.path).unwrap();
            let Some(k) = files[..4].iter().position(|f| f.ends_with(rel)) else { continue };
            let png = image::load_from_memory_with_format(chips[k].as_ref().unwrap(), image::ImageFormat::Png)
                .unwrap()
                .into_rgb8();
            let raw = zstd::bulk::decompress(rec.payload, 96 * 96 * 3).unwrap();
            assert_eq!((png.width(), png.height()), (96, 96));
            assert!(png.as_raw() == &raw, "{rel}: PNG chip pixels differ from the raw record");
        }
    }

    #[test]
    fn a_photo_without_a_face_or_not_an_image_is_a_rejection_not_an_error() {
        let t = tempfile::tempdir().unwrap();
        photos(&t.path().join("photos"));
        let ds = pack(&t.path().join("photos"), &t.path().join("out/ds"), Encoding::Jpeg);
        let r = recipe(&ds);
        let junk = t.path().join("junk.jpg");
        std::fs::write(&junk, b"not a photo at all").unwrap();
        let dogs = facekit_testkit::shared_data().join("dlib_faces/dogs.jpg");
        let missing = t.path().join("missing.jpg");
        let out =
            make_chips(&r, Some(&facekit_testkit::models_dir()), &[junk, dogs.clone(), missing], 2, false).unwrap();
        assert_eq!(out[0].as_ref().unwrap_err().reason, RejectReason::NotAnImage);
        if dogs.is_file() {
            assert_eq!(out[1].as_ref().unwrap_err().reason, RejectReason::NoFace);
        }
        assert_eq!(out[2].as_ref().unwrap_err().reason, RejectReason::Unreadable);
    }
}
