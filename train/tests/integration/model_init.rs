//! Reference initialisation (BN 1/0, `nn.Linear` bounds) and `--init`'s loader: torchvision and
//! facekit files, what loads, what is new, what is ignored, and every refusal naming its cause.

use std::collections::BTreeSet;
use std::path::Path;

use facekit_train::loss::FaceLoss;
use facekit_train::model::init::{load_into, Pretrained};
use facekit_train::model::{is_backbone_param, Arch, FaceNet, NetConfig, Task};
use tch::nn;
use tch::{Device, Kind, Tensor};

fn config(arch: Arch, image_size: i64) -> NetConfig {
    NetConfig { arch, image_size, num_classes: 10, ..NetConfig::default() }
}

fn save(vs: &nn::VarStore, path: &Path) {
    let named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    Tensor::write_safetensors(&named, path).unwrap();
}

fn python(code: &str) {
    let out = std::process::Command::new(facekit_testkit::venv_python())
        .args(["-c", code])
        .output()
        .expect("running the venv python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn batch_norms_start_at_scale_1_and_shift_0() {
    let _turn = facekit_testkit::rng_turn();
    for arch in [Arch::Tiny, Arch::Resnet50, Arch::Iresnet18, Arch::MobileFaceNet] {
        let vs = nn::VarStore::new(Device::Cpu);
        FaceNet::new(&vs.root(), &NetConfig { task: Task::Multi, ..config(arch, 112) }).unwrap();
        let vars = vs.variables();
        let mut bns = 0;
        for (name, t) in &vars {
            let Some(stem) = name.strip_suffix(".running_var") else { continue };
            bns += 1;
            let range = |n: &str| (vars[n].min().double_value(&[]), vars[n].max().double_value(&[]));
            assert_eq!(range(&format!("{stem}.weight")), (1.0, 1.0), "{arch:?}: {stem}.weight");
            assert_eq!(range(&format!("{stem}.bias")), (0.0, 0.0), "{arch:?}: {stem}.bias");
            assert_eq!(range(&format!("{stem}.running_mean")), (0.0, 0.0));
            assert_eq!((t.min().double_value(&[]), t.max().double_value(&[])), (1.0, 1.0));
        }
        assert!(bns > 3, "{arch:?}: {bns} batch norms found");
    }
}

#[test]
fn linear_layers_start_as_pytorch_nn_linear() {
    let _turn = facekit_testkit::rng_turn();
    tch::manual_seed(11);
    let vs = nn::VarStore::new(Device::Cpu);
    FaceNet::new(&vs.root(), &NetConfig { task: Task::Multi, ..config(Arch::Resnet50, 112) }).unwrap();
    let vars = vs.variables();
    // embedding.fc: 2048·4·4 inputs, 16.8 M draws, so the extremes come within 0.1% of the bound.
    for (name, fan_in, tight) in
        [("embedding.fc", 2048 * 4 * 4, true), ("gender_head", 512, false), ("age_head", 512, false)]
    {
        let bound = 1.0 / (fan_in as f64).sqrt();
        for part in ["weight", "bias"] {
            let t = &vars[&format!("{name}.{part}")];
            let (lo, hi) = (t.min().double_value(&[]), t.max().double_value(&[]));
            // The f32 draws may round to a hair beyond the f64 bound.
            let edge = bound * (1.0 + 1e-6);
            assert!(lo >= -edge && hi <= edge, "{name}.{part} in [{lo}, {hi}], beyond ±{bound}");
            if tight && part == "weight" {
                assert!(
                    hi > 0.999 * bound && lo < -0.999 * bound,
                    "{name}.{part} in [{lo}, {hi}]: narrower than ±{bound}"
                );
            }
        }
    }
    // tch's own default would be Kaiming-uniform, sqrt(6) times wider; the std of U(±b) is b/sqrt(3).
    let fc = &vars["embedding.fc.weight"];
    let want = 1.0 / ((2048 * 4 * 4) as f64).sqrt() / 3f64.sqrt();
    let std = fc.std(true).double_value(&[]);
    assert!((std / want - 1.0).abs() < 0.01, "embedding.fc std {std}, nn.Linear's {want}");
}

#[test]
fn torchvision_resnet50_file_loads_the_whole_backbone() {
    let _turn = facekit_testkit::rng_turn();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("resnet50.safetensors");
    python(&format!(
        "import torch, torchvision; from safetensors.torch import save_file; torch.manual_seed(0); \
         save_file(torchvision.models.resnet50().state_dict(), {:?})",
        file.to_str().unwrap()
    ));
    let file_names: BTreeSet<String> = Tensor::read_safetensors(&file).unwrap().into_iter().map(|(n, _)| n).collect();
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = config(Arch::Resnet50, 112);
    FaceNet::new(&vs.root(), &cfg).unwrap();
    FaceLoss::new(&vs.root(), &cfg, &facekit_train::loss::HeadConfig::default()).unwrap();
    let report = load_into(&vs, &file).unwrap();
    let vars = vs.variables();
    let backbone: BTreeSet<String> = vars.keys().filter(|n| is_backbone_param(n)).cloned().collect();
    assert_eq!(
        report.loaded.iter().cloned().collect::<BTreeSet<_>>(),
        backbone,
        "the whole backbone and only it loads"
    );
    let new: BTreeSet<&str> = report.new.iter().map(String::as_str).collect();
    let heads: BTreeSet<&str> = vars.keys().filter(|n| !is_backbone_param(n)).map(String::as_str).collect();
    assert_eq!(new, heads, "embedding.* and arcface.* are new");
    assert!(new.iter().any(|n| n.starts_with("embedding.")));
    let ignored: BTreeSet<&str> = report.ignored.iter().map(String::as_str).collect();
    let expected: BTreeSet<&str> = file_names
        .iter()
        .map(String::as_str)
        .filter(|n| n.starts_with("fc.") || n.ends_with("num_batches_tracked"))
        .collect();
    assert_eq!(ignored, expected);
    assert!(ignored.contains("fc.weight") && ignored.contains("fc.bias"));
    assert_eq!(
        report.loaded.len() + report.ignored.len(),
        file_names.len(),
        "every tensor of the file is accounted for"
    );
    // Values, not only names: the stem and a BN's running statistics are the file's.
    let theirs = Tensor::read_safetensors(&file).unwrap();
    for name in ["conv1.weight", "layer3.2.bn2.running_var", "layer4.0.downsample.0.weight"] {
        let t = &theirs.iter().find(|(n, _)| n == name).unwrap().1;
        assert!(vars[name].equal(t), "{name} differs from the file");
    }
    assert_eq!(vars["conv1.weight"].kind(), Kind::Float);
}

#[test]
fn facekit_checkpoint_loads_everything_but_arcface_and_ddp_names_are_stripped() {
    let _turn = facekit_testkit::rng_turn();
    let dir = tempfile::tempdir().unwrap();
    let cfg = NetConfig { task: Task::Multi, ..config(Arch::Iresnet18, 32) };
    let src = nn::VarStore::new(Device::Cpu);
    FaceNet::new(&src.root(), &cfg).unwrap();
    FaceLoss::new(&src.root(), &cfg, &facekit_train::loss::HeadConfig::default()).unwrap();
    let plain = dir.path().join("model.safetensors");
    save(&src, &plain);
    // What a DDP-wrapped model's state_dict looks like, in half precision.
    let ddp = dir.path().join("ddp.safetensors");
    let named: Vec<(String, Tensor)> =
        src.variables().into_iter().map(|(n, t)| (format!("module.{n}"), t.to_kind(Kind::Half))).collect();
    Tensor::write_safetensors(&named, &ddp).unwrap();

    // A network with 20 classes: the 10 centres of the file do not fit, and are not wanted.
    let cfg20 = NetConfig { num_classes: 20, ..cfg.clone() };
    for (file, prefixed) in [(&plain, false), (&ddp, true)] {
        tch::manual_seed(99);
        let vs = nn::VarStore::new(Device::Cpu);
        FaceNet::new(&vs.root(), &cfg20).unwrap();
        FaceLoss::new(&vs.root(), &cfg20, &facekit_train::loss::HeadConfig::default()).unwrap();
        let report = load_into(&vs, file).unwrap();
        let arcface = if prefixed { "module.arcface.weight" } else { "arcface.weight" };
        assert_eq!(report.ignored, vec![arcface.to_string()], "{}", file.display());
        assert_eq!(report.new, vec!["arcface.weight".to_string()]);
        assert_eq!(report.loaded.len(), src.variables().len() - 1);
        assert_eq!(report.renamed.len(), if prefixed { report.loaded.len() } else { 0 });
        let (a, b) = (src.variables(), vs.variables());
        let tol = if prefixed { 1e-2 } else { 0.0 };
        for name in &report.loaded {
            assert_eq!(b[name].kind(), Kind::Float, "{name} stays fp32");
            let d = (&a[name] - &b[name]).abs().max().double_value(&[]);
            assert!(d <= tol * a[name].abs().max().double_value(&[]).max(1.0), "{name} differs by {d}");
        }
        assert_eq!(b["arcface.weight"].size(), [20, 512]);
    }
}

#[test]
fn init_refuses_shape_mismatch_foreign_and_unreadable_files() {
    let _turn = facekit_testkit::rng_turn();
    let dir = tempfile::tempdir().unwrap();
    let target = || {
        let vs = nn::VarStore::new(Device::Cpu);
        FaceNet::new(&vs.root(), &config(Arch::Tiny, 48)).unwrap();
        vs
    };

    // Same network at another input size: the embedding FC differs.
    let other = nn::VarStore::new(Device::Cpu);
    FaceNet::new(&other.root(), &config(Arch::Tiny, 96)).unwrap();
    let file = dir.path().join("tiny96.safetensors");
    save(&other, &file);
    let err = format!("{:#}", Pretrained::read(&file, &target()).unwrap_err());
    let theirs = other.variables()["embedding.fc.weight"].size();
    let ours = target().variables()["embedding.fc.weight"].size();
    assert_ne!(theirs, ours);
    for part in ["embedding.fc.weight", &format!("{theirs:?}"), &format!("{ours:?}"), file.to_str().unwrap()] {
        assert!(err.contains(part), "{err} does not name {part}");
    }

    // Nothing of the file is a variable of this network.
    let foreign = dir.path().join("foreign.safetensors");
    Tensor::write_safetensors(&[("encoder.block.0.weight", Tensor::zeros([3], (Kind::Float, Device::Cpu)))], &foreign)
        .unwrap();
    let err = format!("{:#}", Pretrained::read(&foreign, &target()).unwrap_err());
    assert!(
        err.contains("none of its 1 tensors")
            && err.contains("encoder.block.0.weight")
            && err.contains("foreign.safetensors"),
        "{err}"
    );

    // Not a safetensors file at all; and a path that does not exist.
    let junk = dir.path().join("backbone.pth");
    std::fs::write(&junk, b"PK\x03\x04 this is a zip, as torch.save writes").unwrap();
    let err = format!("{:#}", Pretrained::read(&junk, &target()).unwrap_err());
    assert!(err.contains("backbone.pth") && err.contains("safetensors"), "{err}");
    let err = format!("{:#}", Pretrained::read(&dir.path().join("absent.safetensors"), &target()).unwrap_err());
    assert!(err.contains("absent.safetensors") && err.contains("no such file"), "{err}");
    // A FIFO is refused as what it is, at once (reading it would block until a writer came).
    let fifo = dir.path().join("weights.safetensors.fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let err = format!("{:#}", Pretrained::read(&fifo, &target()).unwrap_err());
    assert!(err.contains("weights.safetensors.fifo") && err.contains("FIFO"), "{err}");

    // A folder that is no run: named, with what was expected.
    let err = format!("{:#}", Pretrained::read(dir.path(), &target()).unwrap_err());
    assert!(err.contains(dir.path().to_str().unwrap()) && err.contains("run folder"), "{err}");

    // A refused file leaves the variables untouched.
    let vs = target();
    let before = vs.variables()["conv1.weight"].copy();
    assert!(load_into(&vs, &file).is_err());
    assert!(vs.variables()["conv1.weight"].equal(&before));
}

/// A safetensors file of `tensors` (float32, written here byte by byte as the format says) whose
/// header also lists `extra` entries `(name, dtype, shape, data_offsets)` pointing anywhere.
fn handmade_safetensors(path: &Path, tensors: &[(String, Tensor)], extra: &[(&str, &str, Vec<u64>, [u64; 2])]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, t) in tensors {
        let values = Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1)).unwrap();
        let begin = data.len() as u64;
        data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": t.size(), "data_offsets": [begin, data.len()]}),
        );
    }
    for (name, dtype, shape, offsets) in extra {
        header.insert(name.to_string(), serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": offsets}));
    }
    let header = serde_json::to_vec(&header).unwrap();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(&header);
    bytes.extend(&data);
    std::fs::write(path, &bytes).unwrap();
}

#[test]
fn init_reads_only_the_tensors_that_load_so_a_huge_ignored_one_costs_nothing() {
    let _turn = facekit_testkit::rng_turn();
    let dir = tempfile::tempdir().unwrap();
    let source = nn::VarStore::new(Device::Cpu);
    FaceNet::new(&source.root(), &config(Arch::Tiny, 48)).unwrap();
    let tensors: Vec<(String, Tensor)> = source.variables().into_iter().collect();
    let data: u64 = tensors.iter().map(|(_, t)| 4 * t.numel() as u64).sum();
    // A checkpoint whose ArcFace centres are a terabyte (a sparse file): they are ignored, so
    // they are never read; reading the whole file first could not even allocate it.
    let tib = 1u64 << 40;
    let file = dir.path().join("huge.safetensors");
    handmade_safetensors(&file, &tensors, &[("arcface.weight", "F32", vec![1 << 28, 1024], [data, data + tib])]);
    // Sparse: the terabyte takes no disk.
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(len + tib).unwrap();
    let target = nn::VarStore::new(Device::Cpu);
    FaceNet::new(&target.root(), &config(Arch::Tiny, 48)).unwrap();
    let report = load_into(&target, &file).unwrap();
    assert_eq!(report.ignored, ["arcface.weight"]);
    assert_eq!(report.loaded.len(), tensors.len());
    let after = target.variables();
    for (name, t) in &tensors {
        assert!(after[name].equal(t), "{name} did not load its values");
    }

    // A header that lies is refused, naming the tensor: bytes past the end of the file, bytes
    // that are not the shape's, a header longer than the file.
    for (extra, says) in [
        (("conv1.weight", "F32", vec![8, 3, 3, 3], [data, data + 864]), "conv1.weight"),
        (("arcface.weight", "F32", vec![4, 4], [0, 60]), "arcface.weight"),
        (("arcface.weight", "Q4", vec![4], [0, 4]), "unknown dtype"),
    ] {
        let bad = dir.path().join("bad.safetensors");
        let rest: Vec<(String, Tensor)> =
            tensors.iter().filter(|(n, _)| n != extra.0).map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
        handmade_safetensors(&bad, &rest, &[extra]);
        let err = format!("{:#}", Pretrained::read(&bad, &target).unwrap_err());
        assert!(err.contains(says) && err.contains("bad.safetensors"), "{err}");
    }
    let short = dir.path().join("short.safetensors");
    std::fs::write(&short, [&(1u64 << 50).to_le_bytes()[..], b"{}"].concat()).unwrap();
    let err = format!("{:#}", Pretrained::read(&short, &target).unwrap_err());
    assert!(err.contains("short.safetensors") && err.contains("header claims"), "{err}");
}
