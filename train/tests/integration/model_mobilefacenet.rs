//! MobileFaceNet matches a MobileFaceNet written independently in PyTorch
//! (`train/tests/python/mobilefacenet_ref.py`): the same parameter names and shapes (arcface_torch's
//! `state_dict` names), and, with the same random weights and BN statistics loaded through
//! `--init`'s loader, the same embeddings; its initialisation is arcface_torch's.

use std::path::Path;

use facekit_train::model::{Arch, FaceNet, NetConfig};
use tch::nn;
use tch::{Device, Kind, Tensor};

fn config(image_size: i64) -> NetConfig {
    NetConfig { arch: Arch::MobileFaceNet, image_size, num_classes: 10, ..NetConfig::default() }
}

/// Runs the reference at `size` into `dir`.
fn run_reference(size: i64, dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/mobilefacenet_ref.py");
    let out = std::process::Command::new(facekit_testkit::venv_python())
        .arg(script)
        .args(["--size", &size.to_string(), "--out"])
        .arg(dir)
        .output()
        .expect("running the venv python");
    assert!(out.status.success(), "mobilefacenet_ref.py {size}: {}", String::from_utf8_lossy(&out.stderr));
}

fn check_against_reference(size: i64) {
    let dir = tempfile::tempdir().unwrap();
    run_reference(size, dir.path());
    let vs = nn::VarStore::new(Device::Cpu);
    let net = FaceNet::new(&vs.root(), &config(size)).unwrap();

    let (x, want, got) = super::model_iresnet::matches_reference(&vs, &net, dir.path(), &format!("mbf@{size}"));
    let scale = want.abs().max().double_value(&[]).max(1.0);
    assert!(want.abs().max().double_value(&[]) > 1e-2, "reference outputs are ~0: the comparison is vacuous");

    // Channels-last input (what the trainer feeds a GPU) gives the same embeddings.
    let cl = facekit_train::trainer::layout::to_channels_last(&x);
    assert!(facekit_train::trainer::layout::is_channels_last(&cl));
    let got_cl = tch::no_grad(|| net.embed(&cl, false));
    let diff_cl = (&got_cl - &got).abs().max().double_value(&[]);
    assert!(diff_cl <= 1e-5 * scale, "@{size}: channels-last differs by {diff_cl}");
}

#[test]
fn mobilefacenet_matches_the_reference_at_112_and_96() {
    let _turn = facekit_testkit::rng_turn();
    check_against_reference(112);
    // 96 gives a 6x6 map: the GDC's kernel follows the input instead of a fixed 7x7.
    check_against_reference(96);
}

#[test]
fn mbf_is_insightfaces_name_for_it() {
    use clap::ValueEnum;
    assert_eq!(Arch::from_str("mbf", true), Ok(Arch::MobileFaceNet));
    assert_eq!(Arch::from_str("mobilefacenet", true), Ok(Arch::MobileFaceNet));
    assert_eq!(Arch::from_str("r200", true), Ok(Arch::Iresnet200));
    assert_eq!(serde_json::to_value(Arch::MobileFaceNet).unwrap(), "mobilefacenet");
    assert_eq!(Arch::MobileFaceNet.feature_map_side(112), 7);
    assert_eq!(Arch::MobileFaceNet.out_channels(), 512);
}

#[test]
fn mobilefacenet_init_follows_arcface_torch() {
    let _turn = facekit_testkit::rng_turn();
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = FaceNet::new(&vs.root(), &config(112)).unwrap();
    let vars = vs.variables();
    // kaiming_normal_(mode='fan_out', nonlinearity='relu'): std sqrt(2 / (out · k · k)), the
    // groups not dividing fan-out (PyTorch's rule, which tch follows).
    for (name, fan_out) in [
        ("conv_sep.layers.0.weight", 512.0_f64),               // [512, 256, 1, 1]
        ("layers.5.layers.0.layers.0.layers.0.weight", 256.0), // [256, 256, 1, 1]
        ("features.layers.0.layers.0.weight", 512.0 * 49.0),   // [512, 1, 7, 7]
        ("features.layers.2.weight", 512.0),                   // Linear [512, 512], fan-out 512
    ] {
        let t = &vars[name];
        let (std, mean) = (t.std(true).double_value(&[]), t.mean(Kind::Float).double_value(&[]));
        let want = (2.0 / fan_out).sqrt();
        assert!(
            (std / want - 1.0).abs() < 0.03 && mean.abs() < 0.1 * want,
            "{name}: mean {mean}, std {std}, want {want}"
        );
    }
    assert!(!vars.contains_key("features.layers.2.bias"), "arcface_torch's GDC Linear has no bias");
    let mut prelus = 0;
    for (name, t) in &vars {
        let range = (t.min().double_value(&[]), t.max().double_value(&[]));
        if name.ends_with(".layers.2.weight") && t.dim() == 1 {
            assert_eq!(range, (0.25, 0.25), "{name}");
            prelus += 1;
        } else if name.ends_with("running_var") {
            assert_eq!(range, (1.0, 1.0), "{name}");
        } else if t.dim() == 1 && name.ends_with(".weight") {
            assert_eq!(range, (1.0, 1.0), "BN scale {name}");
            assert!(t.requires_grad(), "{name} is trained (unlike the IR-ResNets' features.weight)");
        } else if t.dim() == 1 {
            assert_eq!(range, (0.0, 0.0), "{name}");
        }
    }
    // Stem, grouped conv, 3 x 2 in each of the 15 bottlenecks, conv_sep.
    assert_eq!(prelus, 1 + 1 + 2 * 15 + 1);
    let xs = Tensor::rand([2, 3, 112, 112], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let e = tch::no_grad(|| net.embed(&xs, true));
    assert_eq!(e.size(), [2, 512]);
}

#[test]
fn zero_init_residual_zeroes_each_residual_units_projection_bn() {
    let _turn = facekit_testkit::rng_turn();
    let vs = nn::VarStore::new(Device::Cpu);
    FaceNet::new(&vs.root(), &NetConfig { zero_init_residual: true, ..config(64) }).unwrap();
    let mut zeroed = Vec::new();
    for (name, t) in vs.variables() {
        if name.ends_with(".weight") && t.dim() == 1 && t.max().double_value(&[]) == 0.0 {
            zeroed.push(name);
        }
    }
    zeroed.sort();
    // The units of the Residual stages (layers.3, .5, .7: 4 + 6 + 2), not the strided DepthWise
    // units (layers.2, .4, .6), which have no shortcut.
    let mut want: Vec<String> = [(3, 4), (5, 6), (7, 2)]
        .iter()
        .flat_map(|&(stage, n)| (0..n).map(move |i| format!("layers.{stage}.layers.{i}.layers.2.layers.1.weight")))
        .collect();
    want.sort();
    assert_eq!(zeroed, want);
}
