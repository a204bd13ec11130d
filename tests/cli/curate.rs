//! `facekit pack --part`, `facekit merge` and `facekit filter` end to end (docs/CURATE.md): a pack
//! in three parts merged equals one pack, byte for byte; separate datasets merge with offset ids
//! or, when told, joined identities; a filtered dataset verifies, lacks what was dropped and
//! trains. The tests on real photos need face detection (feature `dlib`).

use facekit_shard::manifest::{EncodingInfo, LabelEntry, LabelMap, SourceInfo};
use facekit_shard::{Dataset, DatasetPaths, DatasetWriter, Encoding, Labels, Manifest, Record};
use std::fs;
use std::path::Path;
use std::process::Output;

fn run(args: &[&str]) -> Output {
    let mut cmd = crate::facekit();
    cmd.args(args).env("FACEKIT_MODELS", facekit_testkit::models_dir());
    cmd.output().expect("facekit runs")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "facekit failed ({:?}):\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn refused(out: &Output, says: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "expected a refusal:\n{err}");
    assert!(err.contains(says), "expected '{says}' in:\n{err}");
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn records(base: &Path) -> Vec<Record> {
    let ds = Dataset::open_name(s(base), None).unwrap();
    (0..ds.len()).map(|i| ds.get(i).unwrap()).collect()
}

fn manifest(base: &Path) -> Manifest {
    Manifest::read(&DatasetPaths::new(base).manifest()).unwrap()
}

fn bytes(base: &Path, suffix: &str) -> Vec<u8> {
    fs::read(format!("{}{suffix}", base.display())).unwrap()
}

/// A raw dataset of one source `source` whose identities are `ids`, two records each.
fn raw_dataset(base: &Path, source: &str, ids: &[&str]) -> Vec<Record> {
    let mut w = DatasetWriter::create(DatasetPaths::new(base), 1 << 20).unwrap();
    let mut made = Vec::new();
    for (c, id) in ids.iter().enumerate() {
        for k in 0..2 {
            let data: Vec<u8> =
                (0..8 * 8 * 3).map(|i| ((i * 7 + c * 31 + k * 13 + source.len()) % 251) as u8).collect();
            let r = Record {
                labels: Labels { class_id: Some(c as u32), source: 0, gender: None, age: None },
                encoding: Encoding::Raw,
                width: 8,
                height: 8,
                origin_sha256: [c as u8; 16],
                path: format!("{source}/{id}/{k}.jpg"),
                data,
            };
            w.push(&r).unwrap();
            made.push(r);
        }
    }
    let n = ids.len() as u32;
    let m = Manifest::new(
        n,
        vec![SourceInfo { id: 0, name: source.into(), class_offset: 0, classes: n, records: 2 * u64::from(n) }],
        None,
        EncodingInfo { format: Encoding::Raw, quality: None, chroma: None, width: 8, height: 8 },
    );
    let map = LabelMap {
        entries: ids
            .iter()
            .enumerate()
            .map(|(c, id)| LabelEntry { class_id: c as u32, source: source.into(), identity: id.to_string() })
            .collect(),
    };
    w.finish(m, &map).unwrap();
    made
}

fn label_lines(base: &Path) -> Vec<String> {
    String::from_utf8(bytes(base, ".labels.tsv")).unwrap().lines().skip(1).map(str::to_string).collect()
}

#[test]
fn separate_datasets_merge_with_offset_ids_and_same_named_sources_are_refused_unless_told() {
    let t = tempfile::tempdir().unwrap();
    let (a, b, c) = (t.path().join("a"), t.path().join("b"), t.path().join("c"));
    let ra = raw_dataset(&a, "alpha", &["ann", "bob"]);
    let rb = raw_dataset(&b, "beta", &["bob", "cat", "dan"]);
    let rc = raw_dataset(&c, "alpha", &["bob", "eve"]);

    let ab = t.path().join("ab");
    ok(&run(&["merge", s(&a), s(&b), "-o", s(&ab), "--quiet"]));
    let got = records(&ab);
    assert_eq!(got.len(), ra.len() + rb.len());
    for (g, w) in got.iter().zip(ra.iter().chain(&rb)) {
        assert_eq!((&g.data, &g.path, g.origin_sha256), (&w.data, &w.path, w.origin_sha256), "payloads copied");
    }
    // beta's ids are offset by alpha's 2 classes; its source is the second; `bob` of beta is
    // another class than `bob` of alpha.
    let classes: Vec<(Option<u32>, u16)> = got.iter().map(|r| (r.labels.class_id, r.labels.source)).collect();
    let want: Vec<(Option<u32>, u16)> =
        [0, 0, 1, 1].iter().map(|&c| (Some(c), 0)).chain([2, 2, 3, 3, 4, 4].iter().map(|&c| (Some(c), 1))).collect();
    assert_eq!(classes, want);
    assert_eq!(label_lines(&ab), ["0\talpha\tann", "1\talpha\tbob", "2\tbeta\tbob", "3\tbeta\tcat", "4\tbeta\tdan"]);
    let m = manifest(&ab);
    assert_eq!((m.classes, m.records), (5, 10));
    assert_eq!(
        m.sources.iter().map(|s| (s.class_offset, s.classes, s.records)).collect::<Vec<_>>(),
        [(0, 2, 4), (2, 3, 6)]
    );
    let from = m.merged_from.unwrap();
    assert_eq!(from.iter().map(|f| (f.records, f.class_offset)).collect::<Vec<_>>(), [(4, Some(0)), (6, Some(2))]);
    ok(&run(&["verify-shard", "--decode", s(&ab)]));

    // Two datasets with a source `alpha`: refused, then joined by identity name when told.
    let ac = t.path().join("ac");
    refused(&run(&["merge", s(&a), s(&c), "-o", s(&ac), "--quiet"]), "--same-identities");
    assert!(!DatasetPaths::new(&ac).manifest().exists());
    ok(&run(&["merge", s(&a), s(&c), "-o", s(&ac), "--same-identities", "--quiet"]));
    assert_eq!(label_lines(&ac), ["0\talpha\tann", "1\talpha\tbob", "2\talpha\teve"]);
    let got: Vec<Option<u32>> = records(&ac).iter().map(|r| r.labels.class_id).collect();
    assert_eq!(got, [Some(0), Some(0), Some(1), Some(1), Some(1), Some(1), Some(2), Some(2)]);
    assert_eq!(records(&ac)[4].data, rc[0].data);

    // An existing output is never written over.
    refused(&run(&["merge", s(&a), s(&b), "-o", s(&ab), "--quiet"]), "already exists");
}

#[test]
fn filter_drops_listed_records_and_identities_and_renumbers_or_keeps_ids() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("d");
    let all = raw_dataset(&d, "alpha", &["ann", "bob", "cat", "dan"]);
    let drop = t.path().join("drop.tsv");
    // An audit's list: other columns are ignored; one key matches nothing.
    fs::write(&drop, "record\tidentity\tscore\nalpha/ann/1.jpg\tann\t0.9\n# a comment\nalpha/zed/0.jpg\tzed\t0.8\n")
        .unwrap();
    let ids = t.path().join("ids.tsv");
    fs::write(&ids, "identity\nbob\n").unwrap();

    let out = t.path().join("clean");
    let said = ok(&run(&["filter", s(&d), "--drop", s(&drop), "--drop-identities", s(&ids), "-o", s(&out), "--quiet"]));
    assert!(said.contains("5 records kept, 3 dropped"), "{said}");
    ok(&run(&["verify-shard", "--decode", s(&out)]));
    let got = records(&out);
    let kept: Vec<&Record> =
        all.iter().filter(|r| r.path != "alpha/ann/1.jpg" && !r.path.starts_with("alpha/bob/")).collect();
    assert_eq!(got.len(), kept.len());
    for (g, w) in got.iter().zip(&kept) {
        assert_eq!((&g.data, &g.path), (&w.data, &w.path));
    }
    let classes: Vec<Option<u32>> = got.iter().map(|r| r.labels.class_id).collect();
    assert_eq!(classes, [Some(0), Some(1), Some(1), Some(2), Some(2)]);
    assert_eq!(label_lines(&out), ["0\talpha\tann", "1\talpha\tcat", "2\talpha\tdan"]);
    let m = manifest(&out);
    assert_eq!((m.classes, m.records, m.sources[0].classes, m.sources[0].records), (3, 5, 3, 5));
    let f = m.filtered.unwrap();
    assert_eq!((f.records_dropped, f.classes_dropped, f.kept_ids), (3, 1, false));
    let dl = f.drop.unwrap();
    assert_eq!((dl.entries, dl.unmatched), (2, 1));
    use sha2::Digest;
    let digest: String = sha2::Sha256::digest(fs::read(&drop).unwrap()).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(dl.sha256, digest);
    assert_eq!(f.drop_identities.unwrap().entries, 1);

    // --keep-ids: the label map and ids as they were, bob's records gone.
    let kept_ids = t.path().join("kept");
    ok(&run(&["filter", s(&d), "--drop-identities", s(&ids), "--keep-ids", "-o", s(&kept_ids), "--quiet"]));
    assert_eq!(bytes(&kept_ids, ".labels.tsv"), bytes(&d, ".labels.tsv"));
    let classes: Vec<Option<u32>> = records(&kept_ids).iter().map(|r| r.labels.class_id).collect();
    assert_eq!(classes, [Some(0), Some(0), Some(2), Some(2), Some(3), Some(3)]);

    // A list without the column it needs names the file and the column.
    let bad = t.path().join("bad.tsv");
    fs::write(&bad, "path\nalpha/ann/0.jpg\n").unwrap();
    refused(&run(&["filter", s(&d), "--drop", s(&bad), "-o", s(&t.path().join("x")), "--quiet"]), "no `record` column");
}

/// The first `per` photos of each identity, symlinked into `dst/<identity>/`, with an empty file,
/// a file that is no image and a file outside any identity folder, so that the packs reject some.
#[cfg(feature = "dlib")]
fn photos(dst: &Path, identities: &[&str], per: usize) {
    let lfw = facekit_testkit::shared_data().join("lfw100");
    for id in identities {
        let mut files: Vec<_> = fs::read_dir(lfw.join(id)).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        fs::create_dir_all(dst.join(id)).unwrap();
        for f in files.into_iter().take(per) {
            std::os::unix::fs::symlink(&f, dst.join(id).join(f.file_name().unwrap())).unwrap();
        }
    }
    fs::write(dst.join(identities[0]).join("zz_empty.jpg"), b"").unwrap();
    fs::write(dst.join(identities[3]).join("zz_text.jpg"), b"not a photo").unwrap();
    fs::write(dst.join("stray.jpg"), b"x").unwrap();
}

#[cfg(feature = "dlib")]
#[test]
fn a_pack_in_three_parts_merged_equals_one_pack_and_its_filtered_copy_verifies_and_trains() {
    let t = tempfile::tempdir().unwrap();
    let input = t.path().join("faces");
    let ids = ["Abdullah_Gul", "Adrien_Brody", "Alejandro_Toledo", "Alvaro_Uribe", "Amelie_Mauresmo", "Andre_Agassi"];
    photos(&input, &ids, 4);
    let training = t.path().join("training");
    let common = ["--size", "48", "--shard-size", "24K", "--valid-fraction", "0.25", "--threads", "2", "--quiet"];
    let one = training.join("one");
    let said = ok(&run(&[&["pack", s(&input), "-o", s(&one)][..], &common].concat()));
    assert!(bytes(&one, ".rejects.tsv").len() > 30, "{said}");

    let mut parts = Vec::new();
    for k in 1..=3 {
        let part = training.join(format!("part{k}"));
        ok(&run(&[&["pack", s(&input), "-o", s(&part), "--part", &format!("{k}/3")][..], &common].concat()));
        let p = manifest(&part).part.unwrap();
        assert_eq!((p.index, p.count, p.input_files), (k, 3, 3 + 4 * ids.len() as u64));
        parts.push(part);
    }
    // No identity in two parts, and every part packed some.
    let mut seen = std::collections::BTreeSet::new();
    for p in &parts {
        let classes: std::collections::BTreeSet<u32> = records(p).iter().filter_map(|r| r.labels.class_id).collect();
        assert!(!classes.is_empty());
        assert!(classes.iter().all(|c| seen.insert(*c)), "an identity spans parts");
    }

    // Merged in any order: the one pack's records, label map and rejects list, byte for byte; the
    // training shards too. The validation records are the same, but a pack closes its validation
    // shard at every training checkpoint, so the validation shards are cut elsewhere.
    let merged = training.join("merged");
    ok(&run(&["merge", s(&parts[2]), s(&parts[0]), s(&parts[1]), "-o", s(&merged), "--shard-size", "24K", "--quiet"]));
    for name in ["", ".valid"] {
        let (a, b) = (training.join(format!("one{name}")), training.join(format!("merged{name}")));
        let (ma, mb) = (manifest(&a), manifest(&b));
        assert!(ma.records > 5, "{name}: the test wants several records");
        assert_eq!((ma.records, ma.classes, &ma.sources), (mb.records, mb.classes, &mb.sources));
        assert_eq!((&ma.alignment, &ma.encoding), (&mb.alignment, &mb.encoding));
        assert_eq!(records(&a), records(&b), "{name}: same records (payload, path, labels), same order");
        assert_eq!(bytes(&a, ".labels.tsv"), bytes(&b, ".labels.tsv"));
        ok(&run(&["verify-shard", "--decode", s(&b)]));
    }
    let (ma, mb) = (manifest(&one), manifest(&merged));
    assert!(ma.shards.len() > 1, "the test wants several shards");
    let shape = |m: &Manifest| m.shards.iter().map(|s| (s.records, s.bytes, s.crc32)).collect::<Vec<_>>();
    assert_eq!(shape(&ma), shape(&mb), "same training shards (records, sizes and CRCs)");
    for sh in &ma.shards {
        let twin = sh.file.replacen("one", "merged", 1);
        assert_eq!(fs::read(training.join(&sh.file)).unwrap(), fs::read(training.join(twin)).unwrap());
    }
    assert_eq!(bytes(&one, ".rejects.tsv"), bytes(&merged, ".rejects.tsv"));

    // A part missing or given twice is refused, and so is a part beside a whole dataset.
    let x = training.join("x");
    refused(&run(&["merge", s(&parts[0]), s(&parts[2]), "-o", s(&x), "--quiet"]), "in no part given");
    refused(&run(&["merge", s(&parts[0]), s(&parts[0]), s(&parts[1]), "-o", s(&x), "--quiet"]), "are both part 1/3");
    refused(&run(&["merge", s(&parts[0]), s(&one), "-o", s(&x), "--quiet"]), "merge the parts first");
    assert!(!DatasetPaths::new(&x).manifest().exists());

    // Filter: one identity and two records out; the copy verifies, lacks them, and trains.
    let all = records(&merged);
    let gone: Vec<&str> = all.iter().map(|r| r.path.as_str()).filter(|p| p.contains(ids[0])).take(2).collect();
    let drop = t.path().join("drop.tsv");
    fs::write(&drop, format!("record\n{}\n", gone.join("\n"))).unwrap();
    let drop_ids = t.path().join("ids.tsv");
    fs::write(&drop_ids, format!("identity\tsource\n{}\tfaces\n", ids[1])).unwrap();
    let clean = training.join("clean");
    ok(&run(&[
        "filter",
        s(&merged),
        "--drop",
        s(&drop),
        "--drop-identities",
        s(&drop_ids),
        "-o",
        s(&clean),
        "--quiet",
    ]));
    for name in ["clean", "clean.valid"] {
        ok(&run(&["verify-shard", "--decode", s(&training.join(name))]));
    }
    let left = records(&clean);
    assert!(left.iter().all(|r| !gone.contains(&r.path.as_str()) && !r.path.contains(ids[1])));
    let expected = all.iter().filter(|r| !gone.contains(&r.path.as_str()) && !r.path.contains(ids[1])).count();
    assert_eq!(left.len(), expected);
    assert_eq!(label_lines(&clean).len(), ids.len() - 1);
    assert!(label_lines(&clean).iter().all(|l| !l.contains(ids[1])));
    #[cfg(feature = "torch")]
    {
        let models = t.path().join("models");
        let mut cmd = crate::facekit();
        cmd.args(["train", "FR", "--train-sets", "clean", "--max-steps", "2", "--run-name", "clean"])
            .args(["--arch", "tiny", "--image-size", "48", "--batch-size", "8", "--workers", "1", "--device", "cpu"])
            .arg("--data-dir")
            .arg(&training)
            .arg("--model-dir")
            .arg(&models);
        ok(&cmd.output().unwrap());
    }
}
