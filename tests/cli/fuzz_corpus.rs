//! Every input the fuzzers found a fault with (`tests/fuzz_regressions/<target>/`) and every seed
//! they start from (`fuzz/seeds/<target>/`), replayed through the same entry points on the stable
//! toolchain: none may panic (see docs/RELIABILITY.md, "Fuzzing").

use std::path::Path;

fn replay(target: &str, entry: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for dir in [root.join("tests/fuzz_regressions").join(target), root.join("fuzz/seeds").join(target)] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries {
            let p = e.unwrap().path();
            let data = std::fs::read(&p).unwrap();
            let name = p.display().to_string();
            if std::panic::catch_unwind(|| entry(&data)).is_err() {
                panic!("{target}: {name} makes the parser panic");
            }
            n += 1;
        }
    }
    assert!(n > 0, "no seed or regression input for {target}");
}

#[test]
fn shard_inputs_never_panic() {
    replay("shard", facekit_fuzz_entry::shard);
}

#[test]
fn record_inputs_never_panic() {
    replay("record", facekit_fuzz_entry::record);
}

#[test]
fn manifest_label_map_and_progress_inputs_never_panic() {
    replay("manifest", facekit_fuzz_entry::manifest);
}

#[test]
fn image_inputs_never_panic() {
    replay("image", facekit_fuzz_entry::image);
}

#[test]
fn landmark_and_attribute_tables_never_panic() {
    replay("tables", facekit_fuzz_entry::tables);
}

#[test]
fn pairs_lists_never_panic() {
    replay("pairs", facekit_fuzz_entry::pairs);
}

#[test]
fn verification_bin_pickles_never_panic() {
    replay("pickle", facekit_fuzz_entry::pickle);
}

#[test]
fn npy_matrices_never_panic() {
    replay("npy", facekit_fuzz_entry::npy);
}

#[test]
fn recordio_files_never_panic() {
    replay("recordio", facekit_fuzz_entry::recordio);
}

#[test]
fn recordio_index_and_import_plans_never_panic() {
    replay("rec_import", facekit_fuzz_entry::rec_import);
}
