//! DDP through PyTorch's Reducer ([`facekit_train::dist::Ddp`]) on two Gloo ranks: gradients are
//! the mean of the ranks' own, parameters stay identical and follow a one-rank run on the
//! concatenated batch, and skipping synchronisation accumulates gradients locally.

use super::dist_ranks;
use facekit_train::dist::Ddp;
use facekit_train::trainer::optim::{trainable_by_name, Optimizer, Sgd};
use facekit_train::trainer::Replicas;
use tch::nn::{self, Module, VarStore};
use tch::{Device, Kind, Tensor};

const STEPS: usize = 3;

/// A network without batch norm (so that per-rank batches give exactly the full batch's
/// gradient), in f64 so that "equal" can be tight; `seed` draws its weights.
fn net(seed: i64) -> (VarStore, impl Module) {
    // The ranks are threads sharing libtorch's one generator: seeding and drawing take turns.
    static DRAW: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = DRAW.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(seed);
    let mut vs = VarStore::new(Device::Cpu);
    let root = vs.root();
    let m = nn::seq().add(nn::linear(&root / "fc1", 6, 5, Default::default())).add_fn(|x| x.tanh()).add(nn::linear(
        &root / "fc2",
        5,
        3,
        Default::default(),
    ));
    vs.double();
    (vs, m)
}

/// Rank `r`'s batch at step `s`: 4 rows, deterministic.
fn batch(r: usize, s: usize) -> (Tensor, Tensor) {
    let x = Tensor::arange(24, (Kind::Double, Device::Cpu)).reshape([4, 6]).sin() * (1.0 + r as f64 + 0.3 * s as f64);
    let y = Tensor::from_slice(&[(r + s) as i64 % 3, 1, 2, (r * 2 + s) as i64 % 3]);
    (x, y)
}

fn loss(m: &impl Module, x: &Tensor, y: &Tensor) -> Tensor {
    m.forward(x).cross_entropy_for_logits(y)
}

fn flat(vs: &VarStore, grad: bool) -> Vec<f64> {
    trainable_by_name(vs)
        .iter()
        .flat_map(|(_, t)| Vec::<f64>::try_from(if grad { t.grad() } else { t.detach() }.flatten(0, -1)).unwrap())
        .collect()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

#[test]
fn ddp_averages_gradients_and_keeps_ranks_equal_to_one_rank_on_the_whole_batch() {
    let _turn = facekit_testkit::rng_turn();
    // The one-rank reference: the same initial weights (rank 0's seed), both ranks' rows at once.
    let (ref_vs, ref_net) = net(100);
    let mut ref_opt = Sgd::new(&ref_vs, 0.9, 1e-3);
    let mut ref_grads = Vec::new();
    for s in 0..STEPS {
        let (x0, y0) = batch(0, s);
        let (x1, y1) = batch(1, s);
        ref_opt.zero_grad();
        loss(&ref_net, &Tensor::cat(&[x0, x1], 0), &Tensor::cat(&[y0, y1], 0)).backward();
        ref_grads.push(flat(&ref_vs, true));
        ref_opt.step(0.1).unwrap();
    }
    let reference = flat(&ref_vs, false);

    let ranks = dist_ranks::run(2, |group| {
        let rank = group.rank();
        // Different seeds: attach() must make rank 1's weights rank 0's.
        let (vs, m) = net(100 + rank as i64);
        let mut ddp = Ddp::new(group, Device::Cpu);
        ddp.attach(&vs, &[], false).unwrap();
        let start = flat(&vs, false);
        let mut opt = Sgd::new(&vs, 0.9, 1e-3);
        let mut grads = Vec::new();
        for s in 0..STEPS {
            let (x, y) = batch(rank, s);
            opt.zero_grad();
            ddp.before_forward(true).unwrap();
            let l = loss(&m, &x, &y);
            ddp.before_backward(&[&l], true).unwrap();
            l.f_backward().unwrap();
            ddp.reduce_gradients(&vs).unwrap();
            grads.push(flat(&vs, true));
            opt.step(0.1).unwrap();
        }
        (start, grads, flat(&vs, false))
    });
    assert_eq!(ranks[0].0, ranks[1].0, "rank 0's initial weights on both ranks");
    #[expect(
        clippy::needless_range_loop,
        reason = "three per-step vectors side by side; a zip of three would read worse and stop silently at the shortest"
    )]
    for s in 0..STEPS {
        assert_eq!(ranks[0].1[s], ranks[1].1[s], "step {s}: the same averaged gradients on both ranks");
        let d = max_diff(&ranks[0].1[s], &ref_grads[s]);
        assert!(d < 1e-12, "step {s}: DDP's gradient is the whole batch's (difference {d:e})");
    }
    assert_eq!(ranks[0].2, ranks[1].2, "identical parameters after {STEPS} steps");
    let d = max_diff(&ranks[0].2, &reference);
    assert!(d < 1e-12, "parameters follow the one-rank run on the concatenated batch (difference {d:e})");
}

#[test]
fn micro_batches_without_sync_accumulate_locally_and_the_synced_one_averages_the_sum() {
    let _turn = facekit_testkit::rng_turn();
    let (ref_vs, ref_net) = net(7);
    // Sum over two micro-batches (s = 0, 1) of each rank's mean loss, averaged over the ranks.
    let mut total = Tensor::zeros([], (Kind::Double, Device::Cpu));
    for s in 0..2 {
        for r in 0..2 {
            let (x, y) = batch(r, s);
            total = total + loss(&ref_net, &x, &y) / 2.0;
        }
    }
    total.backward();
    let reference = flat(&ref_vs, true);

    let ranks = dist_ranks::run(2, |group| {
        let rank = group.rank();
        let (vs, m) = net(7);
        let mut ddp = Ddp::new(group, Device::Cpu);
        ddp.attach(&vs, &[], false).unwrap();
        let mut first = Vec::new();
        for s in 0..2 {
            let sync = s == 1;
            let (x, y) = batch(rank, s);
            ddp.before_forward(sync).unwrap();
            let l = loss(&m, &x, &y);
            ddp.before_backward(&[&l], sync).unwrap();
            l.f_backward().unwrap();
            if s == 0 {
                first = flat(&vs, true);
            }
        }
        // This rank's own first micro-batch gradient, to show nothing was reduced then.
        let (own_vs, own_net) = net(7);
        let (x, y) = batch(rank, 0);
        loss(&own_net, &x, &y).backward();
        (first, flat(&own_vs, true), flat(&vs, true))
    });
    for (rank, (first, own, _)) in ranks.iter().enumerate() {
        assert!(max_diff(first, own) < 1e-14, "rank {rank}: the unsynchronised micro-batch kept its own gradient");
    }
    assert_eq!(ranks[0].2, ranks[1].2);
    let d = max_diff(&ranks[0].2, &reference);
    assert!(d < 1e-12, "after the synchronised micro-batch: the ranks' mean of the accumulated sum (difference {d:e})");
}

#[test]
fn ranks_whose_parameters_differ_in_size_stop_naming_the_variable_instead_of_aborting() {
    let _turn = facekit_testkit::rng_turn();
    let errors = dist_ranks::run(2, |group| {
        let rank = group.rank();
        // Rank 1's network has a wider hidden layer: fc1 and fc2 differ in size.
        let vs = VarStore::new(Device::Cpu);
        let hidden = 5 + rank as i64;
        let _fc1 = nn::linear(&vs.root() / "fc1", 6, hidden, Default::default());
        let _fc2 = nn::linear(&vs.root() / "fc2", hidden, 3, Default::default());
        let mut ddp = Ddp::new(group, Device::Cpu);
        format!("{:#}", ddp.attach(&vs, &[], false).expect_err("attached networks of different sizes"))
    });
    assert_eq!(errors[0], errors[1], "every rank stops with the same message");
    let e = &errors[0];
    assert!(
        e.contains("rank 1 of 2 differs from rank 0 in variable fc1.bias ([5] Float on rank 0, [6] Float on rank 1)"),
        "{e}"
    );
    assert!(e.contains("variable fc2.weight ([3, 5] Float on rank 0, [3, 6] Float on rank 1)"), "{e}");
}
