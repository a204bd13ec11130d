//! `facekit pack` end to end on real photos (`../shared/data`): labels, rejects, reports,
//! determinism, resume, layouts, landmarks, attributes and the validation split.
//! They need face detection, so a build without dlib (feature `pack`) skips them.

use facekit_shard::{Dataset, Gender, Record};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

fn lfw() -> PathBuf {
    facekit_testkit::shared_data().join("lfw100")
}

/// Runs `facekit pack ARGS --quiet` with the test models.
fn pack(args: &[&str]) -> Output {
    pack_env(args, &[])
}

fn pack_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = crate::facekit();
    cmd.arg("pack").args(args).arg("--quiet").env("FACEKIT_MODELS", facekit_testkit::models_dir());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("facekit runs")
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "facekit failed ({:?}):\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Symlinks the first `per` photos of each identity into `dst/<identity>/`.
fn link_subset(dst: &Path, identities: &[&str], per: usize) {
    for id in identities {
        let mut files: Vec<PathBuf> = fs::read_dir(lfw().join(id)).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        fs::create_dir_all(dst.join(id)).unwrap();
        for f in files.into_iter().take(per) {
            std::os::unix::fs::symlink(&f, dst.join(id).join(f.file_name().unwrap())).unwrap();
        }
    }
}

fn report(base: &Path) -> Value {
    let p = PathBuf::from(format!("{}.report.json", base.display()));
    serde_json::from_slice(&fs::read(&p).unwrap()).unwrap()
}

/// `path -> reason` from `<base>.rejects.tsv`.
fn rejects(base: &Path) -> BTreeMap<String, String> {
    let text = fs::read_to_string(format!("{}.rejects.tsv", base.display())).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("path\treason\tdetail"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 3, "{l}");
            (f[0].to_string(), f[1].to_string())
        })
        .collect()
}

fn records(base: &Path) -> Vec<Record> {
    let ds = Dataset::open_name(s(base), None).unwrap();
    (0..ds.len()).map(|i| ds.get(i).unwrap()).collect()
}

/// Every count adds up: seen == packed + rejected, and every reject is listed.
fn assert_nothing_dropped(base: &Path, files_on_disk: u64) {
    let r = report(base);
    let (seen, packed, rejected) =
        (r["seen"].as_u64().unwrap(), r["packed"].as_u64().unwrap(), r["rejected"].as_u64().unwrap());
    assert_eq!(seen, files_on_disk, "report: {r}");
    assert_eq!(seen, packed + rejected, "report: {r}");
    assert_eq!(rejects(base).len() as u64, rejected);
    let by_reason: u64 = r["rejected_by_reason"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(by_reason, rejected);
}

fn argv(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn count_files(root: &Path) -> u64 {
    walkdir::WalkDir::new(root)
        .follow_links(true)
        .into_iter()
        .filter(|e| e.as_ref().unwrap().file_type().is_file())
        .count() as u64
}

fn shard_bytes(dir: &Path, name: &str) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let f = p.file_name().unwrap().to_str().unwrap();
            f.starts_with(&format!("{name}-")) && f.ends_with(".shard")
        })
        .map(|p| (p.file_name().unwrap().to_str().unwrap().to_string(), fs::read(&p).unwrap()))
        .collect()
}

#[test]
fn lfw100_whole_set_packs_nearly_all_faces_with_folder_labels() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("lfw");
    ok(&pack(&[s(&lfw()), "-o", s(&out), "--shard-size", "16M"]));
    let files = count_files(&lfw());
    assert_nothing_dropped(&out, files);
    let r = report(&out);
    let packed = r["packed"].as_u64().unwrap();
    assert!(packed as f64 >= 0.97 * files as f64, "only {packed} of {files} faces packed");

    let ds = Dataset::open_name(s(&out), None).unwrap();
    assert_eq!(ds.len() as u64, packed);
    assert_eq!(ds.manifest().classes, 100);
    let m = ds.manifest().alignment.clone().unwrap();
    assert_eq!((m.detector.as_str(), m.size, m.template.as_str()), ("hog", 224, "dlib5"));
    let mut identities = BTreeSet::new();
    for i in 0..ds.len() {
        let rec = ds.get(i).unwrap();
        let parts: Vec<&str> = rec.path.split('/').collect();
        assert_eq!(parts.len(), 3, "{}", rec.path);
        assert_eq!(parts[0], "lfw100");
        let class = rec.labels.class_id.unwrap();
        assert_eq!(ds.labels().identity(class), Some(parts[1]), "record {i} ({}) has class {class}", rec.path);
        assert_eq!((rec.width, rec.height), (224, 224));
        identities.insert(parts[1].to_string());
        if i % 250 == 0 {
            let original = fs::read(lfw().join(parts[1]).join(parts[2])).unwrap();
            assert_eq!(rec.origin_sha256[..], Sha256::digest(&original)[..16], "{}", rec.path);
        }
    }
    assert_eq!(identities.len(), 100);
    let v = crate::facekit().args(["verify-shard", "--decode", s(&out)]).output().unwrap();
    ok(&v);
}

#[test]
fn orl_greyscale_pgm_faces_are_packed() {
    let t = tempfile::tempdir().unwrap();
    let orl = t.path().join("orl");
    // Two photos of each of the 40 people keep the test quick and still cover every folder.
    for k in 1..=40 {
        fs::create_dir_all(orl.join(format!("s{k}"))).unwrap();
        for n in [1, 6] {
            let src = facekit_testkit::shared_data().join(format!("orl/s{k}/{n}.pgm"));
            std::os::unix::fs::symlink(src, orl.join(format!("s{k}/{n}.pgm"))).unwrap();
        }
    }
    let out = t.path().join("orl-out");
    ok(&pack(&[s(&orl), "-o", s(&out), "--size", "112"]));
    assert_nothing_dropped(&out, 80);
    let recs = records(&out);
    assert!(recs.len() >= 60, "only {} of 80 ORL faces packed: {:?}", recs.len(), rejects(&out));
    assert!(recs.iter().all(|r| r.path.starts_with("orl/s") && r.labels.class_id.is_some()));
}

#[test]
fn yale_gif_files_without_extension_form_a_flat_root_of_unknown_identities() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("yale");
    let yale = facekit_testkit::shared_data().join("yale");
    ok(&pack(&[s(&yale), "-o", s(&out), "--size", "112"]));
    let files = count_files(&yale);
    assert_nothing_dropped(&out, files);
    let recs = records(&out);
    assert!(recs.len() as f64 >= 0.8 * files as f64, "only {} of {files} Yale faces packed", recs.len());
    assert!(recs.iter().all(|r| r.labels.class_id.is_none() && r.path.starts_with("yale/subject")));
    assert_eq!(Dataset::open_name(s(&out), None).unwrap().manifest().classes, 0);
}

#[test]
fn dlib_group_photos_count_multiple_faces_and_dogs_have_none() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("groups");
    let root = facekit_testkit::shared_data().join("dlib_faces");
    ok(&pack(&[s(&root), "-o", s(&out), "--size", "112"]));
    assert_nothing_dropped(&out, count_files(&root));
    let rej = rejects(&out);
    assert_eq!(rej.get(s(&root.join("dogs.jpg"))).map(String::as_str), Some("no_face"), "{rej:?}");
    assert_eq!(rej.get(s(&root.join("training.xml"))).map(String::as_str), Some("not_an_image"));
    let r = report(&out);
    assert!(r["multiple_faces"].as_u64().unwrap() >= 3, "report: {r}");
    assert!(records(&out).iter().any(|r| r.path == "dlib_faces/bald_guys.jpg"));
}

/// A PNG whose header claims `w` x `h` pixels, with a valid IHDR CRC and no pixel data.
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32fast::hash(&ihdr).to_be_bytes());
    png
}

#[test]
fn crafted_bad_files_are_rejected_with_reasons_and_the_rest_packed() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("mixed");
    link_subset(&root, &["Hans_Blix"], 4);
    let bad = root.join("Hans_Blix");
    let good = fs::read(lfw().join("Hans_Blix/Hans_Blix_0005.jpg")).unwrap();
    fs::write(bad.join("zero.jpg"), b"").unwrap();
    fs::write(bad.join("truncated.jpg"), &good[..good.len() / 2]).unwrap();
    fs::write(bad.join("text.jpg"), b"<html>404 not found</html>\n").unwrap();
    fs::write(bad.join("bomb.png"), png_header(100_000, 100_000)).unwrap();
    let out = t.path().join("out");
    ok(&pack(&[s(&root), "-o", s(&out)]));
    assert_nothing_dropped(&out, 8);
    let rej = rejects(&out);
    let reason = |f: &str| rej.get(s(&bad.join(f))).cloned();
    assert_eq!(reason("zero.jpg").as_deref(), Some("empty"));
    assert_eq!(reason("truncated.jpg").as_deref(), Some("truncated_or_corrupt"));
    assert_eq!(reason("text.jpg").as_deref(), Some("not_an_image"));
    assert_eq!(reason("bomb.png").as_deref(), Some("too_large"));
    assert_eq!(records(&out).len(), 4);
}

#[test]
fn nothing_packed_exits_1_and_bad_usage_exits_2() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("junk");
    fs::create_dir_all(root.join("someone")).unwrap();
    fs::write(root.join("someone/a.jpg"), b"not a photo").unwrap();
    let out = t.path().join("out");
    let o = pack(&[s(&root), "-o", s(&out)]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(rejects(&out).len(), 1);
    assert!(!out.with_extension("manifest.json").exists());
    assert_eq!(pack(&[s(&root), "-o", s(&out), "--shard-size", "12Q"]).status.code(), Some(2));
    assert_eq!(pack(&[s(&t.path().join("missing")), "-o", s(&out)]).status.code(), Some(2));
}

const FEW: &[&str] = &["Hans_Blix", "Gordon_Brown", "Howard_Dean"];

#[test]
fn one_and_two_threads_give_identical_shards() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("few");
    link_subset(&root, FEW, 12);
    let (a, b) = (t.path().join("a/few"), t.path().join("b/few"));
    ok(&pack(&[s(&root), "-o", s(&a), "--threads", "1", "--shard-size", "96K", "--valid-per-class", "2"]));
    ok(&pack(&[s(&root), "-o", s(&b), "--threads", "2", "--shard-size", "96K", "--valid-per-class", "2"]));
    for name in ["few", "few.valid"] {
        let (sa, sb) = (shard_bytes(&t.path().join("a"), name), shard_bytes(&t.path().join("b"), name));
        assert!(sa.len() >= 2 || name == "few.valid", "{name}: only {} shard(s)", sa.len());
        assert_eq!(sa.keys().collect::<Vec<_>>(), sb.keys().collect::<Vec<_>>());
        assert!(sa == sb, "{name}: shards differ between 1 and 2 threads");
    }
    assert_eq!(
        fs::read(t.path().join("a/few.labels.tsv")).unwrap(),
        fs::read(t.path().join("b/few.labels.tsv")).unwrap()
    );
}

#[test]
fn interrupted_pack_resumes_to_identical_shards() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("few");
    link_subset(&root, FEW, 12);
    // Rejects before and after the point where the pack is stopped: the resumed rejects list
    // must hold each exactly once, in input order.
    for name in FEW {
        fs::write(root.join(name).join("0_broken.jpg"), b"junk").unwrap(); // first in its folder
    }
    let whole = t.path().join("whole/few");
    let args = |o: &Path| -> Vec<String> {
        [s(&root), "-o", s(o), "--shard-size", "64K", "--valid-fraction", "0.2"].iter().map(|x| x.to_string()).collect()
    };
    ok(&pack(&argv(&args(&whole))));

    let cut = t.path().join("cut/few");
    let stopped = pack_env(&argv(&args(&cut)), &[("FACEKIT_PACK_STOP_AFTER_SHARDS", "2")]);
    assert_eq!(stopped.status.code(), Some(130), "{}", String::from_utf8_lossy(&stopped.stderr));
    assert!(t.path().join("cut/few.progress.json").exists());
    assert!(!t.path().join("cut/few.manifest.json").exists(), "an interrupted pack must not look complete");
    assert!(!t.path().join("cut/few.rejects.tsv").exists(), "an interrupted pack must not look complete");
    let partial = fs::read_to_string(t.path().join("cut/few.rejects.tsv.partial")).unwrap();
    let lines = partial.lines().count();
    assert!(
        (2..=FEW.len()).contains(&lines),
        "the header, and rejects before the stop but not all of them:\n{partial}"
    );
    // Lines a crash left after the last checkpoint are dropped on resume.
    fs::write(
        t.path().join("cut/few.rejects.tsv.partial"),
        partial + "left/after.jpg\tno_face\tafter the checkpoint\n",
    )
    .unwrap();

    let mut changed = args(&cut);
    changed.extend(["--quality".into(), "80".into(), "--resume".into()]);
    let refused = pack(&argv(&changed));
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("quality"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let mut again = args(&cut);
    again.push("--resume".into());
    let resumed = pack(&argv(&again));
    ok(&resumed);
    assert!(String::from_utf8_lossy(&resumed.stderr).contains("resuming after"));
    assert!(!t.path().join("cut/few.progress.json").exists());
    for name in ["few", "few.valid"] {
        let (a, b) = (shard_bytes(&t.path().join("whole"), name), shard_bytes(&t.path().join("cut"), name));
        assert!(!a.is_empty());
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "{name}");
        assert!(a == b, "{name}: resumed shards differ from an uninterrupted pack");
    }
    let (ra, rb) = (report(&whole), report(&cut));
    for k in ["seen", "packed", "packed_valid", "rejected", "rejected_by_reason", "multiple_faces", "per_source"] {
        assert_eq!(ra[k], rb[k], "{k}");
    }
    assert_eq!(rb["resumed"], Value::Bool(true));
    assert_eq!(rejects(&whole).len(), FEW.len());
    assert_eq!(
        fs::read(t.path().join("whole/few.rejects.tsv")).unwrap(),
        fs::read(t.path().join("cut/few.rejects.tsv")).unwrap()
    );
    assert!(!t.path().join("cut/few.rejects.tsv.partial").exists());
}

#[test]
fn multi_source_roots_get_disjoint_class_ranges() {
    let t = tempfile::tempdir().unwrap();
    let multi = t.path().join("multi");
    link_subset(&multi.join("msra"), &["Hans_Blix", "Gordon_Brown"], 3);
    link_subset(&multi.join("celebrity"), &["Howard_Dean", "Hans_Blix"], 3);
    let single = t.path().join("extra");
    link_subset(&single, &["Bill_Gates"], 3);
    let out = t.path().join("out");
    ok(&pack(&[s(&multi), s(&single), "-o", s(&out), "--size", "112"]));
    let ds = Dataset::open_name(s(&out), None).unwrap();
    let sources = &ds.manifest().sources;
    let names: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["celebrity", "msra", "extra"]);
    let ranges: Vec<(u32, u32)> = sources.iter().map(|s| (s.class_offset, s.class_offset + s.classes)).collect();
    assert_eq!(ranges, [(0, 2), (2, 4), (4, 5)]);
    for i in 0..ds.len() {
        let rec = ds.get(i).unwrap();
        let src = &sources[rec.labels.source as usize];
        let class = rec.labels.class_id.unwrap();
        assert!((src.class_offset..src.class_offset + src.classes).contains(&class));
        let parts: Vec<&str> = rec.path.split('/').collect();
        assert_eq!(parts[0], src.name);
        assert_eq!(ds.labels().identity(class), Some(parts[1]));
    }
    // The same person in two sources is two classes: sources are never merged.
    let blix: BTreeSet<u32> = (0..ds.len())
        .map(|i| ds.get(i).unwrap())
        .filter(|r| r.path.contains("Hans_Blix"))
        .map(|r| r.labels.class_id.unwrap())
        .collect();
    assert_eq!(blix.len(), 2);
}

#[test]
fn landmarks_file_skips_detection_and_its_chips_hold_faces() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("few");
    link_subset(&root, &["Hans_Blix", "Gordon_Brown"], 6);
    // Landmarks from the Python dlib reference, independent of our detector.
    let lm = t.path().join("landmarks.txt");
    let py = std::process::Command::new(facekit_testkit::venv_python())
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/pack_reference.py"))
        .args([s(&root), "--landmarks-out", s(&lm), "--models", s(&facekit_testkit::models_dir())])
        .output()
        .unwrap();
    ok(&py);
    let mut text = fs::read_to_string(&lm).unwrap();
    let listed = text.lines().count();
    assert!(listed >= 10, "{text}");
    // One photo without a line, one with points outside the image.
    let dropped = text.lines().next().unwrap().split(' ').next().unwrap().to_string();
    text = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
    fs::write(root.join("Hans_Blix/far.jpg"), fs::read(root.join(&dropped)).unwrap()).unwrap();
    text.push_str("Hans_Blix/far.jpg 900 900 950 900 925 950 910 980 940 980\n");
    fs::write(&lm, &text).unwrap();

    let out = t.path().join("lm");
    ok(&pack(&[s(&root), "-o", s(&out), "--landmarks", s(&lm), "--size", "150", "--encoding", "png"]));
    let rej = rejects(&out);
    assert_eq!(rej.get(s(&root.join(&dropped))).map(String::as_str), Some("no_landmarks"));
    assert_eq!(rej.get(s(&root.join("Hans_Blix/far.jpg"))).map(String::as_str), Some("bad_landmarks"));
    let r = report(&out);
    assert_eq!(r["from_landmarks"], r["packed"]);
    assert_eq!(r["packed"].as_u64().unwrap() as usize, listed - 1);
    let ds = Dataset::open_name(s(&out), None).unwrap();
    let a = ds.manifest().alignment.clone().unwrap();
    assert_eq!((a.detector.as_str(), a.template.as_str()), ("landmarks-file", "arcface5"));

    // The aligned chips must show faces: our own detector, run on them, finds nearly all.
    let chips = t.path().join("chips");
    fs::create_dir_all(chips.join("all")).unwrap();
    for i in 0..ds.len() {
        fs::write(chips.join(format!("all/{i:03}.png")), &ds.get(i).unwrap().data).unwrap();
    }
    let again = t.path().join("again");
    ok(&pack(&[s(&chips), "-o", s(&again), "--size", "150"]));
    let found = report(&again)["packed"].as_u64().unwrap() as usize;
    assert!(found + 1 >= ds.len(), "a face was detected in only {found} of {} landmark chips", ds.len());

    // JPEG chroma: recorded in the manifest and really used in every record (SOF0's first
    // component sampling byte: 0x22 for 4:2:0, 0x11 for 4:4:4).
    for (chroma, sampling) in [("420", 0x22u8), ("444", 0x11)] {
        let out = t.path().join(format!("jpeg{chroma}"));
        ok(&pack(&[s(&root), "-o", s(&out), "--landmarks", s(&lm), "--size", "112", "--chroma", chroma]));
        let ds = Dataset::open_name(s(&out), None).unwrap();
        assert_eq!(ds.manifest().encoding.chroma.as_deref(), Some(chroma));
        for i in 0..ds.len() {
            let data = ds.get(i).unwrap().data;
            let sof = data.windows(2).position(|w| w == [0xFF, 0xC0]).expect("baseline JPEG");
            assert_eq!(data[sof + 11], sampling, "record {i} of the --chroma {chroma} pack");
        }
    }
}

fn utk_name_labels(name: &str) -> (u16, Gender) {
    let f: Vec<&str> = name.split('_').collect();
    (f[0].parse().unwrap(), if f[1] == "0" { Gender::Male } else { Gender::Female })
}

#[test]
fn utkface_names_and_attribute_csv_label_records() {
    let t = tempfile::tempdir().unwrap();
    let utk = t.path().join("utk");
    fs::create_dir_all(&utk).unwrap();
    let mut names: Vec<String> = fs::read_dir(facekit_testkit::shared_data().join("utkface2k"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    for n in names.iter().take(24) {
        std::os::unix::fs::symlink(facekit_testkit::shared_data().join("utkface2k").join(n), utk.join(n)).unwrap();
    }
    let out = t.path().join("utk-out");
    ok(&pack(&[s(&utk), "-o", s(&out), "--utkface-labels", "--size", "112"]));
    let recs = records(&out);
    assert!(recs.len() >= 18, "only {} UTKFace faces packed", recs.len());
    for r in &recs {
        let (age, gender) = utk_name_labels(r.path.rsplit('/').next().unwrap());
        assert_eq!((r.labels.age, r.labels.gender, r.labels.class_id), (Some(age), Some(gender), None), "{}", r.path);
    }

    let root = t.path().join("few");
    link_subset(&root, &["Hans_Blix", "Condoleezza_Rice"], 3);
    let csv = t.path().join("attrs.csv");
    fs::write(&csv, "key,gender,age\nHans_Blix,m,70\nCondoleezza_Rice,f,\nHans_Blix/Hans_Blix_0002.jpg,,71\n").unwrap();
    let out = t.path().join("attr-out");
    ok(&pack(&[s(&root), "-o", s(&out), "--attributes", s(&csv), "--size", "112"]));
    for r in records(&out) {
        let expected = match r.path.as_str() {
            "few/Hans_Blix/Hans_Blix_0002.jpg" => (Some(Gender::Male), Some(71)),
            p if p.starts_with("few/Hans_Blix/") => (Some(Gender::Male), Some(70)),
            _ => (Some(Gender::Female), None),
        };
        assert_eq!((r.labels.gender, r.labels.age), expected, "{}", r.path);
    }
}

#[test]
fn valid_split_is_deterministic_disjoint_and_keeps_class_ids() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("few");
    link_subset(&root, FEW, 10);
    let runs: Vec<(Vec<Record>, Vec<Record>)> = ["a", "b"]
        .iter()
        .map(|run| {
            let out = t.path().join(run).join("few");
            ok(&pack(&[s(&root), "-o", s(&out), "--size", "112", "--valid-per-class", "3", "--valid-fraction", "0.1"]));
            (records(&out), records(&t.path().join(run).join("few.valid")))
        })
        .collect();
    let paths = |v: &[Record]| v.iter().map(|r| r.path.clone()).collect::<BTreeSet<_>>();
    let (train, valid) = (&runs[0].0, &runs[0].1);
    assert_eq!(paths(train), paths(&runs[1].0));
    assert_eq!(paths(valid), paths(&runs[1].1));
    assert!(paths(train).is_disjoint(&paths(valid)));
    let train_ds = Dataset::open_name(s(&t.path().join("a/few")), None).unwrap();
    let valid_ds = Dataset::open_name(s(&t.path().join("a/few.valid")), None).unwrap();
    assert_eq!(train_ds.labels(), valid_ds.labels());
    for r in valid.iter() {
        let id = r.path.split('/').nth(1).unwrap();
        assert_eq!(valid_ds.labels().identity(r.labels.class_id.unwrap()), Some(id));
    }
    // At least the 3 per identity (fewer only where a held-out photo had no face).
    let per_class: BTreeMap<u32, usize> = valid.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.labels.class_id.unwrap()).or_default() += 1;
        m
    });
    assert_eq!(per_class.len(), 3);
    assert!(per_class.values().all(|&n| n >= 2), "{per_class:?}");
}
