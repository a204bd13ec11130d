//! The shard format: round trips, corruption of any byte, truncation, manifest disagreement and
//! hostile indexes are all caught.

use facekit_shard::format::{Footer, FOOTER_LEN, INDEX_ENTRY_LEN};
use facekit_shard::manifest::{EncodingInfo, LabelEntry, LabelMap, SourceInfo};
use facekit_shard::verify::{verify_bytes, verify_dataset, VerifyOptions};
use facekit_shard::{
    Dataset, DatasetPaths, DatasetWriter, Encoding, Gender, Labels, Manifest, Record, ShardReader, ShardWriter,
};
use rand::{Rng, SeedableRng};
use std::path::Path;

fn record(rng: &mut impl Rng, i: usize) -> Record {
    let len = rng.random_range(0..3000);
    Record {
        labels: Labels {
            class_id: if i.is_multiple_of(7) { None } else { Some((i % 5) as u32) },
            source: 0,
            gender: match i % 3 {
                0 => Some(Gender::Male),
                1 => Some(Gender::Female),
                _ => None,
            },
            age: if i.is_multiple_of(4) { None } else { Some((i % 90) as u16) },
        },
        encoding: Encoding::Jpeg,
        width: 224,
        height: 224,
        origin_sha256: [i as u8; 16],
        path: format!("person_{}/img_{i}.jpg", i % 5),
        data: (0..len).map(|_| rng.random()).collect(),
    }
}

fn records(n: usize, seed: u64) -> Vec<Record> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|i| record(&mut rng, i)).collect()
}

fn write_shard(path: &Path, recs: &[Record]) -> Vec<u8> {
    let mut w = ShardWriter::create(path, 0).unwrap();
    for r in recs {
        w.push(r).unwrap();
    }
    w.finish().unwrap();
    std::fs::read(path).unwrap()
}

fn manifest(classes: u32) -> Manifest {
    Manifest::new(
        classes,
        vec![SourceInfo { id: 0, name: "test".into(), class_offset: 0, classes, records: 0 }],
        None,
        EncodingInfo { format: Encoding::Jpeg, quality: Some(95), chroma: None, width: 224, height: 224 },
    )
}

fn label_map(classes: u32) -> LabelMap {
    LabelMap {
        entries: (0..classes)
            .map(|c| LabelEntry { class_id: c, source: "test".into(), identity: format!("person_{c}") })
            .collect(),
    }
}

fn write_dataset(dir: &Path, recs: &[Record], shard_size: u64) -> DatasetPaths {
    let paths = DatasetPaths::new(dir.join("celeb"));
    let mut w = DatasetWriter::create(paths.clone(), shard_size).unwrap();
    for r in recs {
        w.push(r).unwrap();
    }
    // The manifest states the records' size, as a packed dataset's does.
    let mut m = manifest(5);
    if let Some(r) = recs.first() {
        (m.encoding.width, m.encoding.height) = (u32::from(r.width), u32::from(r.height));
    }
    w.finish(m, &label_map(5)).unwrap();
    paths
}

const NO_PROGRESS: &(dyn Fn(u64) + Sync) = &|_| {};

#[test]
fn records_round_trip_in_order_and_by_random_access() {
    let dir = tempfile::tempdir().unwrap();
    let recs = records(200, 1);
    let paths = write_dataset(dir.path(), &recs, 64 << 10);
    let ds = Dataset::open(paths).unwrap();
    assert!(ds.shards().len() > 3, "small shard size must split the dataset");
    assert_eq!(ds.len(), recs.len());
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(&ds.get(i).unwrap(), r, "record {i} in order");
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    for _ in 0..500 {
        let i = rng.random_range(0..recs.len());
        assert_eq!(ds.get(i).unwrap(), recs[i], "record {i} by random access");
    }
    let classes: Vec<Option<u32>> = recs.iter().map(|r| r.labels.class_id).collect();
    assert_eq!(ds.class_ids(), classes);
    assert_eq!(ds.manifest().records, 200);
}

#[test]
fn every_single_byte_flip_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s-00000.shard");
    let bytes = write_shard(&path, &records(30, 2));
    assert!(verify_bytes("s", &bytes, VerifyOptions::default(), NO_PROGRESS).is_ok());
    // Every position of the header, the index and the footer, and many random record bytes.
    let footer = Footer::decode(&bytes[bytes.len() - FOOTER_LEN..], bytes.len() as u64).unwrap();
    let mut positions: Vec<usize> = (0..32).chain(footer.index_offset as usize..bytes.len()).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    positions.extend((0..1500).map(|_| rng.random_range(32..footer.index_offset as usize)));
    for pos in positions {
        let mut bad = bytes.clone();
        bad[pos] ^= 1 << rng.random_range(0..8);
        let report = verify_bytes("s", &bad, VerifyOptions::default(), NO_PROGRESS);
        assert!(!report.is_ok(), "flip at byte {pos} of {} went unnoticed", bytes.len());
    }
}

#[test]
fn flipped_record_byte_names_the_record_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s-00000.shard");
    let bytes = write_shard(&path, &records(10, 4));
    let reader = ShardReader::open(&path).unwrap();
    let entry = reader.index()[6];
    let mut bad = bytes.clone();
    bad[entry.offset as usize + entry.len as usize - 1] ^= 0x40;
    let report = verify_bytes("s", &bad, VerifyOptions::default(), NO_PROGRESS);
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(report.problems[0].record, Some(6));
    assert_eq!(report.problems[0].offset, Some(entry.offset));
    assert_eq!(report.good_records, 9);
}

#[test]
fn truncation_at_any_point_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s-00000.shard");
    let bytes = write_shard(&path, &records(12, 5));
    for cut in (0..bytes.len()).step_by(7).chain(bytes.len() - 40..bytes.len()) {
        let report = verify_bytes("s", &bytes[..cut], VerifyOptions::default(), NO_PROGRESS);
        assert!(!report.is_ok(), "truncation to {cut} bytes went unnoticed");
        assert!(ShardReader::validate_bytes(&bytes[..cut]).is_err());
    }
}

#[test]
fn hostile_index_claiming_huge_counts_and_lengths_fails_fast() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s-00000.shard");
    let bytes = write_shard(&path, &records(3, 6));
    let n = bytes.len();
    let start = std::time::Instant::now();
    // A footer that claims 2^60 records, with a valid CRC.
    let forged = Footer { index_offset: 32, record_count: 1 << 60, index_crc32: 0 }.encode();
    let mut bad = bytes.clone();
    bad[n - FOOTER_LEN..].copy_from_slice(&forged);
    assert!(ShardReader::validate_bytes(&bad).is_err());
    // An index entry claiming a 4 GB record, with the index CRC and footer recomputed.
    let footer = Footer::decode(&bytes[n - FOOTER_LEN..], n as u64).unwrap();
    let mut bad = bytes.clone();
    let at = footer.index_offset as usize + 8;
    bad[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let index = &bad[footer.index_offset as usize..n - FOOTER_LEN];
    let f2 = Footer { index_crc32: crc32fast::hash(index), ..footer }.encode();
    bad[n - FOOTER_LEN..].copy_from_slice(&f2);
    let err = ShardReader::validate_bytes(&bad).expect_err("hostile index must fail");
    assert!(err.to_string().contains("index entry"), "{err}");
    assert!(!verify_bytes("s", &bad, VerifyOptions::default(), NO_PROGRESS).is_ok());
    // A record header claiming a 4 GB payload, CRC-consistent everywhere else it can be.
    let mut bad = bytes.clone();
    bad[32 + 4..32 + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(!verify_bytes("s", &bad, VerifyOptions::default(), NO_PROGRESS).is_ok());
    assert!(start.elapsed().as_secs() < 5, "hostile input must fail fast");
    assert_eq!(INDEX_ENTRY_LEN, 16);
}

#[test]
fn manifest_that_disagrees_with_its_shards_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_dataset(dir.path(), &records(60, 7), 32 << 10);
    let opts = VerifyOptions::default();
    assert!(verify_dataset(&paths, opts, NO_PROGRESS).unwrap().is_ok());
    let good = Manifest::read(&paths.manifest()).unwrap();

    type Mutation = Box<dyn Fn(&mut Manifest)>;
    let mutations: Vec<(&str, Mutation)> = vec![
        ("record count", Box::new(|m| m.shards[0].records += 1)),
        ("size", Box::new(|m| m.shards[1].bytes -= 1)),
        ("checksum", Box::new(|m| m.shards[0].crc32 ^= 1)),
        ("total", Box::new(|m| m.records += 1)),
        ("missing shard", Box::new(|m| m.shards[0].file = "celeb-99999.shard".into())),
        (
            "unlisted shard",
            Box::new(|m| {
                m.shards.pop();
            }),
        ),
        ("class range", Box::new(|m| m.classes = 2)),
    ];
    for (what, mutate) in mutations {
        let mut m = good.clone();
        mutate(&mut m);
        m.write(&paths.manifest()).unwrap();
        let report = verify_dataset(&paths, opts, NO_PROGRESS).unwrap();
        assert!(!report.is_ok(), "manifest mutation '{what}' went unnoticed");
    }
}

#[test]
fn unfinished_writer_leaves_no_shard_that_looks_complete() {
    let dir = tempfile::tempdir().unwrap();
    let paths = DatasetPaths::new(dir.path().join("celeb"));
    {
        let mut w = DatasetWriter::create(paths.clone(), 16 << 10).unwrap();
        for r in records(40, 8) {
            w.push(&r).unwrap();
        }
        // dropped without finish: the open shard and the manifest must not exist
    }
    assert!(!paths.manifest().exists());
    let on_disk = paths.shards_on_disk().unwrap();
    for (_, p) in &on_disk {
        ShardReader::open(p).expect("every shard visible under its final name is complete");
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().filter_map(|e| e.ok()).collect();
    assert!(leftovers.iter().all(|e| !e.file_name().to_string_lossy().starts_with(".tmp-")));
    assert!(Dataset::open(paths).is_err(), "a dataset without a manifest cannot be opened");
}

#[test]
fn stale_temporary_files_of_a_dataset_are_removed_whatever_their_pid_and_others_kept() {
    let dir = tempfile::tempdir().unwrap();
    let touch = |name: &str| std::fs::write(dir.path().join(name), b"partial").unwrap();
    // pid_max is at most 2^22 on Linux: 999999999 is never a running process. PID 1 always runs:
    // a PID check would keep its temporary forever (a reused PID), but the caller holds the
    // dataset's lock, which proves that no other writer owns any of them.
    let stale = ["celeb-00000.shard", "celeb.manifest.json", "celeb.progress.json"]
        .map(|t| format!(".tmp-999999999-{t}"))
        .into_iter()
        .chain(std::iter::once(".tmp-1-celeb-00001.shard".to_string()))
        .collect::<Vec<_>>();
    let other = [".tmp-999999999-celebs-00000.shard", ".tmp-999999999-celeb-notes.txt", "celeb-00000.shard.tmp"];
    for n in &stale {
        touch(n);
    }
    for n in other {
        touch(n);
    }
    let paths = DatasetPaths::new(dir.path().join("celeb"));
    let _lock = facekit_io::lock::exclusive(&paths.lock(), "dataset celeb").unwrap();
    assert_eq!(paths.remove_stale_temps().unwrap(), stale.len());
    for n in &stale {
        assert!(!dir.path().join(n).exists(), "{n} should be gone");
    }
    for n in other {
        assert!(dir.path().join(n).exists(), "{n} must be kept");
    }
}
