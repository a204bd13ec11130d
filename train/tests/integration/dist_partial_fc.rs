//! Partial FC on two (and three) Gloo ranks against the single-process ArcFace head given the
//! concatenated batch: the loss, the gradients of the embeddings and of each rank's centres,
//! sampling, uneven shards, the sharded argmax and masked labels.

use super::dist_ranks;
use facekit_train::loss::partial_fc::sampled_count;
use facekit_train::loss::{
    gather_rows, head_memory_bytes, shard_range, take_rows, ArcFace, Margin, PartialFc, PartialFcConfig,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::rc::Rc;
use std::sync::Mutex;
use tch::nn;
use tch::{Device, Kind, Tensor};

const D: i64 = 6;
/// A scale at which no row of random data has a target probability below the sharded
/// cross-entropy's floor of 1e−30 (it caps a row's loss at 69.08, as partial_fc_v2 does, where
/// ArcFace's loss keeps growing): logits span at most (2 + m·sin m)·16 < 69.
const S: f64 = 16.0;

fn margins() -> [Margin; 3] {
    [Margin::arcface(0.5), Margin::Cosface { m: 0.35 }, Margin::Combined { m1: 1.0, m2: 0.3, m3: 0.2 }]
}

fn config(num_classes: i64, margin: Margin, sample_rate: f64) -> PartialFcConfig {
    PartialFcConfig { num_classes, embedding_size: D, s: S, margin, sample_rate, seed: 5 }
}

/// Values in [−1, 1) from a fixed seed, independent of libtorch's generator (the ranks are
/// threads of one process and would race for it).
fn values(seed: u64, n: i64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn matrix(v: &[f32]) -> Tensor {
    Tensor::from_slice(v).view([-1, D])
}

fn flat(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(1e-3f32, |m, x| m.max(x.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-4 * scale, "{what}[{i}]: {g} vs {w} (scale {scale})");
    }
}

fn assert_loss(got: f64, want: f64, what: &str) {
    assert!(got.is_finite() && (got - want).abs() <= 1e-5 * want.abs().max(1.0), "{what}: {got} vs {want}");
}

/// What one rank saw of a step.
struct RankStep {
    loss: f64,
    emb_grad: Vec<f32>,
    weight_grad: Vec<f32>,
    start: i64,
    /// Global class ids of the centres it scored (all of its shard at sample rate 1).
    scored: Vec<i64>,
}

/// One Partial FC step at `step` on `world` ranks, each given its rows of `emb` and `labels`.
fn pfc_step(
    world: usize,
    config: PartialFcConfig,
    full: &[f32],
    emb: &[f32],
    labels: &[i64],
    step: u64,
) -> Vec<RankStep> {
    let (full, emb, labels) = (full.to_vec(), emb.to_vec(), labels.to_vec());
    dist_ranks::run(world, move |group| {
        let rank = group.rank();
        let b = labels.len() / world;
        let vs = nn::VarStore::new(Device::Cpu);
        let pfc = PartialFc::from_centres(&vs.root(), Rc::new(group), config, &matrix(&full)).unwrap();
        let e = matrix(&emb[rank * b * D as usize..(rank + 1) * b * D as usize]).set_requires_grad(true);
        let l = Tensor::from_slice(&labels[rank * b..(rank + 1) * b]);
        let loss = pfc.loss_at(&e, &l, step).unwrap();
        loss.backward();
        // The centres the loss scored: the selection of the global batch's labelled rows.
        let known: Vec<i64> = labels.iter().copied().filter(|&c| c >= 0).collect();
        let selection = pfc.select(&Tensor::from_slice(&known), step).unwrap();
        let scored = match selection.index {
            Some(index) => Vec::<i64>::try_from(&index).unwrap().iter().map(|r| r + pfc.start()).collect(),
            None => (pfc.start()..pfc.start() + pfc.num_local()).collect(),
        };
        RankStep {
            loss: loss.double_value(&[]),
            emb_grad: flat(&e.grad()),
            weight_grad: flat(&pfc.weight.grad()),
            start: pfc.start(),
            scored,
        }
    })
}

/// The single-process ArcFace head on the whole batch, with the centres `rows` of `full` (labels
/// become positions among them): its masked loss, the embeddings' and the centres' gradients.
fn reference(
    config: PartialFcConfig,
    full: &[f32],
    emb: &[f32],
    labels: &[i64],
    rows: &[i64],
) -> (f64, Vec<f32>, Vec<f32>) {
    let vs = nn::VarStore::new(Device::Cpu);
    let mut head = ArcFace::with_margin(&vs.root(), rows.len() as i64, D, config.s, config.margin);
    let centres = matrix(full).index_select(0, &Tensor::from_slice(rows));
    tch::no_grad(|| head.weight.copy_(&centres));
    let position: Vec<i64> =
        labels.iter().map(|&c| if c < 0 { -1 } else { rows.iter().position(|&r| r == c).unwrap() as i64 }).collect();
    let e = matrix(emb).set_requires_grad(true);
    let (loss, _) = head.loss(&e, &Tensor::from_slice(&position));
    loss.backward();
    (loss.double_value(&[]), flat(&e.grad()), flat(&head.weight.grad()))
}

/// Partial FC's step on `world` ranks equals the 1-rank head's restricted to the scored centres:
/// the same loss everywhere, each rank's embedding gradient world × the reference's (DDP then
/// averages it back), its centres' gradient the reference's on the scored rows and 0 elsewhere.
fn check_against_reference(
    world: usize,
    config: PartialFcConfig,
    labels: &[i64],
    step: u64,
    what: &str,
) -> Vec<RankStep> {
    let full = values(1, config.num_classes * D);
    let emb = values(2, labels.len() as i64 * D);
    check_with(world, config, &full, &emb, labels, step, what)
}

/// Embeddings near their class's centre (a trained network's), random where unlabelled: at
/// s = 64 their target probabilities stay far above the sharded cross-entropy's floor.
fn near_centres(full: &[f32], labels: &[i64]) -> Vec<f32> {
    let noise = values(6, labels.len() as i64 * D);
    let d = D as usize;
    labels
        .iter()
        .enumerate()
        .flat_map(|(row, &c)| (0..d).map(move |k| (row, c, k)))
        .map(
            |(row, c, k)| {
                if c < 0 {
                    noise[row * d + k]
                } else {
                    2.0 * full[c as usize * d + k] + 0.4 * noise[row * d + k]
                }
            },
        )
        .collect()
}

fn check_with(
    world: usize,
    config: PartialFcConfig,
    full: &[f32],
    emb: &[f32],
    labels: &[i64],
    step: u64,
    what: &str,
) -> Vec<RankStep> {
    let ranks = pfc_step(world, config, full, emb, labels, step);
    let union: Vec<i64> = ranks.iter().flat_map(|r| r.scored.clone()).collect();
    let (loss, emb_grad, weight_grad) = reference(config, full, emb, labels, &union);
    let rows_per_rank = emb_grad.len() / world;
    for (rank, r) in ranks.iter().enumerate() {
        assert_loss(r.loss, loss, &format!("{what}: rank {rank}'s loss"));
        let mine: Vec<f32> =
            emb_grad[rank * rows_per_rank..(rank + 1) * rows_per_rank].iter().map(|g| g * world as f32).collect();
        assert_close(&r.emb_grad, &mine, &format!("{what}: rank {rank}'s embedding gradient"));
        let mut want = vec![0.0f32; r.weight_grad.len()];
        for (k, class) in union.iter().enumerate() {
            let local = class - r.start;
            if (0..(r.weight_grad.len() as i64 / D)).contains(&local) {
                let (dst, src) = ((local * D) as usize, k * D as usize);
                want[dst..dst + D as usize].copy_from_slice(&weight_grad[src..src + D as usize]);
            }
        }
        assert_close(&r.weight_grad, &want, &format!("{what}: rank {rank}'s centre gradient"));
    }
    ranks
}

#[test]
fn dist_partial_fc_at_sample_rate_one_is_the_full_arcface_head_on_the_concatenated_batch() {
    let labels = [0, 7, 3, 9, 9, 1, 5, 4];
    for margin in margins() {
        let ranks = check_against_reference(2, config(10, margin, 1.0), &labels, 0, margin.kind().name());
        assert_eq!(ranks[0].scored, (0..5).collect::<Vec<_>>());
        assert_eq!(ranks[1].scored, (5..10).collect::<Vec<_>>());
    }
}

#[test]
fn dist_partial_fc_at_scale_64_is_the_full_arcface_head_for_embeddings_near_their_centres() {
    let labels = [0, 7, 3, 9, 9, 1, -1, 4];
    for margin in margins() {
        for rate in [1.0, 0.4] {
            let cfg = PartialFcConfig { s: 64.0, ..config(10, margin, rate) };
            let full = values(1, 10 * D);
            let emb = near_centres(&full, &labels);
            check_with(2, cfg, &full, &emb, &labels, 2, &format!("s = 64, {} at rate {rate}", margin.kind().name()));
        }
    }
}

#[test]
fn dist_partial_fc_with_uneven_shards_matches_the_full_head_on_two_and_three_ranks() {
    let labels = [6, 0, 3, 4, 4, 2];
    check_against_reference(2, config(7, Margin::arcface(0.5), 1.0), &labels, 0, "7 classes, 2 ranks");
    check_against_reference(3, config(7, Margin::arcface(0.5), 1.0), &labels, 0, "7 classes, 3 ranks");
}

#[test]
fn dist_partial_fc_gather_rows_and_take_rows_round_trip_uneven_shards() {
    for world in [2, 3] {
        let full = values(3, 7 * D);
        let expected = full.clone();
        let out = dist_ranks::run(world, move |group| {
            let (start, len) = shard_range(7, group.rank(), group.size());
            let mine = take_rows(&matrix(&full), start, len).unwrap();
            let gathered = gather_rows(&group, &mine, 7).unwrap();
            let back = take_rows(&gathered, start, len).unwrap();
            let wrong = gather_rows(&group, &mine.narrow(0, 0, len - 1), 7);
            (flat(&gathered), gathered.size(), flat(&back) == flat(&mine), len, wrong.is_err())
        });
        let lens: Vec<i64> = out.iter().map(|o| o.3).collect();
        assert_eq!(lens, if world == 2 { vec![4, 3] } else { vec![3, 2, 2] });
        for (rank, (gathered, size, round_trip, _, refused)) in out.into_iter().enumerate() {
            assert_eq!(size, vec![7, D], "world {world}, rank {rank}");
            assert_eq!(gathered, expected, "world {world}, rank {rank}: the full centres in class order");
            assert!(round_trip, "world {world}, rank {rank}: take_rows of the gathered matrix is the shard");
            assert!(refused, "world {world}, rank {rank}: a shard of the wrong size is refused");
        }
    }
}

#[test]
fn dist_partial_fc_sampling_keeps_every_positive_and_maps_labels_to_their_centres() {
    // Its ranks draw from libtorch's generator (to show the sampling does not): other tests' turn.
    let _turn = facekit_testkit::rng_turn();
    // 20 classes, 10 a rank; rank 0's positives {0, 1, 3}, rank 1's {12, 15, 19}; −1 unknown.
    let labels = [0, 3, -1, 12, 15, 19, 1, 12];
    for (rate, count) in [(0.5, 5), (0.1, 3), (0.3, 3)] {
        let cfg = config(20, Margin::arcface(0.5), rate);
        let global = labels.to_vec();
        let out = dist_ranks::run(2, move |group| {
            let vs = nn::VarStore::new(Device::Cpu);
            let pfc = PartialFc::from_centres(&vs.root(), Rc::new(group), cfg, &matrix(&values(1, 20 * D))).unwrap();
            let l = Tensor::from_slice(&global);
            let first = pfc.select(&l, 7).unwrap();
            let _ = Tensor::randn([100], (Kind::Float, Device::Cpu));
            let again = pfc.select(&l, 7).unwrap();
            let index = Vec::<i64>::try_from(first.index.as_ref().unwrap()).unwrap();
            let same = index == Vec::<i64>::try_from(again.index.as_ref().unwrap()).unwrap();
            let steps: Vec<Vec<i64>> = (0..8)
                .map(|s| Vec::<i64>::try_from(pfc.select(&l, s).unwrap().index.as_ref().unwrap()).unwrap())
                .collect();
            (pfc.start(), index, Vec::<i64>::try_from(&first.labels).unwrap(), same, steps)
        });
        for (rank, (start, index, mapped, same, steps)) in out.iter().enumerate() {
            let positives: Vec<i64> = if rank == 0 { vec![0, 1, 3] } else { vec![2, 5, 9] };
            assert_eq!(index.len(), count.max(3), "rate {rate}, rank {rank}: {index:?}");
            assert_eq!(index.len() as i64, sampled_count(10, rate).max(3));
            assert!(index.windows(2).all(|w| w[0] < w[1]) && index.iter().all(|&r| (0..10).contains(&r)), "{index:?}");
            assert!(
                positives.iter().all(|p| index.contains(p)),
                "rate {rate}, rank {rank}: positives kept in {index:?}"
            );
            for (row, (&class, &m)) in labels.iter().zip(mapped).enumerate() {
                if class >= *start && class < start + 10 {
                    assert!(
                        m >= 0 && start + index[m as usize] == class,
                        "rate {rate}, rank {rank}, row {row}: label {m} is not class {class}"
                    );
                } else {
                    assert_eq!(m, -1, "rate {rate}, rank {rank}, row {row}: class {class} is not here");
                }
            }
            assert!(same, "rate {rate}, rank {rank}: the same step draws the same negatives whatever libtorch drew");
            if count > 3 {
                assert!(
                    steps.iter().any(|s| s != &steps[0]),
                    "rate {rate}, rank {rank}: the negatives change with the step"
                );
            }
        }
        if count > 3 {
            assert_ne!(out[0].1.iter().filter(|r| ![0, 1, 3].contains(*r)).count(), 0);
        }
    }
}

#[test]
fn dist_partial_fc_sampled_loss_is_the_full_head_restricted_to_the_scored_centres() {
    let labels = [0, 3, 12, 12, 15, 19, 1, 30, 31, 8];
    for margin in margins() {
        for step in [0, 3] {
            let ranks = check_against_reference(
                2,
                config(40, margin, 0.25),
                &labels,
                step,
                &format!("{} step {step}", margin.kind().name()),
            );
            // Rank 0 has 7 positives for a quota of 5: all kept. Rank 1 has 2, plus 3 negatives.
            assert_eq!(ranks[0].scored, vec![0, 1, 3, 8, 12, 15, 19]);
            assert_eq!(ranks[1].scored.len(), 5, "{:?}", ranks[1].scored);
            assert!([30, 31].iter().all(|c| ranks[1].scored.contains(c)), "{:?}", ranks[1].scored);
        }
    }
}

#[test]
fn dist_partial_fc_masked_labels_give_the_one_rank_masked_arcface_loss() {
    let cases: [&[i64]; 3] = [
        &[0, -1, 3, 9, -1, -1, 5, 4],
        // One rank has no labelled row at all.
        &[-1, -1, -1, -1, 2, 8, 8, -1],
        &[-1, 6, -1, -1, -1, -1, -1, -1],
    ];
    for labels in cases {
        for rate in [1.0, 0.4] {
            let ranks = check_against_reference(
                2,
                config(10, Margin::arcface(0.5), rate),
                labels,
                1,
                &format!("{labels:?} at rate {rate}"),
            );
            for (rank, r) in ranks.iter().enumerate() {
                for (row, &class) in labels[rank * 4..rank * 4 + 4].iter().enumerate() {
                    if class < 0 {
                        assert!(
                            r.emb_grad[row * D as usize..(row + 1) * D as usize].iter().all(|&g| g == 0.0),
                            "{labels:?}: rank {rank}, unlabelled row {row}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn dist_partial_fc_a_batch_without_labels_contributes_zero_without_nan() {
    let full = values(1, 10 * D);
    let emb = values(2, 8 * D);
    for rate in [1.0, 0.3] {
        let ranks = pfc_step(2, config(10, Margin::arcface(0.5), rate), &full, &emb, &[-1; 8], 0);
        for (rank, r) in ranks.iter().enumerate() {
            assert_eq!(r.loss, 0.0, "rank {rank}");
            assert!(r.emb_grad.iter().all(|&g| g == 0.0), "rank {rank}: {:?}", r.emb_grad);
            assert!(r.weight_grad.iter().all(|&g| g == 0.0), "rank {rank}: {:?}", r.weight_grad);
            assert_eq!(r.weight_grad.len(), 5 * D as usize, "the centres get a (zero) gradient, as in ArcFace");
        }
    }
}

#[test]
fn dist_partial_fc_predict_classes_is_the_one_rank_argmax_with_ties_to_the_lower_class() {
    let mut full = values(4, 10 * D);
    let d = D as usize;
    // Class 7 (rank 1) duplicates class 2 (rank 0), class 8 duplicates class 5 (both rank 1).
    full.copy_within(2 * d..3 * d, 7 * d);
    full.copy_within(5 * d..6 * d, 8 * d);
    let mut emb = values(5, 10 * D);
    for (row, class) in [(1, 2), (6, 5)] {
        let centre: Vec<f32> = full[class * d..(class + 1) * d].iter().map(|x| x * 3.0).collect();
        emb[row * d..(row + 1) * d].copy_from_slice(&centre);
    }
    let vs = nn::VarStore::new(Device::Cpu);
    let mut head = ArcFace::new(&vs.root(), 10, D, S, 0.5);
    tch::no_grad(|| head.weight.copy_(&matrix(&full)));
    let want = Vec::<i64>::try_from(head.logits_no_margin(&matrix(&emb)).argmax(1, false)).unwrap();
    assert_eq!((want[1], want[6]), (2, 5), "the reference breaks ties to the lower class");
    let cfg = config(10, Margin::arcface(0.5), 1.0);
    let (f, e) = (full.clone(), emb.clone());
    let got = dist_ranks::run(2, move |group| {
        let rank = group.rank();
        let vs = nn::VarStore::new(Device::Cpu);
        let pfc = PartialFc::from_centres(&vs.root(), Rc::new(group), cfg, &matrix(&f)).unwrap();
        let mine = matrix(&e[rank * 5 * d..(rank + 1) * 5 * d]);
        Vec::<i64>::try_from(pfc.predict_classes(&mine).unwrap()).unwrap()
    });
    assert_eq!(got.concat(), want);
    assert!(want.iter().any(|&c| c < 5) && want.iter().any(|&c| c >= 5), "both shards win some rows: {want:?}");
}

#[test]
fn dist_partial_fc_new_draws_the_centres_a_one_rank_arcface_draws_under_its_name() {
    let _turn = facekit_testkit::rng_turn();
    tch::manual_seed(42);
    let vs = nn::VarStore::new(Device::Cpu);
    let head = ArcFace::new(&vs.root(), 7, D, S, 0.5);
    let full = flat(&head.weight);
    let arcface_names: Vec<String> = vs.variables().into_keys().collect();
    // The ranks are threads sharing libtorch's generator: each seeds and draws in turn.
    let turn = std::sync::Arc::new(Mutex::new(()));
    let out = dist_ranks::run(2, move |group| {
        let vs = nn::VarStore::new(Device::Cpu);
        let pfc = {
            let _mine = turn.lock().unwrap();
            tch::manual_seed(42);
            PartialFc::new(&vs.root(), Rc::new(group), config(7, Margin::arcface(0.5), 1.0)).unwrap()
        };
        let names: Vec<(String, Vec<i64>)> = vs.variables().into_iter().map(|(k, v)| (k, v.size())).collect();
        (flat(&pfc.weight), names, pfc.start(), pfc.num_local())
    });
    let d = D as usize;
    for (rank, (weight, names, start, len)) in out.into_iter().enumerate() {
        assert_eq!(names, vec![(arcface_names[0].clone(), vec![len, D])], "rank {rank}");
        assert_eq!(arcface_names, vec!["arcface.weight".to_string()]);
        assert_eq!(
            weight,
            full[start as usize * d..(start + len) as usize * d].to_vec(),
            "rank {rank}'s rows of the 1-rank draw"
        );
    }
}

#[test]
fn dist_partial_fc_loss_advances_the_step_and_set_step_resumes_its_sampling() {
    let full = values(1, 40 * D);
    let emb = values(2, 8 * D);
    let labels: [i64; 8] = [0, 3, 12, 12, 21, 30, 1, 25];
    let cfg = config(40, Margin::arcface(0.5), 0.35);
    let out = dist_ranks::run(2, move |group| {
        let rank = group.rank();
        let group = Rc::new(group);
        let d = D as usize;
        let e = matrix(&emb[rank * 4 * d..(rank + 1) * 4 * d]);
        let l = Tensor::from_slice(&labels[rank * 4..rank * 4 + 4]);
        let vs = nn::VarStore::new(Device::Cpu);
        let first = PartialFc::from_centres(&vs.root(), group.clone(), cfg, &matrix(&full)).unwrap();
        let run: Vec<f64> = (0..3).map(|_| first.loss(&e, &l).unwrap().double_value(&[])).collect();
        let after = first.step();
        let vs = nn::VarStore::new(Device::Cpu);
        let resumed = PartialFc::from_centres(&vs.root(), group, cfg, &matrix(&full)).unwrap();
        resumed.set_step(2);
        (run, after, resumed.loss(&e, &l).unwrap().double_value(&[]))
    });
    for (rank, (run, after, resumed)) in out.iter().enumerate() {
        assert_eq!(*after, 3, "rank {rank}: three losses, three steps");
        assert_ne!(run[0], run[2], "rank {rank}: steps 0 and 2 sample different negatives");
        assert_eq!(*resumed, run[2], "rank {rank}: resumed at step 2, the same loss as the run's step 2");
    }
}

#[test]
fn dist_partial_fc_refuses_uneven_batches_and_labels_past_the_classes_on_every_rank() {
    let cfg = config(10, Margin::arcface(0.5), 1.0);
    let out = dist_ranks::run(2, move |group| {
        let rank = group.rank() as i64;
        let vs = nn::VarStore::new(Device::Cpu);
        let pfc = PartialFc::from_centres(&vs.root(), Rc::new(group), cfg, &matrix(&values(1, 10 * D))).unwrap();
        let b = 3 + rank;
        let uneven = pfc
            .loss(&matrix(&values(2, b * D)), &Tensor::from_slice(&vec![1i64; b as usize]))
            .map(|_| ())
            .map_err(|e| format!("{e:#}"));
        let past = pfc
            .loss(&matrix(&values(2, 2 * D)), &Tensor::from_slice(&[1, 10 * rank]))
            .map(|_| ())
            .map_err(|e| format!("{e:#}"));
        (uneven, past)
    });
    for (rank, (uneven, past)) in out.into_iter().enumerate() {
        assert!(uneven.unwrap_err().contains("same batch size"), "rank {rank}");
        assert!(past.unwrap_err().contains("label 10"), "rank {rank}");
    }
}

#[test]
fn dist_partial_fc_head_memory_counts_the_largest_shard() {
    // 7 classes on 2 ranks: 4 and 3 rows; weights, gradient and SGD momentum in fp32.
    assert_eq!(head_memory_bytes(7, D, 0, 2, 1, Kind::Float), 4 * D as u64 * 3 * 4);
    assert_eq!(head_memory_bytes(7, D, 1, 2, 1, Kind::Float), 3 * D as u64 * 3 * 4);
    let cfg = config(7, Margin::arcface(0.5), 1.0);
    let out = dist_ranks::run(2, move |group| {
        let vs = nn::VarStore::new(Device::Cpu);
        let pfc = PartialFc::from_centres(&vs.root(), Rc::new(group), cfg, &matrix(&values(1, 7 * D))).unwrap();
        pfc.memory_bytes(2)
    });
    assert_eq!(out, vec![4 * D as u64 * 4 * 4, 3 * D as u64 * 4 * 4]);
}
