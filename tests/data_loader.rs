//! The data loader over small datasets packed from real LFW photos (64x64 JPEG, no dlib).

mod common;

use facekit::data::{decode_record, Batch, Loader, LoaderConfig};
use facekit::shard::codec;
use facekit::shard::manifest::{EncodingInfo, LabelEntry, LabelMap, SourceInfo};
use facekit::shard::{Dataset, DatasetPaths, DatasetWriter, Encoding, Gender, Labels, Manifest, Record};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

const SIDE: u32 = 64;
const IDENTITIES: usize = 12;
const PER_IDENTITY: usize = 5;

/// Builds `name` in `dir` from the first `IDENTITIES` lfw100 people, `PER_IDENTITY` photos each,
/// resized to 64x64 and stored as `encoding`. Small shards, so that the set spans several.
fn build(dir: &Path, name: &str, encoding: Encoding, first_identity: usize) -> Arc<Dataset> {
    let lfw = common::shared_data().join("lfw100");
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
                    gender: if class % 3 == 2 { None } else { Some(if class % 3 == 0 { Gender::Male } else { Gender::Female }) },
                    age: (class % 4 != 3).then_some(20 + class as u16),
                },
                encoding,
                width: SIDE as u16,
                height: SIDE as u16,
                origin_sha256: [0; 16],
                path: format!("{identity}/{}", photo.file_name().unwrap().to_string_lossy()),
                data: codec::encode(&img, encoding, 90).unwrap(),
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
fn jpeg_set() -> Arc<Dataset> {
    static SET: OnceLock<(tempfile::TempDir, Arc<Dataset>)> = OnceLock::new();
    SET.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let ds = build(dir.path(), "lfw", Encoding::Jpeg, 0);
        (dir, ds)
    })
    .1
    .clone()
}

fn cfg(batch: usize, workers: usize) -> LoaderConfig {
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

fn all(loader: &Loader, epoch: u64, start: u64) -> Vec<Batch> {
    loader.epoch(epoch, start).collect::<anyhow::Result<Vec<_>>>().unwrap()
}

fn indices(batches: &[Batch]) -> Vec<u64> {
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
    let none = all(&Loader::new(vec![ds], LoaderConfig { flip: false, ..cfg(16, 2) }).unwrap(), 0, 0);
    assert!(none.iter().all(|b| b.flipped.iter().all(|f| !f)));
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

fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).abs()).sum::<f64>() / a.len() as f64
}

#[test]
fn png_raw_and_zstd_records_decode_to_their_exact_pixels() {
    let dir = tempfile::tempdir().unwrap();
    for (name, enc) in [("png", Encoding::Png), ("raw", Encoding::Raw), ("zst", Encoding::RawZstd)] {
        let ds = build(dir.path(), name, enc, 20);
        let batches = all(&Loader::new(vec![ds.clone()], LoaderConfig { flip: false, ..cfg(9, 1) }).unwrap(), 0, 0);
        for b in &batches {
            for i in 0..b.n {
                let r = ds.get(b.indices[i] as usize).unwrap();
                let want = codec::decode(enc, &r.data, r.width, r.height).unwrap();
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

/// Copies the shared set and flips the last payload byte of record `j` of shard `k`.
fn corrupted_copy(dir: &Path, k: usize, j: usize) -> (Arc<Dataset>, String, u64) {
    let src = jpeg_set();
    let src_dir = src.paths().dir().to_path_buf();
    for e in std::fs::read_dir(&src_dir).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
    }
    let shard = &src.shards()[k];
    let entry = shard.index()[j];
    let shard_name = shard.path().file_name().unwrap().to_string_lossy().into_owned();
    let path = dir.join(&shard_name);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[(entry.offset + entry.len as u64 - 1) as usize] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    let ds = Arc::new(Dataset::open(DatasetPaths::new(dir.join("lfw"))).unwrap());
    let global: usize = src.shards()[..k].iter().map(|s| s.len()).sum::<usize>() + j;
    (ds, shard_name, global as u64)
}

#[test]
fn corrupt_record_stops_the_epoch_with_an_error_naming_shard_and_record() {
    let dir = tempfile::tempdir().unwrap();
    let (ds, shard_name, _) = corrupted_copy(dir.path(), 1, 2);
    let mut it = Loader::new(vec![ds], cfg(8, 2)).unwrap().epoch(0, 0);
    let err = it.by_ref().find_map(|b| b.err()).expect("the corrupt record must fail the epoch");
    let msg = format!("{err:#}");
    assert!(msg.contains(&shard_name) && msg.contains("record 2") && msg.contains("CRC"), "{msg}");
    assert!(it.next().is_none(), "the iterator must stop after an error");
}

#[test]
fn skip_corrupt_counts_the_record_and_fills_the_batch_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    let (ds, shard_name, bad) = corrupted_copy(dir.path(), 1, 2);
    let c = LoaderConfig { skip_corrupt: true, ..cfg(8, 2) };
    let loader = Loader::new(vec![ds.clone()], c.clone()).unwrap();
    let mut it = loader.epoch(0, 0);
    let batches: Vec<Batch> = it.by_ref().collect::<anyhow::Result<_>>().unwrap();
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
    let good = codec::encode(&img, Encoding::Jpeg, 90).unwrap();
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
    w.finish(Manifest::new(1, vec![], None, enc), &LabelMap::default()).unwrap();
    let ds = Arc::new(Dataset::open(paths).unwrap());
    let err = all_err(&Loader::new(vec![ds.clone()], LoaderConfig { shuffle: false, ..cfg(4, 1) }).unwrap());
    assert!(err.contains("bad-00000.shard") && err.contains("record 2") && err.contains("x/2.jpg"), "{err}");
    let loader = Loader::new(vec![ds], LoaderConfig { shuffle: false, skip_corrupt: true, ..cfg(4, 1) }).unwrap();
    let mut it = loader.epoch(0, 0);
    let b = it.next().unwrap().unwrap();
    assert_eq!(b.indices, vec![0, 1, 3, 3]);
    assert_eq!(it.stats().corrupt_skipped, 1);
}

fn all_err(loader: &Loader) -> String {
    match loader.epoch(0, 0).collect::<anyhow::Result<Vec<_>>>() {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn impossible_configurations_are_refused_with_a_reason() {
    let ds = jpeg_set();
    let err = Loader::new(vec![ds.clone()], LoaderConfig { rank: 2, world_size: 2, ..cfg(4, 1) }).err().unwrap();
    assert!(format!("{err:#}").contains("rank 2"), "{err:#}");
    let err = Loader::new(vec![ds], LoaderConfig { drop_last: true, ..cfg(1000, 1) }).err().unwrap();
    assert!(format!("{err:#}").contains("no batch"), "{err:#}");
}
