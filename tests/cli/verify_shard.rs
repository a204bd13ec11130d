//! `facekit verify-shard` from the command line: exit codes and the JSON report.

use facekit_pack::encode;
use facekit_shard::manifest::{EncodingInfo, LabelEntry, LabelMap, SourceInfo};
use facekit_shard::{DatasetPaths, DatasetWriter, Encoding, Labels, Manifest, Record, ShardReader};

/// `dir/celeb`: six 112 px chips of one person, in one shard.
fn colin_powell(dir: &std::path::Path) -> DatasetPaths {
    let data = facekit_testkit::shared_data().join("lfw100/Colin_Powell");
    let paths = DatasetPaths::new(dir.join("celeb"));
    let mut w = DatasetWriter::create(paths.clone(), 1 << 30).unwrap();
    let mut photos: Vec<_> = std::fs::read_dir(&data).unwrap().map(|e| e.unwrap().path()).collect();
    photos.sort();
    for (i, p) in photos.iter().take(6).enumerate() {
        let img = image::imageops::resize(
            &image::open(p).unwrap().to_rgb8(),
            112,
            112,
            image::imageops::FilterType::Triangle,
        );
        w.push(&Record {
            labels: Labels { class_id: Some(0), source: 0, gender: None, age: None },
            encoding: Encoding::Jpeg,
            width: 112,
            height: 112,
            origin_sha256: [i as u8; 16],
            path: format!("Colin_Powell/{i}.jpg"),
            data: encode::encode(&img, Encoding::Jpeg, 95).unwrap(),
        })
        .unwrap();
    }
    let labels =
        LabelMap { entries: vec![LabelEntry { class_id: 0, source: "lfw".into(), identity: "Colin_Powell".into() }] };
    let source = SourceInfo { id: 0, name: "lfw".into(), class_offset: 0, classes: 1, records: 6 };
    let enc = EncodingInfo { format: Encoding::Jpeg, quality: Some(95), chroma: None, width: 112, height: 112 };
    w.finish(Manifest::new(1, vec![source], None, enc), &labels).unwrap();
    paths
}

#[test]
fn verify_shard_cli_reports_corruption_with_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let paths = colin_powell(dir.path());
    let base = paths.dir().join("celeb");
    let out = crate::facekit().args(["verify-shard", "--decode"]).arg(&base).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("6/6 records intact"));

    // A record whose image is not the size its header claims passes the CRC but fails --decode.
    let shard = paths.shard(0);
    let reader = ShardReader::open(&shard).unwrap();
    let e = reader.index()[2];
    drop(reader);
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[e.offset as usize + 40] ^= 0xFF; // the CRC field itself
    std::fs::write(&shard, &bytes).unwrap();
    let out = crate::facekit().args(["verify-shard", "--json"]).arg(&base).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["ok"], false);
    let problems = json["datasets"][0]["shards"][0]["problems"].as_array().unwrap();
    assert!(problems.iter().any(|p| p["record"] == 2 && p["offset"] == e.offset), "{problems:?}");

    let out = crate::facekit().args(["verify-shard", "no/such/dataset"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no/such/dataset"));
}

#[test]
fn a_name_holding_terminal_control_characters_is_printed_escaped() {
    // A dataset name as a hostile archive might carry it: clear the screen, go back to the line's
    // start and overwrite the error with a success message.
    let dir = tempfile::tempdir().unwrap();
    let evil = dir.path().join("celeb\u{1b}[2J\rfacekit: 6/6 records intact");
    let out = crate::facekit().arg("verify-shard").arg(&evil).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains(['\u{1b}', '\r']), "{err:?}");
    assert!(err.contains("celeb\\u{1b}[2J\\rfacekit: 6/6 records intact"), "{err:?}");
}

/// The exit status of `cmd` run by bash with `redirect` (closing stdout or stderr) appended.
fn status_with(cmd: &std::process::Command, redirect: &str) -> String {
    let line = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ");
    let out = std::process::Command::new("bash").args(["-c", &format!("{line} {redirect}; echo $?")]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_closed_stdout_or_stderr_never_turns_a_result_into_a_panic() {
    let t = tempfile::tempdir().unwrap();
    let paths = colin_powell(t.path());
    let mut verify = crate::facekit();
    verify.arg("verify-shard").arg(paths.dir().join("celeb"));
    // Printing to a closed stdout used to panic after the check was done (exit 101).
    assert_eq!(status_with(&verify, ">&-"), "0", "an intact dataset, stdout closed");
    let mut missing = crate::facekit();
    missing.arg("verify-shard").arg(t.path().join("nothing-here"));
    assert_eq!(status_with(&missing, "2>&-"), "2", "an I/O error, stderr closed");
}
