//! The embedding routine shared by `eval verify --bin` and the trainer's `--eval-bin`
//! (`embed_chips`), and `.bin` sets decoded once for a network size (`BinSet`); what it and the
//! trainer's validation do with a stop request and with a network whose embeddings are NaN.

use facekit_io::StopFlag;
use facekit_train::embedding::bins::{self, BinSet};
use facekit_train::embedding::{embed_chips, resize, to_input, EmbedError};
use facekit_train::model::health::weights_problem;
use facekit_train::model::{Arch, FaceNet, NetConfig};
use facekit_train::run::numerics::Numerics;
use tch::{Device, Kind, Tensor};

const SIZE: u32 = 48;

fn tiny_net(vs: &tch::nn::VarStore) -> FaceNet {
    let config = NetConfig { arch: Arch::Tiny, image_size: SIZE as i64, num_classes: 3, ..NetConfig::default() };
    let net = FaceNet::new(&vs.root(), &config).unwrap();
    tch::no_grad(|| {
        for (name, mut t) in vs.variables() {
            if name.ends_with("running_mean") {
                let _ = t.uniform_(-0.1, 0.1);
            } else if name.ends_with("running_var") {
                let _ = t.uniform_(0.5, 1.5);
            }
        }
    });
    net
}

/// Nine UTKFace chips at the network's size.
fn faces() -> Vec<u8> {
    let dir = facekit_testkit::shared_data().join("utkface2k");
    let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    names.iter().take(9).flat_map(|p| resize(&image::open(p).unwrap().to_rgb8(), SIZE).into_raw()).collect()
}

#[test]
fn embeddings_do_not_depend_on_the_batch_and_flip_sums_image_and_mirror() {
    let _turn = facekit_testkit::rng_turn();
    tch::manual_seed(3);
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let net = tiny_net(&vs);
    let pixels = faces();
    let fp32 = Numerics::fp32(Device::Cpu);
    let whole = embed_chips(&net, &fp32, &pixels, SIZE, 9, true, &StopFlag::new()).unwrap();
    assert_eq!(whole.len(), 9 * 512);
    for batch in [1, 4, 10] {
        let e = embed_chips(&net, &fp32, &pixels, SIZE, batch, true, &StopFlag::new()).unwrap();
        let worst = e.iter().zip(&whole).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-5, "batch {batch}: differs by {worst}");
    }
    // The flip test by hand: embedding of the images plus embedding of their mirrors, normalised.
    let xs = to_input(&pixels, 9, SIZE as i64, Device::Cpu);
    let sum = tch::no_grad(|| net.embed(&xs, false) + net.embed(&xs.flip([3]), false));
    let expected = &sum / sum.norm_scalaropt_dim(2, [1], true);
    let got = Tensor::from_slice(&whole).view([9, 512]);
    let diff = (got - expected.to_kind(Kind::Float)).abs().max().double_value(&[]);
    assert!(diff < 1e-5, "flip test differs by {diff}");
    // Without flip: only the images.
    let plain = embed_chips(&net, &fp32, &pixels, SIZE, 4, false, &StopFlag::new()).unwrap();
    let e = tch::no_grad(|| net.embed(&xs, false));
    let e = &e / e.norm_scalaropt_dim(2, [1], true);
    let diff = (Tensor::from_slice(&plain).view([9, 512]) - e).abs().max().double_value(&[]);
    assert!(diff < 1e-5, "plain embeddings differ by {diff}");
}

#[test]
fn a_bin_set_is_decoded_once_and_resized_as_eval_verify_resizes() {
    // Four JPEG photos of 200 px (two pairs) pickled as insightface's files are (protocol 3).
    let dir = facekit_testkit::shared_data().join("utkface2k");
    let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    let jpegs: Vec<Vec<u8>> = names.iter().take(4).map(|p| std::fs::read(p).unwrap()).collect();
    let mut p = vec![0x80, 3, b']', b'('];
    for j in &jpegs {
        p.push(b'B');
        p.extend((j.len() as u32).to_le_bytes());
        p.extend(j);
    }
    p.extend([b'e', b']', b'(', 0x88, 0x89, b'e', 0x86, b'.']);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("pairs.bin");
    std::fs::write(&path, p).unwrap();
    let set = BinSet::load(&path, SIZE).unwrap();
    assert_eq!((set.name.as_str(), set.pairs(), set.images(), set.issame.clone()), ("pairs", 2, 4, vec![true, false]));
    let expected: Vec<u8> =
        jpegs.iter().flat_map(|j| resize(&facekit_pack::photo::decode_image(j).unwrap(), SIZE).into_raw()).collect();
    assert!(set.pixels == expected, "chips differ from decode + resize");
}

/// `MemTotal` of /proc/meminfo, in bytes.
fn mem_total() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: u64 =
        text.lines().find(|l| l.starts_with("MemTotal:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[test]
fn a_bin_whose_decoded_images_would_not_fit_in_memory_is_refused_naming_the_file_and_the_numbers() {
    // The file is small, the images are few bytes each: what they decode to is the file's to
    // choose. Enough copies of one real photo that, at 4096 px, they would take twice the
    // machine's memory.
    let photo =
        std::fs::read(facekit_testkit::shared_data().join("lfw100/Ariel_Sharon/Ariel_Sharon_0001.jpg")).unwrap();
    let per = 4096u64 * 4096 * 3;
    let pairs = (2 * mem_total() / per / 2 + 1) as usize;
    let images = vec![photo; 2 * pairs];
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("many.bin");
    facekit_eval::bin_write::write_verification_bin(&path, &images, &vec![true; pairs]).unwrap();
    let err = format!("{:#}", BinSet::load(&path, 4096).err().expect("refused before any allocation"));
    assert!(
        err.contains("many.bin")
            && err.contains(&format!("{} images", 2 * pairs))
            && err.contains("4096x4096")
            && err.contains("memory available"),
        "{err}"
    );

    // The rule itself, with the memory given: 700,000 one-pixel PNGs at 112 px are 26 GiB.
    let err = bins::check_decoded_memory(&path, 700_000, 112, Some(8 << 30)).unwrap_err().to_string();
    assert!(err.contains("700000 images") && err.contains("24.5 GiB") && err.contains("8.0 GiB"), "{err}");
    assert!(
        bins::check_decoded_memory(&path, 12_000, 112, Some(8 << 30)).is_ok(),
        "LFW's 12,000 images at 112 px are 450 MB"
    );
    assert!(bins::check_decoded_memory(&path, 700_000, 112, None).is_ok());
}

/// Sets every element of the variables of `vs` whose name ends with `suffix` to `value`.
fn poison(vs: &tch::nn::VarStore, suffix: &str, value: f64) {
    tch::no_grad(|| {
        for (name, mut t) in vs.variables() {
            if name.ends_with(suffix) {
                let _ = t.fill_(value);
            }
        }
    });
}

#[test]
fn nan_or_negative_batch_norm_statistics_are_an_error_naming_them_not_embeddings() {
    let _turn = facekit_testkit::rng_turn();
    tch::manual_seed(3);
    let pixels = faces();
    let fp32 = Numerics::fp32(Device::Cpu);
    for (value, words) in [(f64::NAN, "NaN or infinite"), (-1.0, "negative variance")] {
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let net = tiny_net(&vs);
        assert_eq!(weights_problem(&vs), None, "a sound network has no problem");
        poison(&vs, "running_var", value);
        let err = embed_chips(&net, &fp32, &pixels, SIZE, 4, true, &StopFlag::new()).unwrap_err();
        assert_eq!(err.downcast_ref::<EmbedError>(), Some(&EmbedError::NonFinite { count: 4, batch: 4 }), "{err:#}");
        let problem = weights_problem(&vs).expect("the poisoned statistics are found");
        assert!(problem.contains("running_var") && problem.contains(words), "{problem}");
    }
}

#[test]
fn a_stop_request_ends_embedding_before_the_next_batch() {
    let _turn = facekit_testkit::rng_turn();
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let net = tiny_net(&vs);
    let stop = StopFlag::new();
    stop.request();
    let err = embed_chips(&net, &Numerics::fp32(Device::Cpu), &faces(), SIZE, 1, true, &stop).unwrap_err();
    assert_eq!(err.downcast_ref::<EmbedError>(), Some(&EmbedError::Stopped));
}

/// `dir/v`: twelve UTKFace faces in three classes, raw pixels at the network's size.
fn valid_set(dir: &std::path::Path) -> facekit_data::Loader {
    use facekit_shard::manifest::{EncodingInfo, LabelEntry, LabelMap, SourceInfo};
    use facekit_shard::{DatasetPaths, DatasetWriter, Encoding, Labels, Manifest, Record};
    let chips = faces();
    let per = (SIZE * SIZE * 3) as usize;
    let mut w = DatasetWriter::create(DatasetPaths::new(dir.join("v")), 1 << 20).unwrap();
    for (i, chip) in chips.chunks(per).enumerate() {
        let labels = Labels { class_id: Some(i as u32 % 3), source: 0, gender: None, age: None };
        let r = Record {
            labels,
            encoding: Encoding::Raw,
            width: SIZE as u16,
            height: SIZE as u16,
            origin_sha256: [0; 16],
            path: format!("f{i}"),
            data: chip.to_vec(),
        };
        w.push(&r).unwrap();
    }
    let n = (chips.len() / per) as u64;
    let enc = EncodingInfo { format: Encoding::Raw, quality: None, chroma: None, width: SIZE, height: SIZE };
    let map = LabelMap {
        entries: (0..3).map(|c| LabelEntry { class_id: c, source: "s".into(), identity: format!("p{c}") }).collect(),
    };
    w.finish(
        Manifest::new(
            3,
            vec![SourceInfo { id: 0, name: "s".into(), class_offset: 0, classes: 3, records: n }],
            None,
            enc,
        ),
        &map,
    )
    .unwrap();
    let ds = std::sync::Arc::new(facekit_shard::Dataset::open_name("v", Some(dir)).unwrap());
    let cfg = facekit_data::LoaderConfig {
        batch_size: 4,
        image_size: SIZE,
        workers: 1,
        shuffle: false,
        augment: facekit_data::Augment::NONE,
        drop_last: false,
        ..Default::default()
    };
    facekit_data::Loader::new(vec![ds], cfg).unwrap()
}

#[test]
fn validation_of_a_network_with_nan_statistics_ends_with_an_error_and_sees_a_stop_at_each_batch() {
    use facekit_train::trainer::validate::{validate, Gate, Validated};
    let _turn = facekit_testkit::rng_turn();
    tch::manual_seed(3);
    let tmp = tempfile::tempdir().unwrap();
    let loader = valid_set(tmp.path());
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let net = tiny_net(&vs);
    let loss =
        facekit_train::loss::FaceLoss::new(&vs.root(), net.config(), &facekit_train::loss::HeadConfig::default())
            .unwrap();
    let fp32 = Numerics::fp32(Device::Cpu);
    // A sound network is scored on every batch (three of four images), the gate asked after each.
    let mut asked = Vec::new();
    let v = validate(&net, &loss, &loader, &fp32, 3, &mut |bad| {
        asked.push(bad);
        Ok(Gate::Go)
    })
    .unwrap();
    assert!(
        matches!(&v, Validated::Done(v) if v.images == 9 && v.metrics.contains_key("verification_accuracy")),
        "{v:?}"
    );
    assert_eq!(asked, [false, false, false]);
    // A stop request is seen after the first batch, not after the whole set.
    let mut asked = 0;
    let v = validate(&net, &loss, &loader, &fp32, 3, &mut |_| {
        asked += 1;
        Ok(Gate::Stop)
    })
    .unwrap();
    assert_eq!((v, asked), (Validated::Stopped, 1));
    // NaN running statistics: the first batch says so, and validation ends with what it saw
    // instead of sweeping thresholds over NaN scores (which never ended).
    poison(&vs, "running_var", f64::NAN);
    let v =
        validate(&net, &loss, &loader, &fp32, 3, &mut |bad| Ok(if bad { Gate::NonFinite } else { Gate::Go })).unwrap();
    match v {
        Validated::NonFinite(what) => assert!(what.contains("4 of the 4 images of validation batch 0"), "{what}"),
        other => panic!("expected NonFinite, got {other:?}"),
    }
}
