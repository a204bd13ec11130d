//! The optimisers and gradient clipping against PyTorch itself (the venv's torch): the same
//! parameters and gradients go through `torch.optim.AdamW`, `torch.optim.SGD` and
//! `torch.nn.utils.clip_grad_norm_` (the multi-tensor `foreach=True` paths) in Python and through facekit's code here, and the results
//! must agree. Also: clipping under fp16 loss scaling sees unscaled gradients, and AdamW's saved
//! state resumes exactly.

use facekit_train::trainer::adamw::AdamW;
use facekit_train::trainer::clip::clip_network_grads;
use facekit_train::trainer::optim::{Optimizer, Sgd};
use facekit_train::trainer::scaler::{GradScaler, ScalerConfig};
use std::collections::HashMap;
use std::path::Path;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

const CPU: Device = Device::Cpu;

/// (name, shape) of the test parameters; "c" gets no gradient at step 0, so its AdamW step
/// count lags the others' by one.
const PARAMS: [(&str, &[i64]); 3] = [("a", &[3, 4]), ("b", &[5]), ("c", &[2, 3, 2, 2])];
const LRS: [f64; 6] = [0.01, 0.02, 0.05, 0.05, 0.01, 0.004];

/// Initial values and per-step gradients, seeded.
fn fixture() -> (Vec<Tensor>, Vec<Vec<Option<Tensor>>>) {
    tch::manual_seed(11);
    let init = PARAMS.iter().map(|(_, s)| Tensor::randn(*s, (Kind::Float, CPU))).collect();
    let grads = (0..LRS.len())
        .map(|k| {
            PARAMS
                .iter()
                .map(|(n, s)| {
                    let g = Tensor::randn(*s, (Kind::Float, CPU)) * (0.5 + k as f64);
                    (!(k == 0 && *n == "c")).then_some(g)
                })
                .collect()
        })
        .collect();
    (init, grads)
}

/// A store holding the test parameters (and one frozen variable no optimiser may touch).
fn store(init: &[Tensor]) -> (VarStore, Vec<Tensor>, Tensor) {
    let vs = VarStore::new(CPU);
    let params: Vec<Tensor> = PARAMS
        .iter()
        .zip(init)
        .map(|((n, s), v)| {
            let mut p = vs.root().zeros(n, s);
            tch::no_grad(|| p.copy_(v));
            p
        })
        .collect();
    let frozen = vs.root().ones_no_train("frozen", &[4]);
    (vs, params, frozen)
}

/// Sets each parameter's gradient to exactly `g` (the gradient of sum(p·g)) for those given.
fn set_grads(opt: &mut dyn Optimizer, params: &[Tensor], grads: &[Option<Tensor>]) {
    opt.zero_grad();
    let terms: Vec<Tensor> =
        params.iter().zip(grads).filter_map(|(p, g)| g.as_ref().map(|g| (p * g).sum(Kind::Float))).collect();
    Tensor::stack(&terms, 0).sum(Kind::Float).backward();
}

/// Runs `script` with the venv's torch; it reads `in.safetensors` and writes `out.safetensors`
/// in the folder given as its first argument.
fn python(dir: &Path, inputs: &[(String, Tensor)], script: &str) -> HashMap<String, Tensor> {
    let named: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    Tensor::write_safetensors(&named, dir.join("in.safetensors")).unwrap();
    let out = std::process::Command::new(facekit_testkit::venv_python())
        .arg("-c")
        .arg(format!("import sys, torch\nfrom safetensors.torch import load_file, save_file\nd = sys.argv[1]\nt = load_file(d + '/in.safetensors')\nout = {{}}\n{script}\nsave_file(out, d + '/out.safetensors')\n"))
        .arg(dir)
        .output()
        .expect("running the venv python");
    assert!(out.status.success(), "python failed:\n{}", String::from_utf8_lossy(&out.stderr));
    Tensor::read_safetensors(dir.join("out.safetensors")).unwrap().into_iter().collect()
}

/// Inputs for the Python side: initial values `init.N`, gradients `grad.K.N` (absent: None).
fn reference_inputs(init: &[Tensor], grads: &[Vec<Option<Tensor>>]) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> =
        PARAMS.iter().zip(init).map(|((n, _), t)| (format!("init.{n}"), t.shallow_clone())).collect();
    for (k, gs) in grads.iter().enumerate() {
        for ((n, _), g) in PARAMS.iter().zip(gs) {
            if let Some(g) = g {
                v.push((format!("grad.{k}.{n}"), g.shallow_clone()));
            }
        }
    }
    v
}

/// Python: runs `make_opt(params)` over the steps with LRS, writing `after.K.N`.
fn optimiser_script(make_opt: &str) -> String {
    let names: Vec<String> = PARAMS.iter().map(|(n, _)| format!("'{n}'")).collect();
    let lrs: Vec<String> = LRS.iter().map(|l| format!("{l:e}")).collect();
    format!(
        "names = [{}]\nlrs = [{}]\nps = [t['init.' + n].clone().requires_grad_(True) for n in names]\nopt = {make_opt}\n\
         for k, lr in enumerate(lrs):\n    for g in opt.param_groups: g['lr'] = lr\n    \
         for n, p in zip(names, ps): p.grad = t.get(f'grad.{{k}}.{{n}}')\n    opt.step()\n    \
         for n, p in zip(names, ps): out[f'after.{{k}}.{{n}}'] = p.detach().clone()\n",
        names.join(", "),
        lrs.join(", ")
    )
}

/// Runs facekit's optimiser over the same steps and compares every parameter after every step.
fn compare_with_torch(
    opt: &mut dyn Optimizer,
    params: &[Tensor],
    frozen: &Tensor,
    reference: &HashMap<String, Tensor>,
    grads: &[Vec<Option<Tensor>>],
    what: &str,
) {
    let mut worst = 0f64;
    for (k, gs) in grads.iter().enumerate() {
        set_grads(opt, params, gs);
        opt.step(LRS[k]).unwrap();
        for ((n, _), p) in PARAMS.iter().zip(params) {
            let want = &reference[&format!("after.{k}.{n}")];
            let diff = (p.detach() - want).abs().max().double_value(&[]);
            let rel = diff / want.abs().max().double_value(&[]).max(1e-3);
            worst = worst.max(rel);
            assert!(rel <= 1e-6, "{what} step {k} parameter {n}: differs from torch by {diff} (relative {rel})");
        }
    }
    assert!(frozen.equal(&Tensor::ones([4], (Kind::Float, CPU))), "{what} changed a variable without requires_grad");
    eprintln!("{what}: worst relative difference from torch {worst:e}");
}

#[test]
fn adamw_matches_torch_optim_adamw_foreach_with_weight_decay_and_a_late_parameter() {
    let _turn = facekit_testkit::rng_turn();
    let (init, grads) = fixture();
    let dir = tempfile::tempdir().unwrap();
    let reference = python(
        dir.path(),
        &reference_inputs(&init, &grads),
        &optimiser_script(
            "torch.optim.AdamW(ps, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, foreach=True)",
        ),
    );
    let (vs, params, frozen) = store(&init);
    let mut opt = AdamW::new(&vs, (0.8, 0.99), 1e-6, 0.1);
    assert_eq!(opt.params().len(), 3, "the frozen variable is no parameter of the optimiser");
    compare_with_torch(&mut opt, &params, &frozen, &reference, &grads, "AdamW");
    let counts: Vec<(&str, u64)> = opt.step_counts();
    assert_eq!(counts, vec![("a", 6), ("b", 6), ("c", 5)], "a parameter without gradient does not count the step");
}

#[test]
fn sgd_matches_torch_optim_sgd_foreach() {
    let _turn = facekit_testkit::rng_turn();
    let (init, grads) = fixture();
    let dir = tempfile::tempdir().unwrap();
    let reference = python(
        dir.path(),
        &reference_inputs(&init, &grads),
        &optimiser_script("torch.optim.SGD(ps, lr=0.01, momentum=0.9, weight_decay=5e-4, foreach=True)"),
    );
    let (vs, params, frozen) = store(&init);
    let mut opt = Sgd::new(&vs, 0.9, 5e-4);
    compare_with_torch(&mut opt, &params, &frozen, &reference, &grads, "SGD");
}

#[test]
fn adamw_resumes_exactly_from_its_saved_state() {
    let _turn = facekit_testkit::rng_turn();
    let (init, grads) = fixture();
    let dir = tempfile::tempdir().unwrap();
    let (vs_a, params_a, _) = store(&init);
    let mut a = AdamW::new(&vs_a, (0.9, 0.999), 1e-8, 0.05);
    for (k, gs) in grads.iter().enumerate().take(3) {
        set_grads(&mut a, &params_a, gs);
        a.step(LRS[k]).unwrap();
    }
    let file = dir.path().join("optimizer.safetensors");
    a.save(&file).unwrap();
    let now: Vec<Tensor> = params_a.iter().map(|p| p.detach().copy()).collect();
    let (vs_b, params_b, _) = store(&now);
    let mut b = AdamW::new(&vs_b, (0.9, 0.999), 1e-8, 0.05);
    b.load(&file).unwrap();
    assert_eq!(b.step_counts(), a.step_counts());
    for (k, gs) in grads.iter().enumerate().skip(3) {
        set_grads(&mut a, &params_a, gs);
        a.step(LRS[k]).unwrap();
        set_grads(&mut b, &params_b, gs);
        b.step(LRS[k]).unwrap();
    }
    for ((n, _), (x, y)) in PARAMS.iter().zip(params_a.iter().zip(&params_b)) {
        assert!(x.equal(y), "parameter {n} after resuming differs from the uninterrupted run");
    }
    // An SGD checkpoint is no AdamW state, and says so.
    let sgd_file = dir.path().join("sgd.safetensors");
    let mut sgd = Sgd::new(&vs_a, 0.9, 0.0);
    set_grads(&mut sgd, &params_a, &grads[1]);
    sgd.step(0.01).unwrap();
    sgd.save(&sgd_file).unwrap();
    let err = b.load(&sgd_file).unwrap_err().to_string();
    assert!(err.contains("is not AdamW state") && err.contains("SGD"), "{err}");
}

/// A store with network parameters and ArcFace centres, gradients set to `scale` times fixed values.
fn clip_setup(scale: f64) -> (VarStore, Sgd, Vec<(String, Tensor)>) {
    tch::manual_seed(5);
    let vs = VarStore::new(CPU);
    let shapes: [(&str, &[i64]); 4] = [
        ("embedding.weight", &[4, 6]),
        ("layer1.conv.weight", &[3, 2, 3, 3]),
        ("layer1.bn.bias", &[3]),
        ("arcface.weight", &[7, 4]),
    ];
    let mut grads = Vec::new();
    let mut terms = Vec::new();
    for (n, s) in shapes {
        let mut parts: Vec<&str> = n.split('.').collect();
        let leaf = parts.pop().unwrap();
        let path = parts.iter().fold(vs.root(), |p, part| p / *part);
        let p = path.randn(leaf, s, 0.0, 1.0);
        let g = Tensor::randn(s, (Kind::Float, CPU));
        terms.push((&p * &g * scale).sum(Kind::Float));
        grads.push((n.to_string(), g));
    }
    let opt = Sgd::new(&vs, 0.0, 0.0);
    Tensor::stack(&terms, 0).sum(Kind::Float).backward();
    (vs, opt, grads)
}

fn grad_of(vs: &VarStore, name: &str) -> Tensor {
    vs.variables()[name].grad().copy()
}

#[test]
fn clipping_matches_torch_clip_grad_norm_above_and_below_the_maximum_and_spares_the_centres() {
    let _turn = facekit_testkit::rng_turn();
    let dir = tempfile::tempdir().unwrap();
    let (_, _, grads) = clip_setup(1.0);
    let net: Vec<&(String, Tensor)> = grads.iter().filter(|(n, _)| !n.starts_with("arcface.")).collect();
    let inputs: Vec<(String, Tensor)> = net.iter().map(|(n, g)| (n.clone(), g.shallow_clone())).collect();
    let names: Vec<String> = net.iter().map(|(n, _)| format!("'{n}'")).collect();
    let script = format!(
        "for tag, mx in [('low', 1.0), ('high', 1e4)]:\n    ps = []\n    for n in [{}]:\n        p = torch.zeros_like(t[n], requires_grad=True); p.grad = t[n].clone(); ps.append((n, p))\n    \
         out['norm.' + tag] = torch.nn.utils.clip_grad_norm_([p for _, p in ps], mx).reshape(1)\n    \
         for n, p in ps: out[tag + '.' + n] = p.grad\n",
        names.join(", ")
    );
    let reference = python(dir.path(), &inputs, &script);
    for (tag, max) in [("low", 1.0), ("high", 1e4)] {
        let (vs, opt, _) = clip_setup(1.0);
        let centres = grad_of(&vs, "arcface.weight");
        let norm = clip_network_grads(&opt, max).unwrap().expect("gradients exist").double_value(&[]);
        let want = reference[&format!("norm.{tag}")].double_value(&[0]);
        assert!((norm - want).abs() <= 1e-6 * want, "{tag}: total norm {norm}, torch {want}");
        assert_eq!(norm > max, tag == "low", "the fixture's norm {norm} must be above 1 and below 1e4");
        for (n, _) in &net {
            let got = grad_of(&vs, n);
            let want = &reference[&format!("{tag}.{n}")];
            let diff = (&got - want).abs().max().double_value(&[]);
            assert!(
                diff <= 1e-6 * want.abs().max().double_value(&[]),
                "{tag}: gradient of {n} differs from torch's by {diff}"
            );
        }
        assert!(
            grad_of(&vs, "arcface.weight").equal(&centres),
            "{tag}: the ArcFace centres' gradient must not be clipped"
        );
    }
}

#[test]
fn under_fp16_loss_scaling_clipping_sees_the_unscaled_gradients() {
    let _turn = facekit_testkit::rng_turn();
    let scale = 1024.0;
    // Reference: fp32 gradients, clipped, stepped.
    let (vs_a, mut opt_a, _) = clip_setup(1.0);
    let norm_a = clip_network_grads(&opt_a, 1.0).unwrap().unwrap().double_value(&[]);
    assert!(norm_a > 1.0, "the fixture must need clipping (norm {norm_a})");
    opt_a.step(0.1).unwrap();
    // Scaled by 1024 (a power of two: unscaling is exact), through the scaler.
    let (vs_b, mut opt_b, _) = clip_setup(scale);
    let scaler = GradScaler::new(ScalerConfig { init_scale: scale, ..ScalerConfig::default() }, CPU);
    // The trainer's order: unscale (and check), clip, step unless flagged.
    let mut found_inf = Tensor::zeros([1], (Kind::Float, CPU));
    scaler.unscale_(&mut opt_b.grads(), &mut found_inf).unwrap();
    let norm_b = clip_network_grads(&opt_b, 1.0).unwrap().unwrap().double_value(&[]);
    opt_b.step_unless(0.1, &found_inf).unwrap();
    assert_eq!(found_inf.double_value(&[0]), 0.0, "finite gradients: the step is applied");
    assert_eq!(norm_b, norm_a, "the norm is taken after unscaling (scaled it would be {}x)", scale);
    for (name, a) in vs_a.variables() {
        assert!(a.equal(&vs_b.variables()[&name]), "{name}: scaled, unscaled, clipped and stepped differs from fp32");
    }
}
