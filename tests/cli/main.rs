//! facekit end to end through its command line, one binary: packing real photos, training and
//! its golden loss curves (the numerics guard), evaluation (IJB-B/IJB-C included), making `.bin` verification sets,
//! verify-shard, TensorBoard's reading of a run's event files, every fault of the reliability issue, and the fuzzers' inputs.

#[cfg(all(feature = "torch", feature = "dlib"))]
mod audit;
mod curate;
#[cfg(all(feature = "torch", feature = "dlib"))]
mod eval_end_to_end;
mod fuzz_corpus;
// Once per CI run: the build without dlib trains with the same code.
#[cfg(all(feature = "torch", feature = "dlib"))]
mod golden_losses;
// IJB-C-format set from LFW photos, MTCNN landmarks, checked against a NumPy reference.
#[cfg(feature = "torch")]
mod ijb;
#[cfg(all(feature = "torch", feature = "dlib"))]
mod make_bin;
#[cfg(feature = "torch")]
mod onnx_export;
#[cfg(feature = "dlib")]
mod pack_photos;
mod rec_interop;
mod reliability;
// TensorBoard's reader of the trainer's event files (`.venv-tb`).
#[cfg(feature = "torch")]
mod tensorboard;
#[cfg(feature = "torch")]
mod train_config_file;
#[cfg(feature = "torch")]
mod train_distributed;
#[cfg(feature = "torch")]
mod train_eval_bin;
#[cfg(feature = "torch")]
mod train_init;
#[cfg(feature = "torch")]
mod train_loop;
mod verify_shard;

/// The facekit binary built for these tests.
pub fn facekit() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_facekit"))
}

/// Copies the first `per` photos of each of `people` from lfw100 into `root/Name/Name_000k.jpg`
/// (LFW layout).
#[cfg(all(feature = "torch", feature = "dlib"))]
pub fn lfw_subset(root: &std::path::Path, people: &[&str], per: u32) {
    let src = facekit_testkit::shared_data().join("lfw100");
    for name in people {
        std::fs::create_dir_all(root.join(name)).unwrap();
        for k in 1..=per {
            let f = format!("{name}_{k:04}.jpg");
            std::fs::copy(src.join(name).join(&f), root.join(name).join(&f)).unwrap();
        }
    }
}

/// A raw-pixel dataset of `classes` classes (two 16x16 records each) and one record with no class.
pub fn raw_dataset(base: &std::path::Path, classes: u32) -> Vec<(Vec<u8>, Option<u32>)> {
    use facekit_shard::manifest::{EncodingInfo, LabelEntry, LabelMap, SourceInfo};
    use facekit_shard::{DatasetPaths, DatasetWriter, Encoding, Labels, Manifest, Record};
    let mut w = DatasetWriter::create(DatasetPaths::new(base), 1 << 20).unwrap();
    let mut made = Vec::new();
    let labels = (0..classes).flat_map(|c| [Some(c), Some(c)]).chain([None]);
    for (i, class) in labels.enumerate() {
        let data: Vec<u8> = (0..16 * 16 * 3).map(|k| ((k * 7 + i * 31) % 251) as u8).collect();
        w.push(&Record {
            labels: Labels { class_id: class, source: 0, gender: None, age: None },
            encoding: Encoding::Raw,
            width: 16,
            height: 16,
            origin_sha256: [0; 16],
            path: format!("p{i}"),
            data: data.clone(),
        })
        .unwrap();
        made.push((data, class));
    }
    let n = made.len() as u64;
    let m = Manifest::new(
        classes,
        vec![SourceInfo { id: 0, name: "synthetic".into(), class_offset: 0, classes, records: n }],
        None,
        EncodingInfo { format: Encoding::Raw, quality: None, chroma: None, width: 16, height: 16 },
    );
    let map = LabelMap {
        entries: (0..classes)
            .map(|c| LabelEntry { class_id: c, source: "synthetic".into(), identity: format!("id{c}") })
            .collect(),
    };
    w.finish(m, &map).unwrap();
    made
}
