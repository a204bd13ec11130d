//! The embedding routine shared by `eval verify --bin` and the trainer's `--eval-bin`
//! (`embed_chips`), and `.bin` sets decoded once for a network size (`BinSet`).

use facekit_train::infer::embed::{embed_chips, to_input};
use facekit_train::infer::faces;
use facekit_train::infer::verify::{self, BinSet};
use facekit_train::model::{Arch, FaceNet, NetConfig};
use facekit_train::trainer::numerics::Numerics;
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
    names.iter().take(9).flat_map(|p| faces::resize(&image::open(p).unwrap().to_rgb8(), SIZE).into_raw()).collect()
}

#[test]
fn embeddings_do_not_depend_on_the_batch_and_flip_sums_image_and_mirror() {
    let _turn = facekit_testkit::rng_turn();
    tch::manual_seed(3);
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let net = tiny_net(&vs);
    let pixels = faces();
    let fp32 = Numerics::fp32(Device::Cpu);
    let whole = embed_chips(&net, &fp32, &pixels, SIZE, 9, true).unwrap();
    assert_eq!(whole.len(), 9 * 512);
    for batch in [1, 4, 10] {
        let e = embed_chips(&net, &fp32, &pixels, SIZE, batch, true).unwrap();
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
    let plain = embed_chips(&net, &fp32, &pixels, SIZE, 4, false).unwrap();
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
    let expected: Vec<u8> = jpegs
        .iter()
        .flat_map(|j| faces::resize(&facekit_pack::photo::decode_image(j).unwrap(), SIZE).into_raw())
        .collect();
    assert!(set.pixels == expected, "chips differ from decode + faces::resize");
}

/// `MemTotal` of /proc/meminfo, in bytes.
fn mem_total() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: u64 = text.lines().find(|l| l.starts_with("MemTotal:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[test]
fn a_bin_whose_decoded_images_would_not_fit_in_memory_is_refused_naming_the_file_and_the_numbers() {
    // The file is small, the images are few bytes each: what they decode to is the file's to
    // choose. Enough copies of one real photo that, at 4096 px, they would take twice the
    // machine's memory.
    let photo = std::fs::read(facekit_testkit::shared_data().join("lfw100/Ariel_Sharon/Ariel_Sharon_0001.jpg")).unwrap();
    let per = 4096u64 * 4096 * 3;
    let pairs = (2 * mem_total() / per / 2 + 1) as usize;
    let images = vec![photo; 2 * pairs];
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("many.bin");
    facekit_eval::bin_write::write_verification_bin(&path, &images, &vec![true; pairs]).unwrap();
    let err = format!("{:#}", BinSet::load(&path, 4096).err().expect("refused before any allocation"));
    assert!(err.contains("many.bin") && err.contains(&format!("{} images", 2 * pairs)) && err.contains("4096x4096") && err.contains("memory available"), "{err}");

    // The rule itself, with the memory given: 700,000 one-pixel PNGs at 112 px are 26 GiB.
    let err = verify::check_decoded_memory(&path, 700_000, 112, Some(8 << 30)).unwrap_err().to_string();
    assert!(err.contains("700000 images") && err.contains("24.5 GiB") && err.contains("8.0 GiB"), "{err}");
    assert!(verify::check_decoded_memory(&path, 12_000, 112, Some(8 << 30)).is_ok(), "LFW's 12,000 images at 112 px are 450 MB");
    assert!(verify::check_decoded_memory(&path, 700_000, 112, None).is_ok());
}
