//! Export: the TorchScript module, loaded by PyTorch in the project venv, reproduces facekit's
//! embeddings on real aligned faces; the safetensors file holds the documented names.


use facekit_train::infer::embed::{to_input, EmbedModel};
use facekit_eval::npy;
use facekit_train::infer::{export, faces};
use facekit_train::model::{Arch, FaceNet, NetConfig};
use std::path::Path;

const SIZE: i64 = 112;

/// A tiny network with random weights, saved like a trainer's export folder.
fn tiny_model(dir: &Path) {
    let config = NetConfig { arch: Arch::Tiny, image_size: SIZE, num_classes: 5, ..NetConfig::default() };
    tch::manual_seed(1);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _net = FaceNet::new(&vs.root(), &config).unwrap();
    // The trainer keeps ArcFace's class centres in the same store: export must leave them out.
    let _loss = facekit_train::loss::FaceLoss::new(&vs.root(), &config).unwrap();
    // Non-trivial BN statistics, so that eval-mode normalisation is really exercised.
    tch::no_grad(|| {
        for (name, mut t) in vs.variables() {
            if name.ends_with("running_mean") {
                let _ = t.uniform_(-0.1, 0.1);
            } else if name.ends_with("running_var") {
                let _ = t.uniform_(0.5, 1.5);
            }
        }
    });
    vs.save(dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("net.json"), serde_json::to_vec(&config).unwrap()).unwrap();
}

/// Eight aligned 200x200 UTKFace chips, resized to the network input.
fn aligned_faces() -> Vec<u8> {
    let dir = facekit_testkit::shared_data().join("utkface2k");
    let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    let mut pixels = Vec::new();
    for p in names.iter().take(8) {
        let img = image::open(p).unwrap().to_rgb8();
        pixels.extend(faces::resize(&img, SIZE as u32).into_raw());
    }
    pixels
}

#[test]
fn torchscript_export_matches_facekit_embeddings_in_pytorch() {
    let _turn = facekit_testkit::rng_turn();
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = (tmp.path().join("run"), tmp.path().join("export"));
    std::fs::create_dir_all(&src).unwrap();
    tiny_model(&src);
    let model = EmbedModel::load(&src, Some("best"), tch::Device::Cpu).unwrap();
    let report = export::export(&model, &out).unwrap();

    let pixels = aligned_faces();
    let n = pixels.len() / (SIZE * SIZE * 3) as usize;
    let xs = to_input(&pixels, n, SIZE, tch::Device::Cpu);
    let ours = model.forward(&xs).contiguous();
    let ours: Vec<f32> = Vec::try_from(ours.view([-1])).unwrap();
    let inputs: Vec<f32> = Vec::try_from(xs.contiguous().view([-1])).unwrap();
    npy::write_f32(&tmp.path().join("x.npy"), n, (3 * SIZE * SIZE) as usize, &inputs).unwrap();
    npy::write_f32(&tmp.path().join("ours.npy"), n, 512, &ours).unwrap();

    let script = r#"
import json, struct, sys
import numpy as np, torch
d, ts, st = sys.argv[1], sys.argv[2], sys.argv[3]
x = torch.from_numpy(np.load(d + '/x.npy')).reshape(-1, 3, 112, 112)
ours = np.load(d + '/ours.npy')
m = torch.jit.load(ts)
with torch.no_grad():
    theirs = m(x).numpy()
# safetensors read by hand: 8-byte header length, JSON header, raw little-endian data.
raw = open(st, 'rb').read()
n = struct.unpack('<Q', raw[:8])[0]
header = json.loads(raw[8:8 + n])
header.pop('__metadata__', None)
print(json.dumps({'max_diff': float(np.abs(theirs - ours).max()), 'shape': list(theirs.shape),
                  'norm': float(np.abs(ours).max()),
                  'keys': sorted(header), 'conv1': header['conv1.weight']['shape']}))
"#;
    let out = std::process::Command::new(facekit_testkit::venv_python())
        .args(["-c", script])
        .arg(tmp.path())
        .arg(&report.torchscript)
        .arg(&report.weights)
        .output()
        .unwrap();
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["shape"], serde_json::json!([n, 512]));
    assert!(r["norm"].as_f64().unwrap() > 1e-3, "embeddings are all zero: the comparison would be vacuous");
    assert!(r["max_diff"].as_f64().unwrap() < 1e-4, "TorchScript differs from facekit by {}", r["max_diff"]);
    let keys: Vec<String> = serde_json::from_value(r["keys"].clone()).unwrap();
    for k in ["conv1.weight", "bn1.running_mean", "layer1.0.downsample.0.weight", "layer4.0.conv2.weight", "embedding.fc.weight"] {
        assert!(keys.contains(&k.to_string()), "{k} missing from the safetensors export");
    }
    assert!(keys.iter().all(|k| !k.starts_with("arcface.")), "training-only ArcFace centres were exported");
    assert_eq!(r["conv1"], serde_json::json!([16, 3, 7, 7]));
}
