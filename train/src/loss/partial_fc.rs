//! Partial FC: the ArcFace class-centre matrix sharded over the data-parallel ranks, the
//! algorithm of insightface's `recognition/arcface_torch/partial_fc_v2.py` (An et al., "Killing
//! Two Birds with One Stone: Efficient and Robust Training of Face Recognition CNNs by Partial
//! FC", arXiv:2203.15565).
//!
//! Why: with 2 M identities × 512 dimensions the centres alone are 4 GB in fp32, plus as much
//! again for their gradient and for each optimiser buffer; replicated on every GPU (plain data
//! parallel) that no longer fits beside the backbone, and the all-reduce of a 4 GB gradient
//! every step dominates the step. Sharded over 8 GPUs each rank keeps 250 k rows (about 1.5 GB
//! with SGD momentum, [`head_memory_bytes`]) and nothing of the head is all-reduced: only the
//! embeddings are all-gathered ([B, 512] per rank) and the softmax is combined with three
//! small all-reduces ([`ProcessGroup::sharded_cross_entropy`]).
//!
//! Rank r owns rows `start..start + num_local` ([`shard_range`]). Each step gathers the global
//! batch's embeddings and labels, scores them against this rank's centres only, applies the run's
//! [`Margin`] to the target column, and computes the softmax cross-entropy over all ranks'
//! columns. With `sample_rate < 1` each rank scores only the centres of the classes present in
//! the global batch plus random other centres ("negatives"), which is what makes PFC cheaper
//! than model parallelism and, per the paper, more robust to label noise. The centres are not
//! DDP parameters: each rank's gradient is already the exact gradient of the global loss for
//! its rows.
//!
//! Unknown identities (label −1, multi-task records) are dropped from the global batch before
//! the cross-entropy, so its mean is over labelled rows only, as in [`super::FaceLoss`]'s masked
//! ArcFace. Like partial_fc_v2, the sharded cross-entropy floors the target probability at
//! 1e−30, so a row's loss is capped at −ln 1e−30 ≈ 69.08 where ArcFace's keeps growing: that
//! needs logits more than 69 apart, which s = 64 allows only far from the centres.

use super::arcface::normalize;
use super::margin::Margin;
use crate::dist::ProcessGroup;
use crate::model::NetConfig;
use anyhow::{bail, ensure, Context, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::cell::Cell;
use std::rc::Rc;
use tch::nn::{self, Init};
use tch::{Device, Kind, Tensor};

/// What a Partial FC head is: the classes and centres, the logit scale and margin, the sampling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PartialFcConfig {
    /// Number of identities over all ranks.
    pub num_classes: i64,
    /// Dimension of the embeddings and the centres.
    pub embedding_size: i64,
    /// Scale s applied to all logits.
    pub s: f64,
    /// The margin on the true class.
    pub margin: Margin,
    /// Fraction of each shard's centres scored per step, in (0, 1]; 1 scores them all.
    pub sample_rate: f64,
    /// Seed of the negative sampling, combined with the step and the rank.
    pub seed: u64,
}

impl PartialFcConfig {
    /// The identity head of network `net` (classes, embedding size) with `head`'s scale and
    /// margin, scoring `sample_rate` of each shard.
    pub fn of(net: &NetConfig, head: &super::HeadConfig, sample_rate: f64, seed: u64) -> Self {
        PartialFcConfig {
            num_classes: net.num_classes,
            embedding_size: net.embedding_size,
            s: head.scale,
            margin: head.margin,
            sample_rate,
            seed,
        }
    }

    /// Checks the values, and that every one of `world` ranks gets at least one class.
    pub fn validate(&self, world: usize) -> Result<()> {
        ensure!(world >= 1, "Partial FC needs at least one rank");
        ensure!(
            self.num_classes >= world as i64,
            "Partial FC shards {} classes over {world} ranks: every rank needs at least one class",
            self.num_classes
        );
        ensure!(self.embedding_size >= 1, "Partial FC embedding size must be positive, got {}", self.embedding_size);
        ensure!(self.s.is_finite() && self.s > 0.0, "Partial FC scale s must be positive, got {}", self.s);
        ensure!(
            self.sample_rate > 0.0 && self.sample_rate <= 1.0,
            "Partial FC sample rate must be in (0, 1], got {}",
            self.sample_rate
        );
        self.margin.validate().context("Partial FC margin")
    }
}

/// This rank's shard of the class centres and the collectives that combine the shards.
pub struct PartialFc {
    /// This rank's centres `arcface.weight` [num_local, embedding] (not normalised).
    pub weight: Tensor,
    group: Rc<ProcessGroup>,
    config: PartialFcConfig,
    start: i64,
    num_local: i64,
    step: Cell<u64>,
}

/// Which of this rank's centres a step scores, and each row's label among them.
#[derive(Debug)]
pub struct Selection {
    /// Sorted local rows of the scored centres; `None` when all of them are (sample rate 1).
    pub index: Option<Tensor>,
    /// Per row: the position of its class among the scored centres, −1 where it is not here.
    pub labels: Tensor,
}

impl PartialFc {
    /// Creates this rank's centres under `p / "arcface"` (ArcFace's name, so checkpoints and
    /// `--init` see `arcface.weight`): the full matrix is drawn as [`super::ArcFace`] draws it
    /// and this rank keeps its rows, so every world size starts from the same centres.
    ///
    /// The full [classes, embedding] matrix exists once, transiently, on `p`'s device.
    pub fn new(p: &nn::Path, group: Rc<ProcessGroup>, config: PartialFcConfig) -> Result<Self> {
        config.validate(group.size())?;
        let full = tch::no_grad(|| {
            // Same init, shape, device and kind as ArcFace's `var`, hence the same draw.
            nn::f_init(
                Init::Randn { mean: 0.0, stdev: 0.01 },
                &[config.num_classes, config.embedding_size],
                p.device(),
                p.kind(),
            )
        })
        .context("drawing the Partial FC class centres")?;
        Self::from_centres(p, group, config, &full)
    }

    /// As [`PartialFc::new`], with this rank's rows taken from the given full centres
    /// [classes, embedding] instead of a random draw.
    pub fn from_centres(p: &nn::Path, group: Rc<ProcessGroup>, config: PartialFcConfig, full: &Tensor) -> Result<Self> {
        config.validate(group.size())?;
        let expected = [config.num_classes, config.embedding_size];
        ensure!(full.size() == expected, "Partial FC centres are {:?}, expected {expected:?}", full.size());
        let (start, num_local) = shard_range(config.num_classes, group.rank(), group.size());
        let rows = take_rows(full, start, num_local)?;
        let weight = (p / "arcface").f_var_copy("weight", &rows).context("creating the Partial FC centres")?;
        Ok(PartialFc { weight, group, config, start, num_local, step: Cell::new(0) })
    }

    /// The head's configuration.
    pub fn config(&self) -> &PartialFcConfig {
        &self.config
    }

    /// The first class this rank owns.
    pub fn start(&self) -> i64 {
        self.start
    }

    /// How many classes this rank owns.
    pub fn num_local(&self) -> i64 {
        self.num_local
    }

    /// The step whose negatives the next [`PartialFc::loss`] draws.
    pub fn step(&self) -> u64 {
        self.step.get()
    }

    /// Sets the step the next [`PartialFc::loss`] samples for; a resumed run sets its global
    /// step so that it draws the negatives the uninterrupted run would have drawn.
    pub fn set_step(&self, step: u64) {
        self.step.set(step);
    }

    /// The global batch's mean margin cross-entropy over its labelled rows (the same scalar on
    /// every rank), sampling for the current step, which then advances by one.
    ///
    /// `embedding_local` `[B, D]` and `labels_local` `[B]` (i64, −1 unknown) are this rank's rows;
    /// every rank must pass the same B (checked). A global batch without a labelled row gives 0
    /// with zero gradients.
    pub fn loss(&self, embedding_local: &Tensor, labels_local: &Tensor) -> Result<Tensor> {
        let step = self.step.get();
        let loss = self.loss_at(embedding_local, labels_local, step)?;
        self.step.set(step + 1);
        Ok(loss)
    }

    /// As [`PartialFc::loss`] for an explicit sampling step, leaving the step counter alone.
    pub fn loss_at(&self, embedding_local: &Tensor, labels_local: &Tensor, step: u64) -> Result<Tensor> {
        let batch = self.check_local_batch(embedding_local, Some(labels_local))?;
        self.check_same_batch(batch, embedding_local.device())?;
        // DDP divides the backbone's gradients by the world size after this backward, but the
        // loss here is already the mean over the global batch: scaling the gathered embeddings'
        // gradient by W makes the averaged backbone gradient that of the global loss, as a
        // single process with the whole batch would compute it (partial_fc_v2's AllGather does
        // the same).
        let world = self.group.size() as f64;
        let embeddings =
            self.group.all_gather_autograd(embedding_local, world).context("Partial FC: gathering the embeddings")?;
        let labels = self.group.all_gather(labels_local).context("Partial FC: gathering the labels")?;
        // Every rank gathered the same labels, so every rank keeps the same rows and takes the
        // same branch below: the collectives stay matched.
        let labelled = labels.ge(0).nonzero().squeeze_dim(1);
        if labelled.size()[0] == 0 {
            return Ok(empty_loss(&embeddings, &self.weight));
        }
        self.check_labels(&labels)?;
        // sharded_cross_entropy has no ignore index: a row labelled nowhere would add
        // −log(1e−30) and a softmax gradient, so unlabelled rows are left out and its mean over
        // the rows it gets is the masked mean of FaceLoss.
        let embeddings = embeddings.index_select(0, &labelled);
        let labels = labels.index_select(0, &labelled);
        let selection = self.select(&labels, step)?;
        let centres = match &selection.index {
            Some(index) => self.weight.index_select(0, index),
            None => self.weight.shallow_clone(),
        };
        let logits = margin_logits(&embeddings, &centres, &selection.labels, self.config.s, &self.config.margin);
        self.group.sharded_cross_entropy(&logits, &selection.labels).context("Partial FC: sharded cross-entropy")
    }

    /// The centres a step scores here and the labels among them, for global-batch class ids
    /// `labels_global` `[N]` (−1 or another rank's class: −1 in the result). With sample rate < 1
    /// it keeps every class of the batch that is in this shard, plus negatives drawn from a
    /// generator seeded by (seed, `step`, rank) up to [`sampled_count`] centres.
    pub fn select(&self, labels_global: &Tensor, step: u64) -> Result<Selection> {
        let end = self.start + self.num_local;
        let here = labels_global.ge(self.start).logical_and(&labels_global.lt(end));
        let local = (labels_global - self.start).where_self(&here, &labels_global.full_like(-1));
        if self.config.sample_rate >= 1.0 {
            return Ok(Selection { index: None, labels: local });
        }
        // A global batch is a few thousand labels: choosing on the host keeps the draw out of the
        // device generator (so it is reproducible on resume) for the price of one small copy.
        let local_rows =
            Vec::<i64>::try_from(&local.to_device(Device::Cpu)).context("Partial FC: reading the labels")?;
        let mut positives: Vec<i64> = local_rows.iter().copied().filter(|&c| c >= 0).collect();
        positives.sort_unstable();
        positives.dedup();
        let quota = sampled_count(self.num_local, self.config.sample_rate);
        let mut rng = sampling_rng(self.config.seed, step, self.group.rank());
        let index = sample_rows(&positives, self.num_local, quota, &mut rng);
        let remapped: Vec<i64> = local_rows
            .iter()
            .map(|&c| if c < 0 { -1 } else { index.binary_search(&c).map_or(-1, |i| i as i64) })
            .collect();
        let device = labels_global.device();
        Ok(Selection {
            index: Some(Tensor::from_slice(&index).to_device(device)),
            labels: Tensor::from_slice(&remapped).to_device(device),
        })
    }

    /// For each of this rank's rows, the class whose centre is nearest (largest s·cos θ) over
    /// all ranks' shards, as the argmax of the full head's margin-free logits: ties go to the
    /// lower class id. Collective: every rank calls it with the same batch size.
    pub fn predict_classes(&self, embedding_local: &Tensor) -> Result<Tensor> {
        let batch = self.check_local_batch(embedding_local, None)?;
        self.check_same_batch(batch, embedding_local.device())?;
        tch::no_grad(|| {
            let embeddings =
                self.group.all_gather(&embedding_local.detach()).context("Partial FC: gathering the embeddings")?;
            let logits = cosine(&embeddings, &self.weight) * self.config.s;
            let best = logits.argmax(1, true);
            let value = logits.gather(1, &best, false).squeeze_dim(1);
            let class = best.squeeze_dim(1) + self.start;
            let world = self.group.size() as i64;
            let rows = embeddings.size()[0];
            let values =
                self.group.all_gather(&value).context("Partial FC: gathering the shards' maxima")?.view([world, rows]);
            let classes =
                self.group.all_gather(&class).context("Partial FC: gathering the shards' argmax")?.view([world, rows]);
            // Shards are in class order, so the first rank among equal maxima (argmax's choice)
            // holds the lowest class id, as the full head's argmax would pick.
            let winner = values.argmax(0, true);
            let global = classes.gather(0, &winner, false).squeeze_dim(0);
            Ok(global.narrow(0, self.group.rank() as i64 * batch, batch))
        })
    }

    /// Bytes this rank's head holds: centres, their gradient and `optimiser_copies` buffers.
    pub fn memory_bytes(&self, optimiser_copies: u64) -> u64 {
        let rows = self.num_local as u64 * self.config.embedding_size as u64;
        rows * (2 + optimiser_copies) * self.weight.kind().elt_size_in_bytes() as u64
    }

    fn check_local_batch(&self, embedding: &Tensor, labels: Option<&Tensor>) -> Result<i64> {
        let size = embedding.size();
        ensure!(
            size.len() == 2 && size[1] == self.config.embedding_size,
            "Partial FC embeddings are {size:?}, expected [batch, {}]",
            self.config.embedding_size
        );
        if let Some(labels) = labels {
            ensure!(labels.size() == [size[0]], "Partial FC labels are {:?} for {} embeddings", labels.size(), size[0]);
            ensure!(labels.kind() == Kind::Int64, "Partial FC labels must be i64, got {:?}", labels.kind());
        }
        Ok(size[0])
    }

    /// Fails on every rank alike when the ranks' batch sizes differ: the gathers below need
    /// equal sizes, and a mismatch would otherwise end in a collective error or a hang.
    fn check_same_batch(&self, batch: i64, device: Device) -> Result<()> {
        // On the embeddings' device: NCCL gathers CUDA tensors only.
        let mine = Tensor::from_slice(&[batch]).to_device(device);
        let sizes = self.group.all_gather(&mine).context("Partial FC: gathering the batch sizes")?;
        let sizes =
            Vec::<i64>::try_from(&sizes.to_device(Device::Cpu)).context("Partial FC: reading the batch sizes")?;
        ensure!(sizes.iter().all(|&b| b == batch), "Partial FC needs the same batch size on every rank, got {sizes:?}");
        Ok(())
    }

    fn check_labels(&self, labels: &Tensor) -> Result<()> {
        let top = labels.max().int64_value(&[]);
        ensure!(
            top < self.config.num_classes,
            "Partial FC label {top} is not below the {} classes",
            self.config.num_classes
        );
        Ok(())
    }
}

impl std::fmt::Debug for PartialFc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartialFc")
            .field("config", &self.config)
            .field("rank", &self.group.rank())
            .field("world", &self.group.size())
            .field("start", &self.start)
            .field("num_local", &self.num_local)
            .field("step", &self.step.get())
            .finish()
    }
}

/// Rank `rank`'s classes `(start, len)` of `num_classes` over `world` ranks: as even as
/// possible, the first `num_classes % world` ranks one more (partial_fc_v2's split).
pub fn shard_range(num_classes: i64, rank: usize, world: usize) -> (i64, i64) {
    let (rank, world) = (rank as i64, world as i64);
    let (base, extra) = (num_classes / world, num_classes % world);
    (base * rank + rank.min(extra), base + i64::from(rank < extra))
}

/// The full centres [num_classes, D] on every rank from each rank's shard `local` [len, D].
/// Collective. Shards differ by at most one row: each is padded to the largest, gathered, and
/// the padding dropped.
pub fn gather_rows(group: &ProcessGroup, local: &Tensor, num_classes: i64) -> Result<Tensor> {
    let world = group.size();
    ensure!(num_classes >= 0, "cannot gather {num_classes} classes");
    let size = local.size();
    let (_, len) = shard_range(num_classes, group.rank(), world);
    ensure!(
        size.len() == 2 && size[0] == len,
        "rank {}'s shard is {size:?}, expected {len} rows of {num_classes} classes over {world} ranks",
        group.rank()
    );
    let widest = shard_range(num_classes, 0, world).1;
    tch::no_grad(|| {
        let local = local.detach();
        let padded = if len < widest {
            Tensor::cat(&[&local, &local.new_zeros([widest - len, size[1]], (local.kind(), local.device()))], 0)
        } else {
            local
        };
        let all = group.all_gather(&padded).context("gathering the class centres")?;
        let parts: Vec<Tensor> =
            (0..world).map(|r| all.narrow(0, r as i64 * widest, shard_range(num_classes, r, world).1)).collect();
        Ok(Tensor::cat(&parts, 0))
    })
}

/// Rows `start..start + len` of `full`, as a copy (so the full matrix can be freed).
pub fn take_rows(full: &Tensor, start: i64, len: i64) -> Result<Tensor> {
    let rows = full.size().first().copied().unwrap_or(0);
    if start < 0 || len < 0 || start + len > rows {
        bail!("rows {start}..{} are not within the {rows} rows of the centres", start + len);
    }
    Ok(tch::no_grad(|| full.narrow(0, start, len).copy()))
}

/// Bytes one rank's head holds for `num_classes` centres of `embedding_size` values of `kind`
/// over `world` ranks: centres, gradient and `optimiser_copies` buffers (1 for SGD with
/// momentum, 2 for AdamW). Rank 0 has the largest shard.
pub fn head_memory_bytes(
    num_classes: i64,
    embedding_size: i64,
    rank: usize,
    world: usize,
    optimiser_copies: u64,
    kind: Kind,
) -> u64 {
    let (_, len) = shard_range(num_classes, rank, world);
    len as u64 * embedding_size as u64 * (2 + optimiser_copies) * kind.elt_size_in_bytes() as u64
}

/// How many centres of a shard of `num_local` a step scores at `sample_rate`:
/// ⌈sample_rate · num_local⌉, at most num_local (before positives beyond it are added).
pub fn sampled_count(num_local: i64, sample_rate: f64) -> i64 {
    let exact = sample_rate * num_local as f64;
    // 0.3 × 10 is 3.0000000000000004 in binary: a product within rounding of an integer is
    // that integer, not the next one up.
    let nearest = exact.round();
    let count = if (exact - nearest).abs() <= 1e-9 * nearest.max(1.0) { nearest } else { exact.ceil() };
    (count as i64).clamp(0, num_local)
}

/// The sorted local rows a step scores: all `positives` (sorted, distinct, below `num_local`),
/// and, when they are fewer than `quota`, `quota − positives` other rows drawn uniformly
/// without replacement. Positives beyond the quota are all kept.
pub(crate) fn sample_rows(positives: &[i64], num_local: i64, quota: i64, rng: &mut ChaCha8Rng) -> Vec<i64> {
    let wanted = quota.min(num_local) - positives.len() as i64;
    if wanted <= 0 {
        return positives.to_vec();
    }
    let free = (num_local - positives.len() as i64) as usize;
    let mut ranks: Vec<i64> =
        rand::seq::index::sample(rng, free, wanted as usize).into_iter().map(|i| i as i64).collect();
    ranks.sort_unstable();
    let mut rows = Vec::with_capacity(positives.len() + ranks.len());
    rows.extend(skip_positives(&ranks, positives));
    rows.extend_from_slice(positives);
    rows.sort_unstable();
    rows
}

/// The rows that are the `ranks`-th (sorted) rows not among `positives`, in order.
fn skip_positives(ranks: &[i64], positives: &[i64]) -> Vec<i64> {
    let mut passed = 0;
    ranks
        .iter()
        .map(|&r| {
            while passed < positives.len() && positives[passed] <= r + passed as i64 {
                passed += 1;
            }
            r + passed as i64
        })
        .collect()
}

/// The negative-sampling generator of one (seed, step, rank): independent of libtorch's global
/// generator and of anything drawn before, so a resumed run draws what the first one drew.
pub(crate) fn sampling_rng(seed: u64, step: u64, rank: usize) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&step.to_le_bytes());
    key[16..24].copy_from_slice(&(rank as u64).to_le_bytes());
    key[24..].copy_from_slice(b"pfc-negs");
    ChaCha8Rng::from_seed(key)
}

/// cos θ [N, C] between embeddings and centres, in fp32, as [`super::ArcFace::cosine`] does.
fn cosine(embeddings: &Tensor, centres: &Tensor) -> Tensor {
    let e = normalize(&embeddings.to_kind(Kind::Float));
    let w = normalize(&centres.to_kind(Kind::Float));
    e.matmul(&w.tr()).clamp(-1.0, 1.0)
}

/// s · cos θ with the margin on each row's target column (labels ≥ 0); other rows untouched.
/// The margin is evaluated on the N target entries only, not on the [N, C] matrix.
fn margin_logits(embeddings: &Tensor, centres: &Tensor, labels: &Tensor, s: f64, margin: &Margin) -> Tensor {
    let cos = cosine(embeddings, centres);
    let column = labels.clamp_min(0).unsqueeze(1);
    let target = cos.gather(1, &column, false);
    let here = labels.ge(0).to_kind(Kind::Float).unsqueeze(1);
    let shift = (margin.target_cos(&target) - &target) * here;
    cos.scatter_add(1, &column, &shift) * s
}

/// An exact 0 tied to the embeddings and the centres with zero gradient (a sum over no
/// element, so no 0·NaN): the backward still runs the gather's reduce-scatter on every rank and
/// the centres get a zero gradient, as ArcFace's masked loss gives them.
fn empty_loss(embeddings: &Tensor, weight: &Tensor) -> Tensor {
    embeddings.narrow(0, 0, 0).sum(Kind::Float) + weight.narrow(0, 0, 0).sum(Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_follow_partial_fc_v2_and_cover_every_class_once() {
        for (classes, world) in [(7, 2), (10, 3), (8, 4), (3, 3), (2_000_000, 8), (13, 5)] {
            let mut next = 0;
            for rank in 0..world {
                let (start, len) = shard_range(classes, rank, world);
                let r = rank as i64;
                let w = world as i64;
                // partial_fc_v2's num_local and class_start, written out.
                assert_eq!(len, classes / w + i64::from(r < classes % w), "{classes} over {world}, rank {rank}");
                assert_eq!(start, classes / w * r + r.min(classes % w), "{classes} over {world}, rank {rank}");
                assert_eq!(start, next, "shards are contiguous");
                next += len;
            }
            assert_eq!(next, classes);
        }
        assert_eq!(shard_range(7, 0, 2), (0, 4));
        assert_eq!(shard_range(7, 1, 2), (4, 3));
    }

    #[test]
    fn the_sampled_count_is_the_ceiling_of_the_rate_times_the_shard() {
        assert_eq!(sampled_count(10, 0.3), 3, "0.3 x 10 rounds to 3, not 4");
        assert_eq!(sampled_count(10, 0.25), 3);
        assert_eq!(sampled_count(7, 0.1), 1);
        assert_eq!(sampled_count(250_000, 0.1), 25_000);
        assert_eq!(sampled_count(9, 1.0), 9);
        assert_eq!(sampled_count(3, 0.999), 3);
    }

    #[test]
    fn sampling_keeps_every_positive_and_fills_the_quota_with_distinct_negatives() {
        let positives = [1, 4, 5, 17];
        for step in 0..20 {
            let rows = sample_rows(&positives, 20, 9, &mut sampling_rng(3, step, 0));
            assert_eq!(rows.len(), 9, "step {step}: {rows:?}");
            assert!(rows.windows(2).all(|w| w[0] < w[1]), "sorted and distinct: {rows:?}");
            assert!(rows.iter().all(|&r| (0..20).contains(&r)), "{rows:?}");
            assert!(positives.iter().all(|p| rows.contains(p)), "positives kept: {rows:?}");
        }
    }

    #[test]
    fn positives_beyond_the_quota_are_all_kept() {
        let positives = [0, 2, 3, 6, 9];
        assert_eq!(sample_rows(&positives, 10, 2, &mut sampling_rng(0, 0, 0)), positives.to_vec());
        assert_eq!(sample_rows(&positives, 10, 5, &mut sampling_rng(0, 0, 0)), positives.to_vec());
    }

    #[test]
    fn negatives_are_uniform_over_the_rows_that_are_not_positive() {
        let positives = [0, 1, 5];
        let mut seen = [0u32; 8];
        for step in 0..4000 {
            for r in sample_rows(&positives, 8, 4, &mut sampling_rng(11, step, 1)) {
                seen[r as usize] += 1;
            }
        }
        for p in positives {
            assert_eq!(seen[p as usize], 4000);
        }
        // One negative a step among the five others: 800 each expected.
        for r in [2, 3, 4, 6, 7] {
            assert!((700..900).contains(&seen[r]), "row {r} drawn {} times: {seen:?}", seen[r]);
        }
    }

    #[test]
    fn the_sampling_generator_depends_on_seed_step_and_rank_only() {
        let draw = |seed, step, rank| sample_rows(&[], 1000, 10, &mut sampling_rng(seed, step, rank));
        assert_eq!(draw(1, 2, 3), draw(1, 2, 3));
        assert_ne!(draw(1, 2, 3), draw(1, 3, 3));
        assert_ne!(draw(1, 2, 3), draw(1, 2, 4));
        assert_ne!(draw(1, 2, 3), draw(2, 2, 3));
    }

    #[test]
    fn head_memory_is_about_one_and_a_half_gigabytes_per_rank_at_two_million_over_eight() {
        let bytes = head_memory_bytes(2_000_000, 512, 0, 8, 1, Kind::Float);
        assert_eq!(bytes, 250_000 * 512 * 4 * 3);
        assert_eq!(head_memory_bytes(7, 2, 1, 2, 2, Kind::Half), 3 * 2 * 2 * 4);
    }

    #[test]
    fn take_rows_copies_the_rows_and_refuses_a_range_past_the_end() {
        let full = Tensor::arange(12, (Kind::Float, tch::Device::Cpu)).view([6, 2]);
        let rows = take_rows(&full, 2, 3).unwrap();
        assert_eq!(Vec::<f32>::try_from(rows.flatten(0, -1)).unwrap(), vec![4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
        assert_eq!(take_rows(&full, 6, 0).unwrap().size(), vec![0, 2]);
        assert!(take_rows(&full, 4, 3).is_err());
        assert!(take_rows(&full, -1, 2).is_err());
    }
}
