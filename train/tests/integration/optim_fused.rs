//! The multi-tensor optimisers (libtorch's `_fused_sgd_`/`_fused_adamw_`) against the
//! single-tensor update facekit used before them (kept here as the reference, op for op), a step
//! flagged non-finite on the device that leaves parameters and state untouched, and an
//! `optimizer.safetensors` written in the earlier layout that resumes.

use facekit_train::trainer::adamw::AdamW;
use facekit_train::trainer::optim::{Optimizer, Sgd};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

const CPU: Device = Device::Cpu;
const SHAPES: [(&str, &[i64]); 3] = [("a", &[8, 3, 3, 3]), ("b", &[16]), ("c", &[5, 7])];
const LRS: [f64; 6] = [0.1, 0.05, 0.05, 0.02, 0.01, 0.005];

/// A store with the test parameters (seeded) and the gradients of 6 steps ("c" has none at the
/// first, so its state starts a step later).
fn fixture() -> (VarStore, Vec<Tensor>, Vec<Vec<Option<Tensor>>>) {
    tch::manual_seed(23);
    let vs = VarStore::new(CPU);
    let params: Vec<Tensor> = SHAPES.iter().map(|(n, s)| vs.root().randn(n, s, 0.0, 1.0)).collect();
    let grads = (0..LRS.len())
        .map(|k| {
            SHAPES
                .iter()
                .map(|(n, s)| {
                    (!(k == 0 && *n == "c")).then(|| Tensor::randn(*s, (Kind::Float, CPU)) * (1.0 + k as f64))
                })
                .collect()
        })
        .collect();
    (vs, params, grads)
}

fn set_grads(params: &[Tensor], grads: &[Option<Tensor>]) {
    for (p, g) in params.iter().zip(grads) {
        let mut pg = p.grad();
        match g {
            Some(g) if pg.defined() => {
                pg.copy_(g);
            }
            Some(g) => {
                // The gradient of sum(p·g) is g.
                (p * g).sum(Kind::Float).backward();
            }
            // Only at the first step: the gradient stays undefined.
            None => {}
        }
    }
}

/// The previous single-tensor SGD, op for op: g += wd·p; buf = μ·buf + g (buf = g at first); p -= lr·buf.
struct SingleSgd {
    bufs: Vec<Option<Tensor>>,
}

impl SingleSgd {
    fn step(&mut self, params: &[Tensor], grads: &[Option<Tensor>], lr: f64, momentum: f64, wd: f64) {
        tch::no_grad(|| {
            for ((p, g), buf) in params.iter().zip(grads).zip(&mut self.bufs) {
                let Some(g) = g else { continue };
                let d = g + p * wd;
                let step = match buf.as_mut() {
                    Some(b) => {
                        let _ = b.g_mul_scalar_(momentum).g_add_(&d);
                        b.shallow_clone()
                    }
                    None => {
                        *buf = Some(d.copy());
                        d
                    }
                };
                let _ = p.shallow_clone().g_sub_(&(step * lr));
            }
        });
    }
}

/// The previous single-tensor AdamW, op for op (PyTorch's single-tensor path), with host step counts.
struct SingleAdamW {
    state: Vec<Option<(Tensor, Tensor, u64)>>,
}

impl SingleAdamW {
    fn step(&mut self, params: &[Tensor], grads: &[Option<Tensor>], lr: f64, (b1, b2, eps, wd): (f64, f64, f64, f64)) {
        tch::no_grad(|| {
            for ((p, g), st) in params.iter().zip(grads).zip(&mut self.state) {
                let Some(g) = g else { continue };
                let mut p = p.shallow_clone();
                let _ = p.g_mul_scalar_(1.0 - lr * wd);
                let (m, v, t) = st.get_or_insert_with(|| (p.zeros_like(), p.zeros_like(), 0));
                *t += 1;
                let _ = m.lerp_(g, 1.0 - b1);
                let _ = v.g_mul_scalar_(b2).g_add_(&(g * (1.0 - b2) * g));
                let bc1 = 1.0 - b1.powf(*t as f64);
                let bc2 = 1.0 - b2.powf(*t as f64);
                let denom = v.sqrt() / bc2.powf(0.5) + eps;
                let _ = p.g_add_(&((&*m * -(lr / bc1)) / denom));
            }
        });
    }
}

/// Largest |a - b| / max(|b|, 1e-3) over the parameters.
fn worst(a: &[Tensor], b: &[Tensor]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs().max().double_value(&[]) / y.abs().max().double_value(&[]).max(1e-3))
        .fold(0.0, f64::max)
}

fn copies(ts: &[Tensor]) -> Vec<Tensor> {
    ts.iter().map(|t| t.detach().copy()).collect()
}

#[test]
fn fused_sgd_gives_the_previous_single_tensor_update_to_float_rounding() {
    let _turn = facekit_testkit::rng_turn();
    let (vs, params, grads) = fixture();
    let reference = copies(&params);
    let mut single = SingleSgd { bufs: vec![None, None, None] };
    let mut fused = Sgd::new(&vs, 0.9, 5e-4);
    let mut largest = 0.0f64;
    for (k, gs) in grads.iter().enumerate() {
        set_grads(&params, gs);
        fused.step(LRS[k]).unwrap();
        single.step(&reference, gs, LRS[k], 0.9, 5e-4);
        let d = worst(&copies(&params), &reference);
        largest = largest.max(d);
        // The fused kernel computes p − lr·buf in one multiply-add where the loop rounded twice.
        assert!(d <= 1e-6, "step {k}: relative difference {d:e} from the single-tensor update");
    }
    let bufs: Vec<Tensor> = fused.momentum_buffers().iter().map(|(_, b)| b.detach()).collect();
    let want: Vec<Tensor> = single.bufs.iter().map(|b| b.as_ref().unwrap().shallow_clone()).collect();
    assert!(worst(&bufs, &want) <= 1e-6, "the momentum buffers are the single-tensor ones");
    eprintln!("fused SGD vs single-tensor: largest relative difference {largest:e}");
}

#[test]
fn fused_adamw_gives_the_previous_single_tensor_update_to_float_rounding() {
    let _turn = facekit_testkit::rng_turn();
    let (vs, params, grads) = fixture();
    let reference = copies(&params);
    let hyper = (0.9, 0.999, 1e-8, 0.05);
    let mut single = SingleAdamW { state: vec![None, None, None] };
    let mut fused = AdamW::new(&vs, (hyper.0, hyper.1), hyper.2, hyper.3);
    let mut largest = 0.0f64;
    for (k, gs) in grads.iter().enumerate() {
        set_grads(&params, gs);
        fused.step(LRS[k]).unwrap();
        single.step(&reference, gs, LRS[k], hyper);
        let d = worst(&copies(&params), &reference);
        largest = largest.max(d);
        // The fused kernel evaluates the same formula in another order (a few float32 ulps).
        assert!(d <= 1e-6, "step {k}: relative difference {d:e} from the single-tensor update");
    }
    assert_eq!(
        fused.step_counts(),
        vec![("a", 6), ("b", 6), ("c", 5)],
        "a parameter without gradient does not count the step"
    );
    eprintln!("fused AdamW vs single-tensor: largest relative difference {largest:e}");
}

/// The optimiser's state, copied.
fn state_of(opt: &dyn Optimizer) -> Vec<(String, Tensor)> {
    opt.state().into_iter().map(|(n, t)| (n, t.detach().copy())).collect()
}

/// Steps `opt` twice, then a step whose gradients hold a NaN and whose flag is set: parameters
/// and state must stay as they were, bit for bit; then a clean step follows as if the flagged one
/// never happened.
fn flagged_step_applies_nothing(make: &dyn Fn(&VarStore) -> Box<dyn Optimizer>, what: &str) {
    let (vs, params, grads) = fixture();
    let (vs_b, params_b, _) = fixture();
    let (mut opt, mut clean) = (make(&vs), make(&vs_b));
    for (k, gs) in grads.iter().enumerate().take(2) {
        set_grads(&params, gs);
        opt.step(LRS[k]).unwrap();
        set_grads(&params_b, gs);
        clean.step(LRS[k]).unwrap();
    }
    let (before, state_before) = (copies(&params), state_of(opt.as_ref()));
    set_grads(&params, &grads[2]);
    let _ = params[0].grad().get(0).get(0).get(0).get(0).fill_(f64::NAN);
    opt.step_unless(LRS[2], &Tensor::ones([1], (Kind::Float, CPU))).unwrap();
    for ((n, _), (p, b)) in SHAPES.iter().zip(params.iter().zip(&before)) {
        assert!(p.detach().equal(b), "{what}: parameter {n} changed in a flagged step");
    }
    let state_after = state_of(opt.as_ref());
    assert_eq!(state_after.len(), state_before.len());
    for ((n, a), (_, b)) in state_after.iter().zip(&state_before) {
        assert!(a.equal(b), "{what}: state {n} changed in a flagged step");
    }
    set_grads(&params, &grads[3]);
    opt.step(LRS[3]).unwrap();
    set_grads(&params_b, &grads[3]);
    clean.step(LRS[3]).unwrap();
    assert_eq!(
        worst(&copies(&params), &copies(&params_b)),
        0.0,
        "{what}: the next step is the run's that never saw the flagged one"
    );
}

#[test]
fn a_step_flagged_non_finite_changes_neither_parameters_nor_momentum_nor_adam_state() {
    let _turn = facekit_testkit::rng_turn();
    flagged_step_applies_nothing(&|vs| Box::new(Sgd::new(vs, 0.9, 5e-4)), "SGD");
    flagged_step_applies_nothing(&|vs| Box::new(AdamW::new(vs, (0.9, 0.999), 1e-8, 0.05)), "AdamW");
}

#[test]
fn an_optimiser_state_saved_by_the_single_tensor_optimisers_resumes() {
    let _turn = facekit_testkit::rng_turn();
    let dir = tempfile::tempdir().unwrap();
    let hyper = (0.9, 0.999, 1e-8, 0.05);
    // Three steps of the previous implementation, its state written under its names.
    let (_, params, grads) = fixture();
    let reference = copies(&params);
    let (mut sgd, mut adam) =
        (SingleSgd { bufs: vec![None, None, None] }, SingleAdamW { state: vec![None, None, None] });
    let sgd_ref = copies(&params);
    for (k, gs) in grads.iter().enumerate().take(3) {
        sgd.step(&sgd_ref, gs, LRS[k], 0.9, 5e-4);
        adam.step(&reference, gs, LRS[k], hyper);
    }
    let names = SHAPES.map(|(n, _)| n);
    let sgd_file = dir.path().join("sgd.safetensors");
    let sgd_saved: Vec<(&str, &Tensor)> = names.iter().zip(&sgd.bufs).map(|(n, b)| (*n, b.as_ref().unwrap())).collect();
    Tensor::write_safetensors(&sgd_saved, &sgd_file).unwrap();
    let mut adam_saved: Vec<(String, Tensor)> = Vec::new();
    for (n, st) in names.iter().zip(&adam.state) {
        let (m, v, t) = st.as_ref().unwrap();
        adam_saved.push((format!("exp_avg.{n}"), m.shallow_clone()));
        adam_saved.push((format!("exp_avg_sq.{n}"), v.shallow_clone()));
        adam_saved.push((format!("step.{n}"), Tensor::from_slice(&[*t as i64])));
    }
    let adam_file = dir.path().join("adamw.safetensors");
    let named: Vec<(&str, &Tensor)> = adam_saved.iter().map(|(n, t)| (n.as_str(), t)).collect();
    Tensor::write_safetensors(&named, &adam_file).unwrap();
    // The fused optimisers load them and go on as the previous implementation goes on.
    for (file, is_adam) in [(&sgd_file, false), (&adam_file, true)] {
        let vs = VarStore::new(CPU);
        let start = if is_adam { &reference } else { &sgd_ref };
        let resumed: Vec<Tensor> = names
            .iter()
            .zip(start)
            .map(|(n, t)| {
                let mut p = vs.root().zeros(n, &t.size());
                tch::no_grad(|| p.copy_(t));
                p
            })
            .collect();
        let mut opt: Box<dyn Optimizer> = if is_adam {
            Box::new(AdamW::new(&vs, (hyper.0, hyper.1), hyper.2, hyper.3))
        } else {
            Box::new(Sgd::new(&vs, 0.9, 5e-4))
        };
        opt.load(file).unwrap();
        for (k, gs) in grads.iter().enumerate().skip(3) {
            set_grads(&resumed, gs);
            opt.step(LRS[k]).unwrap();
            if is_adam {
                adam.step(&reference, gs, LRS[k], hyper);
            } else {
                sgd.step(&sgd_ref, gs, LRS[k], 0.9, 5e-4);
            }
        }
        let d = worst(&copies(&resumed), start);
        assert!(d <= 1e-6, "{}: resumed from the earlier layout, relative difference {d:e}", file.display());
    }
}
