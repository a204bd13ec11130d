//! The ResNet-50 backbone matches torchvision's parameter names and shapes, handles 112 and 224
//! inputs and channels-last memory, and the tiny variant learns.

use std::collections::BTreeMap;

use facekit_train::loss::{BatchLabels, FaceLoss};
use facekit_train::model::{is_backbone_param, Arch, FaceNet, NetConfig, Task};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

fn config(arch: Arch, image_size: i64) -> NetConfig {
    NetConfig { arch, image_size, num_classes: 10, ..NetConfig::default() }
}

#[test]
fn resnet50_backbone_names_and_shapes_match_torchvision() {
    let _turn = facekit_testkit::rng_turn();
    let vs = nn::VarStore::new(Device::Cpu);
    FaceNet::new(&vs.root(), &config(Arch::Resnet50, 112)).unwrap();
    let ours: BTreeMap<String, Vec<i64>> = vs
        .variables()
        .into_iter()
        .filter(|(name, _)| is_backbone_param(name))
        .map(|(name, t)| (name, t.size()))
        .collect();
    let out = std::process::Command::new(facekit_testkit::venv_python())
        .args([
            "-c",
            "import json, torchvision; sd = torchvision.models.resnet50().state_dict(); \
                print(json.dumps({k: list(v.shape) for k, v in sd.items() \
                if not k.endswith('num_batches_tracked') and not k.startswith('fc.')}))",
        ])
        .output()
        .expect("running the venv python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let theirs: BTreeMap<String, Vec<i64>> = serde_json::from_slice(&out.stdout).unwrap();
    let missing: Vec<_> = theirs.keys().filter(|k| !ours.contains_key(*k)).collect();
    let extra: Vec<_> = ours.keys().filter(|k| !theirs.contains_key(*k)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}, extra {extra:?}");
    for (k, shape) in &theirs {
        assert_eq!(&ours[k], shape, "shape of {k}");
    }
}

#[test]
fn resnet50_embeds_112_and_224_inputs_to_512() {
    let _turn = facekit_testkit::rng_turn();
    for size in [112, 224] {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = FaceNet::new(&vs.root(), &config(Arch::Resnet50, size)).unwrap();
        let xs = Tensor::rand([1, 3, size, size], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        let e = tch::no_grad(|| net.embed(&xs, false));
        assert_eq!(e.size(), [1, 512], "input {size}");
        assert!(e.isfinite().all().int64_value(&[]) == 1, "non-finite embedding at {size}");
    }
}

#[test]
fn channels_last_input_gives_the_same_outputs() {
    let _turn = facekit_testkit::rng_turn();
    tch::manual_seed(3);
    let cfg = NetConfig { task: Task::Multi, ..config(Arch::Tiny, 64) };
    let vs = nn::VarStore::new(Device::Cpu);
    let net = FaceNet::new(&vs.root(), &cfg).unwrap();
    let xs = Tensor::rand([2, 3, 64, 64], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    // NCHW view of NHWC storage: what a channels-last loader hands over.
    let cl = xs.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2]);
    assert_ne!(cl.stride(), xs.stride());
    let (a, b) = tch::no_grad(|| (net.forward(&xs, false), net.forward(&cl, false)));
    let diff = |x: &Tensor, y: &Tensor| (x - y).abs().max().double_value(&[]);
    assert!(diff(&a.embedding, &b.embedding) < 1e-4);
    assert!(diff(a.gender_logits.as_ref().unwrap(), b.gender_logits.as_ref().unwrap()) < 1e-4);
    assert!(diff(a.age_logits.as_ref().unwrap(), b.age_logits.as_ref().unwrap()) < 1e-4);
}

#[test]
fn tiny_network_reduces_arcface_loss_with_sgd() {
    let _turn = facekit_testkit::rng_turn();
    tch::manual_seed(0);
    let cfg = NetConfig { dropout: 0.0, num_classes: 4, ..config(Arch::Tiny, 64) };
    let vs = nn::VarStore::new(Device::Cpu);
    let net = FaceNet::new(&vs.root(), &cfg).unwrap();
    let loss = FaceLoss::new(&vs.root(), &cfg, &facekit_train::loss::HeadConfig::default()).unwrap();
    let mut opt = nn::Sgd { momentum: 0.9, ..Default::default() }.build(&vs, 0.05).unwrap();
    let xs = Tensor::rand([8, 3, 64, 64], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let labels = BatchLabels {
        class: Tensor::from_slice(&[0i64, 1, 2, 3, 0, 1, 2, 3]),
        gender: Tensor::full([8], -1, (Kind::Int64, Device::Cpu)),
        age: Tensor::full([8], -1, (Kind::Int64, Device::Cpu)),
    };
    let mut history = Vec::new();
    for _ in 0..12 {
        let out = net.forward(&xs, true);
        let l = loss.losses(&out, &labels);
        history.push(l.total.double_value(&[]));
        opt.zero_grad();
        l.total.backward();
        opt.step();
    }
    assert!(history.iter().all(|x| x.is_finite()), "{history:?}");
    assert!(history[11] < 0.5 * history[0], "loss did not fall: {history:?}");
}

#[test]
fn bad_configs_are_rejected_with_the_reason() {
    let _turn = facekit_testkit::rng_turn();
    let vs = nn::VarStore::new(Device::Cpu);
    let err = FaceNet::new(&vs.root(), &NetConfig { num_classes: 1, ..NetConfig::default() }).unwrap_err();
    assert!(err.to_string().contains("identity classes"), "{err}");
    let err = FaceNet::new(&vs.root(), &config(Arch::Tiny, 16)).unwrap_err();
    assert!(err.to_string().contains("image_size"), "{err}");
    let err = FaceNet::new(&vs.root(), &NetConfig { dropout: 1.0, ..config(Arch::Tiny, 64) }).unwrap_err();
    assert!(err.to_string().contains("dropout"), "{err}");
}

#[test]
fn net_config_round_trips_and_fills_defaults() {
    let _turn = facekit_testkit::rng_turn();
    let cfg = NetConfig { task: Task::Multi, age_bins: 90, ..config(Arch::Tiny, 112) };
    let back: NetConfig = serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
    assert_eq!(back, cfg);
    let partial: NetConfig = serde_json::from_str(r#"{"arch":"tiny","num_classes":3}"#).unwrap();
    assert_eq!(partial, NetConfig { arch: Arch::Tiny, num_classes: 3, ..NetConfig::default() });
}
