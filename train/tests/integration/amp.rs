//! Mixed precision and memory format pieces of the trainer, on the CPU: the autocast guard, the
//! fp16 loss scaler, channels-last weights and inputs, and checkpoints of channels-last runs.
//! (End-to-end runs in each precision are in tests/train_loop.rs.)

use facekit_train::loss::{BatchLabels, FaceLoss};
use facekit_train::model::{Arch, FaceNet, NetConfig, Task};
use facekit_train::run::numerics::Numerics;
use facekit_train::run::paths::{RunPaths, LAST, MODEL_FILE};
use facekit_train::trainer::amp::{self, AmpDtype, Autocast};
use facekit_train::trainer::checkpoint;
use facekit_train::trainer::config::{MemoryFormatKind, PrecisionKind};
use facekit_train::trainer::layout::{is_channels_last, to_channels_last, MemoryFormat};
use facekit_train::trainer::optim::{Optimizer, Sgd};
use facekit_train::trainer::scaler::{GradScaler, ScalerConfig, ScalerState};
use facekit_train::trainer::state::TrainState;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

const CPU: Device = Device::Cpu;

fn conv_out(x: &Tensor, w: &Tensor) -> Kind {
    x.conv2d(w, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1).kind()
}

#[test]
fn autocast_guard_switches_the_compute_dtype_and_nesting_restores_it() {
    let _turn = facekit_testkit::rng_turn();
    let x = Tensor::randn([2, 3, 8, 8], (Kind::Float, CPU));
    let w = Tensor::randn([4, 3, 3, 3], (Kind::Float, CPU));
    let m = Tensor::randn([5, 5], (Kind::Float, CPU));
    let before = amp::state(CPU).unwrap();
    assert!(!before.0, "autocast is off outside any guard");
    assert_eq!(conv_out(&x, &w), Kind::Float);
    {
        let _bf16 = Autocast::new(CPU, Some(AmpDtype::Bf16)).unwrap();
        assert_eq!(amp::state(CPU).unwrap(), (true, Kind::BFloat16));
        assert_eq!(conv_out(&x, &w), Kind::BFloat16);
        assert_eq!(m.matmul(&m).kind(), Kind::BFloat16);
        // Autocast state is per thread: another thread computes in fp32 meanwhile.
        let (x2, w2) = (x.copy(), w.copy());
        let other = std::thread::spawn(move || conv_out(&x2, &w2)).join().unwrap();
        assert_eq!(other, Kind::Float);
        {
            let _fp16 = Autocast::new(CPU, Some(AmpDtype::Fp16)).unwrap();
            assert_eq!(conv_out(&x, &w), Kind::Half);
            {
                let _off = Autocast::new(CPU, None).unwrap();
                assert_eq!(conv_out(&x, &w), Kind::Float);
                assert!(!amp::state(CPU).unwrap().0);
            }
            assert_eq!(conv_out(&x, &w), Kind::Half, "leaving the disabled region restores fp16");
        }
        assert_eq!(conv_out(&x, &w), Kind::BFloat16, "leaving the fp16 region restores bf16");
    }
    assert_eq!(conv_out(&x, &w), Kind::Float);
    assert_eq!(amp::state(CPU).unwrap(), before, "enabled flag and dtype as before the outer guard");
}

#[test]
fn autocast_keeps_fp32_weights_and_gives_them_fp32_gradients() {
    let _turn = facekit_testkit::rng_turn();
    let vs = nn::VarStore::new(CPU);
    let lin = nn::linear(vs.root() / "l", 8, 4, Default::default());
    let x = Tensor::randn([3, 8], (Kind::Float, CPU));
    let y = {
        let _g = Autocast::new(CPU, Some(AmpDtype::Fp16)).unwrap();
        lin.forward(&x)
    };
    assert_eq!(y.kind(), Kind::Half);
    // Backward outside the guard, as the trainer does.
    y.to_kind(Kind::Float).square().sum(Kind::Float).backward();
    assert_eq!(lin.ws.kind(), Kind::Float);
    assert_eq!(lin.ws.grad().kind(), Kind::Float);
}

#[test]
fn mixed_forward_runs_the_backbone_low_and_returns_fp32_heads() {
    let _turn = facekit_testkit::rng_turn();
    tch::manual_seed(11);
    let cfg = NetConfig {
        arch: Arch::Tiny,
        image_size: 48,
        task: Task::Multi,
        num_classes: 4,
        dropout: 0.0,
        ..NetConfig::default()
    };
    let vs = nn::VarStore::new(CPU);
    let net = FaceNet::new(&vs.root(), &cfg).unwrap();
    let xs = Tensor::rand([4, 3, 48, 48], (Kind::Float, CPU)) * 2.0 - 1.0;
    let fp32 = Numerics::new(CPU, PrecisionKind::Fp32, MemoryFormatKind::Contiguous);
    let reference = tch::no_grad(|| fp32.forward(&net, &xs, false)).unwrap();
    for precision in [PrecisionKind::Bf16, PrecisionKind::Fp16] {
        let n = Numerics::new(CPU, precision, MemoryFormatKind::ChannelsLast);
        let out = tch::no_grad(|| n.forward(&net, &n.memory_format.apply(&xs), false)).unwrap();
        assert_eq!(out.embedding.kind(), Kind::Float);
        assert_eq!(out.gender_logits.as_ref().unwrap().kind(), Kind::Float);
        assert_eq!(out.age_logits.as_ref().unwrap().kind(), Kind::Float);
        let diff = (&out.embedding - &reference.embedding).abs().max().double_value(&[]);
        let scale = reference.embedding.abs().max().double_value(&[]);
        // Not equal (the backbone really ran in 16 bits) yet close (8 or 11 mantissa bits).
        assert!(diff > 0.0, "{precision:?}: identical to fp32, autocast did not act");
        assert!(diff < 0.1 * scale, "{precision:?}: embedding off by {diff} (scale {scale})");
    }
    assert!(!amp::state(CPU).unwrap().0, "forward leaves autocast off");
}

#[test]
fn auto_resolves_per_device() {
    let _turn = facekit_testkit::rng_turn();
    assert_eq!(PrecisionKind::Auto.resolve(true), PrecisionKind::Fp16);
    assert_eq!(PrecisionKind::Auto.resolve(false), PrecisionKind::Fp32);
    assert_eq!(PrecisionKind::Bf16.resolve(true), PrecisionKind::Bf16);
    assert_eq!(MemoryFormatKind::Auto.resolve(true), MemoryFormatKind::ChannelsLast);
    assert_eq!(MemoryFormatKind::Auto.resolve(false), MemoryFormatKind::Contiguous);
    let n = Numerics::new(CPU, PrecisionKind::Auto, MemoryFormatKind::Auto);
    assert_eq!((n.amp, n.memory_format), (None, MemoryFormat::Contiguous));
    assert!(Numerics::new(CPU, PrecisionKind::Fp16, MemoryFormatKind::Auto).needs_loss_scaling());
    assert!(!Numerics::new(CPU, PrecisionKind::Bf16, MemoryFormatKind::Auto).needs_loss_scaling());
}

/// A linear layer, its SGD (no momentum history yet) and a loss on fixed data.
fn linear_setup() -> (nn::VarStore, nn::Linear, Sgd, Tensor, Tensor) {
    tch::manual_seed(2);
    let vs = nn::VarStore::new(CPU);
    let lin = nn::linear(vs.root() / "l", 6, 3, Default::default());
    let opt = Sgd::new(&vs, 0.9, 5e-4);
    let x = Tensor::randn([5, 6], (Kind::Float, CPU));
    let y = Tensor::randn([5, 3], (Kind::Float, CPU));
    (vs, lin, opt, x, y)
}

fn loss(lin: &nn::Linear, x: &Tensor, y: &Tensor) -> Tensor {
    (lin.forward(x) - y).square().mean(Kind::Float)
}

fn weights(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(n, t)| (n, t.detach().copy())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn scaler_skips_the_step_and_halves_the_scale_when_a_gradient_is_inf() {
    let _turn = facekit_testkit::rng_turn();
    let (vs, lin, mut opt, x, y) = linear_setup();
    let mut scaler = GradScaler::new(ScalerConfig::default(), CPU);
    let before = weights(&vs);
    opt.zero_grad();
    scaler.scale(&loss(&lin, &x, &y)).backward();
    let _ = lin.ws.grad().get(0).get(0).fill_(f64::INFINITY);
    assert!(!scaler.step(&mut opt, 0.1).unwrap(), "the step must be skipped");
    scaler.update();
    for ((name, a), (_, b)) in before.iter().zip(weights(&vs)) {
        assert!(a.equal(&b), "{name} changed in a skipped step");
    }
    assert!(
        opt.momentum_buffers().iter().all(|(_, m)| m.abs().sum(Kind::Double).double_value(&[]) == 0.0),
        "a skipped step leaves no momentum"
    );
    assert_eq!(scaler.state(), ScalerState { scale: 32768.0, growth_tracker: 0, skipped_steps: 1 });

    // NaN counts as well.
    opt.zero_grad();
    scaler.scale(&loss(&lin, &x, &y)).backward();
    let _ = lin.bs.as_ref().unwrap().grad().get(1).fill_(f64::NAN);
    assert!(!scaler.step(&mut opt, 0.1).unwrap());
    scaler.update();
    assert_eq!(scaler.state(), ScalerState { scale: 16384.0, growth_tracker: 0, skipped_steps: 2 });
}

#[test]
fn scaler_unscales_exactly_and_grows_after_the_interval() {
    let _turn = facekit_testkit::rng_turn();
    let config = ScalerConfig { init_scale: 1024.0, growth_interval: 3, ..ScalerConfig::default() };
    let (vs_a, lin_a, mut opt_a, x, y) = linear_setup();
    let (vs_b, lin_b, mut opt_b, _, _) = linear_setup();
    let mut scaler = GradScaler::new(config, CPU);
    for step in 1..=4 {
        opt_a.zero_grad();
        loss(&lin_a, &x, &y).backward();
        let reference: Vec<Tensor> = opt_a.grads().iter().map(|g| g.copy()).collect();
        opt_a.step(0.05).unwrap();

        opt_b.zero_grad();
        scaler.scale(&loss(&lin_b, &x, &y)).backward();
        assert!(scaler.step(&mut opt_b, 0.05).unwrap());
        // Scaling by a power of two and back is exact in fp32 (no overflow or underflow here).
        for (g, r) in opt_b.grads().iter().zip(&reference) {
            assert!(g.equal(r), "step {step}: unscaled gradient differs from the fp32 one");
        }
        scaler.update();
        let expected = if step < 3 { 1024.0 } else { 2048.0 };
        assert_eq!(scaler.scale_value(), expected, "scale after {step} clean steps (interval 3)");
    }
    for ((name, a), (_, b)) in weights(&vs_a).iter().zip(weights(&vs_b)) {
        assert!(a.equal(&b), "{name}: scaled training diverged from plain SGD");
    }
    assert_eq!(scaler.state(), ScalerState { scale: 2048.0, growth_tracker: 1, skipped_steps: 0 });
}

#[test]
fn scaler_state_round_trips_through_a_checkpoint() {
    let _turn = facekit_testkit::rng_turn();
    let (vs, lin, mut opt, x, y) = linear_setup();
    let mut scaler = GradScaler::new(ScalerConfig { growth_interval: 2, ..ScalerConfig::default() }, CPU);
    for inf in [false, true, false] {
        opt.zero_grad();
        scaler.scale(&loss(&lin, &x, &y)).backward();
        if inf {
            let _ = lin.ws.grad().get(0).get(0).fill_(f64::INFINITY);
        }
        scaler.step(&mut opt, 0.01).unwrap();
        scaler.update();
    }
    let saved = scaler.state();
    assert_eq!(saved, ScalerState { scale: 32768.0, growth_tracker: 1, skipped_steps: 1 });
    let run = tempfile::tempdir().unwrap();
    let state = TrainState {
        step: 3,
        epoch: 0,
        batch_in_epoch: 3,
        lr: 0.01,
        schedule: serde_json::Value::Null,
        seed: 1,
        best: None,
        images_seen: 15,
        skipped_corrupt: 0,
        train_seconds: 0.0,
        scaler: Some(saved.clone()),
    };
    let dir = checkpoint::write(&RunPaths::new(run.path()), LAST, &vs, &opt, &state, None, true).unwrap();
    let back = TrainState::read(&dir).unwrap();
    assert_eq!(back, state);
    let resumed = GradScaler::from_state(ScalerConfig::default(), back.scaler.as_ref().unwrap(), CPU);
    assert_eq!(resumed.state(), saved);
}

fn tiny_multi() -> NetConfig {
    NetConfig {
        arch: Arch::Tiny,
        image_size: 48,
        task: Task::Multi,
        num_classes: 4,
        dropout: 0.0,
        ..NetConfig::default()
    }
}

fn labels() -> BatchLabels {
    BatchLabels {
        class: Tensor::from_slice(&[0i64, 1, 2, 3, 1, 0]),
        gender: Tensor::from_slice(&[0i64, 1, 1, 0, 1, 0]),
        age: Tensor::from_slice(&[20i64, 35, 50, 8, 70, 41]),
    }
}

/// Two copies of the same tiny network, the second converted to channels-last.
fn twin_nets() -> [(nn::VarStore, FaceNet, FaceLoss); 2] {
    tch::manual_seed(7);
    let cfg = tiny_multi();
    let make = || {
        let vs = nn::VarStore::new(CPU);
        let net = FaceNet::new(&vs.root(), &cfg).unwrap();
        let loss = FaceLoss::new(&vs.root(), &cfg, &facekit_train::loss::HeadConfig::default()).unwrap();
        (vs, net, loss)
    };
    let a = make();
    let mut b = make();
    b.0.copy(&a.0).unwrap();
    MemoryFormat::ChannelsLast.apply_to_vars(&b.0);
    [a, b]
}

fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    let d = (a - b).abs().max().double_value(&[]);
    d / a.abs().max().double_value(&[]).max(1e-12)
}

/// Within 1e-3 of the largest element (1e-9 in f64), plus an absolute floor for tensors that are
/// zero up to rounding (the gradient of a bias followed by batch norm).
fn assert_close(name: &str, what: &str, a: &Tensor, b: &Tensor) {
    let diff = (a - b).abs().max().double_value(&[]);
    let bound = if a.kind() == Kind::Double {
        1e-9 * a.abs().max().double_value(&[]) + 1e-12
    } else {
        1e-3 * a.abs().max().double_value(&[]) + 1e-6
    };
    assert!(diff <= bound, "{name}: {what} differs by {diff:e} (bound {bound:e})");
}

#[test]
fn channels_last_forward_backward_and_momentum_match_contiguous() {
    let _turn = facekit_testkit::rng_turn();
    let [(mut vs_a, net_a, loss_a), (mut vs_b, net_b, loss_b)] = twin_nets();
    // In f64, so that the two layouts must agree to rounding of 1e-9 and not to fp32's: with
    // BN starting at scale 1, fp32 rounding in the two kernels' different summation orders
    // reaches 1% in a few BN gradients of this tiny network, whereas f64 agrees to 1e-14.
    vs_a.set_kind(Kind::Double);
    vs_b.set_kind(Kind::Double);
    MemoryFormat::ChannelsLast.apply_to_vars(&vs_b);
    let stem = |vs: &nn::VarStore| vs.variables()["conv1.weight"].shallow_clone();
    assert!(!is_channels_last(&stem(&vs_a)), "the contiguous twin's 7x7 stem is NCHW");
    for (name, t) in vs_b.variables() {
        if t.dim() == 4 {
            assert!(is_channels_last(&t), "{name} has strides {:?}", t.stride());
            assert!(t.requires_grad(), "{name} lost requires_grad in the conversion");
        }
    }
    let mut opt_a = Sgd::new(&vs_a, 0.9, 5e-4);
    let mut opt_b = Sgd::new(&vs_b, 0.9, 5e-4);
    let xs = (Tensor::rand([6, 3, 48, 48], (Kind::Float, CPU)) * 2.0 - 1.0).to_kind(Kind::Double);
    let xs_cl = to_channels_last(&xs);
    assert!(is_channels_last(&xs_cl) && xs.is_contiguous() && !xs_cl.is_contiguous());
    let out_a = net_a.forward(&xs, true);
    let out_b = net_b.forward(&xs_cl, true);
    assert!(rel_diff(&out_a.embedding, &out_b.embedding) < 1e-4, "embeddings differ");
    let la = loss_a.losses(&out_a, &labels()).total;
    let lb = loss_b.losses(&out_b, &labels()).total;
    assert!((la.double_value(&[]) - lb.double_value(&[])).abs() < 1e-4 * la.double_value(&[]).abs());
    opt_a.zero_grad();
    opt_b.zero_grad();
    la.backward();
    lb.backward();
    let vars_b = vs_b.variables();
    for (name, a) in vs_a.variables().into_iter().filter(|(_, t)| t.requires_grad()) {
        assert_close(&name, "gradient", &a.grad(), &vars_b[&name].grad());
    }
    assert!(is_channels_last(&stem(&vs_b).grad()), "the gradient follows the weight's layout");
    opt_a.step(0.01).unwrap();
    opt_b.step(0.01).unwrap();
    for ((name, ma), (_, mb)) in opt_a.momentum_buffers().iter().zip(opt_b.momentum_buffers()) {
        assert_close(name, "momentum", ma, mb);
        if mb.dim() == 4 {
            assert!(is_channels_last(mb), "{name}: momentum buffer lost the channels-last layout");
        }
    }
    assert!(is_channels_last(&stem(&vs_b)), "the stepped weight keeps its layout");
}

#[test]
fn channels_last_checkpoint_equals_the_contiguous_one_and_loads_anywhere() {
    let _turn = facekit_testkit::rng_turn();
    let [(vs_a, _, _), (vs_b, net_b, loss_b)] = twin_nets();
    let run_a = tempfile::tempdir().unwrap();
    let run_b = tempfile::tempdir().unwrap();
    let opt_a = Sgd::new(&vs_a, 0.9, 5e-4);
    let mut opt_b = Sgd::new(&vs_b, 0.9, 5e-4);
    let state = TrainState {
        step: 0,
        epoch: 0,
        batch_in_epoch: 0,
        lr: 0.01,
        schedule: serde_json::Value::Null,
        seed: 1,
        best: None,
        images_seen: 0,
        skipped_corrupt: 0,
        train_seconds: 0.0,
        scaler: None,
    };
    let da = checkpoint::write(&RunPaths::new(run_a.path()), LAST, &vs_a, &opt_a, &state, None, true).unwrap();
    let db = checkpoint::write(&RunPaths::new(run_b.path()), LAST, &vs_b, &opt_b, &state, None, true).unwrap();
    let bytes = |d: &std::path::Path| std::fs::read(d.join(MODEL_FILE)).unwrap();
    assert!(bytes(&da) == bytes(&db), "same weights, different bytes: the layout leaked into the file");

    // After a step, the file of the channels-last run holds its weights and momentum in NCHW
    // order: a contiguous network loading it sees exactly the same values.
    let xs = to_channels_last(&(Tensor::rand([6, 3, 48, 48], (Kind::Float, CPU)) * 2.0 - 1.0));
    opt_b.zero_grad();
    loss_b.losses(&net_b.forward(&xs, true), &labels()).total.backward();
    opt_b.step(0.01).unwrap();
    let db = checkpoint::write(&RunPaths::new(run_b.path()), LAST, &vs_b, &opt_b, &state, None, true).unwrap();
    let (mut vs_c, net_c, _) = {
        let vs = nn::VarStore::new(CPU);
        let net = FaceNet::new(&vs.root(), &tiny_multi()).unwrap();
        let loss = FaceLoss::new(&vs.root(), &tiny_multi(), &facekit_train::loss::HeadConfig::default()).unwrap();
        (vs, net, loss)
    };
    let mut opt_c = Sgd::new(&vs_c, 0.9, 5e-4);
    checkpoint::load(&db, &mut vs_c, &mut opt_c, None).unwrap();
    let vars_c = vs_c.variables();
    for (name, t) in vs_b.variables() {
        assert!(vars_c[&name].equal(&t), "{name}: loaded value differs from the channels-last original");
        if t.dim() == 4 && t.size()[2] > 1 {
            assert!(!is_channels_last(&vars_c[&name]), "{name}: the contiguous net stays contiguous");
        }
    }
    for ((name, mb), (_, mc)) in opt_b.momentum_buffers().iter().zip(opt_c.momentum_buffers()) {
        assert!(mb.equal(mc), "{name}: momentum read back differs");
    }
    // Resuming into a channels-last network gives channels-last momentum buffers again.
    let vs_d = nn::VarStore::new(CPU);
    FaceNet::new(&vs_d.root(), &tiny_multi()).unwrap();
    FaceLoss::new(&vs_d.root(), &tiny_multi(), &facekit_train::loss::HeadConfig::default()).unwrap();
    MemoryFormat::ChannelsLast.apply_to_vars(&vs_d);
    let mut vs_d = vs_d;
    let mut opt_d = Sgd::new(&vs_d, 0.9, 5e-4);
    checkpoint::load(&db, &mut vs_d, &mut opt_d, None).unwrap();
    for ((name, mb), (_, md)) in opt_b.momentum_buffers().iter().zip(opt_d.momentum_buffers()) {
        assert!(mb.equal(md), "{name}: momentum read back differs");
        if md.dim() == 4 {
            assert!(is_channels_last(md), "{name}: loaded momentum buffer is not channels-last");
        }
    }
    let e_b = tch::no_grad(|| net_b.embed(&xs, false));
    let e_c = tch::no_grad(|| net_c.embed(&xs.contiguous(), false));
    assert!(rel_diff(&e_b, &e_c) < 1e-4, "the loaded network computes something else");
}
