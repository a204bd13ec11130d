//! Export: the TorchScript module, loaded by PyTorch in the project venv, reproduces facekit's
//! embeddings on real aligned faces; the safetensors file holds the documented names; the ONNX
//! file of every backbone, run by onnxruntime without torch, reproduces them too.

use facekit_eval::npy;
use facekit_train::embedding::{resize, to_input};
use facekit_train::infer::embed::EmbedModel;
use facekit_train::infer::export;
use facekit_train::model::{Arch, FaceNet, NetConfig};
use facekit_train::run::paths::{BEST, MODEL_FILE, NET_FILE};
use std::path::Path;

const SIZE: i64 = 112;

/// A tiny network with random weights, saved like a trainer's export folder.
fn tiny_model(dir: &Path) {
    random_model(dir, Arch::Tiny, SIZE);
}

/// A network of `arch` for `size` pixels with random weights, saved like a trainer's export folder.
fn random_model(dir: &Path, arch: Arch, size: i64) {
    let config = NetConfig { arch, image_size: size, num_classes: 5, ..NetConfig::default() };
    tch::manual_seed(1);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let net = FaceNet::new(&vs.root(), &config).unwrap();
    // The trainer keeps ArcFace's class centres in the same store: export must leave them out.
    let _loss =
        facekit_train::loss::FaceLoss::new(&vs.root(), &config, &facekit_train::loss::HeadConfig::default()).unwrap();
    // BN statistics of real faces, so that eval-mode normalisation is exercised and a deep random
    // network (IR-ResNet's normal(0, 0.1) convolutions) does not blow every face up onto the same
    // direction: from zero, one training-mode pass leaves momentum (0.1) x the batch statistics;
    // dividing by the momentum gives the batch statistics themselves.
    let pixels = aligned_faces_of(size);
    let n = pixels.len() / (size * size * 3) as usize;
    tch::no_grad(|| {
        let stats: Vec<_> = vs
            .variables()
            .into_iter()
            .filter(|(name, _)| name.ends_with("running_mean") || name.ends_with("running_var"))
            .collect();
        for (_, t) in &stats {
            let _ = t.shallow_clone().zero_();
        }
        let _ = net.embed(&to_input(&pixels, n, size, tch::Device::Cpu), true);
        for (_, t) in &stats {
            let _ = t.shallow_clone().g_mul_scalar_(10.0);
        }
    });
    vs.save(dir.join(MODEL_FILE)).unwrap();
    std::fs::write(dir.join(NET_FILE), serde_json::to_vec(&config).unwrap()).unwrap();
}

/// Eight aligned 200x200 UTKFace chips, resized to the network input.
fn aligned_faces() -> Vec<u8> {
    aligned_faces_of(SIZE)
}

/// Eight aligned 200x200 UTKFace chips, resized to `size`.
fn aligned_faces_of(size: i64) -> Vec<u8> {
    let dir = facekit_testkit::shared_data().join("utkface2k");
    let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    let mut pixels = Vec::new();
    for p in names.iter().take(8) {
        let img = image::open(p).unwrap().to_rgb8();
        pixels.extend(resize(&img, size as u32).into_raw());
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
    let model = EmbedModel::load(&src, Some(BEST), tch::Device::Cpu, &Default::default()).unwrap();
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
        .arg(report.torchscript.as_ref().unwrap())
        .arg(report.weights.as_ref().unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["shape"], serde_json::json!([n, 512]));
    assert!(r["norm"].as_f64().unwrap() > 1e-3, "embeddings are all zero: the comparison would be vacuous");
    assert!(r["max_diff"].as_f64().unwrap() < 1e-4, "TorchScript differs from facekit by {}", r["max_diff"]);
    let keys: Vec<String> = serde_json::from_value(r["keys"].clone()).unwrap();
    for k in [
        "conv1.weight",
        "bn1.running_mean",
        "layer1.0.downsample.0.weight",
        "layer4.0.conv2.weight",
        "embedding.fc.weight",
    ] {
        assert!(keys.contains(&k.to_string()), "{k} missing from the safetensors export");
    }
    assert!(keys.iter().all(|k| !k.starts_with("arcface.")), "training-only ArcFace centres were exported");
    assert_eq!(r["conv1"], serde_json::json!([16, 3, 7, 7]));
}

/// Input side for each backbone in the ONNX test: what the backbone is used at, except the tiny
/// network also at another size, so that the exported input shape follows `image_size`.
fn onnx_test_size(arch: Arch) -> i64 {
    match arch {
        Arch::Tiny => 32,
        _ => 112,
    }
}

/// onnxruntime's side: the documented preprocessing from RGB pixels, the file's declared
/// interface, and embeddings computed in two batches of different sizes (the dynamic batch axis).
const ORT_SCRIPT: &str = r#"
import json, sys
import numpy as np, onnxruntime as ort
d, onnx_path, size, first = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
pixels = np.load(d + '/pixels.npy').reshape(-1, size, size, 3)          # RGB, 0..255, NHWC
x = ((pixels / 255.0 - 0.5) / 0.5).astype(np.float32).transpose(0, 3, 1, 2)
s = ort.InferenceSession(onnx_path, providers=['CPUExecutionProvider'])
i, o = s.get_inputs(), s.get_outputs()
raw = np.concatenate([s.run(['embedding'], {'input': x[:first]})[0], s.run(['embedding'], {'input': x[first:]})[0]])
ours_raw, ours = np.load(d + '/raw.npy'), np.load(d + '/ours.npy')
theirs = raw / np.linalg.norm(raw, axis=1, keepdims=True)
print(json.dumps({
    'inputs': [[t.name, t.shape, t.type] for t in i], 'outputs': [[t.name, t.shape, t.type] for t in o],
    'shape': list(raw.shape), 'finite': bool(np.isfinite(raw).all()),
    'raw_absmax': float(np.abs(raw).max()), 'raw_diff': float(np.abs(raw - ours_raw).max()),
    'max_diff': float(np.abs(theirs - ours).max()),
    'spread': float(np.abs(ours - ours[:1]).max()),
    'providers': s.get_providers(),
}))
"#;

#[test]
fn onnx_export_of_every_backbone_matches_facekit_embeddings_in_onnxruntime() {
    let Some(ort) = facekit_testkit::onnxruntime_python() else { return };
    let _turn = facekit_testkit::rng_turn();
    // Every variant, so that a backbone added later is exported and checked without editing this,
    // but IR-ResNet-200: r100's code and ops at twice the depth, whose export alone took 264 s of
    // this test's 17 minutes on a loaded 2-core box (r100: 98 s).
    let archs = <Arch as clap::ValueEnum>::value_variants();
    assert!(archs.contains(&Arch::Resnet50) && archs.contains(&Arch::Tiny) && archs.contains(&Arch::Iresnet100));
    let mut timings = Vec::new();
    for &arch in archs.iter().filter(|&&a| a != Arch::Iresnet200) {
        let size = onnx_test_size(arch);
        let tmp = tempfile::tempdir().unwrap();
        let (src, out) = (tmp.path().join("run"), tmp.path().join("export"));
        std::fs::create_dir_all(&src).unwrap();
        random_model(&src, arch, size);
        let model = EmbedModel::load(&src, Some(BEST), tch::Device::Cpu, &Default::default()).unwrap();
        let opts = export::ExportOptions {
            formats: vec![export::Format::Onnx],
            python: Some(facekit_testkit::venv_python()),
            ..Default::default()
        };
        let report = export::export_with(&model, &out, &opts).unwrap_or_else(|e| panic!("{arch:?}: {e:#}"));
        let onnx = report.onnx.as_ref().expect("ONNX was requested");
        assert_eq!(onnx.path, out.join(export::ONNX_FILE));
        assert_eq!(onnx.opset, export::ONNX_OPSET);
        assert!(report.weights.is_none() && report.torchscript.is_none());
        // Only what was asked for, plus net.json: the TorchScript module ONNX is made from and
        // every temporary file are gone.
        let mut files: Vec<String> =
            std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        files.sort();
        assert_eq!(files, [export::ONNX_FILE, NET_FILE], "{arch:?}");
        timings.push((arch, size, onnx.seconds));

        let pixels = aligned_faces_of(size);
        let n = pixels.len() / (size * size * 3) as usize;
        let dim = model.dim();
        let ours = model.embed_pixels(&pixels, n, false).unwrap();
        let raw = model.forward(&to_input(&pixels, n, size, tch::Device::Cpu)).contiguous();
        let raw: Vec<f32> = Vec::try_from(raw.view([-1])).unwrap();
        let as_f32: Vec<f32> = pixels.iter().map(|&p| f32::from(p)).collect();
        npy::write_f32(&tmp.path().join("pixels.npy"), n, (size * size * 3) as usize, &as_f32).unwrap();
        npy::write_f32(&tmp.path().join("ours.npy"), n, dim, &ours).unwrap();
        npy::write_f32(&tmp.path().join("raw.npy"), n, dim, &raw).unwrap();
        // Batches of 3 and 5, neither the batch of 2 the module was traced with.
        let run = std::process::Command::new(&ort)
            .args(["-c", ORT_SCRIPT])
            .arg(tmp.path())
            .arg(&onnx.path)
            .args([size.to_string(), "3".into()])
            .output()
            .unwrap();
        assert!(run.status.success(), "{arch:?}: onnxruntime failed: {}", String::from_utf8_lossy(&run.stderr));
        let r: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
        println!("{arch:?} at {size}: {r}");
        assert_eq!(r["inputs"], serde_json::json!([["input", ["batch", 3, size, size], "tensor(float)"]]), "{arch:?}");
        assert_eq!(r["outputs"], serde_json::json!([["embedding", ["batch", dim], "tensor(float)"]]), "{arch:?}");
        assert_eq!(r["shape"], serde_json::json!([n, dim]), "{arch:?}");
        assert_eq!(r["finite"], true, "{arch:?}: onnxruntime gave non-finite embeddings");
        let raw_absmax = r["raw_absmax"].as_f64().unwrap();
        assert!(raw_absmax > 1e-2, "{arch:?}: embeddings are all ~0, the comparison would be vacuous");
        assert!(
            r["spread"].as_f64().unwrap() > 1e-3,
            "{arch:?}: every face gives the same embedding, the comparison would be vacuous"
        );
        assert!(
            r["max_diff"].as_f64().unwrap() < 1e-4,
            "{arch:?}: onnxruntime's normalised embeddings differ from facekit's by {}",
            r["max_diff"]
        );
        // Raw values too, relative to their scale, with a looser bound: in ResNet-50's head the
        // BN2d over 2048 post-ReLU channels sees channels that barely vary over eight faces of a
        // random network, so 1/sqrt(var + eps) (up to ~300) magnifies the two runtimes' different
        // summation orders (measured: 5e-4 raw at scale 2.4, 2e-5 normalised; IR-ResNets 2e-5
        // raw, 1e-6 normalised). The normalised embeddings, which verification compares, meet 1e-4.
        let raw_diff = r["raw_diff"].as_f64().unwrap();
        assert!(
            raw_diff < 1e-3 * raw_absmax.max(1.0),
            "{arch:?}: raw embeddings differ by {raw_diff} at scale {raw_absmax}"
        );
    }
    for (arch, size, s) in timings {
        println!("ONNX export of {arch:?} at {size}: {s:.1} s");
    }
}

#[test]
fn onnx_export_with_a_python_lacking_torch_and_onnx_says_so_and_changes_nothing() {
    let Some(ort) = facekit_testkit::onnxruntime_python() else { return };
    let _turn = facekit_testkit::rng_turn();
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = (tmp.path().join("run"), tmp.path().join("export"));
    std::fs::create_dir_all(&src).unwrap();
    random_model(&src, Arch::Tiny, 32);
    let model = EmbedModel::load(&src, Some(BEST), tch::Device::Cpu, &Default::default()).unwrap();
    export::export(&model, &out).unwrap();
    let listing = || {
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
            .collect();
        v.sort();
        v
    };
    let before = listing();

    // onnxruntime's venv has neither torch nor onnx.
    let all = vec![export::Format::Safetensors, export::Format::Torchscript, export::Format::Onnx];
    let opts = export::ExportOptions { formats: all.clone(), python: Some(ort.clone()), ..Default::default() };
    let err = format!("{:#}", export::export_with(&model, &out, &opts).unwrap_err());
    assert!(err.contains(&out.join("model.onnx").display().to_string()), "{err}");
    assert!(
        err.contains(&ort.display().to_string()) && err.contains("cannot import torch") && err.contains("onnx ("),
        "{err}"
    );
    assert!(
        err.contains("pip install torch onnx") && err.contains("--python") && err.contains("FACEKIT_PYTHON"),
        "{err}"
    );
    assert!(before == listing(), "a failed ONNX export changed the folder (or left model.onnx or a temporary file)");

    let opts =
        export::ExportOptions { formats: all, python: Some(tmp.path().join("no-such-python")), ..Default::default() };
    let err = format!("{:#}", export::export_with(&model, &out, &opts).unwrap_err());
    assert!(err.contains("cannot run Python") && err.contains("no-such-python"), "{err}");
    assert!(before == listing());
}
