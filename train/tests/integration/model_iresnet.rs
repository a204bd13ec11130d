//! The IR-ResNets match an IR-ResNet written independently in PyTorch
//! (`train/tests/python/iresnet_ref.py`): the same parameter names and shapes, and, with the same
//! random weights and BN statistics loaded through `--init`'s loader, the same embeddings.

use std::collections::BTreeMap;
use std::path::Path;

use facekit_train::model::init::load_into;
use facekit_train::model::{is_backbone_param, Arch, FaceNet, NetConfig};
use facekit_train::run::numerics::Numerics;
use facekit_train::trainer::amp::AmpDtype;
use facekit_train::trainer::layout::MemoryFormat;
use tch::nn;
use tch::{Device, Kind, Tensor};

fn reference_script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/iresnet_ref.py")
}

/// Runs the reference for `arch` (r18 ...) at `size` on `batch` images into `dir`.
fn run_reference(arch: &str, size: i64, batch: i64, dir: &Path) {
    let out = std::process::Command::new(facekit_testkit::venv_python())
        .arg(reference_script())
        .args(["--arch", arch, "--size", &size.to_string(), "--batch", &batch.to_string(), "--out"])
        .arg(dir)
        .output()
        .expect("running the venv python");
    assert!(out.status.success(), "iresnet_ref.py {arch} {size}: {}", String::from_utf8_lossy(&out.stderr));
}

fn config(arch: Arch, image_size: i64) -> NetConfig {
    NetConfig { arch, image_size, num_classes: 10, ..NetConfig::default() }
}

/// Builds `arch` at `size`, compares names and shapes with the reference's, loads its weights
/// and compares the eval-mode embeddings of the same input.
fn check_against_reference(arch: Arch, short: &str, size: i64) {
    check_against_reference_on(arch, short, size, 2);
}

/// [`check_against_reference`] on a batch of `batch` images.
fn check_against_reference_on(arch: Arch, short: &str, size: i64, batch: i64) {
    let dir = tempfile::tempdir().unwrap();
    run_reference(short, size, batch, dir.path());
    let vs = nn::VarStore::new(Device::Cpu);
    let net = FaceNet::new(&vs.root(), &config(arch, size)).unwrap();

    let what = format!("{arch:?}@{size}");
    let (_, _, got) = matches_reference(&vs, &net, dir.path(), &what);
    assert_eq!(got.kind(), Kind::Float);
}

#[test]
fn iresnet18_matches_the_reference_at_112_and_96() {
    let _turn = facekit_testkit::rng_turn();
    check_against_reference(Arch::Iresnet18, "r18", 112);
    // 96 gives a 6x6 map: the FC is sized from the input, not fixed at 7x7.
    check_against_reference(Arch::Iresnet18, "r18", 96);
}

#[test]
fn iresnet34_matches_the_reference() {
    let _turn = facekit_testkit::rng_turn();
    check_against_reference(Arch::Iresnet34, "r34", 112);
}

#[test]
fn iresnet50_matches_the_reference() {
    let _turn = facekit_testkit::rng_turn();
    check_against_reference(Arch::Iresnet50, "r50", 112);
}

#[test]
fn iresnet100_matches_the_reference() {
    let _turn = facekit_testkit::rng_turn();
    check_against_reference(Arch::Iresnet100, "r100", 112);
}

#[test]
fn iresnet200_matches_the_reference() {
    let _turn = facekit_testkit::rng_turn();
    // 119 M parameters and 119 blocks: one image keeps the CPU forwards to seconds.
    check_against_reference_on(Arch::Iresnet200, "r200", 112, 1);
}

#[test]
fn feature_map_side_follows_the_strides() {
    for (size, side) in [(112, 7), (96, 6), (32, 2), (33, 3)] {
        // Four stride-2 3x3 pad-1 convolutions, computed step by step.
        let steps = (0..4).fold(size, |s, _| (s + 2 - 3) / 2 + 1);
        assert_eq!(steps, side);
        assert_eq!(Arch::Iresnet50.feature_map_side(size), side, "input {size}");
    }
    let vs = nn::VarStore::new(Device::Cpu);
    let net = FaceNet::new(&vs.root(), &config(Arch::Iresnet18, 40)).unwrap();
    let xs = Tensor::rand([2, 3, 40, 40], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let e = tch::no_grad(|| net.embed(&xs, true));
    assert_eq!(e.size(), [2, 512]);
}

#[test]
fn features_scale_is_fixed_and_the_optimiser_skips_it() {
    let _turn = facekit_testkit::rng_turn();
    let vs = nn::VarStore::new(Device::Cpu);
    let net = FaceNet::new(&vs.root(), &config(Arch::Iresnet18, 32)).unwrap();
    let vars = vs.variables();
    let w = &vars["features.weight"];
    assert!(!w.requires_grad(), "features.weight must not be trained");
    assert_eq!(w.min().double_value(&[]), 1.0);
    assert_eq!(w.max().double_value(&[]), 1.0);
    assert!(vars["features.bias"].requires_grad());
    let trainable = vs.trainable_variables();
    assert!(
        !trainable.iter().any(|t| t.data_ptr() == w.data_ptr()),
        "features.weight is among the trainable variables"
    );
    // A step of the trainer's SGD leaves it at 1 while the rest moves.
    use facekit_train::trainer::optim::Optimizer as _;
    let mut opt = facekit_train::trainer::optim::Sgd::new(&vs, 0.9, 5e-4);
    let xs = Tensor::rand([4, 3, 32, 32], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let before = vars["fc.weight"].copy();
    opt.zero_grad();
    net.embed(&xs, true).pow_tensor_scalar(2).sum(Kind::Float).backward();
    opt.step(0.1).unwrap();
    assert_eq!(w.min().double_value(&[]), 1.0);
    assert_eq!(w.max().double_value(&[]), 1.0);
    assert!((&vars["fc.weight"] - before).abs().max().double_value(&[]) > 0.0, "fc.weight did not move");
}

#[test]
fn iresnet_init_follows_insightface() {
    let _turn = facekit_testkit::rng_turn();
    tch::manual_seed(5);
    let vs = nn::VarStore::new(Device::Cpu);
    FaceNet::new(&vs.root(), &config(Arch::Iresnet18, 112)).unwrap();
    let vars = vs.variables();
    // nn.init.normal_(conv.weight, 0, 0.1): layer4's 3x3 convs hold 2.4 M draws each.
    let c = &vars["layer4.1.conv1.weight"];
    let std = c.std(true).double_value(&[]);
    let mean = c.mean(Kind::Float).double_value(&[]);
    assert!((std - 0.1).abs() < 0.001 && mean.abs() < 0.001, "conv init mean {mean} std {std}");
    for (name, t) in &vars {
        if name.ends_with("prelu.weight") {
            assert_eq!((t.min().double_value(&[]), t.max().double_value(&[])), (0.25, 0.25), "{name}");
        }
    }
    // The FC as nn.Linear: uniform in ±1/sqrt(fan_in) (fan_in 512·7·7).
    let fc = &vars["fc.weight"];
    let bound = 1.0 / ((512 * 7 * 7) as f64).sqrt();
    let (lo, hi) = (fc.min().double_value(&[]), fc.max().double_value(&[]));
    // (f32 draws may round to a hair beyond the f64 bound.)
    let edge = bound * (1.0 + 1e-6);
    assert!(
        hi <= edge && lo >= -edge && hi > 0.999 * bound && lo < -0.999 * bound,
        "fc in [{lo}, {hi}], bound {bound}"
    );
}

#[test]
fn zero_init_residual_zeroes_each_blocks_last_bn() {
    let _turn = facekit_testkit::rng_turn();
    for arch in [Arch::Iresnet18, Arch::Tiny] {
        let vs = nn::VarStore::new(Device::Cpu);
        FaceNet::new(&vs.root(), &NetConfig { zero_init_residual: true, ..config(arch, 64) }).unwrap();
        let mut zeroed = 0;
        for (name, t) in vs.variables() {
            if !name.ends_with(".weight") || t.dim() != 1 || name.contains("prelu") {
                continue;
            }
            let (lo, hi) = (t.min().double_value(&[]), t.max().double_value(&[]));
            if name.starts_with("layer") && name.ends_with(".bn3.weight") {
                assert_eq!((lo, hi), (0.0, 0.0), "{arch:?}: {name}");
                zeroed += 1;
            } else {
                assert_eq!((lo, hi), (1.0, 1.0), "{arch:?}: {name} is not a block's last BN and starts at 1");
            }
        }
        assert_eq!(zeroed, arch.blocks().iter().sum::<usize>(), "{arch:?}: one zeroed BN per block");
    }
}

/// Checks the network in `vs` against the reference implementation's files in `dir`
/// (`shapes.json`, `weights.safetensors`, `io.safetensors`): every variable a backbone one, the
/// same names and shapes, the reference's weights loading whole, and eval-mode embeddings within
/// 1e-4 of the reference's; `what` names the network in messages. Returns the input, the
/// reference's output and facekit's.
pub(crate) fn matches_reference(vs: &nn::VarStore, net: &FaceNet, dir: &Path, what: &str) -> (Tensor, Tensor, Tensor) {
    let ours: BTreeMap<String, Vec<i64>> = vs.variables().into_iter().map(|(n, t)| (n, t.size())).collect();
    assert!(
        ours.keys().all(|k| is_backbone_param(k)),
        "{what}: an FR net of this family is all backbone: {:?}",
        ours.keys().filter(|k| !is_backbone_param(k)).collect::<Vec<_>>()
    );
    let theirs: BTreeMap<String, Vec<i64>> =
        serde_json::from_slice(&std::fs::read(dir.join("shapes.json")).unwrap()).unwrap();
    let missing: Vec<_> = theirs.keys().filter(|k| !ours.contains_key(*k)).collect();
    let extra: Vec<_> = ours.keys().filter(|k| !theirs.contains_key(*k)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "{what}: missing {missing:?}, extra {extra:?}");
    for (k, shape) in &theirs {
        assert_eq!(&ours[k], shape, "{what}: shape of {k}");
    }
    let trainable: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
    eprintln!("{what}: {} tensors, {trainable} trainable parameters", ours.len());

    let report = load_into(vs, &dir.join("weights.safetensors")).unwrap();
    assert_eq!(report.loaded.len(), ours.len(), "every variable loads");
    assert!(report.new.is_empty(), "nothing new: {:?}", report.new);
    assert!(
        !report.ignored.is_empty() && report.ignored.iter().all(|n| n.ends_with("num_batches_tracked")),
        "only num_batches_tracked is ignored: {:?}",
        report.ignored
    );

    let io = Tensor::read_safetensors(dir.join("io.safetensors")).unwrap();
    let get = |name: &str| io.iter().find(|(n, _)| n == name).map(|(_, t)| t.shallow_clone()).unwrap();
    let (x, want) = (get("input"), get("output"));
    let got = tch::no_grad(|| net.embed(&x, false));
    assert_eq!(got.size(), want.size());
    let diff = (&got - &want).abs().max().double_value(&[]);
    let scale = want.abs().max().double_value(&[]).max(1.0);
    eprintln!("{what}: max |facekit - reference| = {diff:.3e} (outputs up to {scale:.3})");
    assert!(diff <= 1e-4 * scale, "{what}: embeddings differ by {diff} (outputs up to {scale})");

    // Mixed precision as arcface_torch runs it: the trunk under bfloat16 autocast, the embedding
    // layers in fp32 on its output. Running those under autocast too lands much further away.
    let mixed = Numerics { device: Device::Cpu, amp: Some(AmpDtype::Bf16), memory_format: MemoryFormat::Contiguous };
    let got_mixed = tch::no_grad(|| mixed.embed(net, &x, false)).unwrap();
    assert_eq!(got_mixed.kind(), Kind::Float);
    let off = |t: &Tensor| (&got_mixed - t).abs().max().double_value(&[]);
    let (near, far) = (off(&get("output_bf16")), off(&get("output_bf16_all")));
    eprintln!("{what} bf16: max |facekit - reference| = {near:.3e}, against all under autocast {far:.3e}");
    assert!(
        near <= 1e-3 * scale && near * 4.0 < far,
        "{what} bf16: {near} from arcface_torch's mixed precision, {far} from all-autocast"
    );
    (x, want, got)
}
