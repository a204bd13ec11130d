//! The data loader over small datasets packed from real LFW photos (64x64 JPEG, no dlib).

use facekit_data::{decode_record, Augment, Batch, Error, Loader, LoaderConfig, Problem};
use facekit_shard::manifest::{EncodingInfo, LabelEntry, LabelMap, SourceInfo};
use facekit_shard::{Dataset, DatasetPaths, DatasetWriter, Encoding, Gender, Labels, Manifest, Record};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

const SIDE: u32 = 64;
const IDENTITIES: usize = 12;
const PER_IDENTITY: usize = 5;

/// Builds `name` in `dir` from the first `IDENTITIES` lfw100 people, `PER_IDENTITY` photos each,
/// resized to 64x64 and stored as `encoding`. Small shards, so that the set spans several.
pub fn build(dir: &Path, name: &str, encoding: Encoding, first_identity: usize) -> Arc<Dataset> {
    let lfw = facekit_testkit::shared_data().join("lfw100");
    let mut people: Vec<PathBuf> = std::fs::read_dir(&lfw).unwrap().map(|e| e.unwrap().path()).collect();
    people.sort();
    let paths = DatasetPaths::new(dir.join(name));
    let mut w = DatasetWriter::create(paths.clone(), 48 << 10).unwrap();
    let mut labels = LabelMap::default();
    let mut count = 0;
    for (class, person) in people[first_identity..first_identity + IDENTITIES].iter().enumerate() {
        let mut photos: Vec<PathBuf> = std::fs::read_dir(person).unwrap().map(|e| e.unwrap().path()).collect();
        photos.sort();
        let identity = person.file_name().unwrap().to_string_lossy().into_owned();
        labels.entries.push(LabelEntry { class_id: class as u32, source: "lfw".into(), identity: identity.clone() });
        for photo in &photos[..PER_IDENTITY] {
            let img = image::open(photo).unwrap().into_rgb8();
            let img = image::imageops::resize(&img, SIDE, SIDE, image::imageops::FilterType::Triangle);
            let rec = Record {
                labels: Labels {
                    class_id: Some(class as u32),
                    source: 0,
                    gender: if class % 3 == 2 {
                        None
                    } else {
                        Some(if class % 3 == 0 { Gender::Male } else { Gender::Female })
                    },
                    age: (class % 4 != 3).then_some(20 + class as u16),
                },
                encoding,
                width: SIDE as u16,
                height: SIDE as u16,
                origin_sha256: [0; 16],
                path: format!("{identity}/{}", photo.file_name().unwrap().to_string_lossy()),
                data: facekit_pack::encode::encode(&img, encoding, 90).unwrap(),
            };
            w.push(&rec).unwrap();
            count += 1;
        }
    }
    let source = SourceInfo { id: 0, name: "lfw".into(), class_offset: 0, classes: IDENTITIES as u32, records: count };
    let enc = EncodingInfo { format: encoding, quality: Some(90), chroma: None, width: SIDE, height: SIDE };
    w.finish(Manifest::new(IDENTITIES as u32, vec![source], None, enc), &labels).unwrap();
    Arc::new(Dataset::open(paths).unwrap())
}

/// The shared JPEG dataset (built once per test binary).
pub fn jpeg_set() -> Arc<Dataset> {
    static SET: OnceLock<(tempfile::TempDir, Arc<Dataset>)> = OnceLock::new();
    SET.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let ds = build(dir.path(), "lfw", Encoding::Jpeg, 0);
        (dir, ds)
    })
    .1
    .clone()
}

pub fn cfg(batch: usize, workers: usize) -> LoaderConfig {
    LoaderConfig {
        batch_size: batch,
        image_size: SIDE,
        workers,
        prefetch: 2,
        seed: 42,
        drop_last: false,
        ..LoaderConfig::default()
    }
}

pub fn all(loader: &Loader, epoch: u64, start: u64) -> Vec<Batch> {
    loader.epoch(epoch, start).collect::<facekit_data::Result<Vec<_>>>().unwrap()
}

pub fn indices(batches: &[Batch]) -> Vec<u64> {
    batches.iter().flat_map(|b| b.indices.clone()).collect()
}

#[test]
fn every_record_appears_exactly_once_per_epoch_with_its_labels() {
    let ds = jpeg_set();
    let loader = Loader::new(vec![ds.clone()], cfg(7, 2)).unwrap();
    let batches = all(&loader, 0, 0);
    assert!(batches.len() > 1 && ds.shards().len() > 1, "test set should span several batches and shards");
    let mut seen = indices(&batches);
    seen.sort();
    assert_eq!(seen, (0..ds.len() as u64).collect::<Vec<_>>());
    for b in &batches {
        assert_eq!(b.images.len(), b.n * (SIDE * SIDE * 3) as usize);
        for i in 0..b.n {
            let r = ds.get(b.indices[i] as usize).unwrap();
            assert_eq!(b.class[i], r.labels.class_id.map_or(-1, i64::from));
            assert_eq!(b.gender[i], r.labels.gender.map_or(-1, |g| if g == Gender::Male { 0 } else { 1 }));
            assert_eq!(b.age[i], r.labels.age.map_or(-1, i64::from));
        }
    }
    assert!(batches.iter().any(|b| b.gender.contains(&-1)) && batches.iter().any(|b| b.age.contains(&-1)));
}

#[test]
fn ranks_are_disjoint_equal_and_cover_the_epoch() {
    let ds = jpeg_set();
    let world = 3;
    let per_rank: Vec<Vec<u64>> = (0..world)
        .map(|rank| {
            let loader = Loader::new(vec![ds.clone()], LoaderConfig { rank, world_size: world, ..cfg(4, 1) }).unwrap();
            indices(&all(&loader, 1, 0))
        })
        .collect();
    assert!(per_rank.iter().all(|r| r.len() == per_rank[0].len()), "ranks must yield the same number of images");
    let mut union: Vec<u64> = per_rank.concat();
    union.sort();
    let n = union.len();
    union.dedup();
    assert_eq!(union.len(), n, "ranks overlap");
    assert_eq!(n, ds.len() - ds.len() % world);
}

#[test]
fn same_seed_and_epoch_give_identical_batches_and_epochs_differ() {
    let ds = jpeg_set();
    let loader = Loader::new(vec![ds.clone()], cfg(8, 2)).unwrap();
    let a = all(&loader, 3, 0);
    let again = all(&Loader::new(vec![ds.clone()], cfg(8, 2)).unwrap(), 3, 0);
    assert_eq!(a, again);
    let next = all(&loader, 4, 0);
    assert_ne!(indices(&a), indices(&next), "epochs 3 and 4 have the same order");
    let other_seed = all(&Loader::new(vec![ds], LoaderConfig { seed: 43, ..cfg(8, 2) }).unwrap(), 3, 0);
    assert_ne!(indices(&a), indices(&other_seed));
}

#[test]
fn start_batch_resumes_exactly_where_an_uninterrupted_epoch_is() {
    let loader = Loader::new(vec![jpeg_set()], cfg(6, 2)).unwrap();
    let full = all(&loader, 5, 0);
    let resumed = all(&loader, 5, 4);
    assert_eq!(resumed.len(), full.len() - 4);
    assert_eq!(&full[4..], &resumed[..]);
    assert!(all(&loader, 5, 1_000).is_empty());
}

#[test]
fn thread_count_and_prefetch_do_not_change_the_batches() {
    let ds = jpeg_set();
    let reference = all(&Loader::new(vec![ds.clone()], cfg(5, 0)).unwrap(), 2, 0);
    for (workers, prefetch) in [(1, 1), (2, 2), (3, 8)] {
        let loader = Loader::new(vec![ds.clone()], LoaderConfig { prefetch, ..cfg(5, workers) }).unwrap();
        assert_eq!(all(&loader, 2, 0), reference, "{workers} workers, prefetch {prefetch}");
    }
}

#[test]
fn flip_mirrors_the_decoded_face_left_right() {
    let ds = jpeg_set();
    let batches = all(&Loader::new(vec![ds.clone()], cfg(16, 2)).unwrap(), 0, 0);
    let s = SIDE as usize;
    let (mut flipped, mut kept) = (0, 0);
    for b in &batches {
        for i in 0..b.n {
            let reference = decode_record(&ds.record(b.indices[i] as usize).unwrap(), SIDE).unwrap();
            let img = b.image(i);
            let mut mirrored_equal = true;
            for y in 0..s {
                for x in 0..s {
                    let got = &img[(y * s + x) * 3..(y * s + x) * 3 + 3];
                    let src_x = if b.flipped[i] { s - 1 - x } else { x };
                    let want = reference.get_pixel(src_x as u32, y as u32).0;
                    mirrored_equal &= got == want;
                }
            }
            assert!(mirrored_equal, "image {} (flipped {}) is not the reference decode", b.indices[i], b.flipped[i]);
            if b.flipped[i] {
                flipped += 1;
            } else {
                kept += 1;
            }
        }
    }
    assert!(flipped > 10 && kept > 10, "{flipped} flipped, {kept} kept: the coin is not fair");
    let none = all(&Loader::new(vec![ds], LoaderConfig { augment: Augment::NONE, ..cfg(16, 2) }).unwrap(), 0, 0);
    assert!(none.iter().all(|b| b.flipped.iter().all(|f| !f)));
}

/// Batches of epoch 1 with only `aug` switched on, and for each image the reference decode and
/// the augmentation the loader drew for it.
fn augmented(aug: Augment, workers: usize) -> Vec<(Vec<u8>, image::RgbImage, facekit_data::View)> {
    let ds = jpeg_set();
    let c = LoaderConfig { augment: aug, ..cfg(16, workers) };
    let mut out = Vec::new();
    for b in all(&Loader::new(vec![ds.clone()], c.clone()).unwrap(), 1, 0) {
        for i in 0..b.n {
            let g = b.indices[i];
            let view = aug.draw(c.seed, 1, g);
            assert_eq!(b.flipped[i], view.flip);
            out.push((b.image(i).to_vec(), decode_record(&ds.record(g as usize).unwrap(), SIDE).unwrap(), view));
        }
    }
    out
}

/// `size` x `size` bilinear samples of the window (`x`, `y`, `w`, `h`) of `img`, edges clamped.
fn bilinear_window(img: &image::RgbImage, x: f64, y: f64, w: f64, h: f64, size: u32) -> Vec<u8> {
    let (iw, ih) = (img.width() as i64, img.height() as i64);
    let px =
        |xx: i64, yy: i64, ch: usize| img.get_pixel(xx.clamp(0, iw - 1) as u32, yy.clamp(0, ih - 1) as u32)[ch] as f64;
    let mut out = Vec::with_capacity((size * size * 3) as usize);
    for oy in 0..size {
        let sy = y + (oy as f64 + 0.5) * h / size as f64 - 0.5;
        for ox in 0..size {
            let sx = x + (ox as f64 + 0.5) * w / size as f64 - 0.5;
            let (x0, y0) = (sx.floor() as i64, sy.floor() as i64);
            let (fx, fy) = (sx - x0 as f64, sy - y0 as f64);
            for ch in 0..3 {
                let top = px(x0, y0, ch) * (1.0 - fx) + px(x0 + 1, y0, ch) * fx;
                let bottom = px(x0, y0 + 1, ch) * (1.0 - fx) + px(x0 + 1, y0 + 1, ch) * fx;
                out.push((top * (1.0 - fy) + bottom * fy).round().clamp(0.0, 255.0) as u8);
            }
        }
    }
    out
}

#[test]
fn random_crop_is_the_drawn_square_resized_back() {
    let aug = Augment { flip: false, crop: 0.3, ..Augment::NONE };
    let mut cropped = 0;
    for (got, reference, view) in augmented(aug, 2) {
        let c = view.crop.expect("every image gets a crop");
        let (x, y, w, h) = c.pixels(SIDE, SIDE);
        // The crop only ever enlarges, where a bilinear filter is plain bilinear interpolation
        // between pixel centres: sample the reference at the crop's pixel centres.
        let want = bilinear_window(&reference, x, y, w, h, SIDE);
        let diff = mean_abs_diff(&got, &want);
        assert!(diff < 1.0, "crop {c:?}: differs from bilinear sampling of the drawn square by {diff} on average");
        cropped += usize::from(c.side < 0.95);
        if c.side < 0.9 {
            assert!(mean_abs_diff(&got, reference.as_raw()) > diff, "crop {c:?} looks like the uncropped image");
        }
    }
    assert!(cropped > 20, "only {cropped} images noticeably cropped");
}

#[test]
fn colour_jitter_and_greyscale_follow_the_drawn_factors() {
    let aug = Augment { flip: false, color_jitter: 0.4, grey: 0.3, ..Augment::NONE };
    let (mut grey, mut colour) = (0, 0);
    for (got, reference, view) in augmented(aug, 3) {
        // torchvision's formulas, in floating point on the reference pixels.
        let bright: Vec<f64> =
            reference.as_raw().iter().map(|&v| (v as f64 * view.brightness as f64).round().clamp(0.0, 255.0)).collect();
        let n = bright.len() / 3;
        let luma = |p: &[f64]| 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
        let mean = bright.chunks_exact(3).map(luma).sum::<f64>() / n as f64;
        let contrasted: Vec<f64> =
            bright.iter().map(|&v| ((v - mean) * view.contrast as f64 + mean).round().clamp(0.0, 255.0)).collect();
        let want: Vec<u8> = if view.grey {
            contrasted.chunks_exact(3).flat_map(|p| [luma(p).round() as u8; 3]).collect()
        } else {
            contrasted.iter().map(|&v| v as u8).collect()
        };
        let worst = got.iter().zip(&want).map(|(&a, &b)| (a as i32 - b as i32).abs()).max().unwrap();
        assert!(worst <= 1, "{view:?}: a pixel differs by {worst} from the formula");
        if view.grey {
            grey += 1;
            assert!(got.chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2]));
        } else {
            colour += 1;
        }
    }
    assert!(grey > 5 && colour > 20, "{grey} grey and {colour} colour images at p = 0.3");
}

#[test]
fn augmented_batches_do_not_depend_on_threads_and_change_with_the_epoch() {
    let ds = jpeg_set();
    let aug = Augment { flip: true, crop: 0.2, color_jitter: 0.3, grey: 0.2 };
    let load = |workers, epoch| {
        all(&Loader::new(vec![ds.clone()], LoaderConfig { augment: aug, ..cfg(7, workers) }).unwrap(), epoch, 0)
    };
    let reference = load(0, 3);
    assert_eq!(load(3, 3), reference);
    let unshuffled = |workers, epoch| {
        let c = LoaderConfig { augment: aug, shuffle: false, ..cfg(7, workers) };
        all(&Loader::new(vec![ds.clone()], c).unwrap(), epoch, 0)
    };
    // Same records in the same order, other epoch: other augmentations.
    let (a, b) = (unshuffled(2, 0), unshuffled(2, 1));
    assert_eq!(indices(&a), indices(&b));
    assert_ne!(
        a.iter().map(|x| x.images.clone()).collect::<Vec<_>>(),
        b.iter().map(|x| x.images.clone()).collect::<Vec<_>>()
    );
}

#[test]
fn jpeg_decode_matches_the_image_crate_and_resize_is_close_to_a_triangle_filter() {
    let ds = jpeg_set();
    for i in [0, 17, 59] {
        let view = ds.record(i).unwrap();
        let ours = decode_record(&view, SIDE).unwrap();
        let theirs = image::load_from_memory(view.payload).unwrap().into_rgb8();
        let diff = mean_abs_diff(ours.as_raw(), theirs.as_raw());
        assert!(diff < 1.0, "record {i}: zune-jpeg and the image crate differ by {diff} on average");
        let small = decode_record(&view, 32).unwrap();
        let reference = image::imageops::resize(&theirs, 32, 32, image::imageops::FilterType::Triangle);
        let diff = mean_abs_diff(small.as_raw(), reference.as_raw());
        assert!(diff < 3.0, "record {i}: resize differs from a triangle filter by {diff} on average");
    }
}

#[test]
fn a_batch_holds_the_pixels_pillow_decodes() {
    // insightface's loaders decode with Pillow or OpenCV, both libjpeg-turbo: the loader now gives
    // the network exactly their pixels (zune-jpeg, before, differed in about one byte in seven).
    let ds = jpeg_set();
    let dir = tempfile::tempdir().unwrap();
    let records = [0usize, 13, 31, 59];
    for &i in &records {
        std::fs::write(dir.path().join(format!("{i}.jpg")), ds.record(i).unwrap().payload).unwrap();
    }
    let script = "import sys, numpy as np; from PIL import Image\n\
                  for f in sys.argv[1:]: np.asarray(Image.open(f).convert('RGB')).tofile(f + '.rgb')";
    let files: Vec<String> =
        records.iter().map(|i| dir.path().join(format!("{i}.jpg")).display().to_string()).collect();
    let out =
        std::process::Command::new(facekit_testkit::venv_python()).arg("-c").arg(script).args(&files).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let batch = all(
        &Loader::new(vec![ds.clone()], LoaderConfig { shuffle: false, augment: Augment::NONE, ..cfg(60, 1) }).unwrap(),
        0,
        0,
    )
    .remove(0);
    for (&i, f) in records.iter().zip(&files) {
        let pillow = std::fs::read(format!("{f}.rgb")).unwrap();
        assert!(
            batch.image(i) == pillow.as_slice(),
            "record {i}: the loader's pixels differ from Pillow's by {} on average",
            mean_abs_diff(batch.image(i), &pillow)
        );
    }
}

fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).abs()).sum::<f64>() / a.len() as f64
}

#[test]
fn png_raw_and_zstd_records_decode_to_their_exact_pixels() {
    let dir = tempfile::tempdir().unwrap();
    for (name, enc) in [("png", Encoding::Png), ("raw", Encoding::Raw), ("zst", Encoding::RawZstd)] {
        let ds = build(dir.path(), name, enc, 20);
        let batches =
            all(&Loader::new(vec![ds.clone()], LoaderConfig { augment: Augment::NONE, ..cfg(9, 1) }).unwrap(), 0, 0);
        for b in &batches {
            for i in 0..b.n {
                let r = ds.get(b.indices[i] as usize).unwrap();
                let want = facekit_data::codec::decode(enc, &r.data, r.width, r.height).unwrap();
                assert_eq!(b.image(i), want.as_raw().as_slice(), "{name} record {}", b.indices[i]);
            }
        }
    }
}

#[test]
fn datasets_with_different_label_maps_are_offset_and_identical_ones_shared() {
    let dir = tempfile::tempdir().unwrap();
    let a = build(dir.path(), "a", Encoding::Jpeg, 0);
    let b = build(dir.path(), "b", Encoding::Jpeg, 30);
    let loader = Loader::new(vec![a.clone(), b.clone()], cfg(10, 2)).unwrap();
    assert_eq!(loader.class_offsets(), &[0, IDENTITIES as u32]);
    assert_eq!(loader.num_classes(), 2 * IDENTITIES as u32);
    assert_eq!(loader.len(), (a.len() + b.len()) as u64);
    for batch in all(&loader, 0, 0) {
        for i in 0..batch.n {
            let g = batch.indices[i] as usize;
            let (ds, local, offset) = if g < a.len() { (&a, g, 0) } else { (&b, g - a.len(), IDENTITIES as i64) };
            assert_eq!(batch.class[i], ds.get(local).unwrap().labels.class_id.unwrap() as i64 + offset);
        }
    }
    let shared = Loader::new(vec![a.clone(), a.clone()], cfg(10, 2)).unwrap();
    assert_eq!(shared.class_offsets(), &[0, 0]);
    assert_eq!(shared.num_classes(), IDENTITIES as u32);
}

/// Copies the shared set into `dir` (synced to disk) and returns the copy's paths.
pub fn copy_of_the_set(dir: &Path) -> DatasetPaths {
    let src_dir = jpeg_set().paths().dir().to_path_buf();
    for e in std::fs::read_dir(&src_dir).unwrap() {
        let p = e.unwrap().path();
        let to = dir.join(p.file_name().unwrap());
        std::fs::copy(&p, &to).unwrap();
        std::fs::File::open(&to).unwrap().sync_all().unwrap();
    }
    DatasetPaths::new(dir.join("lfw"))
}

/// Copies the shared set and flips the last payload byte of record `j` of shard `k`; returns
/// the copy, the shard's file name, the record's global number and its byte offset.
pub fn corrupted_copy(dir: &Path, k: usize, j: usize) -> (Arc<Dataset>, String, u64, u64) {
    let src = jpeg_set();
    let paths = copy_of_the_set(dir);
    let shard = &src.shards()[k];
    let entry = shard.index()[j];
    let shard_name = shard.path().file_name().unwrap().to_string_lossy().into_owned();
    let path = dir.join(&shard_name);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[(entry.offset + entry.len as u64 - 1) as usize] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    let ds = Arc::new(Dataset::open(paths).unwrap());
    let global: usize = src.shards()[..k].iter().map(|s| s.len()).sum::<usize>() + j;
    (ds, shard_name, global as u64, entry.offset)
}

#[test]
fn corrupt_record_stops_the_epoch_with_an_error_naming_shard_record_and_byte_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (ds, shard_name, bad, offset) = corrupted_copy(dir.path(), 1, 2);
    let mut it = Loader::new(vec![ds], cfg(8, 2)).unwrap().epoch(0, 0);
    let err = it.by_ref().find_map(|b| b.err()).expect("the corrupt record must fail the epoch");
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&shard_name)
            && msg.contains("record 2")
            && msg.contains(&format!("byte {offset}"))
            && msg.contains("CRC"),
        "{msg}"
    );
    let Error::Record(r) = &err else { panic!("not a record error: {err:?}") };
    assert!(r.shard.ends_with(&shard_name) && (r.index, r.record, r.offset) == (bad, 2, offset), "{r:?}");
    assert!(matches!(&r.problem, Problem::Corrupt(reason) if reason.contains("CRC")), "{r:?}");
    assert!(it.next().is_none(), "the iterator must stop after an error");
}

#[test]
fn skip_corrupt_counts_the_record_and_fills_the_batch_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    let (ds, shard_name, bad, _) = corrupted_copy(dir.path(), 1, 2);
    let c = LoaderConfig { skip_corrupt: true, ..cfg(8, 2) };
    let loader = Loader::new(vec![ds.clone()], c.clone()).unwrap();
    let mut it = loader.epoch(0, 0);
    let batches: Vec<Batch> = it.by_ref().collect::<facekit_data::Result<_>>().unwrap();
    let stats = it.stats().clone();
    assert_eq!(stats.corrupt_skipped, 1);
    assert_eq!(stats.corrupt[0].index, bad);
    assert!(stats.corrupt[0].error.contains(&shard_name), "{}", stats.corrupt[0].error);
    let seen = indices(&batches);
    assert_eq!(seen.len(), ds.len(), "batches must stay full");
    assert!(!seen.contains(&bad));
    let single = all(&Loader::new(vec![ds], LoaderConfig { workers: 0, ..c }).unwrap(), 0, 0);
    assert_eq!(batches, single);
}

#[test]
fn undecodable_payload_with_a_valid_crc_is_reported_with_its_shard() {
    let dir = tempfile::tempdir().unwrap();
    let paths = DatasetPaths::new(dir.path().join("bad"));
    let mut w = DatasetWriter::create(paths.clone(), 1 << 20).unwrap();
    let img = image::RgbImage::from_pixel(SIDE, SIDE, image::Rgb([90, 120, 150]));
    let good = facekit_pack::encode::encode(&img, Encoding::Jpeg, 90).unwrap();
    for i in 0..4 {
        let mut data = good.clone();
        if i == 2 {
            data.truncate(40); // a JPEG cut inside its headers
        }
        let rec = Record {
            labels: Labels { class_id: Some(0), ..Labels::default() },
            encoding: Encoding::Jpeg,
            width: SIDE as u16,
            height: SIDE as u16,
            origin_sha256: [0; 16],
            path: format!("x/{i}.jpg"),
            data,
        };
        w.push(&rec).unwrap();
    }
    let enc = EncodingInfo { format: Encoding::Jpeg, quality: Some(90), chroma: None, width: SIDE, height: SIDE };
    let labels = LabelMap { entries: vec![LabelEntry { class_id: 0, source: "x".into(), identity: "a".into() }] };
    w.finish(Manifest::new(1, vec![], None, enc), &labels).unwrap();
    let ds = Arc::new(Dataset::open(paths).unwrap());
    let err = all_err(&Loader::new(vec![ds.clone()], LoaderConfig { shuffle: false, ..cfg(4, 1) }).unwrap());
    let msg = err.to_string();
    assert!(msg.contains("bad-00000.shard") && msg.contains("record 2") && msg.contains("x/2.jpg"), "{msg}");
    let r = err.record().expect("a record error");
    assert_eq!((r.record, r.offset, r.origin.as_deref()), (2, ds.shards()[0].index()[2].offset, Some("x/2.jpg")));
    assert!(matches!(r.problem, Problem::Undecodable(_)), "{r:?}");
    let loader = Loader::new(vec![ds], LoaderConfig { shuffle: false, skip_corrupt: true, ..cfg(4, 1) }).unwrap();
    let mut it = loader.epoch(0, 0);
    let b = it.next().unwrap().unwrap();
    assert_eq!(b.indices, vec![0, 1, 3, 3]);
    assert_eq!(it.stats().corrupt_skipped, 1);
}

#[test]
fn a_jpeg_cut_inside_its_scan_is_an_undecodable_record_not_a_grey_face() {
    // The classic disguise: a real photo's JPEG cut in the middle of its scan, an end-of-image
    // marker appended, stored with a valid CRC. A lenient decoder fills the rest with grey.
    let photo = facekit_testkit::shared_data().join("lfw100/Colin_Powell/Colin_Powell_0001.jpg");
    let img = image::imageops::resize(
        &image::open(&photo).unwrap().into_rgb8(),
        SIDE,
        SIDE,
        image::imageops::FilterType::Triangle,
    );
    let whole = facekit_pack::encode::encode(&img, Encoding::Jpeg, 90).unwrap();
    let mut cut = whole[..whole.len() * 6 / 10].to_vec();
    cut.extend_from_slice(&[0xFF, 0xD9]);
    assert!(
        image::load_from_memory(&cut).is_ok(),
        "the image crate's zune-jpeg (the loader's decoder before) takes it"
    );
    let dir = tempfile::tempdir().unwrap();
    let paths = DatasetPaths::new(dir.path().join("cut"));
    let mut w = DatasetWriter::create(paths.clone(), 1 << 20).unwrap();
    for (i, data) in [whole.clone(), cut, whole].into_iter().enumerate() {
        let labels = Labels { class_id: Some(0), ..Labels::default() };
        let rec = Record {
            labels,
            encoding: Encoding::Jpeg,
            width: SIDE as u16,
            height: SIDE as u16,
            origin_sha256: [0; 16],
            path: format!("p/{i}.jpg"),
            data,
        };
        w.push(&rec).unwrap();
    }
    let enc = EncodingInfo { format: Encoding::Jpeg, quality: Some(90), chroma: None, width: SIDE, height: SIDE };
    let labels = LabelMap { entries: vec![LabelEntry { class_id: 0, source: "p".into(), identity: "a".into() }] };
    w.finish(Manifest::new(1, vec![], None, enc), &labels).unwrap();
    let ds = Arc::new(Dataset::open(paths).unwrap());
    let err = all_err(&Loader::new(vec![ds.clone()], LoaderConfig { shuffle: false, ..cfg(3, 1) }).unwrap());
    let r = err.record().expect("a record error");
    assert_eq!((r.record, r.origin.as_deref()), (1, Some("p/1.jpg")), "{err}");
    assert!(matches!(&r.problem, Problem::Undecodable(e) if e.0.contains("JPEG")), "{err}");
    // verify-shard --decode checks payloads with the same decoder.
    let rec = ds.get(1).unwrap();
    assert!(facekit_data::codec::decoded_size(Encoding::Jpeg, &rec.data, rec.width, rec.height).is_err());
}

fn all_err(loader: &Loader) -> Error {
    match loader.epoch(0, 0).collect::<facekit_data::Result<Vec<_>>>() {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

#[test]
fn impossible_configurations_are_refused_with_a_reason() {
    let ds = jpeg_set();
    let err = Loader::new(vec![ds.clone()], LoaderConfig { rank: 2, world_size: 2, ..cfg(4, 1) }).err().unwrap();
    assert!(matches!(&err, Error::Config(m) if m.contains("rank 2")), "{err}");
    let err = Loader::new(vec![ds], LoaderConfig { drop_last: true, ..cfg(1000, 1) }).err().unwrap();
    assert!(matches!(&err, Error::Config(m) if m.contains("no batch")), "{err}");
}
