//! MXNet RecordIO in and out, against MXNet itself (`mxnet.recordio` in `.venv-mxnet`, the
//! module arcface_torch reads with): MXNet writes `.rec` files from real photos in insightface's
//! layout and in im2rec's, facekit imports them record for record, and MXNet reads facekit's
//! export back equal to what it wrote.

use super::facekit;
use facekit_shard::Dataset;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `.rec` little-endian magic (dmlc's `kMagic`), as bytes.
const MAGIC_LE: [u8; 4] = 0xced7230a_u32.to_le_bytes();

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    mx: PathBuf,
    /// (chip path, label), in the list's order.
    items: Vec<(PathBuf, u32)>,
}

fn script() -> PathBuf {
    facekit_testkit::workspace_root().join("scripts/rec_reference.py")
}

/// 112x112 JPEG chips of real lfw100 photos (Pillow, in the project venv), labels 0, 1, 2, 4, 5
/// (3 is unused, as in sparse real label ranges), and one chip whose JPEG carries the RecordIO
/// magic in a comment, so that MXNet must split its record.
fn fixture() -> Option<Fixture> {
    let mx = facekit_testkit::mxnet_python()?;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let chips = root.join("chips");
    let prog = r#"
import os, sys, struct
from PIL import Image
src, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
people = sorted(d for d in os.listdir(src) if os.path.isdir(os.path.join(src, d)))[:5]
labels = [0, 1, 2, 4, 5]
for person, label in zip(people, labels):
    for k, name in enumerate(sorted(os.listdir(os.path.join(src, person)))[:4]):
        im = Image.open(os.path.join(src, person, name)).convert("RGB").crop((50, 50, 200, 200)).resize((112, 112), Image.BILINEAR)
        path = os.path.join(out, "%d_%d.jpg" % (label, k))
        im.save(path, quality=90)
        if label == 2 and k == 1:
            data = open(path, "rb").read()
            magic = (struct.pack("<I", 0xced7230a) + b"\x00") * 8  # every alignment mod 4
            open(path, "wb").write(data[:2] + b"\xff\xfe" + struct.pack(">H", len(magic) + 2) + magic + data[2:])
        print("%s\t%d" % (path, label))
"#;
    let out = Command::new(facekit_testkit::venv_python())
        .args(["-c", prog])
        .arg(facekit_testkit::shared_data().join("lfw100"))
        .arg(&chips)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let items = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (p, label) = l.split_once('\t').unwrap();
            (PathBuf::from(p), label.parse().unwrap())
        })
        .collect();
    Some(Fixture { _tmp: tmp, root, mx, items })
}

impl Fixture {
    fn mxnet_write(&self, layout: &str, out: &Path) {
        let list = self.root.join(format!("{layout}.tsv"));
        let text: String = self.items.iter().map(|(p, l)| format!("{}\t{l}\n", p.display())).collect();
        std::fs::write(&list, text).unwrap();
        let o = Command::new(&self.mx)
            .arg(script())
            .args(["write", "--layout", layout, "--list"])
            .arg(&list)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }

    fn mxnet_read(&self, dir: &Path) -> Vec<serde_json::Value> {
        let json = self.root.join(format!("read-{}.json", dir.file_name().unwrap().to_string_lossy()));
        let o = Command::new(&self.mx)
            .arg(script())
            .args(["read", "--dir"])
            .arg(dir)
            .arg("--out")
            .arg(&json)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(json).unwrap()).unwrap().as_array().unwrap().clone()
    }

    /// (image bytes, label) in the order the import must produce: the file's key order.
    fn expected(&self, insightface: bool) -> Vec<(Vec<u8>, u32)> {
        let mut items = self.items.clone();
        if insightface {
            items.sort_by_key(|(_, l)| *l); // stable, as the writer's sort
        }
        items.into_iter().map(|(p, l)| (std::fs::read(p).unwrap(), l)).collect()
    }
}

fn import(input: &Path, output: &Path, extra: &[&str]) -> std::process::Output {
    facekit()
        .args(["import", "rec"])
        .arg(input)
        .arg("-o")
        .arg(output)
        .args(["--quiet", "--threads", "2"])
        .args(extra)
        .output()
        .unwrap()
}

fn records(base: &Path) -> Vec<(Vec<u8>, u32, String)> {
    let ds = Dataset::open(facekit_shard::DatasetPaths::new(base)).unwrap();
    (0..ds.len())
        .map(|i| {
            let r = ds.get(i).unwrap();
            (r.data, r.labels.class_id.unwrap(), r.path)
        })
        .collect()
}

/// True when some record of the file is the start of a split record (cflag 1).
fn has_split_record(rec: &Path) -> bool {
    let b = std::fs::read(rec).unwrap();
    (0..b.len().saturating_sub(8))
        .step_by(4)
        .any(|i| b[i..i + 4] == MAGIC_LE && u32::from_le_bytes(b[i + 4..i + 8].try_into().unwrap()) >> 29 == 1)
}

#[test]
fn an_insightface_rec_written_by_mxnet_imports_record_for_record_and_exports_back_equal() {
    let Some(fx) = fixture() else { return };
    let src = fx.root.join("faces_mx");
    fx.mxnet_write("insightface", &src);
    assert!(has_split_record(&src.join("train.rec")), "the magic in a payload must make MXNet split that record");

    let out = fx.root.join("training/mx");
    let o = import(&src, &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = records(&out);
    let want = fx.expected(true);
    assert_eq!(got.len(), want.len());
    for (k, ((data, class, path), (wdata, wlabel))) in got.iter().zip(&want).enumerate() {
        assert!(data == wdata, "record {k} ({path}): image bytes differ from what MXNet stored");
        assert_eq!(class, wlabel, "record {k}");
        assert_eq!(path, &format!("train.rec#{}", k + 1));
    }
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.with_extension("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["classes"], 6, "labels keep their numbers: 0..=5 with 3 unused");
    assert_eq!(m["origin"]["layout"], "insightface");
    assert_eq!(m["alignment"]["template"], "arcface5");
    assert_eq!((m["encoding"]["width"].as_u64(), m["encoding"]["height"].as_u64()), (Some(112), Some(112)));
    let labels = std::fs::read_to_string(out.with_extension("labels.tsv")).unwrap();
    assert!(labels.lines().nth(4).unwrap().ends_with("\t3"), "{labels}");

    let v = facekit().args(["verify-shard", "--decode"]).arg(&out).output().unwrap();
    assert!(v.status.success(), "{}{}", String::from_utf8_lossy(&v.stdout), String::from_utf8_lossy(&v.stderr));

    let exp = fx.root.join("exported");
    let e = facekit().args(["export", "rec"]).arg(&out).arg("-o").arg(&exp).arg("--quiet").output().unwrap();
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    assert!(has_split_record(&exp.join("train.rec")), "facekit must split the payload holding the magic as dmlc does");
    // MXNet reads facekit's files exactly as it reads its own: every image, identity and header
    // record, key by key.
    assert_eq!(fx.mxnet_read(&exp), fx.mxnet_read(&src));
    assert_eq!(std::fs::read_to_string(exp.join("property")).unwrap().trim(), "6,112,112");
}

/// The identity column of a label map.
fn identities(labels: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(labels).unwrap();
    text.lines().skip(1).map(|l| l.rsplit('\t').next().unwrap().to_string()).collect()
}

#[test]
fn an_insightface_rec_imports_with_packs_validation_split_and_names_and_exports_back_equal() {
    let Some(fx) = fixture() else { return };
    let src = fx.root.join("faces_mx");
    fx.mxnet_write("insightface", &src);
    let names = fx.root.join("names.txt");
    std::fs::write(&names, "ann\nben\ncid\nnobody\ndee\neve\n").unwrap();

    // Names alone: the label map carries them, the records and the export are unchanged.
    let named = fx.root.join("training/named");
    let o = import(&src, &named, &["--names", names.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(identities(&named.with_extension("labels.tsv")), ["ann", "ben", "cid", "nobody", "dee", "eve"]);
    let whole: Vec<(Vec<u8>, u32, String)> = records(&named);
    assert_eq!(whole.len(), fx.items.len());
    let exp = fx.root.join("named-exported");
    let e = facekit().args(["export", "rec"]).arg(&named).arg("-o").arg(&exp).arg("--quiet").output().unwrap();
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    assert_eq!(fx.mxnet_read(&exp), fx.mxnet_read(&src), "names must not change what MXNet reads back");

    // A split: NAME and NAME.valid, disjoint, together every record, the held-out ones exactly
    // those pack's rule picks for their paths; both with the names, both intact.
    let out = fx.root.join("training/split");
    let o = import(&src, &out, &["--valid-fraction", "0.4", "--names", names.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let said = String::from_utf8_lossy(&o.stdout);
    let valid_base = fx.root.join("training/split.valid");
    let (train, valid) = (records(&out), records(&valid_base));
    assert!(said.contains(&format!("{} train, {} held out into", train.len(), valid.len())), "{said}");
    let rule = facekit_pack::split::SplitRule::new(0.4, 0, 0);
    for (_, _, path) in &train {
        assert!(!rule.is_valid(None, facekit_pack::split::path_hash(path)), "{path} should be held out");
    }
    for (_, _, path) in &valid {
        assert!(rule.is_valid(None, facekit_pack::split::path_hash(path)), "{path} should be in training");
    }
    assert!(!train.is_empty() && !valid.is_empty(), "{} train, {} valid", train.len(), valid.len());
    let mut both: Vec<_> = train.iter().chain(&valid).cloned().collect();
    both.sort_by(|a, b| a.2.cmp(&b.2));
    let mut all = whole.clone();
    all.sort_by(|a, b| a.2.cmp(&b.2));
    assert!(both == all, "the two datasets together must hold every record once, bytes and labels unchanged");
    assert_eq!(
        std::fs::read(valid_base.with_extension("labels.tsv")).unwrap(),
        std::fs::read(named.with_extension("labels.tsv")).unwrap()
    );
    for base in [&out, &valid_base] {
        let v = facekit().args(["verify-shard", "--decode"]).arg(base).output().unwrap();
        assert!(v.status.success(), "{}{}", String::from_utf8_lossy(&v.stdout), String::from_utf8_lossy(&v.stderr));
    }

    // The training set exported and imported again with its label map as the names: the same
    // records and the same label map.
    let exp = fx.root.join("split-exported");
    let e = facekit().args(["export", "rec"]).arg(&out).arg("-o").arg(&exp).arg("--quiet").output().unwrap();
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    let back = fx.root.join("training/back");
    let o = import(&exp, &back, &["--names", out.with_extension("labels.tsv").to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(identities(&back.with_extension("labels.tsv")), identities(&out.with_extension("labels.tsv")));
    let data = |v: Vec<(Vec<u8>, u32, String)>| v.into_iter().map(|(d, c, _)| (d, c)).collect::<Vec<_>>();
    assert_eq!(data(records(&back)), data(train));

    // A names file that does not fit `property`, or names a class twice: refused naming the
    // file and the line, nothing written.
    for (text, says) in [
        ("ann\nben\ncid\ndee\neve\n", "names 5 classes (lines 1 to 5), but property file"),
        ("ann\nben\ncid\nben\ndee\neve\n", "line 4: the name \"ben\" of class 3 is already on line 2"),
    ] {
        std::fs::write(&names, text).unwrap();
        let refused = fx.root.join("training/refused");
        let o = import(&src, &refused, &["--names", names.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(&names.display().to_string()) && err.contains(says), "{err}");
        assert!(!refused.with_extension("manifest.json").exists());
    }
}

#[test]
fn an_im2rec_file_imports_with_its_own_labels_with_or_without_its_index() {
    let Some(fx) = fixture() else { return };
    let src = fx.root.join("plain");
    fx.mxnet_write("im2rec", &src);
    let want = fx.expected(false);
    let with_idx = fx.root.join("training/plain");
    let o = import(&src.join("train.rec"), &with_idx, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = records(&with_idx);
    assert_eq!(got.iter().map(|(d, c, _)| (d.clone(), *c)).collect::<Vec<_>>(), want);
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(with_idx.with_extension("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["origin"]["layout"], "im2rec");

    // No .idx: the file is scanned, and gives the same records.
    let lone = fx.root.join("lone");
    std::fs::create_dir_all(&lone).unwrap();
    std::fs::copy(src.join("train.rec"), lone.join("faces.rec")).unwrap();
    let scanned = fx.root.join("training/scanned");
    let o = import(&lone.join("faces.rec"), &scanned, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(records(&scanned).iter().map(|(d, c, _)| (d.clone(), *c)).collect::<Vec<_>>(), want);
}

/// `key -> offset` of an `.idx`.
fn offsets(idx: &Path) -> std::collections::BTreeMap<u64, usize> {
    std::fs::read_to_string(idx)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, o) = l.split_once('\t').unwrap();
            (k.trim().parse().unwrap(), o.trim().parse().unwrap())
        })
        .collect()
}

#[test]
fn damaged_records_are_listed_with_their_offsets_and_the_rest_imports() {
    let Some(fx) = fixture() else { return };
    let src = fx.root.join("plain");
    fx.mxnet_write("im2rec", &src);
    let rec = src.join("train.rec");
    let idx = offsets(&src.join("train.idx"));
    let mut b = std::fs::read(&rec).unwrap();
    // key 3: the frame's magic destroyed; key 5: a NaN label; key 7: a negative label;
    // key 9: the image's JPEG signature gone; key 11: a length claiming half a gigabyte.
    b[idx[&3]] ^= 0xff;
    b[idx[&5] + 8 + 4..idx[&5] + 8 + 8].copy_from_slice(&f32::NAN.to_le_bytes());
    b[idx[&7] + 8 + 4..idx[&7] + 8 + 8].copy_from_slice(&(-1.0f32).to_le_bytes());
    b[idx[&9] + 8 + 24..idx[&9] + 8 + 26].copy_from_slice(b"XX");
    b[idx[&11] + 4..idx[&11] + 8].copy_from_slice(&((1u32 << 29) - 1).to_le_bytes());
    std::fs::write(&rec, &b).unwrap();
    // And an index line pointing into the middle of a record.
    let mut text = std::fs::read_to_string(src.join("train.idx")).unwrap();
    text.push_str(&format!("999\t{}\n", idx[&2] + 12));
    std::fs::write(src.join("train.idx"), text).unwrap();

    let out = fx.root.join("training/damaged");
    let o = import(&rec, &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rejects = std::fs::read_to_string(out.with_extension("rejects.tsv")).unwrap();
    let rows: Vec<Vec<&str>> = rejects.lines().skip(1).map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 6, "{rejects}");
    let reason_at = |offset: usize| {
        rows.iter()
            .find(|r| r[0].ends_with(&format!("@{offset}")))
            .map(|r| r[1])
            .unwrap_or_else(|| panic!("offset {offset} not listed: {rejects}"))
    };
    assert_eq!(reason_at(idx[&3]), "bad_record");
    assert_eq!(reason_at(idx[&5]), "bad_label");
    assert_eq!(reason_at(idx[&7]), "bad_label");
    assert_eq!(reason_at(idx[&9]), "not_an_image");
    assert_eq!(reason_at(idx[&11]), "bad_record");
    assert_eq!(reason_at(idx[&2] + 12), "bad_record");
    assert!(rows.iter().all(|r| r[2].contains("key ")), "every detail names the key: {rejects}");
    assert_eq!(records(&out).len(), fx.items.len() - 5);
    let v = facekit().args(["verify-shard", "--decode"]).arg(&out).output().unwrap();
    assert!(v.status.success());
}

#[test]
fn a_stopped_import_resumes_to_the_same_shards_and_a_changed_rec_is_refused() {
    let Some(fx) = fixture() else { return };
    let src = fx.root.join("faces_mx");
    fx.mxnet_write("insightface", &src);
    let whole = fx.root.join("whole/mx");
    assert!(import(&src, &whole, &["--shard-size", "16K"]).status.success());
    let part = fx.root.join("part/mx");
    let o = facekit()
        .args(["import", "rec"])
        .arg(&src)
        .arg("-o")
        .arg(&part)
        .args(["--quiet", "--shard-size", "16K"])
        .env("FACEKIT_IMPORT_STOP_AFTER_SHARDS", "2")
        .output()
        .unwrap();
    assert!(!o.status.success(), "the test hook stops the import");
    assert!(!part.with_extension("manifest.json").exists(), "a stopped import leaves no manifest");
    let o = import(&src, &part, &["--shard-size", "16K", "--resume"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("resuming after"), "{}", String::from_utf8_lossy(&o.stderr));
    let shards = |base: &Path| -> Vec<Vec<u8>> {
        let ds = Dataset::open(facekit_shard::DatasetPaths::new(base)).unwrap();
        ds.shards().iter().map(|s| std::fs::read(s.path()).unwrap()).collect()
    };
    let (a, b) = (shards(&whole), shards(&part));
    assert!(a.len() > 2);
    assert!(a == b, "a resumed import must equal an uninterrupted one");
    assert_eq!(
        Sha256::digest(std::fs::read(whole.with_extension("labels.tsv")).unwrap()),
        Sha256::digest(std::fs::read(part.with_extension("labels.tsv")).unwrap())
    );

    // A .rec that changed since the checkpoint is refused, and nothing is removed.
    let again = fx.root.join("again/mx");
    let o = facekit()
        .args(["import", "rec"])
        .arg(&src)
        .arg("-o")
        .arg(&again)
        .args(["--quiet", "--shard-size", "16K"])
        .env("FACEKIT_IMPORT_STOP_AFTER_SHARDS", "1")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let mut rec = std::fs::OpenOptions::new().append(true).open(src.join("train.rec")).unwrap();
    std::io::Write::write_all(&mut rec, &[0u8; 4]).unwrap();
    let o = import(&src, &again, &["--shard-size", "16K", "--resume"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("changed"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(again.with_extension("progress.json").exists());
}

#[test]
fn a_rec_cut_short_imports_every_whole_record_and_lists_the_rest() {
    let Some(fx) = fixture() else { return };
    let src = fx.root.join("plain");
    fx.mxnet_write("im2rec", &src);
    let rec = src.join("train.rec");
    let len = std::fs::metadata(&rec).unwrap().len();
    let cut = len * 6 / 10;
    std::fs::OpenOptions::new().write(true).open(&rec).unwrap().set_len(cut).unwrap();
    let idx = offsets(&src.join("train.idx"));
    // Whole records end before the cut; the one across it and those after it are rejects.
    let offs: Vec<usize> = idx.values().copied().collect();
    let whole =
        offs.iter().enumerate().filter(|(k, _)| offs.get(k + 1).is_some_and(|&next| next as u64 <= cut)).count();

    let out = fx.root.join("training/cut");
    let o = import(&rec, &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(records(&out).len(), whole);
    let rejects = std::fs::read_to_string(out.with_extension("rejects.tsv")).unwrap();
    assert_eq!(rejects.lines().count() - 1, offs.len() - whole, "{rejects}");
    assert!(rejects.lines().skip(1).all(|l| l.split('\t').nth(1) == Some("bad_record")), "{rejects}");

    // Without the index the scan finds the same whole records and one damaged region.
    let lone = fx.root.join("lone");
    std::fs::create_dir_all(&lone).unwrap();
    std::fs::copy(&rec, lone.join("cut.rec")).unwrap();
    let scanned = fx.root.join("training/cut-scan");
    let o = import(&lone.join("cut.rec"), &scanned, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(records(&scanned).len(), whole);
    let rejects = std::fs::read_to_string(scanned.with_extension("rejects.tsv")).unwrap();
    assert_eq!(rejects.lines().count() - 1, 1, "{rejects}");
}

#[test]
fn a_raw_dataset_exports_as_lossless_png_and_records_without_a_class_are_listed() {
    let Some(fx) = fixture() else { return };
    let base = fx.root.join("training/raw");
    let made = super::raw_dataset(&base, 3);
    let exp = fx.root.join("raw-rec");
    let e =
        facekit().args(["export", "rec"]).arg(&base).arg("-o").arg(&exp).args(["--quiet", "--json"]).output().unwrap();
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    let report: serde_json::Value = serde_json::from_slice(&e.stdout).unwrap();
    assert_eq!(
        (report["images"].as_u64(), report["reencoded"].as_u64(), report["skipped"].as_u64()),
        (Some(6), Some(6), Some(1))
    );
    let skipped = std::fs::read_to_string(exp.join("skipped.tsv")).unwrap();
    assert!(skipped.lines().nth(1).unwrap().starts_with("6\tp6\t"), "{skipped}");
    // MXNet sees insightface's layout; the PNGs decode to the very pixels stored.
    let read = fx.mxnet_read(&exp);
    assert_eq!(read[0]["label"], serde_json::json!([7.0, 10.0]));
    let back = fx.root.join("training/raw-back");
    assert!(import(&exp, &back, &[]).status.success());
    for ((data, class, _), (want, wclass)) in records(&back).iter().zip(&made) {
        assert_eq!(Some(*class), *wclass);
        assert_eq!(image::load_from_memory(data).unwrap().to_rgb8().into_raw(), *want);
    }
}

#[test]
fn a_missing_input_or_a_device_is_a_clean_error_and_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("training/x");
    for (input, says) in [
        (t.path().join("nope.rec"), "does not exist"),
        (PathBuf::from("/dev/zero"), "neither a folder nor a regular .rec file"),
    ] {
        let o = import(&input, &out, &[]);
        assert_eq!(o.status.code(), Some(2));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(says) && err.contains(&input.display().to_string()), "{err}");
        assert!(!out.with_extension("manifest.json").exists());
    }
}

/// Every entry of `dir`, hidden ones included, with the bytes of files.
fn entries(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                if p.is_file() { std::fs::read(&p).unwrap() } else { Vec::new() },
            )
        })
        .collect();
    v.sort();
    v
}

fn export_rec(base: &Path, out: &Path) -> std::process::Output {
    facekit().args(["export", "rec"]).arg(base).arg("-o").arg(out).arg("--quiet").output().unwrap()
}

#[test]
fn an_export_folder_is_committed_whole_and_holds_no_lock() {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("training")).unwrap();
    let a = t.path().join("training/a");
    super::raw_dataset(&a, 2);
    let exp = t.path().join("exp");
    let o = export_rec(&a, &exp);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let names: Vec<String> = entries(&exp).into_iter().map(|e| e.0).collect();
    assert_eq!(names, ["property", "skipped.tsv", "train.idx", "train.rec"], "what is delivered holds only the export");
    let first = entries(&exp);

    // What an interrupted export left beside the folder is cleared by the next one.
    let leftover = t.path().join(".tmp-4242-exp");
    std::fs::create_dir_all(&leftover).unwrap();
    std::fs::write(leftover.join("train.rec"), b"half").unwrap();
    let o = export_rec(&a, &exp);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!leftover.exists(), "an interrupted export's temporary folder was left");
    assert_eq!(entries(&exp), first);

    // A failed export (a record damaged on disk) leaves the earlier one as it was, and nothing
    // beside it.
    let b = t.path().join("training/b");
    super::raw_dataset(&b, 3);
    let shard = PathBuf::from(format!("{}-00000.shard", b.display()));
    let mut bytes = std::fs::read(&shard).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&shard, bytes).unwrap();
    let o = export_rec(&b, &exp);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(entries(&exp), first, "a failed export changed the earlier one");
    let beside: Vec<String> = entries(t.path()).into_iter().map(|e| e.0).collect();
    assert_eq!(beside, [".exp.lock", "exp", "training"]);

    // A folder holding anything else, or the dataset itself, is refused before any work.
    std::fs::write(exp.join("notes.txt"), b"mine").unwrap();
    let o = export_rec(&a, &exp);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("notes.txt"), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(exp.join("notes.txt")).unwrap(), b"mine");
    let o = export_rec(&a, &t.path().join("training"));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("holds the command's input"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(a.with_extension("manifest.json").is_file());
}

#[test]
fn import_over_a_finished_dataset_needs_overwrite_and_resume_never_replaces_it() {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("training")).unwrap();
    let (a, b) = (t.path().join("training/a"), t.path().join("training/b"));
    super::raw_dataset(&a, 2);
    super::raw_dataset(&b, 3);
    let (rec_a, rec_b) = (t.path().join("rec_a"), t.path().join("rec_b"));
    for (base, rec) in [(&a, &rec_a), (&b, &rec_b)] {
        assert!(export_rec(base, rec).status.success());
    }
    let out = t.path().join("imported/ds");
    assert!(import(&rec_a, &out, &[]).status.success());
    let from_a = records(&out);
    let refused = |extra: &[&str], says: &[&str]| {
        let o = import(&rec_b, &out, extra);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(says.iter().all(|s| err.contains(s)), "{err}");
        assert_eq!(records(&out), from_a, "a refused import changed the dataset");
    };
    refused(&[], &["already exists", "--overwrite"]);
    refused(&["--resume"], &["nothing to resume", "never replaces"]);

    // Replaced only once the new one is complete: a crash while it is put in place is finished
    // by --resume, and nothing else may run meanwhile.
    let o = facekit()
        .args(["import", "rec"])
        .arg(&rec_b)
        .arg("-o")
        .arg(&out)
        .args(["--quiet", "--overwrite"])
        .env("FACEKIT_TEST_PACK_CRASH_AFTER", "replacing")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(137), "{}", String::from_utf8_lossy(&o.stderr));
    let o = import(&rec_b, &out, &["--overwrite"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--resume"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = import(&rec_b, &out, &["--resume"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let fresh = t.path().join("fresh/ds");
    assert!(import(&rec_b, &fresh, &[]).status.success());
    assert_eq!(records(&out), records(&fresh));
    assert!(!t.path().join("imported/.ds.staging").exists());
    let v = facekit().args(["verify-shard", "--decode"]).arg(&out).output().unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
}

/// Writes `DIR/train.rec` and `train.idx` with MXNet's own `MXIndexedRecordIO`, im2rec's layout
/// (keys 0.., `IRHeader(0, label, key, 0)`), from a Python expression `RECORDS` that yields
/// `(image bytes, label)`; `chips` (the fixture's real 112x112 JPEG chips) is in scope.
fn mxnet_write_records(fx: &Fixture, dir: &Path, records: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let prog = format!(
        "import sys\nfrom mxnet import recordio\nchips = [open(p, 'rb').read() for p in sys.argv[2:]]\n\
         rec = recordio.MXIndexedRecordIO(sys.argv[1] + '/train.idx', sys.argv[1] + '/train.rec', 'w')\n\
         for key, (image, label) in enumerate({records}):\n    rec.write_idx(key, recordio.pack(recordio.IRHeader(0, float(label), key, 0), image))\n\
         rec.close()\n"
    );
    let o = Command::new(&fx.mx).args(["-c", &prog]).arg(dir).args(fx.items.iter().map(|(p, _)| p)).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The rejects list of a dataset: (path, reason, detail) rows.
fn rejects(base: &Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(base.with_extension("rejects.tsv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].to_string(), f[1].to_string(), f[2].to_string())
        })
        .collect()
}

#[test]
fn an_index_naming_a_key_or_a_record_twice_and_a_bad_flag_import_what_mxnet_reads_each_once() {
    let Some(fx) = fixture() else { return };
    let src = fx.root.join("plain");
    fx.mxnet_write("im2rec", &src);
    let idx = offsets(&src.join("train.idx"));
    // Key 3 listed again, a key 100 naming key 5's record, and key 8's part flag set to 5 (dmlc's
    // reader then glues key 9's record onto it).
    let mut text = std::fs::read_to_string(src.join("train.idx")).unwrap();
    text.push_str(&format!("3\t{}\n100\t{}\n", idx[&3], idx[&5]));
    std::fs::write(src.join("train.idx"), text).unwrap();
    let mut b = std::fs::read(src.join("train.rec")).unwrap();
    let lrec = u32::from_le_bytes(b[idx[&8] + 4..idx[&8] + 8].try_into().unwrap());
    b[idx[&8] + 4..idx[&8] + 8].copy_from_slice(&((5 << 29) | (lrec & ((1 << 29) - 1))).to_le_bytes());
    std::fs::write(src.join("train.rec"), &b).unwrap();

    let mx: std::collections::HashMap<u64, serde_json::Value> =
        fx.mxnet_read(&src).into_iter().map(|r| (r["key"].as_u64().unwrap(), r)).collect();
    assert_eq!(mx[&100]["sha256"], mx[&5]["sha256"], "MXNet reads key 5's record under key 100 too");
    assert!(
        mx[&8]["len"].as_u64().unwrap() > 5000 + mx[&9]["len"].as_u64().unwrap() / 2,
        "MXNet glues key 9's record onto key 8's"
    );

    let out = fx.root.join("training/repeated");
    let o = import(&src, &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = records(&out);
    assert_eq!(got.len(), fx.items.len() - 1, "every record once, key 8 rejected");
    let mut seen = std::collections::HashSet::new();
    for (data, class, path) in &got {
        let key: u64 = path.strip_prefix("train.rec#").unwrap().parse().unwrap();
        let sha = format!("{:x}", Sha256::digest(data));
        assert_eq!(mx[&key]["sha256"].as_str(), Some(sha.as_str()), "{path}: not the image MXNet reads for key {key}");
        assert_eq!(mx[&key]["label"][0].as_f64(), Some(f64::from(*class)), "{path}");
        assert!(seen.insert(sha), "{path}: a record imported twice");
    }
    let listed = rejects(&out);
    let at = |offset: usize| {
        listed.iter().filter(|r| r.0.ends_with(&format!("@{offset}"))).map(|r| r.1.as_str()).collect::<Vec<_>>()
    };
    assert_eq!(at(idx[&3]), ["repeated_entry"], "{listed:?}");
    assert_eq!(at(idx[&5]), ["repeated_entry"], "{listed:?}");
    assert_eq!(at(idx[&8]), ["bad_record"], "{listed:?}");
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(listed.iter().any(|r| r.2.contains("continuation flag 5")), "{listed:?}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.with_extension("report.json")).unwrap()).unwrap();
    assert_eq!((report["counters"]["skipped"].as_u64(), report["counters"]["rejected"].as_u64()), (Some(2), Some(1)));
}

#[test]
fn a_thousand_damaged_leading_records_do_not_hide_the_good_ones_after_them() {
    let Some(fx) = fixture() else { return };
    let src = fx.root.join("damaged-first");
    // 1000 records first: half bytes that are no image, half real chips cut in half.
    mxnet_write_records(&fx, &src, "[(b'not an image %d' % k, 0) for k in range(500)] + [(chips[k % len(chips)][:len(chips[k % len(chips)]) // 2], 1) for k in range(500)] + [(c, k % 4) for k, c in enumerate(chips)]");
    let out = fx.root.join("training/damaged-first");
    let o = import(&src.join("train.rec"), &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(records(&out).len(), fx.items.len());
    let listed = rejects(&out);
    assert_eq!(listed.len(), 1000);
    assert_eq!(listed.iter().filter(|r| r.1 == "not_an_image").count(), 500, "{:?}", &listed[..3]);
    assert_eq!(listed.iter().filter(|r| r.1 == "truncated_or_corrupt").count(), 500, "{:?}", &listed[500..503]);
}

#[test]
fn a_label_beyond_the_records_is_rejected_and_a_property_promising_more_classes_is_refused() {
    let Some(fx) = fixture() else { return };
    let src = fx.root.join("stray");
    mxnet_write_records(&fx, &src, "[(c, k % 6) for k, c in enumerate(chips)] + [(chips[0], 16777215)]");
    let out = fx.root.join("training/stray");
    let o = import(&src.join("train.rec"), &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.with_extension("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["classes"], 6, "the classes are those the records have, not 16,777,216");
    assert_eq!(std::fs::read_to_string(out.with_extension("labels.tsv")).unwrap().lines().count(), 7);
    let listed = rejects(&out);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].1, "bad_label");
    assert!(listed[0].2.contains("label 16777215") && listed[0].2.contains("21 image records"), "{listed:?}");

    // insightface's property file promising 16,777,216 classes for 21 images: refused before
    // anything is written, naming the file and both numbers.
    std::fs::write(src.join("property"), "16777216,112,112\n").unwrap();
    let out = fx.root.join("training/promised");
    let o = import(&src, &out, &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("property") && err.contains("16777216 classes") && err.contains("21 image records"), "{err}");
    assert!(!out.with_extension("manifest.json").exists() && !out.with_extension("labels.tsv").exists());
}

/// Runs `cmd` to its end and returns its exit code, its stderr and its peak resident memory in
/// bytes (`wait4`'s `ru_maxrss`, this child's alone).
#[expect(clippy::zombie_processes, reason = "the child is reaped by libc::wait4, which clippy does not see")]
fn peak_rss(mut cmd: Command) -> (Option<i32>, String, u64) {
    let t = tempfile::tempdir().unwrap();
    let err = t.path().join("stderr");
    let child = cmd.stdout(std::process::Stdio::null()).stderr(std::fs::File::create(&err).unwrap()).spawn().unwrap();
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills; the pid is our child, waited for once here.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t);
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    (code, std::fs::read_to_string(err).unwrap(), usage.ru_maxrss as u64 * 1024)
}

#[test]
fn an_import_of_big_records_holds_a_bounded_number_of_bytes_not_of_records() {
    let Some(fx) = fixture() else { return };
    // 40 records of 16 MB each (a real chip padded with JPEG comments, still a valid 112x112
    // JPEG): 640 MB, which an import holding a chunk of records at once would hold whole.
    let src = fx.root.join("big");
    mxnet_write_records(
        &fx,
        &src,
        "[(c[:2] + (b'\\xff\\xfe\\xff\\xff' + b'\\x00' * 65533) * 256 + c[2:], k % 4) for k, c in enumerate((chips * 2)[:40])]",
    );
    assert!(std::fs::metadata(src.join("train.rec")).unwrap().len() > 600 << 20);
    let run = |input: &Path, name: &str| {
        let mut cmd = facekit();
        cmd.args(["import", "rec"]).arg(input).arg("-o").arg(fx.root.join(name)).args(["--quiet", "--threads", "1"]);
        let (code, err, peak) = peak_rss(cmd);
        assert_eq!(code, Some(0), "{err}");
        peak
    };
    let small = fx.root.join("small");
    fx.mxnet_write("im2rec", &small);
    let baseline = run(&small.join("train.rec"), "training/small");
    let peak = run(&src.join("train.rec"), "training/big");
    assert_eq!(records(&fx.root.join("training/big")).len(), 40);
    // One worker: a budget of two 64 MiB records, the record being decoded and a shard buffer.
    let grown = peak.saturating_sub(baseline);
    println!("peak RSS {} MiB, {} MiB above a 20-record import", peak >> 20, grown >> 20);
    assert!(grown < 360 << 20, "the import of 640 MB of records grew by {} MiB", grown >> 20);
}

#[test]
fn an_import_with_more_threads_than_the_machine_can_use_is_refused_before_any_work() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("training/x");
    let o = facekit()
        .args(["import", "rec", "/nonexistent.rec", "-o"])
        .arg(&out)
        .args(["--threads", "100000"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--threads 100000") && err.contains("core"), "{err}");
    assert!(!out.with_extension("lock").exists(), "refused before anything was created");
}

#[test]
fn a_rec_imported_in_three_parts_merged_equals_one_import() {
    let Some(fx) = fixture() else { return };
    for layout in ["insightface", "im2rec"] {
        let src = fx.root.join(format!("parts_{layout}"));
        fx.mxnet_write(layout, &src);
        let input = if layout == "insightface" { src.clone() } else { src.join("train.rec") };
        let training = fx.root.join(format!("training_{layout}"));
        let common = ["--shard-size", "16K", "--valid-fraction", "0.25"];
        let one = training.join("one");
        let o = import(&input, &one, &common);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let manifest = |base: &Path| -> serde_json::Value {
            serde_json::from_slice(&std::fs::read(base.with_extension("manifest.json")).unwrap()).unwrap()
        };
        let mut parts = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for k in 1..=3u64 {
            let part = training.join(format!("part{k}"));
            let o = import(&input, &part, &[&common[..], &["--part", &format!("{k}/3")]].concat());
            assert!(o.status.success(), "{layout} part {k}: {}", String::from_utf8_lossy(&o.stderr));
            let p = &manifest(&part)["part"];
            assert_eq!((p["index"].as_u64(), p["count"].as_u64()), (Some(k), Some(3)), "{p}");
            assert_eq!(p["input_files"].as_u64(), Some(fx.items.len() as u64), "{p}");
            // Whole identities: no label in two parts, and every part has some.
            let labels: std::collections::BTreeSet<u32> = records(&part).iter().map(|r| r.1).collect();
            assert!(!labels.is_empty(), "{layout} part {k} is empty");
            assert!(labels.iter().all(|c| seen.insert(*c)), "{layout}: an identity spans parts");
            parts.push(part);
        }
        let merged = training.join("merged");
        let o = facekit()
            .arg("merge")
            .args([&parts[1], &parts[2], &parts[0]])
            .arg("-o")
            .arg(&merged)
            .args(["--shard-size", "16K", "--quiet"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        for suffix in ["", ".valid"] {
            let (a, b) = (training.join(format!("one{suffix}")), training.join(format!("merged{suffix}")));
            let (ra, rb) = (records(&a), records(&b));
            assert!(!ra.is_empty(), "{layout}{suffix}: the test wants records");
            assert_eq!(ra, rb, "{layout}{suffix}: same records (bytes, class, path) in the same order");
            let text = |p: PathBuf| std::fs::read(p).unwrap();
            assert_eq!(text(a.with_extension("labels.tsv")), text(b.with_extension("labels.tsv")), "{layout}{suffix}");
            let (ma, mb) = (manifest(&a), manifest(&b));
            assert_eq!((&ma["classes"], &ma["records"]), (&mb["classes"], &mb["records"]), "{layout}{suffix}");
        }
        let rejects = |base: &Path| std::fs::read(base.with_extension("rejects.tsv")).unwrap();
        assert_eq!(rejects(&one), rejects(&merged), "{layout}");
        assert_eq!(manifest(&merged)["classes"], 6, "{layout}: labels keep their numbers");
    }
}
