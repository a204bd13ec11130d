//! The pipeline's crash recovery without the command line: a run stopped by its observer at a
//! checkpoint or after any finishing step (as a crash there would leave it) is completed by
//! `--resume` into the same bytes as an uninterrupted run, and a replacement stopped while it
//! is put in place blocks every other run until `--resume` finishes it. Run on the RecordIO
//! import, a source that needs no models; the pack's photos go through the same driver.

use facekit_io::StopFlag;
use facekit_pack::pipeline::{Event, Flow, Observer, Step};
use facekit_pack::rec::{import_rec, ImportEnd, ImportOptions};
use facekit_recordio::insightface::image_record;
use facekit_recordio::writer::encode_record;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// `dir/train.rec` and `train.idx` of `n` small PNG images of 5 identities, and one record that
/// is no image (a reject).
pub(crate) fn write_rec(dir: &Path, n: u64, seed: u8) {
    std::fs::create_dir_all(dir).unwrap();
    let (mut rec, mut idx) = (Vec::new(), String::new());
    for k in 0..=n {
        let image = if k == 3 {
            b"not an image".to_vec()
        } else {
            let img = image::RgbImage::from_fn(24, 24, |x, y| {
                image::Rgb([(x * 7 + k as u32) as u8, (y * 5 + seed as u32) as u8, (x ^ y ^ k as u32) as u8])
            });
            let mut png = Vec::new();
            img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
            png
        };
        idx.push_str(&format!("{k}\t{}\n", rec.len()));
        encode_record(&image_record(k, (k % 5) as f32, &image), &mut rec).unwrap();
    }
    std::fs::write(dir.join("train.rec"), rec).unwrap();
    std::fs::write(dir.join("train.idx"), idx).unwrap();
}

/// Where an observer stops a run.
pub(crate) type StopAt = fn(&Event) -> bool;

/// An observer that records every event and stops the run at `stop_at`.
pub(crate) fn observer(stop_at: Option<StopAt>) -> (Observer, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let obs = Observer::new(move |e| {
        log.lock().unwrap().push(format!("{e:?}"));
        if stop_at.is_some_and(|stop| stop(e)) {
            Flow::Stop
        } else {
            Flow::Continue
        }
    });
    (obs, seen)
}

/// The options of an import of `input` into `output` in 4 KiB shards on 2 threads, no split, no names.
pub(crate) fn options(input: &Path, output: &Path, resume: bool, overwrite: bool, events: Observer) -> ImportOptions {
    ImportOptions {
        input: input.to_path_buf(),
        output: output.to_path_buf(),
        shard_size: 4 << 10,
        threads: 2,
        valid_fraction: 0.0,
        names: None,
        resume,
        overwrite,
        part: None,
        progress: false,
        stop: StopFlag::new(),
        events,
    }
}

fn import(input: &Path, output: &Path, resume: bool, overwrite: bool, events: Observer) -> ImportEnd {
    import_rec(&options(input, output, resume, overwrite, events)).unwrap()
}

/// Every file of dataset `name` in `dir` but its report, by name; manifests without their
/// creation time (the only bytes two runs may differ in).
pub(crate) fn files(dir: &Path, name: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p))
        .filter(|(n, _)| n.starts_with(name) && !n.ends_with(".report.json") && !n.ends_with(".lock"))
        .map(|(n, p)| {
            let mut bytes = std::fs::read(p).unwrap();
            if n.ends_with(".manifest.json") {
                let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                v.as_object_mut().unwrap().remove("created_unix").expect("a manifest has its creation time");
                bytes = serde_json::to_vec(&v).unwrap();
            }
            (n, bytes)
        })
        .collect();
    out.sort();
    out
}

pub(crate) fn done(end: ImportEnd) {
    assert!(matches!(end, ImportEnd::Done(_)), "{end:?}");
}

#[test]
fn a_run_stopped_after_any_finishing_step_is_completed_by_resume_into_the_same_bytes() {
    let t = tempfile::tempdir().unwrap();
    let rec = t.path().join("rec");
    write_rec(&rec, 40, 0);
    let whole: PathBuf = t.path().join("whole/ds");
    done(import(&rec, &whole, false, false, Observer::default()));
    let reference = files(&t.path().join("whole"), "ds");
    assert!(reference.iter().filter(|(n, _)| n.ends_with(".shard")).count() >= 3, "{:?}", reference.len());
    assert!(reference.iter().any(|(n, b)| n == "ds.rejects.tsv" && b.split(|&c| c == b'\n').count() == 3));

    let steps: [(Step, StopAt); 3] = [
        (Step::Checkpoint, |e| *e == Event::Finished(Step::Checkpoint)),
        (Step::Manifests, |e| *e == Event::Finished(Step::Manifests)),
        (Step::Rejects, |e| *e == Event::Finished(Step::Rejects)),
    ];
    for (step, stop_at) in steps {
        let dir = t.path().join(step.name());
        let out = dir.join("ds");
        let (obs, _) = observer(Some(stop_at));
        let end = import(&rec, &out, false, false, obs);
        assert!(matches!(end, ImportEnd::Interrupted { shards } if shards >= 3), "{step:?}: {end:?}");
        assert!(!dir.join("ds.report.json").exists() && dir.join("ds.progress.json").exists(), "{step:?}");
        let (obs, seen) = observer(None);
        done(import(&rec, &out, true, false, obs));
        assert!(seen.lock().unwrap().iter().any(|e| e.starts_with("Completing")), "{step:?}: {:?}", seen.lock());
        assert_eq!(files(&dir, "ds"), reference, "{step:?}: the finished dataset differs");
        assert!(!dir.join("ds.progress.json").exists() && dir.join("ds.report.json").exists());
    }

    // Stopped at its second checkpoint, as a crash between shards would: resumed from there.
    let dir = t.path().join("cut");
    let (obs, _) = observer(Some(|e| matches!(e, Event::Checkpoint { shards: 2 })));
    let end = import(&rec, &dir.join("ds"), false, false, obs);
    assert!(matches!(end, ImportEnd::Interrupted { shards: 2 }), "{end:?}");
    assert!(!dir.join("ds.manifest.json").exists());
    let (obs, seen) = observer(None);
    done(import(&rec, &dir.join("ds"), true, false, obs));
    assert!(seen.lock().unwrap().iter().any(|e| e.starts_with("Resuming { consumed: ")), "{:?}", seen.lock());
    assert_eq!(files(&dir, "ds"), reference, "a resumed import must equal an uninterrupted one");
}

#[test]
fn a_replacement_stopped_while_put_in_place_blocks_other_runs_until_resume_finishes_it() {
    let t = tempfile::tempdir().unwrap();
    let (small, big) = (t.path().join("small"), t.path().join("big"));
    write_rec(&small, 12, 1);
    write_rec(&big, 40, 2);
    let out = t.path().join("o/ds");
    done(import(&small, &out, false, false, Observer::default()));
    let (obs, _) = observer(Some(|e| *e == Event::Finished(Step::Replacing)));
    let end = import(&big, &out, false, true, obs);
    assert!(matches!(end, ImportEnd::Interrupted { .. }), "{end:?}");
    assert!(t.path().join("o/.ds.staging").exists());
    for (resume, overwrite) in [(false, false), (false, true)] {
        let opts = options(&big, &out, resume, overwrite, Observer::default());
        let err = format!("{:#}", import_rec(&opts).unwrap_err());
        assert!(err.contains("stopped while putting it in place") && err.contains("--resume"), "{err}");
    }
    done(import(&big, &out, true, false, Observer::default()));
    let fresh = t.path().join("fresh/ds");
    done(import(&big, &fresh, false, false, Observer::default()));
    let strip = |v: Vec<(String, Vec<u8>)>| -> Vec<(String, Vec<u8>)> {
        v.into_iter().filter(|(n, _)| n.ends_with(".shard") || n.ends_with(".labels.tsv")).collect()
    };
    assert_eq!(strip(files(&t.path().join("o"), "ds")), strip(files(&t.path().join("fresh"), "ds")));
    assert!(!t.path().join("o/.ds.staging").exists());
}
