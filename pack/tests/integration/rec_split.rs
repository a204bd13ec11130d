//! `import rec --valid-fraction` and `--names`: records held out into `NAME.valid` by pack's own
//! rule (disjoint, the same for any thread count, resumed into the same bytes), and identity
//! names in the label map, a bad names file refused naming its line.

use super::pipeline_faults::{done, files, observer, options, write_rec};
use facekit_pack::pipeline::{Event, Observer};
use facekit_pack::rec::{import_rec, ImportEnd, ImportOptions};
use facekit_pack::split::{path_hash, SplitRule};
use facekit_shard::{Dataset, DatasetPaths};
use std::collections::BTreeSet;
use std::path::Path;

/// The record paths of a dataset, in its order.
fn paths(base: &Path) -> Vec<String> {
    let ds = Dataset::open(DatasetPaths::new(base)).unwrap();
    (0..ds.len()).map(|i| ds.get(i).unwrap().path).collect()
}

fn split(mut opts: ImportOptions, fraction: f64) -> ImportOptions {
    opts.valid_fraction = fraction;
    opts
}

#[test]
fn a_valid_fraction_holds_out_records_by_packs_rule_disjointly_and_resumes_to_the_same_bytes() {
    let t = tempfile::tempdir().unwrap();
    let rec = t.path().join("rec");
    write_rec(&rec, 60, 0);
    let whole = t.path().join("whole/ds");
    let end = import_rec(&split(options(&rec, &whole, false, false, Observer::default()), 0.3)).unwrap();
    let ImportEnd::Done(report) = end else { panic!("{end:?}") };

    let (train, valid) = (paths(&whole), paths(&whole.with_file_name("ds.valid")));
    let (train_set, valid_set): (BTreeSet<_>, BTreeSet<_>) = (train.iter().collect(), valid.iter().collect());
    assert!(train_set.is_disjoint(&valid_set), "a record in both datasets");
    assert_eq!(train.len() + valid.len(), 60, "every image record once (key 3 is no image)");
    // Exactly the records pack's rule holds out for their record paths.
    let rule = SplitRule::new(0.3, 0, 0);
    let all: Vec<&String> = train.iter().chain(&valid).collect();
    let want: BTreeSet<&String> = all.iter().copied().filter(|p| rule.is_valid(None, path_hash(p))).collect();
    assert_eq!(valid_set, want);
    assert!((8..=28).contains(&valid.len()), "{} of 60 held out for 30%", valid.len());
    assert_eq!(report.counters.imported_valid, Some(valid.len() as u64));
    assert_eq!(report.valid_dataset.as_deref().map(|d| d.ends_with("ds.valid")), Some(true), "{report:?}");
    let dir = t.path().join("whole");
    assert_eq!(
        std::fs::read(dir.join("ds.labels.tsv")).unwrap(),
        std::fs::read(dir.join("ds.valid.labels.tsv")).unwrap(),
        "both datasets share the label map, as pack's do"
    );
    let reference = files(&dir, "ds");
    assert!(reference.iter().filter(|(n, _)| n.starts_with("ds.valid-") && n.ends_with(".shard")).count() >= 1);

    // One thread gives the same bytes as two.
    let one = t.path().join("one/ds");
    let mut opts = split(options(&rec, &one, false, false, Observer::default()), 0.3);
    opts.threads = 1;
    done(import_rec(&opts).unwrap());
    assert_eq!(files(&t.path().join("one"), "ds"), reference);

    // Stopped at its second checkpoint, resumed into the same bytes; a resume with another
    // fraction is refused.
    let cut = t.path().join("cut/ds");
    let (obs, _) = observer(Some(|e| matches!(e, Event::Checkpoint { shards: 2 })));
    let end = import_rec(&split(options(&rec, &cut, false, false, obs), 0.3)).unwrap();
    assert!(matches!(end, ImportEnd::Interrupted { shards: 2 }), "{end:?}");
    let err =
        format!("{:#}", import_rec(&split(options(&rec, &cut, true, false, Observer::default()), 0.5)).unwrap_err());
    assert!(err.contains("cannot resume") && err.contains("changed"), "{err}");
    done(import_rec(&split(options(&rec, &cut, true, false, Observer::default()), 0.3)).unwrap());
    assert_eq!(files(&t.path().join("cut"), "ds"), reference, "a resumed split import must equal an uninterrupted one");

    // Replaced by an import without a split, the old validation dataset goes with the old one.
    done(import_rec(&options(&rec, &whole, false, true, Observer::default())).unwrap());
    assert_eq!(paths(&whole).len(), 60);
    assert!(!dir.join("ds.valid.manifest.json").exists() && !dir.join("ds.valid-00000.shard").exists());

    let err =
        format!("{:#}", import_rec(&split(options(&rec, &whole, false, true, Observer::default()), 1.0)).unwrap_err());
    assert!(err.contains("--valid-fraction 1 is outside [0, 1)"), "{err}");
}

/// The identity column of a label map.
fn identities(labels: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(labels).unwrap();
    text.lines().skip(1).map(|l| l.rsplit('\t').next().unwrap().to_string()).collect()
}

fn with_names(mut opts: ImportOptions, names: &Path) -> ImportOptions {
    opts.names = Some(names.to_path_buf());
    opts
}

#[test]
fn names_give_the_label_map_its_identities_and_a_bad_names_file_is_refused_naming_its_line() {
    let t = tempfile::tempdir().unwrap();
    let rec = t.path().join("rec");
    write_rec(&rec, 40, 0);
    let names = t.path().join("names.txt");
    std::fs::write(&names, "alice\nbob\ncarol\ndave\neve\n").unwrap();
    let out = t.path().join("a/ds");
    done(import_rec(&with_names(split(options(&rec, &out, false, false, Observer::default()), 0.2), &names)).unwrap());
    assert_eq!(identities(&out.with_extension("labels.tsv")), ["alice", "bob", "carol", "dave", "eve"]);
    assert_eq!(identities(&out.with_file_name("ds.valid.labels.tsv")), identities(&out.with_extension("labels.tsv")));

    // A facekit label map gives the same names: an exported dataset's get theirs back.
    let again = t.path().join("b/ds");
    done(
        import_rec(&with_names(
            options(&rec, &again, false, false, Observer::default()),
            &out.with_extension("labels.tsv"),
        ))
        .unwrap(),
    );
    assert_eq!(
        std::fs::read(again.with_extension("labels.tsv")).unwrap(),
        std::fs::read(out.with_extension("labels.tsv")).unwrap()
    );

    // Without `property` the names fix the class count, as `property` would: a label beyond it
    // is listed as bad_label.
    let four = t.path().join("four.txt");
    std::fs::write(&four, "alice\nbob\ncarol\ndave\n").unwrap();
    let short = t.path().join("c/ds");
    done(import_rec(&with_names(options(&rec, &short, false, false, Observer::default()), &four)).unwrap());
    let rejects = std::fs::read_to_string(short.with_extension("rejects.tsv")).unwrap();
    assert_eq!(rejects.matches("not below the 4 classes of the names file").count(), 8, "{rejects}");
    assert_eq!(identities(&short.with_extension("labels.tsv")).len(), 4);

    // With `property`, a count other than its classes is refused, as are an empty line and a
    // duplicate: the file and the line named, nothing written.
    std::fs::write(rec.join("property"), "5,24,24\n").unwrap();
    let bad = t.path().join("bad.txt");
    for (text, says) in [
        ("alice\nbob\ncarol\ndave\n", "names 4 classes (lines 1 to 4), but property file"),
        ("alice\nbob\n\ndave\neve\n", "line 3: empty name for class 2"),
        ("alice\nbob\ncarol\nbob\neve\n", "line 4: the name \"bob\" of class 3 is already on line 2"),
    ] {
        std::fs::write(&bad, text).unwrap();
        let refused = t.path().join("refused/ds");
        let err = format!(
            "{:#}",
            import_rec(&with_names(options(&rec, &refused, false, false, Observer::default()), &bad)).unwrap_err()
        );
        assert!(err.contains(&bad.display().to_string()) && err.contains(says), "{text:?}: {err}");
        assert!(
            !refused.with_extension("manifest.json").exists() && !refused.with_file_name("ds-00000.shard").exists()
        );
    }

    // A names file changed since the checkpoint is refused on resume.
    let cut = t.path().join("cut/ds");
    let (obs, _) = observer(Some(|e| matches!(e, Event::Checkpoint { shards: 1 })));
    let end = import_rec(&with_names(options(&rec, &cut, false, false, obs), &names)).unwrap();
    assert!(matches!(end, ImportEnd::Interrupted { .. }), "{end:?}");
    std::fs::write(&names, "alice\nbob\ncarol\ndave\nerin\n").unwrap();
    let err = format!(
        "{:#}",
        import_rec(&with_names(options(&rec, &cut, true, false, Observer::default()), &names)).unwrap_err()
    );
    assert!(err.contains("changed"), "{err}");
}
